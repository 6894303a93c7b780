"""The public SQL API is documented: every non-underscore function of sql/schema.sql is named in
docs/sql-api.md, and is granted to at least one jobqueue role (a function nobody may call is
not an API)."""

from __future__ import annotations

import re

from tests.conftest import ROOT

SCHEMA = (ROOT / "sql" / "schema.sql").read_text()
DOCS = (ROOT / "docs" / "sql-api.md").read_text()
PUBLIC = sorted(set(re.findall(r"^CREATE FUNCTION jobqueue\.([a-z][a-z0-9_]*)\(", SCHEMA, re.MULTILINE)))
GRANTS = "\n".join(re.findall(r"^GRANT EXECUTE ON FUNCTION.*?;", SCHEMA, re.MULTILINE | re.DOTALL))


def test_there_is_a_public_api_to_check() -> None:
    assert {"enqueue", "claim", "complete", "reconcile", "health"} <= set(PUBLIC)


def test_every_public_function_is_documented() -> None:
    missing = [f for f in PUBLIC if f"`{f}`" not in DOCS and f"jobqueue.{f}(" not in DOCS]
    assert missing == [], f"add these to docs/sql-api.md: {missing}"


def test_every_public_function_is_granted_to_a_role() -> None:
    ungranted = [f for f in PUBLIC if not re.search(rf"jobqueue\.{f}\(", GRANTS)]
    assert ungranted == [], f"granted to no role: {ungranted}"
