"""A real browser for the console's tests: Debian's chromium driven by Playwright, screenshots as artefacts."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

CHROMIUM = "/usr/bin/chromium"
ROOT = pathlib.Path(__file__).resolve().parents[2]


def artifacts_dir() -> pathlib.Path:
    """Where screenshots go: $ROUTEMESH_TEST_ARTIFACTS, else test-artifacts/ in the repository (git-ignored)."""
    path = pathlib.Path(os.environ.get("ROUTEMESH_TEST_ARTIFACTS") or ROOT / "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def chromium_page(width: int = 1280, height: int = 800) -> Iterator[tuple[object, list[str]]]:
    """A page of a headless chromium, and the dialogs (alert, confirm...) it tried to open: none should."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: the console's browser tests need Debian's chromium; .ci/run installs it "
                    "(apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    dialogs: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(15_000)

            def on_dialog(dialog) -> None:
                dialogs.append(f"{dialog.type}: {dialog.message}")
                dialog.dismiss()

            page.on("dialog", on_dialog)
            yield page, dialogs
        finally:
            browser.close()
