"""What every verb is handed: the database the command was pointed at, and the library on it.

The root group builds one :class:`Context` from ``--database-url``; a verb asks it for the
resolved target (``jobqueue db``, ``migrate``, ``demo``, ``bench``) or for the
:class:`~jobqueue.client.JobQueue` it calls (everything else).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from jobqueue.config import DatabaseTarget, resolve_database

if TYPE_CHECKING:
    from jobqueue.client import JobQueue


class Context:
    def __init__(
        self, database_url: str | None, prepared_statements: bool | None = None, source: str = "--database-url"
    ) -> None:
        self.database_url = database_url
        self.prepared_statements = prepared_statements
        #: Where database_url came from: the option, or $JOBQUEUE_DATABASE_URL (for messages).
        self.source = source
        self._queue: JobQueue | None = None

    def target(self, *, start_embedded: bool = True) -> DatabaseTarget:
        target = resolve_database(
            self.database_url, start_embedded=start_embedded, prepared_statements=self.prepared_statements
        )
        if self.database_url and target.source == "--database-url":
            return DatabaseTarget(target.url, self.source, target.prepared_statements)
        return target

    def queue(self) -> JobQueue:
        """The library handle the verbs call, closed when the command ends.

        One direct connection first checks the server answers and the schema is current, so
        that a cron run fails fast with one line and its exit code (69 unreachable, 75 not
        migrated) instead of waiting on the pool.
        """
        if self._queue is None:
            from jobqueue.client import JobQueue
            from jobqueue.db import check_schema, connect

            target = self.target()
            with connect(target) as conn:
                check_schema(conn, target)
            jq = JobQueue(target.url, pool_size=2, prepared_statements=target.prepared_statements)
            click.get_current_context().call_on_close(jq.close)
            self._queue = jq
        return self._queue


pass_context = click.make_pass_decorator(Context)
