"""Throughput under a growing backlog: reconcile's priority aging reads only the queues that enable it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06

Runs its own frozen SQL (0006_backlog.sql beside this file), never sql/schema.sql.
"""

from __future__ import annotations

from pathlib import Path

from jobqueue.migrations import execute_frozen_sql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_frozen_sql(Path(__file__).with_suffix(".sql"))


def downgrade() -> None:
    execute_frozen_sql(Path(__file__).with_name("0006_backlog_down.sql"))
