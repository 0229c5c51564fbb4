"""Draw docs/console.png: a private mesh with a ledger and a policy change, a minute of mixed traffic, the console.

    .venv/bin/python scripts/console_screenshot.py [--out docs/console.png] [--seconds 60]

Needs Debian's chromium (/usr/bin/chromium) and Pillow (the image is cut to --height and reduced to 128 colours).
"""

from __future__ import annotations

import argparse
import pathlib
import random
import tempfile
import threading
import time

import httpx

from routemesh.common.policy import load_default_policy_text
from routemesh.mesh import Mesh, MeshLayout

PROMPTS = ["Write a Python function that merges two sorted lists", "Translate 'see you tomorrow' into German",
           "Summarize the plot of Hamlet in three sentences", "What is 17 * 23?",
           "Explain how TCP congestion control works, step by step, with the trade-offs",
           "Hi! How are you today?", "Prove that the square root of 2 is irrational",
           "Draft a polite email declining a meeting"]
MODELS = ["auto"] * 6 + ["cheap", "fast", "best", "chat", "flaky"]
TENANTS = ["acme", "globex", "initech", "umbrella"]


def traffic(gateway: str, stop: threading.Event) -> None:
    with httpx.Client(timeout=60) as client:
        while not stop.is_set():
            try:
                client.post(f"{gateway}/v1/chat/completions", json={
                    "model": random.choice(MODELS), "max_tokens": random.choice([64, 128, 256]),
                    "metadata": {"tenant": random.choice(TENANTS)},
                    "messages": [{"role": "user", "content": random.choice(PROMPTS)}]})
            except httpx.HTTPError:
                pass
            time.sleep(random.uniform(0.1, 0.6))


def shoot(gateway: str, out: pathlib.Path, seconds: float, height: int) -> None:
    from PIL import Image
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(f"{gateway}/console")
        page.wait_for_selector("#models tbody tr[data-model]")
        stop = threading.Event()
        senders = [threading.Thread(target=traffic, args=(gateway, stop)) for _ in range(4)]
        for sender in senders:
            sender.start()
        time.sleep(seconds)
        stop.set()
        for sender in senders:
            sender.join()
        page.wait_for_timeout(2500)
        page.click("#decisions tbody tr[data-decision]:nth-child(2)")
        page.wait_for_selector("#candidates tbody tr")
        page.evaluate("window.scrollTo(0, 0)")
        with tempfile.NamedTemporaryFile(suffix=".png") as full:
            page.screenshot(path=full.name, full_page=True)
            image = Image.open(full.name).convert("RGB")
        browser.close()
    image = image.crop((0, 0, image.width, min(height, image.height)))
    image.quantize(colors=128, dither=Image.Dither.NONE).save(out, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("docs/console.png"))
    parser.add_argument("--seconds", type=float, default=60.0, help="how long traffic runs before the picture")
    parser.add_argument("--height", type=int, default=1440, help="pixels of the page kept, from the top")
    args = parser.parse_args()
    folder = pathlib.Path(tempfile.mkdtemp(prefix="routemesh-console-"))
    text = load_default_policy_text()
    policy = folder / "policy.yaml"
    policy.write_text(text)
    mesh = Mesh(MeshLayout.free(), policy=str(policy), sim_time_scale=0.3, log_dir=folder / "logs",
                extra_env={"ROUTEMESH_LEDGER_URL": f"sqlite:///{folder}/ledger.db"})
    mesh.start()
    try:
        policy.write_text(text.replace("input_per_mtok: 0.10", "input_per_mtok: 0.08", 1))  # a diff to show
        shoot(f"http://{mesh.layout.address('gateway')}", args.out, args.seconds, args.height)
    finally:
        mesh.stop()
    print(f"{args.out}: {args.out.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
