"""ANALYZE of the hot tables samples 3,000 rows, none of the JSON documents (issue 13).

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07

Runs its own frozen SQL (0019_analyze_sample.sql beside this file), never sql/schema.sql.
"""

from __future__ import annotations

from pathlib import Path

from jobqueue.migrations import execute_frozen_sql

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_frozen_sql(Path(__file__).with_suffix(".sql"))


def downgrade() -> None:
    execute_frozen_sql(Path(__file__).with_name("0019_analyze_sample_down.sql"))
