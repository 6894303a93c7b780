"""claim fetches the rows it locked by primary key only (no full walk of job_claim_idx; issue 13).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06

Runs its own frozen SQL (0013_claim_by_pkey.sql beside this file), never sql/schema.sql.
"""

from __future__ import annotations

from pathlib import Path

from jobqueue.migrations import execute_frozen_sql

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_frozen_sql(Path(__file__).with_suffix(".sql"))


def downgrade() -> None:
    execute_frozen_sql(Path(__file__).with_name("0013_claim_by_pkey_down.sql"))
