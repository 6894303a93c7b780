"""Lean hot path: a one-INSERT enqueue for common jobs, generic plans for claim and
complete, claims and completions by primary key, reconcile's cut-offs read once.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

Runs its own frozen SQL (0002_lean_hot_path.sql beside this file), never sql/schema.sql.
"""

from __future__ import annotations

from pathlib import Path

from jobqueue.migrations import execute_frozen_sql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_frozen_sql(Path(__file__).with_suffix(".sql"))


def downgrade() -> None:
    execute_frozen_sql(Path(__file__).with_name("0002_lean_hot_path_down.sql"))
