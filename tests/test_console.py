"""The web console against a live stack (a real ``kapparec stream`` job, ``kapparec serve`` and
``kapparec console`` processes), driven by a real headless Chromium.

Screenshots of every page, at a laptop's width and a phone's, are saved under
``test-artifacts/console`` (or ``$KAPPAREC_ARTIFACTS/console``).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from kapparec.v1 import recommender_pb2 as pb
from serving.scrape import LatencyWindow
from tests import browser
from infra.services import free_port
from tests.console_stack import KAPPAREC, start_live_console, wait_for_http
from tests.logs import empty_log
from tests.serving_helpers import TOKEN

ARTIFACTS = Path(os.environ.get("KAPPAREC_ARTIFACTS") or Path(__file__).parent.parent / "test-artifacts") / "console"
AUTH = (("authorization", f"Bearer {TOKEN}"),)


@pytest.fixture(scope="module")
def live(session_stack, tmp_path_factory):
    empty_log(session_stack.bootstrap)
    session_stack.redis().flushall()
    console = start_live_console(session_stack.bootstrap, session_stack.redis_url, tmp_path_factory.mktemp("console"))
    yield console
    console.stop()


@pytest.fixture(scope="module")
def chromium():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        launched = browser.launch(playwright)
        yield launched
        launched.close()


@pytest.fixture
def page(chromium):
    context = chromium.new_context(viewport=browser.LAPTOP)
    yield context.new_page()
    context.close()


def heavy_user(live) -> str:
    """The user with the most records in the log: a long history and a personal page."""
    counts: dict[str, int] = {}
    for event in live.log.interactions():
        counts[event.user_id] = counts.get(event.user_id, 0) + 1
    return max(counts, key=counts.get)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def post(url: str, fields: dict, headers: dict | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, data=urllib.parse.urlencode(fields).encode(), headers=headers or {}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_complete_on_a_recommended_item_takes_it_off_the_page_within_3_s(live, page):
    user = heavy_user(live)
    page.goto(f"{live.consoles['events']}/users/{user}")
    first = page.locator("#recommendations tbody tr").first
    item = first.get_attribute("data-item")
    assert item and page.locator("#history tbody tr").count() > 0
    browser.screenshots(page, ARTIFACTS, "user")
    clicked = time.perf_counter()
    first.get_by_role("button", name="complete").click()
    page.wait_for_selector("#event-delay", timeout=3_000)
    elapsed_s = time.perf_counter() - clicked
    assert elapsed_s < 3.0
    delay_ms = int(page.locator("#event-delay [data-delay-ms]").get_attribute("data-delay-ms"))
    assert 0 < delay_ms < 3_000 and f"{delay_ms} ms" in page.locator("#event-delay").inner_text()
    assert page.locator(f'#recommendations tr[data-item="{item}"]').count() == 0
    assert page.locator(f'#history tr[data-item="{item}"][data-event="complete"]').count() == 1
    browser.screenshots(page, ARTIFACTS, "user-after-complete")
    print(f"\nconsole: complete on {item} -> page changed after {delay_ms} ms (click to page {elapsed_s * 1000:.0f} ms)")


def test_trending_updates_in_place_after_new_events(live, page):
    page.goto(live.consoles["events"] + "/")
    global_rows = '#trending-lists table[data-scope="global"] tbody tr'
    assert page.locator(global_rows).count() > 0
    shown = set(page.locator(global_rows).evaluate_all("rows => rows.map(r => r.dataset.item)"))
    newcomer = next(item_id for item_id in (f"i{n}" for n in range(live.world.items)) if item_id not in shown)
    page.evaluate("window.loadedOnce = true")  # gone if the page reloads
    now_ms = int(time.time() * 1000)
    # Trending counts distinct users per item and hour: the events come from many users.
    events = [pb.Event(user_id=f"fan{n}", item_id=newcomer, event_type="play", event_time=now_ms,
                       context=pb.EventContext(region="eu")) for n in range(40)]
    live.server.stub().LogEvents(pb.LogEventsRequest(events=events), timeout=10, metadata=AUTH)
    page.wait_for_selector(f'{global_rows}[data-item="{newcomer}"]', timeout=20_000)
    assert page.evaluate("window.loadedOnce") is True
    assert "Updated" in page.locator("#trending-status").inner_text()
    browser.screenshots(page, ARTIFACTS, "trending")


def test_experiments_panel_shows_the_variants_of_a_simulated_experiment(live, page):
    simulated = live.simulate(seconds=6)
    assert simulated.returncode == 0, simulated.stderr
    assert set(json.loads(simulated.stdout)["by_bucket"]) == {"ranker/popular", "ranker/funnel"}
    deadline = time.monotonic() + 30
    while True:
        page.goto(live.consoles["events"] + "/experiments?min_impressions=20")
        variants = set(page.locator("table.variants tbody tr").evaluate_all("rows => rows.map(r => r.dataset.variant)"))
        if variants == {"popular", "funnel"} or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert variants == {"popular", "funnel"}
    assert page.locator("img.chart").evaluate("img => img.complete && img.naturalWidth > 0")
    browser.screenshots(page, ARTIFACTS, "experiments")


def test_every_page_reads_well_and_axe_finds_no_serious_violation(live, page):
    base = live.consoles["events"]
    item = live.log.trending.item_id
    pages = {"trending": "/", "user": f"/users/{heavy_user(live)}", "new-user": "/users/brand-new-user",
             "item": f"/items/{item}", "system": "/system", "experiments": "/experiments", "find-user": "/users",
             "unknown-item": "/items/no-such-item"}
    found = {}
    for name, path in pages.items():
        page.goto(base + path)
        found[name] = browser.accessibility_violations(page)
        if name in ("new-user", "item", "system", "unknown-item"):
            browser.screenshots(page, ARTIFACTS, name)
    assert found == {name: [] for name in pages}


def test_a_new_user_gets_the_cold_start_page_with_a_note(live, page):
    page.goto(live.consoles["read_only"] + "/users/nobody-yet")
    assert "No history yet" in page.locator("main").inner_text()
    assert page.locator("#recommendations tbody tr").count() > 0
    assert page.get_by_role("button", name="complete").count() == 0  # read-only console


def test_the_system_panel_reads_every_service(live):
    status, html = get(live.consoles["read_only"] + "/system")
    assert status == 200
    assert "Unavailable" not in html, html
    for expected in ("events/0", "Held by", "No backfill in progress", "Current version", "Recommend p99", "records in the dead-letter topic"):
        assert expected in html


def test_the_item_page_shows_catalog_similar_items_and_daily_events(live):
    item = live.log.trending.item_id
    status, html = get(f"{live.consoles['read_only']}/items/{item}")
    assert status == 200
    entry = next(e for e in live.log.catalog() if e.item_id == item)
    assert entry.title in html and ", ".join(entry.categories) in html
    supports = [int(n) for n in re.findall(r'data-support="(\d+)"', html)]
    assert supports and min(supports) > 0  # a neighbour shared at least one session
    assert "<rect" in html and entry.created_at and "max " in html


@pytest.mark.parametrize("path, status, message", [
    ("/users/bad%7Cid", 400, "user id"),
    ("/users/" + "u" * 129, 400, "user id"),
    ("/users?id=", 400, "id is required"),
    ("/?region=eu", 400, "unknown query parameter"),
    ("/users/u1?event=teleport", 400, "event must be one of"),
    ("/experiments?min_impressions=many", 400, "min_impressions"),
    ("/items/no-such-item", 404, "The catalog has no item"),
])
def test_bad_ids_and_parameters_get_a_clear_page(live, path, status, message):
    got, html = get(live.consoles["read_only"] + path)
    assert got == status and message in html and "Traceback" not in html


def test_event_posts_need_allow_events_a_csrf_token_and_the_own_origin(live):
    base = live.consoles["events"]
    fields = {"item_id": "i1", "event_type": "complete"}
    own = {"Origin": base}
    assert post(f"{live.consoles['read_only']}/users/u1/events", fields, {"Origin": live.consoles["read_only"]})[0] == 403
    assert post(f"{base}/users/u1/events", fields, own)[0] == 403  # no CSRF token
    assert post(f"{base}/users/u1/events", {**fields, "csrf_token": "guessed"}, own)[0] == 403


def test_a_post_from_another_origin_is_refused_even_with_the_token(live, page):
    base = live.consoles["events"]
    user = heavy_user(live)
    page.goto(f"{base}/users/{user}")
    token = page.locator('input[name="csrf_token"]').first.get_attribute("value")
    response = page.request.post(f"{base}/users/{user}/events", form={"csrf_token": token, "item_id": "i1", "event_type": "dislike"},
                                 headers={"Origin": "http://evil.example"}, max_redirects=0)
    assert response.status == 403


def test_latency_quantiles_interpolate_within_a_bucket_like_prometheus():
    window = LatencyWindow(((0.01, 50.0), (0.05, 90.0), (0.1, 100.0), (float("inf"), 100.0)), 100.0, 10.0)
    assert window.quantile(0.5) == pytest.approx(0.01)
    assert window.quantile(0.7) == pytest.approx(0.03)
    assert window.quantile(0.99) == pytest.approx(0.095)
    assert window.per_second == pytest.approx(10.0)
    assert LatencyWindow((), 0.0, None).quantile(0.5) is None


def test_a_server_that_does_not_answer_gets_a_page_that_names_it(live, tmp_path):
    port = free_port()
    console = subprocess.Popen([KAPPAREC, "console", "--port", str(port), "--server", "127.0.0.1:1", "--redis", live.redis_url,
                                "--bootstrap", live.bootstrap], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/users", console)
        status, html = get(f"http://127.0.0.1:{port}/")
        assert status == 502 and "Serving did not answer" in html and "127.0.0.1:1" in html and "Traceback" not in html
        status, html = get(f"http://127.0.0.1:{port}/system")  # each section on its own
        assert status == 200 and "Unavailable: no --metrics-url given" in html and "Current version" in html
    finally:
        console.terminate()
        console.wait(20)


@pytest.mark.parametrize("argv, message", [
    (["--port", "http"], "--port: expected a whole number"),
    (["--bogus"], "unrecognized arguments"),
])
def test_bad_console_usage_is_one_line(argv, message):
    done = subprocess.run([KAPPAREC, "console", *argv], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and message in done.stderr


def test_a_port_in_use_is_one_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = subprocess.run([KAPPAREC, "console", "--port", str(taken.getsockname()[1])], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("kapparec: error: cannot listen on 127.0.0.1:") and done.stderr.count("\n") == 1
