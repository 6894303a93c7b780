"""The package's import structure: no circles, no upward imports, the bench kept apart.

The graph is read from the modules' own ``import`` statements (tests/support/imports.py):
nothing is imported to build it, so a circle that would only bite in some import order is
still seen.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import jobqueue
from tests.support.imports import Edge, cycles, edges, modules

PACKAGE_DIR = Path(jobqueue.__file__).resolve().parent
#: Copied into the wheel only (pyproject.toml force-include); not modules of the package.
NOT_MODULES = ("_sql", "_alembic")

#: Layers, lowest first, in the order a job travels: a module imports (at import time, or
#: for types) only from its own layer or those below. A name here covers its submodules.
LAYERS: tuple[tuple[str, ...], ...] = (
    # the floor: errors, values, configuration, the database and the schema's resources
    (
        "jobqueue.errors",
        "jobqueue.models",
        "jobqueue.config",
        "jobqueue.embedded",
        "jobqueue.logs",
        "jobqueue.retry",
        "jobqueue.migrations",
        "jobqueue.sql",
        "jobqueue.db",
        "jobqueue.pool",
        "jobqueue.tracing",  # OpenTelemetry spans (optional extra); imports nothing of jobqueue
    ),
    # the library: tasks, periodic schedules, then the client that enqueues them, the LISTEN loop
    # (the built-in notify task and its channels come before the client, which registers it)
    (
        "jobqueue.tasks",
        "jobqueue.params",
        "jobqueue.schedules",
        "jobqueue.alerts.channels",
        "jobqueue.alerts.smtp",
        "jobqueue.alerts.slack",
        "jobqueue.alerts.pagerduty",
        "jobqueue.alerts.webhook",
        "jobqueue.alerts.notify",
        "jobqueue.alerting",
        "jobqueue.client",
        "jobqueue.listener",
    ),
    # what runs beside a database: workers (riding out outages, keeping leases, turning
    # outcomes into acknowledgements, reporting), the Redis mirror, the Prometheus exporter
    (
        "jobqueue.outage",
        "jobqueue.outcome",
        "jobqueue.lease",
        "jobqueue.reports",
        "jobqueue.handlers",  # the worker's handler threads
        "jobqueue.alerts.claiming",  # the worker's claims of the alert notifications' queue
        "jobqueue.round",  # the worker's acknowledge-and-claim round, one libpq pipeline
        "jobqueue.worker",
        "jobqueue.mirror",
        "jobqueue.exporter",
    ),
    # interfaces over the library: the package facade, the CLI (cli/, its demo included), the bench
    (
        "jobqueue",
        "jobqueue.__main__",
        "jobqueue.tables",
        "jobqueue.cli",
        "jobqueue.examples",
        "jobqueue.bench",
        "jobqueue.web",
    ),
)

#: Imports inside a function that point up a layer, each with why it is there.
LAZY_UPWARD = {
    ("jobqueue.client", "jobqueue.worker"): "JobQueue.run_worker, the convenience the library keeps",
}

#: Pairs allowed to import each other: none since the cli/ package split (issue 15 item 1)
#: removed cli.py <-> demo.py and cli.py <-> cli_schedules.py. Add one only with a reason.
ALLOWED_PAIRS: set[frozenset[str]] = set()


def package_edges() -> list[Edge]:
    return edges(modules(PACKAGE_DIR, "jobqueue", skip=NOT_MODULES))


def layer(module: str) -> int:
    best, depth = None, -1
    for i, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and name.count(".") > depth:
                best, depth = i, name.count(".")
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS in {__file__}")
    return best


def allowed(edge: Edge) -> bool:
    return frozenset({edge.source, edge.target}) in ALLOWED_PAIRS


def test_no_import_circles() -> None:
    """Module-level imports (not TYPE_CHECKING blocks, not function-local imports) form no circle."""
    runtime = [e for e in package_edges() if e.kind == "runtime" and not allowed(e)]
    found = cycles(runtime)
    detail = [sorted({str(e) for e in runtime if e.source in c and e.target in c}) for c in found]
    assert found == [], f"import circles: {detail}"


def test_no_circles_even_through_types_and_lazy_imports() -> None:
    """Counting TYPE_CHECKING and function-local imports too, the only circles are the named ones."""
    every = [e for e in package_edges() if not allowed(e) and (e.source, e.target) not in LAZY_UPWARD]
    found = cycles(every)
    detail = [sorted({str(e) for e in every if e.source in c and e.target in c}) for c in found]
    assert found == [], f"import circles: {detail}"


def test_no_upward_imports() -> None:
    every = package_edges()
    for module in {e.source for e in every} | {e.target for e in every}:
        layer(module)  # every module has a place in the map
    upward = [
        str(e)
        for e in every
        if layer(e.target) > layer(e.source) and not (e.kind == "lazy" and (e.source, e.target) in LAZY_UPWARD)
    ]
    assert upward == [], f"imports from a higher layer (see LAYERS): {upward}"


def test_every_named_exception_is_still_needed() -> None:
    """An exception whose import is gone is deleted, so it cannot hide a new one."""
    every = package_edges()
    pairs = {(e.source, e.target) for e in every}
    assert all(pair in pairs for pair in LAZY_UPWARD), LAZY_UPWARD
    assert all(any(frozenset({s, t}) == pair for s, t in pairs) for pair in ALLOWED_PAIRS), ALLOWED_PAIRS


def test_the_graph_sees_a_circle_and_ignores_types_and_lazy_imports(tmp_path: Path) -> None:
    """The reader itself: a circle is found; TYPE_CHECKING and function-local imports are not runtime."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "from pkg.a import A\n",
        "a.py": "from pkg import b\nA = 1\n",
        "b.py": "from .sub import c\n",
        "sub/__init__.py": "",
        "sub/c.py": "import pkg.a\n",  # closes a -> b -> sub.c -> a
        "d.py": """
            from typing import TYPE_CHECKING
            if TYPE_CHECKING:
                from pkg.e import E
            def f() -> None:
                from pkg import e
        """,
        "e.py": "from pkg.d import f\nE = 1\n",
    }
    for name, text in files.items():
        (pkg / name).write_text(textwrap.dedent(text))
    graph = edges(modules(pkg, "pkg"))
    runtime = [e for e in graph if e.kind == "runtime"]
    assert cycles(runtime) == [["pkg.a", "pkg.b", "pkg.sub.c"]]
    kinds = {(e.source, e.target): e.kind for e in graph}
    assert kinds[("pkg.d", "pkg.e")] in ("typing", "lazy")
    assert {e.kind for e in graph if e.source == "pkg.d"} == {"typing", "lazy"}
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c"], ["pkg.d", "pkg.e"]]


LOADED = """
import sys
{imports}
print(",".join(sorted(m for m in sys.modules if m == "jobqueue.bench" or m.startswith("jobqueue.bench."))))
"""


@pytest.mark.parametrize(
    "imports",
    [
        "import jobqueue",
        "import jobqueue.worker",
        "import jobqueue.cli",
        # what `jobqueue worker` loads before it runs: the CLI and the worker command's own imports
        "import jobqueue.cli, jobqueue.worker, jobqueue.logs, jobqueue.client",
    ],
)
def test_the_runtime_never_imports_the_bench(imports: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", LOADED.format(imports=imports)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert proc.stdout.strip() == "", f"{imports!r} loaded {proc.stdout.strip()}"
    listed = [line for line in proc.stderr.splitlines() if "jobqueue.bench" in line]
    assert listed == [], listed
