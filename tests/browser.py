"""Headless Debian Chromium through chromedriver: tests that look at a page as a person would.

Screenshots land in ``test-artifacts/`` at the project root (ignored by git; CI keeps them).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

ARTIFACTS_DIR = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMEDRIVER_CANDIDATES = ("/usr/bin/chromedriver",)

T = TypeVar("T")


def _first_existing(candidates: tuple[str, ...], name: str) -> str:
    for candidate in candidates:
        if Path(candidate).exists():
            return candidate
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(
            f"{name} is not installed: run `streamops install` (Debian packages chromium and "
            "chromium-driver)."
        )
    return found


@contextmanager
def chromium(width: int = 1400, height: int = 1000) -> Iterator[webdriver.Chrome]:
    """A headless Chromium window of the given size; closed (with its driver) on exit."""
    options = webdriver.ChromeOptions()
    options.binary_location = _first_existing(CHROMIUM_CANDIDATES, "chromium")
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in CI containers
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    service = Service(executable_path=_first_existing(CHROMEDRIVER_CANDIDATES, "chromedriver"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


def save_screenshot(driver: webdriver.Chrome, name: str) -> Path:
    """Save the current page as ``test-artifacts/<name>.png`` and return the path."""
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS_DIR / f"{name}.png"
    if not driver.save_screenshot(str(path)):
        raise RuntimeError(f"chromium could not save a screenshot to {path}")
    return path


def wait_for(
    driver: webdriver.Chrome,
    condition: Callable[[webdriver.Chrome], T],
    *,
    timeout_seconds: float,
    message: str,
) -> T:
    """Poll ``condition`` until it returns a truthy value (bounded by ``timeout_seconds``)."""
    return WebDriverWait(driver, timeout_seconds, poll_frequency=0.25).until(condition, message)
