"""A real headless Chromium for the browser tests (Debian's ``chromium`` and ``chromium-driver``).

``chromium_paths()`` finds ``/usr/bin/chromium`` and ``/usr/bin/chromedriver``, installing the
two Debian packages with apt-get when they are missing and this process is root (a fresh CI
machine has neither); when they cannot be had it raises ``ChromiumUnavailable`` with the
exact reason, and the browser tests skip with it.

``new_driver(width, height)`` starts a Selenium WebDriver on that Chromium, headless, with
the window at the given size (1280x800 by default; 390x844 is a phone).
"""

from __future__ import annotations

import os
import tempfile
from typing import TYPE_CHECKING

from tests.support.apt import AptUnavailable, apt_install

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PACKAGES = ("chromium", "chromium-driver")


class ChromiumUnavailable(Exception):
    """Chromium or its driver cannot be had here; the message says exactly why."""


_found: tuple[str, str] | None = None
_failure: str | None = None


def chromium_paths() -> tuple[str, str]:
    """(chromium, chromedriver), installed with apt-get when missing (once per process)."""
    global _found, _failure
    if _found is not None:
        return _found
    if _failure is not None:
        raise ChromiumUnavailable(_failure)
    try:
        _found = _locate() or _install()
    except ChromiumUnavailable as exc:
        _failure = str(exc)
        raise
    return _found


def _locate() -> tuple[str, str] | None:
    if os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK):
        return CHROMIUM, CHROMEDRIVER
    return None


def _install() -> tuple[str, str]:
    try:
        apt_install(PACKAGES, "chromium/chromium-driver")
    except AptUnavailable as exc:
        raise ChromiumUnavailable(str(exc)) from None
    found = _locate()
    if found is None:
        raise ChromiumUnavailable(f"`apt-get install {' '.join(PACKAGES)}` did not give {CHROMIUM} and {CHROMEDRIVER}")
    return found


def new_driver(width: int = 1280, height: int = 800) -> WebDriver:
    """A headless Chromium WebDriver with the window at width x height CSS pixels."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:  # pragma: no cover - the dev extra installs it
        raise ChromiumUnavailable(f"selenium is not installed ({exc}); `make install` adds it") from exc
    chromium, chromedriver = chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--hide-scrollbars", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={tempfile.mkdtemp(prefix='jq-chromium-')}")
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    driver.set_window_size(width, height)
    return driver
