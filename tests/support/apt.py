"""Debian packages a test needs, installed with apt-get when they are missing.

A fresh CI machine has none of PgBouncer, Chromium or promtool; CI runs as root, so the
tests install what they need. ``apt_install(packages, what)`` installs the packages or
raises ``AptUnavailable`` saying exactly why not (no apt-get, not root, the install's own
error), and each caller's test skips with that message.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence

#: apt waits this long for the dpkg lock (others on the machine may hold it).
APT_LOCK_TIMEOUT_S = 600


class AptUnavailable(Exception):
    """The packages cannot be installed here; the message says exactly why."""


def apt_install(packages: Sequence[str], what: str) -> None:
    """Install ``packages`` with apt-get (as root); ``what`` names the missing thing in errors."""
    names = " ".join(packages)
    if not shutil.which("apt-get"):
        raise AptUnavailable(f"{what} is not installed and there is no apt-get to install it with")
    if os.geteuid() != 0:
        raise AptUnavailable(
            f"{what} is not installed and this process is not root, so it cannot run "
            f"`apt-get install {names}` (install it, then run the tests again)"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    apt = ["apt-get", "-o", f"DPkg::Lock::Timeout={APT_LOCK_TIMEOUT_S}", "-q"]
    install = [*apt, "install", "-y", "--no-install-recommends", *packages]
    proc = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:  # a stale package list: refresh it once and try again
        subprocess.run([*apt, "update"], env=env, capture_output=True, text=True, check=False)
        proc = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = " / ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise AptUnavailable(f"`apt-get install {names}` failed (exit {proc.returncode}): {tail}")
