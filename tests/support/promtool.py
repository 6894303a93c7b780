"""Prometheus' ``promtool`` (Debian's ``prometheus`` package), to check the shipped rules file.

``promtool_binary()`` finds it, installing the package with apt-get when it is missing and
this process is root (a fresh CI machine has none); when it cannot be had it raises
``PromtoolUnavailable`` with the exact reason, and the test skips with it.
"""

from __future__ import annotations

import os
import shutil
import subprocess

APT_LOCK_TIMEOUT_S = 600


class PromtoolUnavailable(Exception):
    """promtool cannot be had here; the message says exactly why."""


def promtool_binary() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    if not shutil.which("apt-get"):
        raise PromtoolUnavailable("promtool is not installed and there is no apt-get to install it with")
    if os.geteuid() != 0:
        raise PromtoolUnavailable(
            "promtool is not installed and this process is not root, so it cannot run "
            "`apt-get install prometheus` (install the package, then run the tests again)"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    apt = ["apt-get", "-o", f"DPkg::Lock::Timeout={APT_LOCK_TIMEOUT_S}", "-q"]
    install = [*apt, "install", "-y", "--no-install-recommends", "prometheus"]
    proc = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:  # a stale package list: refresh it once and try again
        subprocess.run([*apt, "update"], env=env, capture_output=True, text=True, check=False)
        proc = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
    found = shutil.which("promtool")
    if not found:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise PromtoolUnavailable(f"`apt-get install prometheus` did not provide promtool: {' / '.join(tail)}")
    return found
