"""The cli package's shape: imports point down, and starting things loads only what they need.

* ``import jobqueue`` (the library) loads neither the ``jobqueue`` command nor click or rich;
* ``jobqueue --help`` (every verb registered) loads neither the benchmark, the example
  tasks nor rich: those are imported by the verbs that use them, when they run;
* no module imports the cli package's root (``jobqueue/cli/__init__.py``, which registers
  every verb) except the entry point ``__main__``: a verb module that did would close a
  circle through the root, as ``cli.py`` and ``demo.py`` once did.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import jobqueue

PACKAGE = Path(jobqueue.__file__).parent
CLI = PACKAGE / "cli"


def loaded_modules(code: str) -> set[str]:
    """The modules a fresh interpreter has loaded after running ``code``."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=PACKAGE)
    return set(json.loads(proc.stdout.splitlines()[-1]))


def under(modules: set[str], *roots: str) -> list[str]:
    return sorted(m for m in modules if any(m == r or m.startswith(r + ".") for r in roots))


def test_importing_the_library_loads_no_cli_click_or_rich() -> None:
    assert under(loaded_modules("import jobqueue"), "jobqueue.cli", "click", "rich") == []


def test_cli_help_loads_neither_bench_nor_examples_nor_rich() -> None:
    code = (
        "import contextlib, io\n"
        "from jobqueue.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['--help'])"
    )
    modules = loaded_modules(code)
    assert "jobqueue.cli.demo" in modules  # every verb is registered ...
    assert under(modules, "jobqueue.bench", "jobqueue.examples", "rich") == []  # ... none ran


def imported_modules(path: Path) -> set[str]:
    """Absolute names of the modules a file imports (``from a import b`` counts a.b when it is
    a module of the package, else a)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                is_module = (PACKAGE.parent / sub.replace(".", "/")).with_suffix(".py").exists() or (
                    PACKAGE.parent / sub.replace(".", "/") / "__init__.py"
                ).exists()
                found.add(sub if is_module else node.module)
    return found


def test_nothing_imports_the_cli_root_but_the_entry_point() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path in (CLI / "__init__.py", PACKAGE / "__main__.py"):
            continue
        if "jobqueue.cli" in imported_modules(path):
            offenders.append(str(path.relative_to(PACKAGE.parent)))
    assert offenders == [], f"these import jobqueue.cli (the root that registers every verb): {offenders}"


def test_the_library_never_imports_the_cli() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if CLI in path.parents or path == PACKAGE / "__main__.py":
            continue
        if any(m == "jobqueue.cli" or m.startswith("jobqueue.cli.") for m in imported_modules(path)):
            offenders.append(str(path.relative_to(PACKAGE.parent)))
    assert offenders == [], f"library modules that import the cli package: {offenders}"
