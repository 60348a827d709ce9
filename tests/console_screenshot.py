"""``make screenshot``: the README's pictures of the console, from the demo's synthetic data.

On a private broker and Redis (nothing of a running stack is touched): the demo's log, ending
now, backfilled; a two-tower trained and promoted as ``kapparec demo`` trains it; the stream
job, the server with its A/B experiment and the console; simulated users for a while; then a
real Chromium opens a heavy user's page, clicks ``complete`` on the first recommendation and
takes the page with the measured delay, and the trending page.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

from infra.private import private_stack
from kapparec.demo import DEMO_LOG
from tests import browser
from tests.console_stack import KAPPAREC, World, fill_store, start_live_console

SIMULATED_S = 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs"), help="folder of the PNGs (default docs)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch, private_stack() as stack:
        _shoot(stack.bootstrap, stack.redis_url, Path(scratch), args.out)


def _shoot(bootstrap: str, redis_url: str, work: Path, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    world = World(**DEMO_LOG)
    log = fill_store(bootstrap, redis_url, world)
    models = work / "models"
    subprocess.run([KAPPAREC, "train", "--epochs", "3", "--search-space", "small", "--models-dir", str(models),
                    "--bootstrap", bootstrap], check=True)
    live = start_live_console(bootstrap, redis_url, work, world, models, log)
    try:
        live.simulate(SIMULATED_S, users=200)
        with sync_playwright() as playwright:
            chromium = browser.launch(playwright)
            page = chromium.new_context(viewport=browser.LAPTOP).new_page()
            page.goto(f"{live.consoles['events']}/users/u1")
            page.locator("#recommendations tbody tr").first.get_by_role("button", name="complete").click()
            page.wait_for_selector("#event-delay", timeout=15_000)
            page.screenshot(path=str(out / "console.png"), full_page=True)
            page.goto(live.consoles["events"] + "/")
            page.screenshot(path=str(out / "console-trending.png"), full_page=True)
            chromium.close()
    finally:
        live.stop()
    print(f"wrote {out / 'console.png'} and {out / 'console-trending.png'}")


if __name__ == "__main__":
    main()
