"""Hot path: _tenant() and _conf() in plpgsql (planned once per session), _bucket_counts() a loop.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06

Runs its own frozen SQL (0014_hot_path.sql beside this file), never sql/schema.sql.
"""

from __future__ import annotations

from pathlib import Path

from jobqueue.migrations import execute_frozen_sql

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_frozen_sql(Path(__file__).with_suffix(".sql"))


def downgrade() -> None:
    execute_frozen_sql(Path(__file__).with_name("0014_hot_path_down.sql"))
