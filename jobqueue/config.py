"""Where the database is, and the defaults that carry their unit in their name.

One resolution is shared by the CLI and the library::

    --database-url  >  JOBQUEUE_DATABASE_URL  >  DATABASE_URL  >  embedded PostgreSQL 18

The embedded server lives in ``$JOBQUEUE_HOME/pgdata`` (default ``./.jobqueue``), is started
on demand and left running between commands (``jobqueue db stop`` stops it).

Server-side prepared statements (psycopg prepares a statement on a connection after its
fifth run) are on unless turned off, first match wins::

    --no-prepared-statements / JobQueue(prepared_statements=False)
      >  the URL parameter ``prepared_statements=off``
      >  JOBQUEUE_PREPARED_STATEMENTS=off

Turn them off behind a transaction pooler that does not track them (PgBouncer before 1.21,
or without ``max_prepared_statements``): a statement prepared on one server connection is
then looked for on another. The URL parameter is jobqueue's, never passed to libpq.

:class:`WorkerConfig` (how a worker runs) lives here too, below the client and the worker,
so that ``JobQueue.run_worker`` can name it without importing the worker.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from jobqueue.errors import ConfigurationError

#: Environment variables consulted, in order, after an explicit URL.
URL_ENV_VARS = ("JOBQUEUE_DATABASE_URL", "DATABASE_URL")
POSTGRES_SCHEMES = ("postgresql", "postgres")
CONNECT_TIMEOUT_S = 10
#: jobqueue's own URL parameter and environment variable: server-side prepared statements.
PREPARED_PARAM = "prepared_statements"
PREPARED_ENV = "JOBQUEUE_PREPARED_STATEMENTS"
_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE = frozenset({"0", "false", "f", "no", "n", "off"})


@dataclass(frozen=True)
class DatabaseTarget:
    """A resolved database: its URL and where the URL came from (for error messages)."""

    url: str
    source: str
    #: False: every connection is made with psycopg's ``prepare_threshold=None``.
    prepared_statements: bool = True

    @property
    def display(self) -> str:
        return f"{redact(self.url)} (from {self.source})"

    def connect_kwargs(self) -> dict[str, Any]:
        """psycopg.connect() keyword arguments this target needs on every connection."""
        return {} if self.prepared_statements else {"prepare_threshold": None}


def resolve_database(
    explicit: str | None = None, *, start_embedded: bool = True, prepared_statements: bool | None = None
) -> DatabaseTarget:
    """Resolve the database URL; start the embedded server when nothing is configured.

    ``prepared_statements`` (the CLI's --[no-]prepared-statements, the library's argument)
    beats the URL's ``prepared_statements`` parameter, which beats
    $JOBQUEUE_PREPARED_STATEMENTS. Raises ConfigurationError for a URL that is not
    PostgreSQL or a bad setting, EmbeddedServerError when the embedded server cannot start.
    """
    candidates = [("--database-url", explicit)] + [(name, os.environ.get(name)) for name in URL_ENV_VARS]
    for source, value in candidates:
        if value is not None and value.strip():
            url, from_url = split_options(value.strip(), source)
            prepared = _prepared(prepared_statements, from_url)
            return DatabaseTarget(validate_url(url, source), source, prepared)
    from jobqueue.embedded import EmbeddedServer

    server = EmbeddedServer()
    prepared = _prepared(prepared_statements, None)
    if not start_embedded:
        status = server.status()
        if status.url is None:
            raise ConfigurationError("no database configured and the embedded server is not running")
        return DatabaseTarget(status.url, "embedded", prepared)
    return DatabaseTarget(server.ensure_running(), "embedded", prepared)


def _prepared(explicit: bool | None, from_url: bool | None) -> bool:
    if explicit is not None:
        return explicit
    if from_url is not None:
        return from_url
    value = os.environ.get(PREPARED_ENV, "").strip()
    return True if not value else parse_switch(value, PREPARED_ENV)


def parse_switch(value: str, source: str) -> bool:
    """on/off, true/false, yes/no, 1/0 (any case); anything else is refused by name."""
    word = value.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ConfigurationError(f"{source}: expected on or off, not {value!r}")


_KEYWORD_OPTION = re.compile(rf"(?:^|\s){PREPARED_PARAM}\s*=\s*(\S*)")


def split_options(url: str, source: str) -> tuple[str, bool | None]:
    """The URL without jobqueue's own ``prepared_statements`` parameter (libpq refuses
    parameters it does not know), and that parameter's value (None when absent).

    Works for ``postgresql://...?prepared_statements=off`` and for key=value strings.
    """
    if "://" in url:
        parts = urlsplit(url)
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        ours = [v for k, v in pairs if k == PREPARED_PARAM]
        if not ours:
            return url, None
        rest = urlencode([(k, v) for k, v in pairs if k != PREPARED_PARAM])
        return urlunsplit(parts._replace(query=rest)), parse_switch(ours[-1], f"{source}: {PREPARED_PARAM}")
    found = _KEYWORD_OPTION.findall(url)
    if not found:
        return url, None
    rest = _KEYWORD_OPTION.sub("", url).strip()
    return rest, parse_switch(found[-1], f"{source}: {PREPARED_PARAM}")


def validate_url(url: str, source: str) -> str:
    """Accept a PostgreSQL URL or libpq ``key=value`` string; refuse anything else by name."""
    from psycopg.conninfo import conninfo_to_dict

    if "://" in url:
        scheme = urlsplit(url).scheme.lower()
        if scheme not in POSTGRES_SCHEMES:
            raise ConfigurationError(f"{source} is not a PostgreSQL URL: scheme {scheme!r}, expected postgresql://")
    elif "=" not in url:
        raise ConfigurationError(f"{source} is not a PostgreSQL URL or key=value connection string")
    try:
        conninfo_to_dict(url)
    except Exception as exc:  # psycopg raises ProgrammingError with libpq's reason
        raise ConfigurationError(f"{source} is not a valid PostgreSQL URL: {_first_line(exc)}") from exc
    return url


def redact(url: str) -> str:
    """The URL with any password replaced by ``***``, for messages and logs."""
    if "://" in url:
        parts = urlsplit(url)
        if parts.password is not None:
            netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
            return urlunsplit(parts._replace(netloc=netloc))
        return url
    words = []
    for word in url.split():
        key, _, _value = word.partition("=")
        words.append(f"{key}=***" if key.strip() == "password" else word)
    return " ".join(words)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# -- the worker -----------------------------------------------------------------------------

POLL_INTERVAL_S = 2.0
CONCURRENCY = 10
SHUTDOWN_TIMEOUT_S = 30.0
RECONCILE_INTERVAL_S = 5.0
#: Seconds between a worker's heartbeats of its own row (what the worker_down alert watches).
WORKER_HEARTBEAT_S = 10.0
#: Seconds between a worker's reports (jobqueue.reports); 0: never.
REPORT_INTERVAL_S = 60.0


@dataclass(frozen=True)
class WorkerConfig:
    """How a worker runs. ``validate()`` refuses nonsense, naming the field."""

    queues: tuple[str, ...] = ("default",)
    concurrency: int = CONCURRENCY
    name: str | None = None
    burst: bool = False
    poll_interval_s: float = POLL_INTERVAL_S
    listen: bool = True
    shutdown_timeout_s: float = SHUTDOWN_TIMEOUT_S
    #: Lease length asked for at claim; None: the job's, then its queue's, then 30 s.
    visibility_timeout_s: float | None = None
    reconcile_interval_s: float = RECONCILE_INTERVAL_S
    #: Job types to claim; None: the types this worker has handlers for.
    types: tuple[str, ...] | None = None
    #: A direct (or session-pooled) URL for LISTEN when the main URL goes through
    #: PgBouncer in transaction mode; None: the main URL.
    listen_url: str | None = None
    install_signal_handlers: bool = True
    #: Seconds between the worker's reports (an INFO summary of the jobs done, failed and
    #: retried, and a WARNING per pending job type nobody handles); 0: never (jobqueue.reports).
    report_interval_s: float = REPORT_INTERVAL_S
    #: Also claim alert notifications (queue ``jobqueue.alerts``, type ``jobqueue.notify``)
    #: besides ``queues``; False: this worker leaves them to others (``--no-alerts``).
    alerts: bool = True
    #: Seconds between heartbeats of the worker's row (``jobqueue workers list``'s last seen;
    #: the worker_down alert fires when one is missed for its threshold, 60 s by default).
    heartbeat_interval_s: float = WORKER_HEARTBEAT_S

    def __post_init__(self) -> None:
        if isinstance(self.queues, str):
            object.__setattr__(self, "queues", tuple(q for q in self.queues.split(",") if q))

    def validate(self) -> WorkerConfig:
        if not self.queues:
            raise ConfigurationError("queues: at least one queue is needed")
        if not 1 <= self.concurrency <= 10_000:
            raise ConfigurationError("concurrency: must be between 1 and 10000")
        if not 0.01 <= self.poll_interval_s <= 3600:
            raise ConfigurationError("poll_interval: must be between 0.01 and 3600 seconds")
        if not 0 <= self.shutdown_timeout_s <= 86_400:
            raise ConfigurationError("shutdown_timeout: must be between 0 and 86400 seconds")
        if self.visibility_timeout_s is not None and not 1 <= self.visibility_timeout_s <= 43_200:
            raise ConfigurationError("visibility_timeout: must be between 1 and 43200 seconds")
        if not 0 <= self.reconcile_interval_s <= 86_400:
            raise ConfigurationError("reconcile_interval: must be between 0 (off) and 86400 seconds")
        if self.listen_url is not None:
            validate_url(split_options(self.listen_url, "listen_url")[0], "listen_url")
        if not 0.1 <= self.heartbeat_interval_s <= 3600:
            raise ConfigurationError("heartbeat_interval: must be between 0.1 and 3600 seconds")
        if not 0 <= self.report_interval_s <= 86_400:
            raise ConfigurationError("report_interval: must be between 0 (off) and 86400 seconds")
        return self
