"""`jobqueue demo`: the whole product in under a minute, on the default database.

Migrate; enqueue a few thousand jobs of the example tasks (``jobqueue.examples``) in one
``enqueue_many``: mixed priorities, some delayed, some failing transiently then succeeding,
some failing for good; run two real worker processes while a progress bar reads
``stats()``; print the stats and the dead letters with their reasons; redrive one whose
cause has gone away and show it complete. Everything goes through the library, as a user's
code would. The demo owns queue ``demo`` and clears it first, so it can run again.

It prints with the same tables as ``jobqueue stats`` and ``jobqueue dlq list`` (imported
from those verbs' modules), which is why it lives in the cli package.
"""

from __future__ import annotations

import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import click

from jobqueue import migrations
from jobqueue.cli._context import Context, pass_context
from jobqueue.cli._output import cell, console, print_table
from jobqueue.cli._params import option
from jobqueue.cli.db import probe
from jobqueue.cli.dlq import DLQ_COLUMNS, dlq_row
from jobqueue.cli.observe import stats_rows, stats_table
from jobqueue.client import JobQueue
from jobqueue.config import DatabaseTarget, redact
from jobqueue.errors import JobQueueError
from jobqueue.models import TERMINAL_STATES, JobState, Priority
from jobqueue.sql import query

if TYPE_CHECKING:
    from rich.console import Console

DEMO_QUEUE = "demo"
DEFAULT_JOBS = 3000
DEFAULT_WORKERS = 2
DEFAULT_CONCURRENCY = 16
#: Give up waiting for the jobs after this long (the demo normally needs 10-20 s).
RUN_TIMEOUT_S = 90.0
#: The simulated partner outage: longer than the retry budget of the job caught in it.
OUTAGE_S = 5.0
DELAY_RANGE_S = (1.0, 3.0)
DELAYED_FRACTION = 0.1
PROGRESS_REFRESH_S = 0.2
#: Below this many columns the progress line is shortened to fit (an 80-column terminal).
NARROW_WIDTH = 120
WORKER_STOP_TIMEOUT_S = 30.0
LIVE_STATES = (JobState.PENDING.value, JobState.RETRYING.value, JobState.PROCESSING.value)
PRIORITY_WEIGHTS = {Priority.LOW: 2, Priority.NORMAL: 5, Priority.HIGH: 2, Priority.CRITICAL: 1}


@click.command()
@option(
    "--jobs",
    "job_count",
    type=click.IntRange(20, 100_000),
    default=DEFAULT_JOBS,
    show_default=True,
    help="Jobs to enqueue.",
)
@option(
    "--workers",
    "worker_count",
    type=click.IntRange(1, 16),
    default=DEFAULT_WORKERS,
    show_default=True,
    help="Worker processes.",
)
@option(
    "--concurrency",
    type=click.IntRange(1, 256),
    default=DEFAULT_CONCURRENCY,
    show_default=True,
    help="Jobs at once per worker.",
)
@pass_context
def demo(ctx: Context, job_count: int, worker_count: int, concurrency: int) -> None:
    """Show the product in under a minute: enqueue, work, retry, dead-letter, redrive.

    Uses the database as every command does (the embedded PostgreSQL by default) and its
    own queue `demo`, cleared first.
    """
    from jobqueue.db import REQUIRED_SCHEMA_VERSION

    target = ctx.target()
    click.echo(f"database: {target.display}")
    migrations.upgrade(target)
    info = probe(target)
    version = str(info.get("server_version") or "?").split()[0]  # "15.20", not "15.20 (Debian ...)"
    schema = info.get("schema_version")
    click.echo(
        f"server: PostgreSQL {version}, jobqueue schema {schema} (this jobqueue needs {REQUIRED_SCHEMA_VERSION})"
    )
    code = run(target, jobs=job_count, workers=worker_count, concurrency=concurrency)
    sys.exit(code)


@dataclass
class Plan:
    """The jobs to enqueue, and what the demo expects of them."""

    jobs: list[dict[str, Any]] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)
    outage_endpoint: str = "/partners/inventory-sync"
    down_until: float = 0.0


def plan(total: int, rng: random.Random, now: float) -> Plan:
    """A deterministic mix of ``total`` jobs (at least 20)."""
    from jobqueue import examples  # when the demo runs, not whenever the CLI starts: it registers tasks

    result = Plan(down_until=now + OUTAGE_S)
    n_charge = max(6, total * 7 // 100)
    n_flaky = max(6, total * 13 // 100)
    n_resize = total - n_charge - n_flaky
    priorities = list(PRIORITY_WEIGHTS)
    weights = list(PRIORITY_WEIGHTS.values())

    def add(task: Any, kind: str, payload: dict[str, Any], **options: Any) -> None:
        job = {**task.options.values, "type": task.name, "payload": payload, "queue": DEMO_QUEUE, **options}
        job.setdefault("priority", int(rng.choices(priorities, weights)[0]))
        result.jobs.append(job)
        result.kinds[kind] += 1

    for i in range(n_resize):
        delay = rng.uniform(*DELAY_RANGE_S) if rng.random() < DELAYED_FRACTION else None
        payload = {
            "image": f"photos/img_{i:05d}.png",
            "width": rng.choice([320, 640, 1280]),
            "work_ms": rng.uniform(2, 10),
        }
        add(examples.resize_image, "delayed" if delay else "quick", payload, delay=delay)
    for i in range(n_flaky - 1):
        add(examples.flaky_api, "flaky", {"endpoint": f"/partners/orders/{i}", "fail_attempts": rng.choice([1, 2])})
    # Caught in an outage longer than its two attempts: dead-lettered, then redriven by the demo.
    add(
        examples.flaky_api,
        "outage",
        {"endpoint": result.outage_endpoint, "fail_attempts": 0, "down_until": result.down_until},
        max_attempts=2,
        priority=int(Priority.CRITICAL),
    )
    for i in range(n_charge):
        card, amount = "4242424242424242", rng.randint(100, 50_000)
        kind = "charged"
        if i < 3:
            card, kind = "4000000000000002", "declined"
        elif i < 5:
            amount, kind = 0, "invalid"
        add(examples.charge_card, kind, {"order_id": f"ord-{i:04d}", "card": card, "amount_cents": amount})
    rng.shuffle(result.jobs)
    return result


def run(
    target: DatabaseTarget,
    *,
    jobs: int = DEFAULT_JOBS,
    workers: int = DEFAULT_WORKERS,
    concurrency: int = DEFAULT_CONCURRENCY,
    out: Console | None = None,
) -> int:
    """Run the demo against ``target`` (already migrated); returns the exit code."""
    from jobqueue import examples

    out = out or console()
    started = time.monotonic()
    jq = examples.jq
    jq.use_database(target.url)
    procs: list[subprocess.Popen[bytes]] = []
    log = tempfile.NamedTemporaryFile(prefix="jobqueue-demo-workers-", suffix=".log", delete=False)  # noqa: SIM115
    ok = False
    try:
        cleared = clean(jq)
        if cleared:
            out.print(f"cleared the previous demo: {cleared} jobs cancelled or purged")
        the_plan = plan(jobs, random.Random(42), time.time())
        t0 = time.monotonic()
        ids = jq.enqueue_many(the_plan.jobs)
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(the_plan.kinds.items(), key=lambda kv: -kv[1]))
        out.print(
            f"\n[bold]enqueued {len(ids)} jobs[/] on queue {DEMO_QUEUE!r} in {time.monotonic() - t0:.2f}s "
            f"with one enqueue_many: {kinds}"
        )
        out.print(f"starting {workers} workers, each:")
        out.print(
            f"  {command(target)} worker --app jobqueue.examples:jq --queues {DEMO_QUEUE}", markup=False, soft_wrap=True
        )
        procs = [start_worker(target.url, concurrency, log) for _ in range(workers)]
        if not watch(jq, out, len(ids), procs):
            return 1
        out.print()
        window = timedelta(minutes=5)
        out.print(stats_table([r for r in stats_rows(jq, window) if r["queue"] == DEMO_QUEUE], window))
        dead = jq.dead_letters(queue=DEMO_QUEUE, limit=100)
        out.print()
        print_table(f"dead letters ({len(dead)})", DLQ_COLUMNS, [dlq_row(r) for r in dead], out)
        outage = next((r for r in dead if r["payload"].get("endpoint") == the_plan.outage_endpoint), None)
        if outage is None:
            out.print("[red]the outage job is not in the dead-letter queue[/]")
            return 1
        ok = redrive_one(jq, out, int(outage["id"]), the_plan.down_until, command(target))
    except JobQueueError as exc:
        out.print(f"[red]demo failed: {exc}[/]")
        return exc.exit_code
    finally:
        stop_workers(procs)
        log.close()
        if ok:
            os.unlink(log.name)
        elif procs:
            out.print(f"worker logs: {log.name}")
        jq.close()
    out.print(f"\n[bold]demo finished in {time.monotonic() - started:.1f}s.[/] Next, try:")
    for line in next_commands(command(target)):
        out.print(f"  {line}", markup=False, soft_wrap=True)  # never split a command to copy
    dashboard_hint(target, out)
    return 0


#: Where the demo's dashboard hint tells ``jobqueue serve`` to listen.
DASHBOARD_PORT = 8000


def dashboard_hint(target: DatabaseTarget, out: Console) -> None:
    """End with how to open the dashboard on the demo's data: the ``jobqueue serve`` command
    (logging in as jobqueue_web) and an operator token made for it, printed once."""
    try:
        import fastapi  # noqa: F401
    except ImportError:
        out.print("\nThe dashboard needs the web extra: pip install 'jobqueue[web]', then run the demo again.")
        return
    jq = JobQueue(target.url)
    try:
        if not web_login_ready(jq):
            out.print(
                "\nTo see this in the dashboard, let jobqueue_web log in (docs/web.md, deployment) "
                "and run `jobqueue serve`."
            )
            return
        made = jq.create_token("operator", expires_in=timedelta(days=1), name="demo dashboard")
    except JobQueueError as exc:
        out.print(f"\n(no dashboard token: {exc})")
        return
    finally:
        jq.close()
    web_url = urlunsplit(urlsplit(target.url)._replace(netloc=_with_user(urlsplit(target.url).netloc, "jobqueue_web")))
    serve = f"{command(target).split(' --database-url ')[0]} --database-url {shlex.quote(web_url)}"
    out.print("\n[bold]Open the dashboard on this data:[/]")
    out.print(f"  {serve} serve --port {DASHBOARD_PORT}", markup=False, soft_wrap=True)
    out.print(f"  then open http://127.0.0.1:{DASHBOARD_PORT}/ and sign in with (valid 1 day):", soft_wrap=True)
    out.print(f"  {made['token']}", markup=False, soft_wrap=True)


def web_login_ready(jq: JobQueue) -> bool:
    """Whether jobqueue_web may log in; on a superuser connection (the embedded server) the
    demo lets it, as `jobqueue serve` needs."""
    with jq.connection() as conn:
        row = conn.execute(query("demo_web_login")).fetchone()
        if row is None or row["web_exists"] is not True:
            return False
        if row["web_can_login"]:
            return True
        if not row["is_superuser"]:
            return False
        conn.execute(query("demo_allow_web_login"))
        return True


def _with_user(netloc: str, user: str) -> str:
    host = netloc.rpartition("@")[2]
    return f"{user}@{host}"


def command(target: DatabaseTarget) -> str:
    """How to run this jobqueue from the user's shell, to copy and paste: ``jobqueue`` when
    that is the one on PATH, else its path (``.venv/bin/jobqueue`` from the project folder);
    with the ``--database-url`` the demo was given (password hidden)."""
    script = Path(sys.executable).parent / "jobqueue"
    if not script.exists():
        name = f"{_shown_path(Path(sys.executable))} -m jobqueue"
    else:
        on_path = shutil.which("jobqueue")
        name = "jobqueue" if on_path and Path(on_path).resolve() == script.resolve() else _shown_path(script)
    if target.source == "--database-url":
        name += f" --database-url {shlex.quote(redact(target.url))}"
    return name


def _shown_path(path: Path) -> str:
    try:
        return str(path.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def next_commands(jobqueue: str) -> list[str]:
    """What to try after the demo: one command a line, each with what it shows (# comment)."""
    pairs = [
        ("stats", "the queues' figures"),
        (f"jobs list -q {DEMO_QUEUE}", "the demo's jobs, newest first"),
        (f"dlq list -q {DEMO_QUEUE}", "its dead letters, and why"),
        ("--help", "every command"),
    ]
    width = max(len(verb) for verb, _ in pairs)
    return [f"{jobqueue} {verb:<{width}}  # {what}" for verb, what in pairs]


def clean(jq: JobQueue) -> int:
    """Cancel the live jobs and purge the dead letters a previous demo left on the demo queue."""
    if any(q["name"] == DEMO_QUEUE and q.get("paused") for q in jq.queues()):
        jq.resume(DEMO_QUEUE)
    count = 0
    before: int | None = None
    while True:
        page = jq.list(states=LIVE_STATES, queue=DEMO_QUEUE, before_id=before, limit=1000)
        for job in page:
            jq.cancel(job.id, "cleared by a new jobqueue demo")
        count += len(page)
        if len(page) < 1000:
            break
        before = page[-1].id
    while True:
        purged = jq.purge_dead_letters({"queue": DEMO_QUEUE}, limit=1000)
        count += purged
        if purged < 1000:
            return count


def start_worker(url: str, concurrency: int, log: Any) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "jobqueue",
        "--database-url",
        url,
        "worker",
        "--app",
        "jobqueue.examples:jq",
        "--queues",
        DEMO_QUEUE,
        "--concurrency",
        str(concurrency),
        "--poll-interval",
        "0.5",
        "--reconcile-interval",
        "1",
        "--log-level",
        "WARNING",
    ]
    return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log)


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM (a graceful stop: running jobs finish), then wait; kill only a stuck one."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=WORKER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def live_counts(jq: JobQueue) -> dict[str, int]:
    row = next((r for r in jq.stats() if r["queue"] == DEMO_QUEUE), {})
    keys = ("pending", "scheduled", "retrying", "processing", "dead_letters")
    return {k: int(row.get(k) or 0) for k in keys}


def watch(jq: JobQueue, out: Console, total: int, procs: list[subprocess.Popen[bytes]]) -> bool:
    """A progress bar over stats() until no demo job is waiting or running."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    deadline = time.monotonic() + RUN_TIMEOUT_S
    narrow = out.width < NARROW_WIDTH
    columns = (
        SpinnerColumn(),
        TextColumn("[bold]jobs finished"),
        BarColumn(bar_width=10 if narrow else 40),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[detail]}"),
    )
    with Progress(*columns, console=out) as progress:
        task = progress.add_task("jobs", total=total, detail="")
        while True:
            counts = live_counts(jq)
            waiting = counts["pending"] + counts["scheduled"] + counts["retrying"] + counts["processing"]
            detail = (
                f"waiting {waiting - counts['processing']}  running {counts['processing']}  "
                f"dead {counts['dead_letters']}"
                if narrow
                else f"pending {counts['pending']}  scheduled {counts['scheduled']}  retrying {counts['retrying']}  "
                f"running {counts['processing']}  dead {counts['dead_letters']}"
            )
            progress.update(task, completed=max(total - waiting, 0), detail=detail)
            if waiting == 0:
                return True
            if all(p.poll() is not None for p in procs):
                out.print(f"[red]the workers exited (codes {[p.returncode for p in procs]})[/]")
                return False
            if time.monotonic() > deadline:
                out.print(f"[red]gave up after {RUN_TIMEOUT_S:g}s with {waiting} jobs left[/]")
                return False
            time.sleep(PROGRESS_REFRESH_S)


def redrive_one(jq: JobQueue, out: Console, job_id: int, down_until: float, jobqueue: str = "jobqueue") -> bool:
    """Redrive the job the outage dead-lettered, once the outage is over; show it complete."""
    job = jq.get(job_id)
    out.print(
        f"\njob {job_id} ({job.type}) is a dead letter: {job.row.get('reason')} after "
        f"{job.row.get('attempt')} attempts while the partner API was down."
    )
    wait = down_until - time.time()
    if wait > 0:
        out.print(f"waiting {wait:.1f}s for the partner API to come back ...")
        time.sleep(wait)
    out.print("the partner API is back:")
    out.print(f"  {jobqueue} dlq redrive {job_id}", markup=False, soft_wrap=True, style="bold")
    jq.redrive({"ids": [job_id]}, limit=1)
    deadline = time.monotonic() + 30
    while job.state not in TERMINAL_STATES or job.state == JobState.DEAD_LETTER:
        if time.monotonic() > deadline:
            out.print(f"[red]job {job_id} did not finish after the redrive (state {job.state.value})[/]")
            return False
        time.sleep(0.1)
        job = jq.get(job_id)
    errors = job.row.get("errors") or []
    out.print(
        f"redriven job {job_id}: [bold]{job.state.value}[/] on attempt {job.row.get('attempt')}, "
        f"output {cell(job.row.get('output'))}; its {len(errors)} earlier failed attempts stay in its history"
    )
    return job.state == JobState.COMPLETED
