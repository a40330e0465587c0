"""Headless Chromium for the browser tests: Debian's package, driven by Playwright
(which never downloads a browser of its own here)."""

import importlib.util
from pathlib import Path

import pytest

from tests.helpers import UNIT

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 10_000 * UNIT  # Playwright counts in milliseconds


def require_browser() -> None:
    """Fail, naming what to install, when Chromium or Playwright is missing."""
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append(f"{CHROMIUM} (the Debian package chromium)")
    if importlib.util.find_spec("playwright") is None:
        missing.append("the Python package playwright")
    if missing:
        pytest.fail(
            f"the browser tests need {' and '.join(missing)}: scripts/test installs them "
            "(apt-get install chromium; pip install playwright; never `playwright install`)",
            pytrace=False,
        )
