"""What ``kapparec demo`` shows over gRPC once everything runs: a live change and an A/B experiment.

The live change is measured as a client sees it: from the moment ``LogEvents`` acknowledged
the events (they are in the log) to the first answer of the server that reflects them, so the
delay covers the stream job's commit and the server's refresh of its lists, nothing less.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from kapparec.errors import KapparecError
from kapparec.v1 import recommender_pb2 as pb
from kapparec.v1 import recommender_pb2_grpc as pb_grpc

POLL_S = 0.05
RPC_TIMEOUT_S = 10.0


@dataclass
class LiveResult:
    user: str
    region: str
    completed_item: str
    trending_item: str
    live_users: int
    page_before: list[pb.RecommendedItem]
    page_after: list[pb.RecommendedItem]
    trending_before: list[pb.RecommendedItem]
    trending_after: list[pb.RecommendedItem]
    page_delay_s: float
    trending_delay_s: float

    def render(self) -> str:
        scope = f"region {self.region}" if self.region else "everywhere"
        return "\n".join([
            f"sent: {self.user} completed {self.completed_item}; {self.live_users} users played "
            f"{self.trending_item} ({scope})",
            f"{self.user}'s page changed {self.page_delay_s * 1000:,.0f} ms after LogEvents returned:",
            *_side_by_side(self.page_before, self.page_after, self.completed_item, explained=True),
            f"trending ({scope}) changed {self.trending_delay_s * 1000:,.0f} ms after LogEvents returned:",
            *_side_by_side(self.trending_before, self.trending_after, self.trending_item, explained=False),
        ])


def _side_by_side(before: list, after: list, marked: str, explained: bool, rows: int = 5) -> list[str]:
    def cell(items: list, n: int) -> str:
        if n >= len(items):
            return ""
        item = items[n]
        mark = "*" if item.item_id == marked else " "
        return f"{mark}{item.item_id} {item.score:.2f}"

    lines = [f"    {'before':<20}after"]
    for n in range(max(min(rows, len(before)), min(rows, len(after)))):
        why = f"   {after[n].explanation}" if explained and n < len(after) else ""
        lines.append(f"  {n + 1:>2} {cell(before, n):<20}{cell(after, n)}{why}")
    if explained:
        lines.append(f"  (* {marked}: completed, so no longer recommended)")
    else:
        rank = next((n + 1 for n, item in enumerate(after) if item.item_id == marked), None)
        was = next((n + 1 for n, item in enumerate(before) if item.item_id == marked), None)
        lines.append(f"  (* {marked}: rank {was or '-'} -> {rank or '-'})")
    return lines


@dataclass
class LiveChange:
    """One user completes their first recommendation while ``live_users`` play one item in that
    user's region; then the page and the region's trending list are polled until each shows it."""

    server: str
    redis_url: str
    user: str
    live_users: list[str]

    def run(self, timeout_s: float) -> LiveResult:
        from featurestore.reader import FeatureReader

        region = FeatureReader(self.redis_url).profile(self.user).get("region", "")
        with grpc.insecure_channel(self.server) as channel:
            stub = pb_grpc.RecommenderStub(channel)
            page_before = self._page(stub, region)
            trending_before = self._trending(stub, region)
            if not page_before:
                raise KapparecError(f"the server recommended nothing to {self.user}")
            completed = page_before[0].item_id
            target = _rising_candidate(trending_before, page_before)
            now_ms = int(time.time() * 1000)
            events = [_event(self.user, completed, "complete", region, now_ms, value=1.0)]
            events += [_event(user, target, "play", region, now_ms) for user in self.live_users]
            stub.LogEvents(pb.LogEventsRequest(events=events), timeout=RPC_TIMEOUT_S)
            acknowledged = time.monotonic()
            page_after, page_delay = _until(lambda: self._page(stub, region),
                                            lambda page: completed not in {i.item_id for i in page},
                                            acknowledged, timeout_s, f"{self.user}'s page")
            trending_after, trending_delay = _until(lambda: self._trending(stub, region),
                                                    lambda listed: _improved(trending_before, listed, target),
                                                    acknowledged, timeout_s, "the trending list")
        return LiveResult(self.user, region, completed, target, len(self.live_users), page_before, page_after,
                          trending_before, trending_after, page_delay, trending_delay)

    def _page(self, stub, region: str) -> list[pb.RecommendedItem]:
        # preview: a look no user is shown, so polling logs no impressions
        request = pb.RecommendRequest(user_id=self.user, k=10, context=pb.Context(region=region), preview=True)
        return list(stub.Recommend(request, timeout=RPC_TIMEOUT_S).items)

    @staticmethod
    def _trending(stub, region: str) -> list[pb.RecommendedItem]:
        return list(stub.Trending(pb.TrendingRequest(region=region, k=20), timeout=RPC_TIMEOUT_S).items)


def _rising_candidate(trending: list, page: list) -> str:
    """The item the live users play: the last of the trending list, so it has room to rise (or,
    with nothing trending, an item of the page)."""
    return trending[-1].item_id if len(trending) > 1 else page[-1].item_id


def _improved(before: list, after: list, item_id: str) -> bool:
    def place(items: list) -> tuple[int, float]:
        for n, item in enumerate(items):
            if item.item_id == item_id:
                return n, item.score
        return len(items) + 1, 0.0

    (rank_before, score_before), (rank_after, score_after) = place(before), place(after)
    return rank_after < rank_before or score_after > score_before


def _until(read, changed, since: float, timeout_s: float, what: str):
    while True:
        value = read()
        if changed(value):
            return value, time.monotonic() - since
        if time.monotonic() - since > timeout_s:
            raise TimeoutError(f"{what} did not change within {timeout_s:.0f} s of the events")
        time.sleep(POLL_S)


def _event(user: str, item: str, event_type: str, region: str, now_ms: int, value: float | None = None) -> pb.Event:
    event = pb.Event(user_id=user, item_id=item, event_type=event_type, event_time=now_ms,
                     context=pb.EventContext(region=region, page="home"))
    if value is not None:
        event.value = value
    return event


# -- the A/B experiment ---------------------------------------------------------------------

def start_experiment(path: Path, name: str) -> None:
    """Replace the experiments file with one experiment: popular items only (control) against the
    production model, half the users each. The server reloads the file on change."""
    variants = ({"name": "popular", "share": 0.5, "popularity_only": True}, {"name": "model", "share": 0.5})
    lines = ["# written by `kapparec demo`; the server reloads this file on change", "[[experiment]]",
             *_toml_pairs({"name": name, "salt": name, "control": "popular"})]
    for variant in variants:
        lines += ["[[experiment.variant]]", *_toml_pairs(variant)]
    path.write_text("\n".join(lines) + "\n")


def _toml_pairs(table: dict) -> list[str]:
    # json.dumps writes strings, numbers and booleans as TOML writes them
    return [f"{key} = {json.dumps(value)}" for key, value in table.items()]


def wait_for_experiment(server: str, name: str, timeout_s: float = 60.0) -> None:
    """Until the server puts users into ``name``'s buckets (it has reloaded the file)."""
    with grpc.insecure_channel(server) as channel:
        stub = pb_grpc.RecommenderStub(channel)
        request = pb.RecommendRequest(user_id="u1", k=1, preview=True)
        _until(lambda: stub.Recommend(request, timeout=RPC_TIMEOUT_S).bucket, lambda bucket: bucket.startswith(name + "/"),
               time.monotonic(), timeout_s, "the server's experiment")


def experiment_report(redis_url: str, experiments_file: Path, name: str, window_minutes: int = 30) -> str:
    """The report of this experiment's impressions only (earlier demos' experiments are left out)."""
    from featurestore.attribution import read_outcomes
    from featurestore.redis_store import RedisFeatureStore
    from serving import experiment_report as report
    from serving import experiments

    store = RedisFeatureStore(redis_url)
    outcomes = [outcome for outcome in read_outcomes(store.url, store.require_version(None), window_minutes * 60_000)
                if outcome.shown.bucket.startswith(name + "/")]
    controls = {e.name: e.control_variant for e in experiments.load(experiments_file).experiment}
    return report.render(report.build_report(outcomes, controls))
