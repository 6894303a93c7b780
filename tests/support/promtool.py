"""Prometheus' ``promtool`` (Debian's ``prometheus`` package), to check the shipped rules file.

``promtool_binary()`` finds it, installing the package with apt-get when it is missing and
this process is root (a fresh CI machine has none); when it cannot be had it raises
``PromtoolUnavailable`` with the exact reason, and the test skips with it.
"""

from __future__ import annotations

import shutil

from tests.support.apt import AptUnavailable, apt_install


class PromtoolUnavailable(Exception):
    """promtool cannot be had here; the message says exactly why."""


def promtool_binary() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    try:
        apt_install(["prometheus"], "promtool")
    except AptUnavailable as exc:
        raise PromtoolUnavailable(str(exc)) from None
    found = shutil.which("promtool")
    if not found:
        raise PromtoolUnavailable("`apt-get install prometheus` succeeded but did not provide promtool")
    return found
