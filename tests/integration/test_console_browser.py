"""The console in a real browser (Debian's chromium, Playwright) against a real mesh: it loads with the policy's
models, updates by itself after traffic, drills into a decision's Explain, and renders a hostile tenant as text.

Screenshots go to $ROUTEMESH_TEST_ARTIFACTS (default test-artifacts/).
"""

from __future__ import annotations

import re

import httpx
import pytest

from routemesh.common.policy import parse_policy
from tests.integration.browser import artifacts_dir, chromium_page

pytestmark = pytest.mark.integration
XSS = "<img src=x onerror=alert(1)>"


def chat(gateway: str, tenant: str, text: str) -> str:
    """One chat through the gateway; its decision id."""
    reply = httpx.post(f"{gateway}/v1/chat/completions", timeout=30, json={
        "model": "auto", "max_tokens": 64, "metadata": {"tenant": tenant},
        "messages": [{"role": "user", "content": text}]})
    reply.raise_for_status()
    return reply.json()["id"].removeprefix("chatcmpl-")


def test_the_console_shows_the_mesh_updates_by_itself_and_explains_a_decision(mesh, policy_file) -> None:
    gateway = f"http://{mesh.layout.address('gateway')}"
    models = list(parse_policy(policy_file.read_text()).models)
    shots = artifacts_dir()
    with chromium_page() as (page, dialogs):
        page.goto(f"{gateway}/console")
        for model in models:
            page.wait_for_selector(f'#models tbody tr[data-model="{model}"]')
        page.wait_for_selector("#live.live")
        page.screenshot(path=str(shots / "console-1-loaded.png"))
        page.evaluate("window.__sameDocument = true")

        ids = [chat(gateway, XSS, "Write a Python function that reverses a list"),
                chat(gateway, XSS, "Translate 'good morning' into French"),
                chat(gateway, "acme", "What are your opening hours on Sunday?")]
        # No reload: the page polls, and the new requests appear in the recent decisions on their own.
        for decision_id in ids:
            page.wait_for_selector(f'#decisions tr[data-decision="{decision_id}"]', timeout=10_000)
        assert page.evaluate("window.__sameDocument") is True, "the page reloaded"
        page.wait_for_selector('#routes tbody tr[data-route="auto"]')
        page.screenshot(path=str(shots / "console-2-after-traffic.png"))

        # The hostile tenant is text in a cell, never markup: no <img> made, no dialog opened.
        hostile = page.locator(f'#decisions tr[data-decision="{ids[0]}"] td').nth(6)
        assert hostile.inner_text() == XSS
        assert page.locator("#decisions img, #explain img").count() == 0

        page.click(f'#decisions tr[data-decision="{ids[0]}"]')
        page.wait_for_selector("#candidates tbody tr")
        assert page.inner_text("#explain-id") == ids[0]
        chosen = page.locator("#candidates tr.chosen")
        assert chosen.count() == 1
        cells = chosen.locator("td").all_inner_texts()
        assert re.fullmatch(r"\d\.\d{3}", cells[2]), cells  # the score
        assert page.locator("#candidates tbody tr").count() >= 2
        assert "Why:" in page.inner_text("#explain [data-testid=reason]")
        assert XSS in page.inner_text("#explain-body")
        page.screenshot(path=str(shots / "console-3-explain.png"), full_page=True)
    assert dialogs == [], f"the page opened dialogs: {dialogs}"
