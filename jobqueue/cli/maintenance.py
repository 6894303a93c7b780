"""``jobqueue reconcile``: the maintenance pass cron runs (``SELECT jobqueue.reconcile()``).

Expire leases, dead-letter exhausted and expired jobs, archive and prune by retention, each
a guarded, batched step that is safe to run from many hosts at once. Firing due schedules
is one more step of the same pass, and so is alert detection; the schedules' and alerts' own
verbs live in ``cli/schedules.py`` and ``cli/alerts.py``, not here. Before the pass, the
``JOBQUEUE_ALERT_*`` variables (if any) are applied to the built-in alert rules: detection
runs in the database, which has no environment, so this is where they take effect.
"""

from __future__ import annotations

import os

import click

from jobqueue.cli._context import Context, pass_context
from jobqueue.cli._output import echo_json
from jobqueue.cli._params import json_option, option
from jobqueue.errors import PermissionDenied


@click.command()
@option("--dry-run", is_flag=True, help="Report what would be done; change nothing.")
@option("--batch", type=click.IntRange(1, 100_000), default=1000, show_default=True, help="Rows per step.")
@json_option()
@pass_context
def reconcile(ctx: Context, dry_run: bool, batch: int, as_json: bool) -> None:
    """Expire leases, dead-letter exhausted and expired jobs, archive and prune by retention.

    Safe to run from many hosts at once; meant for cron. Ends with alert detection; the
    JOBQUEUE_ALERT_* variables set the built-in alert rules first (a role that may not change
    them gets a warning on stderr, and the pass runs). Exit codes: 0 done; 69 database unreachable; 75 schema out of
    date; 77 not allowed; 78 bad configuration.
    """
    jq = ctx.queue()
    if not dry_run:
        try:
            for rule in jq.apply_alert_env(os.environ):
                click.echo(f"alert rule {rule['name']}: set from JOBQUEUE_ALERT_{rule['name'].upper()}", err=True)
        except PermissionDenied as exc:
            # maintenance must still run: a role that may not change shared settings says so and goes on
            click.echo(f"reconcile: JOBQUEUE_ALERT_* not applied ({exc}); run reconcile as jobqueue_admin", err=True)
    summary = jq.reconcile(batch=batch, dry_run=dry_run)
    if as_json:
        echo_json(summary)
        return
    counts = {k: v for k, v in summary.items() if isinstance(v, int) and not isinstance(v, bool) and v}
    parts = ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in sorted(counts.items()))
    if dry_run:
        click.echo(f"reconcile (dry run): {'would do: ' + parts if parts else 'nothing to do'}")
    else:
        click.echo(f"reconcile: {parts or 'nothing to do'}")
