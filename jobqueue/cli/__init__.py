"""The `jobqueue` command: parse, call the library, print. Nothing else lives here.

One module per verb group; each verb parses its options, makes one library call (the same
call a Python user makes, ending in the same SQL function) and prints the result:

    __init__.py     the root group, where the verbs are registered, and main(): errors to
                    one line on stderr and an exit code
    _context.py     the Context a verb is handed: --database-url resolved, the JobQueue on it
    _params.py      parameter types (durations, priorities, timestamps), the shared options
                    (--json, --limit, --before-id, the filters) and JSON documents
    _output.py      rich tables with their --json twins, cells, the job view
    db.py           migrate; db url | status | stop (the embedded PostgreSQL)
    worker.py       worker (run jobs); workers list
    jobs.py         enqueue; jobs list | show | cancel | retry | logs
    dlq.py          dlq list | show | redrive | archive | purge
    queues.py       queues list | pause | resume | set
    tenants.py      tenants list | map | unmap | limit | unlimit
    observe.py      stats, health, exporter
    maintenance.py  reconcile
    schedules.py    schedules add | list | show | pause | resume | remove | next
    alerts.py       alerts list | show | ack | resolve | check; alerts rules list | set | remove;
                    alerts channels add | list | remove | test
    web.py          serve (the HTTP API and dashboard, jobqueue/web/); tokens create | list | revoke
    demo.py         demo (the whole product in under a minute)
    bench.py        bench (hands over to jobqueue.bench, imported only when it runs)

Where the next verbs go (each a new module registered below, never a longer one, as
``schedules.py`` was for ``jobqueue/schedules.py``):
and flow-control settings (rate limits, concurrency caps per queue) as options of
``queues set`` / ``tenants limit`` in the modules that already own those verbs.

Imports point down only: the verb modules import ``_context``, ``_params`` and
``_output`` and the library, never this module; ``demo`` also borrows from the verbs it
shows (``db.probe``, the dlq and stats tables). Every option's environment variable is
named here once all verbs are registered (:func:`name_envvars`).
"""

from __future__ import annotations

import sys

import click

from jobqueue.cli import (
    alerts,
    bench,
    db,
    demo,
    dlq,
    jobs,
    maintenance,
    observe,
    queues,
    schedules,
    tenants,
    web,
    worker,
)
from jobqueue.cli._context import Context
from jobqueue.errors import JobQueueError

DATABASE_URL_HELP = (
    "PostgreSQL URL. Default: $JOBQUEUE_DATABASE_URL, then $DATABASE_URL, "
    "then an embedded PostgreSQL in $JOBQUEUE_HOME (./.jobqueue)."
)


PREPARED_HELP = (
    "Server-side prepared statements (default: on, unless the URL says prepared_statements=off "
    "or $JOBQUEUE_PREPARED_STATEMENTS=off). Turn them off behind PgBouncer in transaction mode "
    "before 1.21, or without max_prepared_statements."
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "JOBQUEUE"})
@click.option("--database-url", metavar="URL", help=DATABASE_URL_HELP, envvar=[])
@click.option(
    "--prepared-statements/--no-prepared-statements",
    default=None,
    help=PREPARED_HELP,
    allow_from_autoenv=False,  # the library reads $JOBQUEUE_PREPARED_STATEMENTS, after the URL's parameter
)
@click.version_option(package_name="jobqueue")
@click.pass_context
def cli(ctx: click.Context, database_url: str | None, prepared_statements: bool | None) -> None:
    """jobqueue: a job queue whose whole state lives in PostgreSQL."""
    # click's auto_envvar_prefix fills --database-url from $JOBQUEUE_DATABASE_URL: say so.
    from_env = ctx.get_parameter_source("database_url") is click.core.ParameterSource.ENVIRONMENT
    ctx.obj = Context(database_url, prepared_statements, "JOBQUEUE_DATABASE_URL" if from_env else "--database-url")


#: Every verb, in the order a job meets them (``--help`` lists them alphabetically).
VERBS: tuple[click.Command, ...] = (
    db.migrate,
    db.db,
    jobs.enqueue,
    worker.worker,
    worker.workers,
    jobs.jobs,
    dlq.dlq,
    queues.queues,
    tenants.tenants,
    web.tokens,
    web.serve,
    maintenance.reconcile,
    schedules.schedules,
    alerts.alerts,
    observe.stats,
    observe.health,
    observe.exporter,
    demo.demo,
    bench.bench,
)
for verb in VERBS:
    cli.add_command(verb)


# -- environment variables -------------------------------------------------------------------


def name_envvars(group: click.Group, prefix: str = "JOBQUEUE") -> None:
    """Name the environment variable of every option that shows one and has none yet.

    ``JOBQUEUE_<COMMAND PATH>_<LONG FLAG>``: ``jobqueue jobs list --before-id`` reads
    ``JOBQUEUE_JOBS_LIST_BEFORE_ID``. Derived from the flag rather than the Python parameter
    name (click's auto_envvar_prefix would give ``..._AS_JSON`` for ``--json``).
    """
    for name, command in group.commands.items():
        path = f"{prefix}_{name.upper().replace('-', '_')}"
        for param in command.params:
            if isinstance(param, click.Option) and param.show_envvar and not param.envvar:
                flag = max((o for o in param.opts if o.startswith("--")), key=len)
                param.envvar = f"{path}_{flag[2:].upper().replace('-', '_')}"
        if isinstance(command, click.Group):
            name_envvars(command, path)


name_envvars(cli)


# -- entry point: the exit-code mapping ------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Console entry point: every error is one line on stderr and an exit code.

    2 for a usage error (click), the error class's code for a JobQueueError (65 bad data,
    69 database unavailable, 75 schema out of date or queue full, 78 bad configuration, ...).
    """
    try:
        cli.main(args=argv, prog_name="jobqueue", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.exceptions.NoArgsIsHelpError as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        message = " ".join(exc.format_message().split())
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            message += f" (see '{exc.ctx.command_path} --help')"
        click.echo(f"jobqueue: error: {message}", err=True)
        sys.exit(exc.exit_code)
    except JobQueueError as exc:
        click.echo(f"jobqueue: error: {' '.join(str(exc).split())}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
