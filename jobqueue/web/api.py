"""The ``/api/v1`` routes: each one shapes a request, calls the library on the request's
database session (auth.py) and shapes the answer. No route filters rows itself: the
token's role and tenant, in the database, decide what it sees and may do."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from jobqueue.db import REQUIRED_SCHEMA_VERSION, schema_version
from jobqueue.web.auth import Session, db_session, web_database
from jobqueue.web.problems import Problem

health_router = APIRouter(tags=["health"])
router = APIRouter()

DbSession = Annotated[Session, Depends(db_session)]


@health_router.get("/healthz")
def healthz() -> dict[str, str]:
    """Liveness: the process answers (no database call)."""
    return {"status": "ok"}


@health_router.get("/readyz")
def readyz(request: Request) -> dict[str, Any]:
    """Readiness: the database answers and its schema is the version this server needs."""
    with web_database(request).connection() as conn:
        version = schema_version(conn)
    if version is None or version < REQUIRED_SCHEMA_VERSION:
        raise Problem(
            503,
            f"schema: version {version} installed, {REQUIRED_SCHEMA_VERSION} needed; run `jobqueue migrate`",
            field="schema",
        )
    return {"status": "ready", "schema_version": version}


@router.get("/whoami", tags=["auth"])
def whoami(session: DbSession) -> dict[str, Any]:
    """The token this request acts as: its role and tenant (never the token itself)."""
    p = session.principal
    return {"token_id": p.token_id, "name": p.name, "role": p.role, "tenant_id": p.tenant_id}
