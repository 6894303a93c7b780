"""``jobqueue serve`` (the HTTP API and dashboard, needs the ``web`` extra) and ``jobqueue
tokens`` (API tokens: create, list, revoke).

``serve`` imports the web package only when it runs, so ``jobqueue --help`` stays lean and
works without the extra. The token verbs call the library (``JobQueue.create_token`` ...),
which calls the SQL API (``jobqueue.create_token`` ...): the CLI, the API and an SQL caller
share one code path.
"""

from __future__ import annotations

import json
import os
from typing import Any

import click

from jobqueue.cli._context import Context, pass_context
from jobqueue.cli._output import echo_json, print_table, report
from jobqueue.cli._params import Duration, json_option, option

#: Seconds a stopping `jobqueue serve` gives requests in flight before it cancels what is left
#: (open live streams): uvicorn otherwise waits for every connection to end.
SHUTDOWN_GRACE_S = 5

#: Token roles (jobqueue.web.auth.ROLE_OF_TOKEN maps them to database roles).
TOKEN_ROLES = ("viewer", "producer", "operator", "admin")
TOKEN_COLUMNS = (
    ("id", "id"),
    ("name", "name"),
    ("role", "role"),
    ("tenant_id", "tenant"),
    ("created_at", "created"),
    ("expires_at", "expires"),
    ("last_used_at", "last used"),
    ("revoked_at", "revoked"),
)


@click.command()
@option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port to listen on.")
@option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    help="A browser origin allowed to call the API (repeatable; none: CORS off).",
)
@option("--workers", type=click.IntRange(1, 64), default=1, show_default=True, help="uvicorn worker processes.")
@option(
    "--access-log/--no-access-log",
    default=False,
    show_default=True,
    help="One line per request (client, method, path, status; never headers). Off by default,"
    " like gunicorn's: it cost ~15 % of the server's CPU per POST /jobs (docs/web.md); the"
    " proxy in front usually logs requests.",
)
@pass_context
def serve(ctx: Context, host: str, port: int, cors_origins: tuple[str, ...], workers: int, access_log: bool) -> None:
    """Serve the HTTP API (/api/v1) and the dashboard.

    \b
    The database URL must log in as jobqueue_web (docs/web.md, deployment), e.g.
      jobqueue --database-url postgresql://jobqueue_web@db/app serve --port 8000
    Requests authenticate with tokens from `jobqueue tokens create`.
    """
    try:
        import uvicorn

        from jobqueue.web.app import APP_FACTORY, ENV_CORS_ORIGINS, ENV_DATABASE_URL, create_app
    except ImportError as exc:
        raise click.UsageError(f"jobqueue serve needs the web extra: pip install 'jobqueue[web]' ({exc})") from exc
    target = ctx.target()
    # uvicorn's access log (--access-log) prints paths, never headers: tokens never reach it
    # (they are refused in URLs). Startup, shutdown and errors are logged either way.
    # On SIGINT/SIGTERM, requests in flight get SHUTDOWN_GRACE_S to finish; then open live
    # streams (a dashboard left open never ends its own) are cancelled, so the server stops.
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": "info",
        "timeout_graceful_shutdown": SHUTDOWN_GRACE_S,
        "access_log": access_log,
    }
    if workers == 1:
        uvicorn.run(create_app(target=target, cors_origins=cors_origins), **options)
        return
    # several processes: each builds its app from the environment (uvicorn needs an import string)
    os.environ[ENV_DATABASE_URL] = target.url
    os.environ[ENV_CORS_ORIGINS] = json.dumps(list(cors_origins))
    uvicorn.run(APP_FACTORY, factory=True, workers=workers, **options)


@click.group()
def tokens() -> None:
    """API tokens for `jobqueue serve`: each acts as one role (and tenant) in the database."""


@tokens.command("create")
@option("--role", type=click.Choice(TOKEN_ROLES), required=True, help="What the token may do.")
@option("--tenant", default=None, help="Confine the token to this tenant's jobs.")
@option("--expires", type=Duration(allow_zero=False), default=None, help="Lifetime (e.g. 90d); default: none.")
@option("--name", default=None, help="A label shown by `tokens list` and recorded as the creator of its jobs.")
@json_option()
@pass_context
def tokens_create(
    ctx: Context, role: str, tenant: str | None, expires: object, name: str | None, as_json: bool
) -> None:
    """Create a token and print it once (only its hash is stored).

    \b
    Example:
      jobqueue tokens create --role producer --tenant acme --expires 90d
    """
    from datetime import timedelta

    created = ctx.queue().create_token(
        role, tenant_id=tenant, expires_in=expires if isinstance(expires, timedelta) else None, name=name
    )
    if as_json:
        echo_json(created)
        return
    click.echo(created["token"])
    click.echo(
        f"token {created['id']}: role {role}"
        + (f", tenant {tenant}" if tenant else "")
        + (f", expires {created['expires_at']}" if created["expires_at"] else "")
        + " (shown once: store it now)",
        err=True,
    )


@tokens.command("list")
@json_option()
@pass_context
def tokens_list(ctx: Context, as_json: bool) -> None:
    """Every token (never the token itself): role, tenant, expiry, last use, revocation."""
    rows = ctx.queue().tokens()
    if as_json:
        echo_json(rows)
        return
    print_table(f"tokens ({len(rows)})", TOKEN_COLUMNS, rows)


@tokens.command("revoke")
@click.argument("token_id", type=click.IntRange(1))
@json_option()
@pass_context
def tokens_revoke(ctx: Context, token_id: int, as_json: bool) -> None:
    """Revoke token TOKEN_ID (from `tokens list`) at once: its next request gets 401."""
    revoked = ctx.queue().revoke_token(token_id)
    report(
        as_json,
        {"id": token_id, "revoked": revoked},
        f"token {token_id}: {'revoked' if revoked else 'already revoked'}",
    )
