"""``jobqueue tokens create | list | revoke`` against a real ``jobqueue serve`` (issue 18): the
token is printed once, only its hash is stored, and a revoked token is refused at once."""

from __future__ import annotations

import json

from tests.support.cli import run_cli
from tests.support.web import ApiServer, api_server  # noqa: F401 - the module's server fixture


def test_create_use_list_revoke(api_server: ApiServer) -> None:  # noqa: F811
    api = api_server
    made = run_cli("tokens", "create", "--role", "producer", "--tenant", "A", "--expires", "90d", "--name", "ci",
                   database_url=api.owner_url)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("jq_") and len(token) > 40 and "\n" not in token
    assert "shown once" in made.stderr and token not in made.stderr
    me = api.request("GET", "/api/v1/whoami", token).json
    assert me["role"] == "producer" and me["tenant_id"] == "A" and me["name"] == "ci"

    listed = run_cli("tokens", "list", "--json", database_url=api.owner_url)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    mine = [r for r in rows if r["id"] == me["token_id"]]
    assert mine and mine[0]["active"] is True and mine[0]["expires_at"] is not None
    assert token not in listed.stdout and "hash" not in mine[0]
    with api.superuser() as su:
        stored = su.execute("SELECT encode(hash, 'hex') AS h FROM jobqueue.api_token WHERE id = %s",
                            [me["token_id"]]).fetchone()
    assert stored is not None and token not in stored["h"]

    revoked = run_cli("tokens", "revoke", str(me["token_id"]), database_url=api.owner_url)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout, revoked.stderr
    assert api.request("GET", "/api/v1/whoami", token).status == 401
    again = run_cli("tokens", "revoke", str(me["token_id"]), database_url=api.owner_url)
    assert again.returncode == 0 and "already revoked" in again.stdout


def test_bad_role_and_unknown_id_are_refused(api_server: ApiServer) -> None:  # noqa: F811
    bad = run_cli("tokens", "create", "--role", "root", database_url=api_server.owner_url)
    assert bad.returncode == 2 and "--role" in bad.stderr
    missing = run_cli("tokens", "revoke", "999999", database_url=api_server.owner_url)
    assert missing.returncode != 0 and "no API token 999999" in missing.stderr
