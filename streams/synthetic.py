"""A deterministic synthetic event log with planted structure a model can learn and a test can check.

Pure (no Kafka): ``SyntheticLog`` builds everything with vectorised numpy sampling up front,
then yields catalog events and interaction records in log order. What is planted:

- taste clusters: each cluster owns two of the categories; a user's taste is a Dirichlet
  draw concentrated on their cluster's two, so their events concentrate there;
- Zipf popularity of items within each category, and heavy-tailed user activity;
- sessions: bursts of engagements close in time sharing a ``session_id``, each engagement a
  funnel impression -> click -> play -> progress -> complete -> (like | rate | purchase ...),
  deeper and better rated when the item is in the user's taste;
- regions (home region per user, some items only in one region) and devices;
- new items released during the log (no interaction before an item's ``created_at``);
- one trending burst: one item spikes in a short window, mostly in one region;
- a little late data: records reach the log in arrival order, a few minutes late at times;
- opt-in malformed records of every kind the contract refuses, counted exactly.

All ground truth is exposed (``user_cluster``, ``item_categories``, ``trending`` ...).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Iterable, Iterator, NamedTuple

import numpy as np

from kapparec.errors import KapparecError
from kapparec.timeunits import DAY_MS, HOUR_MS, MINUTE_MS
if TYPE_CHECKING:
    from streams.producer import LogProducer

from streams.schema import MAX_FUTURE_SKEW_MS, MAX_RECORD_BYTES, CatalogEvent, Context, EventType, InteractionEvent, encode

START_MS = 1_735_689_600_000  # 2025-01-01T00:00Z: the library's fixed start, so a seed always gives the same log
DEFAULT_DAYS = 28
BOT_ACCOUNTS = 3
BOT_ITEMS = 2

CATEGORIES = (
    "action", "comedy", "drama", "documentary", "horror", "romance", "scifi", "thriller",
    "animation", "kids", "music", "sports", "crime", "fantasy", "history", "travel",
)
DEFAULT_REGIONS = ("eu", "us", "apac", "latam")
DEVICES = ("mobile", "web", "tv", "tablet")
AGE_RATINGS = ("G", "PG", "PG-13", "R")

# Funnel steps of one engagement, in order; an engagement of depth d emits the first d.
# The last step is the engagement's outcome, whose type is drawn separately.
FUNNEL = (EventType.IMPRESSION, EventType.CLICK, EventType.PLAY, EventType.PROGRESS, EventType.COMPLETE)
OUTCOME_STEP = len(FUNNEL)
# Typical time from the previous step (ms): a click comes seconds after the impression,
# completion many minutes after play.
STEP_GAP_MS = np.array([0, 4_000, 2_000, 8 * MINUTE_MS, 15 * MINUTE_MS, 20_000], dtype=np.float64)
# P(depth = 1..6) for an item in the user's taste vs outside it: taste shows as depth.
DEPTH_IN_TASTE = np.array([0.35, 0.15, 0.10, 0.10, 0.15, 0.15])
DEPTH_OFF_TASTE = np.array([0.75, 0.12, 0.06, 0.04, 0.02, 0.01])
DEPTH_TRENDING = np.array([0.10, 0.10, 0.10, 0.15, 0.25, 0.30])
OUTCOMES_IN_TASTE = ((EventType.LIKE, 0.45), (EventType.RATE, 0.35), (EventType.PURCHASE, 0.10), (EventType.ADD_TO_CART, 0.10))
OUTCOMES_OFF_TASTE = ((EventType.DISLIKE, 0.6), (EventType.RATE, 0.4))
HIGH_RATINGS = (3.5, 4.0, 4.5, 5.0)
LOW_RATINGS = (0.5, 1.0, 1.5, 2.0, 2.5)
PRICES = (0.99, 2.99, 4.99, 9.99)

EXPLORATION_SHARE = 0.15  # engagements on an item picked regardless of taste (what a recommender would probe)
NEW_ITEM_SHARE = 0.2  # items released during the log rather than before it
REGIONAL_ITEM_SHARE = 0.1
ZIPF_EXPONENT = 1.1
TRENDING_EVENT_SHARE = 0.03
TRENDING_WINDOW_MS = 2 * 60 * MINUTE_MS
TRENDING_HOME_SHARE = 0.8  # share of the burst's users from the trending region
LATE_SHARE = 0.02  # records that reach the log minutes after they happened (offline phones)

MALFORMED_KINDS = ("bad_json", "missing_field", "wrong_type", "unknown_event_type", "oversized", "future_time")

TYPE_NAMES = tuple(t.value for t in EventType)
TYPE_CODE = {t: i for i, t in enumerate(EventType)}


class LogRecord(NamedTuple):
    """One record as it goes to the log: key, value bytes and the log (arrival) timestamp."""

    key: bytes
    value: bytes
    timestamp_ms: int
    valid: bool


@dataclass(frozen=True)
class TrendingBurst:
    item_id: str
    region: str
    start_ms: int
    end_ms: int


@dataclass(frozen=True)
class _Events:
    """Column arrays of the interactions, already in log order."""

    user: np.ndarray
    item: np.ndarray
    kind: np.ndarray
    value: np.ndarray  # NaN where the event type carries no value
    event_time: np.ndarray
    arrival: np.ndarray
    session: np.ndarray
    device: np.ndarray


class SyntheticLog:
    """``events`` interaction records (``malformed_count`` of them invalid) over a catalog of ``items``."""

    def __init__(
        self,
        users: int,
        items: int,
        events: int,
        seed: int,
        malformed_share: float = 0.0,
        regions: tuple[str, ...] = DEFAULT_REGIONS,
        start_ms: int = START_MS,
        days: int = DEFAULT_DAYS,
        clusters: int = 8,
        bots: float = 0.0,
    ):
        _check_arguments(users, items, events, malformed_share, regions, days, clusters)
        if not 0.0 <= bots <= 1.0:
            raise KapparecError(f"bots share must be between 0 and 1, got {bots}")
        self.bot_events = int(round(events * bots))
        self.users, self.items, self.events, self.seed = users, items, events, seed
        self.regions = tuple(regions)
        self.start_ms, self.end_ms = start_ms, start_ms + days * DAY_MS
        self.clusters = clusters
        self._rng = np.random.default_rng(seed)
        self._cluster_cats = np.array([[(2 * k) % len(CATEGORIES), (2 * k + 1) % len(CATEGORIES)] for k in range(clusters)])
        self._build_users()
        self._build_items()
        self._build_trending()
        self._events = self._build_events()
        self._malformed = self._pick_malformed(malformed_share)

    @classmethod
    def ending_at(cls, end_ms: int, **kwargs) -> "SyntheticLog":
        """The log whose last record reaches the log at ``end_ms``. Live events (``LogEvents``,
        ``simulate``) are stamped with the wall clock, so a log that ends long before them makes
        one live event jump the log clock and expire every windowed feature at once.

        Every time in the log is drawn relative to its start, so shifting a built log equals
        building it from the shifted start: ``SyntheticLog(start_ms=log.start_ms, ...)`` with the
        same arguments gives the same records, which is how a run is pinned afterwards."""
        log = cls(start_ms=end_ms - kwargs.get("days", DEFAULT_DAYS) * DAY_MS, **kwargs)
        log._shift(end_ms - log.last_log_time_ms)
        return log

    def _shift(self, delta_ms: int) -> None:
        self.start_ms += delta_ms
        self.end_ms += delta_ms
        self._item_created = self._item_created + delta_ms
        trend = self._trending
        self._trending = replace(trend, start_ms=trend.start_ms + delta_ms, end_ms=trend.end_ms + delta_ms)
        self._events = replace(self._events, event_time=self._events.event_time + delta_ms,
                               arrival=self._events.arrival + delta_ms)

    # ---- ground truth -------------------------------------------------------------------

    @property
    def last_log_time_ms(self) -> int:
        """The log time of the log's last record (catalog, interactions and bot burst alike)."""
        times = [int(self._item_created.max())]
        if self._events.arrival.size:
            times.append(int(self._events.arrival.max()))
        if self.bot_events:
            times.append(self._bot_event_time(self.bot_events - 1))
        return max(times)

    @property
    def malformed_count(self) -> int:
        return len(self._malformed)

    @property
    def malformed_kinds(self) -> Counter:
        return Counter(self._malformed.values())

    @property
    def trending(self) -> TrendingBurst:
        return self._trending

    @property
    def item_categories(self) -> dict[str, tuple[str, ...]]:
        return {self.item_id(i): cats for i, cats in enumerate(self._item_cats)}

    def user_cluster(self, user_id: str) -> int:
        return int(self._user_cluster[_index(user_id, "u")])

    def cluster_categories(self, cluster: int) -> tuple[str, ...]:
        """The categories a cluster's users mostly engage with."""
        return tuple(CATEGORIES[c] for c in self._cluster_cats[cluster])

    def user_region(self, user_id: str) -> str:
        return self.regions[self._user_region[_index(user_id, "u")]]

    def item_created_at(self, item_id: str) -> int:
        return int(self._item_created[_index(item_id, "i")])

    def item_region(self, item_id: str) -> str | None:
        """The one region an item is limited to, or None if it is available everywhere."""
        region = self._item_region[_index(item_id, "i")]
        return None if region < 0 else self.regions[region]

    @property
    def bot_users(self) -> tuple[str, ...]:
        """The accounts of the opt-in bot burst (``bots`` share): none without one."""
        return tuple(f"bot{n}" for n in range(BOT_ACCOUNTS)) if self.bot_events else ()

    @property
    def bot_items(self) -> tuple[str, ...]:
        """The few items the bots push: the catalog's last ones, which organic users rarely reach."""
        return tuple(self.item_id(self.items - 1 - n) for n in range(min(BOT_ITEMS, self.items))) if self.bot_events else ()

    @staticmethod
    def user_id(index: int) -> str:
        return f"u{index}"

    @staticmethod
    def item_id(index: int) -> str:
        return f"i{index}"

    # ---- the log ------------------------------------------------------------------------

    def catalog(self) -> list[CatalogEvent]:
        """One catalog event per item, in ``created_at`` order (the order they go to the log)."""
        return [self._catalog_event(i) for i in np.argsort(self._item_created, kind="stable")]

    def catalog_records(self) -> Iterator[LogRecord]:
        for event in self.catalog():
            yield LogRecord(event.item_id.encode(), encode(event), event.created_at, True)

    def records(self) -> Iterator[LogRecord]:
        """Every interaction record in log order, keyed by user id, malformed ones included; the bot
        burst, if any, last."""
        yield from self._organic_records()
        for event in self._bot_interactions():
            yield LogRecord(event.user_id.encode(), encode(event), event.event_time, True)

    def _bot_interactions(self) -> Iterator[InteractionEvent]:
        """``bot_events`` plays by a few accounts on a few items, all within the log's last full hour."""
        for n in range(self.bot_events):
            yield InteractionEvent(
                user_id=self.bot_users[n % BOT_ACCOUNTS], item_id=self.bot_items[n % len(self.bot_items)],
                event_type=EventType.PLAY, event_time=self._bot_event_time(n),
                context=Context(region=self.regions[0], device=DEVICES[0]),
            )

    def _bot_event_time(self, n: int) -> int:
        return self.end_ms - 2 * HOUR_MS + n * HOUR_MS // max(1, self.bot_events)

    def _organic_records(self) -> Iterator[LogRecord]:
        ev = self._events
        # Plain lists and prebuilt strings: per-record numpy indexing would dominate the loop.
        user_ids = [self.user_id(u) for u in range(self.users)]
        user_keys = [u.encode() for u in user_ids]
        user_regions = [self.regions[r] for r in self._user_region.tolist()]
        columns = (ev.user, ev.item, ev.kind, ev.value, ev.event_time, ev.arrival, ev.session, ev.device)
        for pos, (user, item, kind, value, at, arrival, session, device) in enumerate(zip(*(c.tolist() for c in columns))):
            fields = _Fields(user_ids[user], f"i{item}", TYPE_NAMES[kind], value, at,
                             user_regions[user], DEVICES[device], f"s{session}")
            broken = self._malformed.get(pos)
            if broken is None:
                yield LogRecord(user_keys[user], fields.encode(), arrival, True)
            else:
                yield LogRecord(user_keys[user], _malformed(broken, fields, arrival), arrival, False)

    def interactions(self) -> Iterator[InteractionEvent]:
        """The valid interactions in log order, as events (no Kafka needed), the bot burst last."""
        yield from self._organic_interactions()
        yield from self._bot_interactions()

    def _organic_interactions(self) -> Iterator[InteractionEvent]:
        ev = self._events
        event_types = tuple(EventType)
        for pos in range(len(ev.user)):
            if pos in self._malformed:
                continue
            user, value = int(ev.user[pos]), float(ev.value[pos])
            yield InteractionEvent.model_construct(
                user_id=f"u{user}", item_id=f"i{ev.item[pos]}", event_type=event_types[ev.kind[pos]],
                value=None if math.isnan(value) else value, event_time=int(ev.event_time[pos]),
                context=Context.model_construct(region=self.regions[self._user_region[user]],
                                                device=DEVICES[ev.device[pos]], session_id=f"s{ev.session[pos]}"),
            )

    # ---- construction -------------------------------------------------------------------

    def _build_users(self) -> None:
        rng, n = self._rng, self.users
        self._user_cluster = rng.integers(0, self.clusters, n)
        alpha = np.full((n, len(CATEGORIES)), 0.05)
        rows = np.arange(n)
        primary, secondary = self._cluster_cats[self._user_cluster].T
        alpha[rows, primary] += 6.0
        alpha[rows, secondary] += 3.0
        self._taste_cdf = np.cumsum(_dirichlet_rows(rng, alpha), axis=1)
        self._user_region = rng.integers(0, len(self.regions), n)
        self._user_device = rng.integers(0, len(DEVICES), n)
        activity = rng.lognormal(0.0, 1.0, n)  # a few heavy users, many light ones
        self._user_activity = activity / activity.sum()

    def _build_items(self) -> None:
        rng, n, n_cat = self._rng, self.items, len(CATEGORIES)
        primary = rng.integers(0, n_cat, n)
        extra = rng.choice(3, n, p=[0.5, 0.35, 0.15])
        self._item_cats = tuple(
            tuple(CATEGORIES[c] for c in dict.fromkeys([int(p), *rng.choice(n_cat, k, replace=False).tolist()]))
            for p, k in zip(primary, extra)
        )
        released_later = rng.random(n) < NEW_ITEM_SHARE
        span = self.end_ms - self.start_ms
        self._item_created = np.where(
            released_later,
            self.start_ms + (rng.random(n) * 0.9 * span).astype(np.int64),
            self.start_ms - (rng.random(n) * 365 * DAY_MS).astype(np.int64),
        )
        self._item_region = np.where(rng.random(n) < REGIONAL_ITEM_SHARE, rng.integers(0, len(self.regions), n), -1)
        self._item_age = rng.integers(0, len(AGE_RATINGS), n)
        self._item_cat_mask = np.zeros((n, n_cat), dtype=bool)
        for item, cats in enumerate(self._item_cats):
            self._item_cat_mask[item, [CATEGORIES.index(c) for c in cats]] = True
        self._index_categories()

    def _index_categories(self) -> None:
        """Per category: its items in a random popularity rank, Zipf weights, and an anchor item."""
        members: list[list[int]] = [[] for _ in CATEGORIES]
        for item, cats in enumerate(self._item_cats):
            for cat in cats:
                members[CATEGORIES.index(cat)].append(item)
        self._cat_items, self._cat_weights, self._cat_anchor = [], [], []
        for cat, items in enumerate(members):
            if not items:  # a tiny catalog can leave a category empty: borrow any item
                items = [cat % self.items]
            ranked = self._rng.permutation(np.array(items))
            weights = 1.0 / np.arange(1, len(ranked) + 1) ** ZIPF_EXPONENT
            self._cat_items.append(ranked)
            self._cat_weights.append(weights / weights.sum())
            # The most popular item of each category is always available, so every pick
            # has somewhere to land whatever the time and region.
            anchor = int(ranked[0])
            self._item_created[anchor] = min(self._item_created[anchor], self.start_ms)
            self._item_region[anchor] = -1
            self._cat_anchor.append(anchor)

    def _build_trending(self) -> None:
        rng = self._rng
        span = self.end_ms - self.start_ms
        start = self.start_ms + int(span * (0.5 + 0.2 * rng.random()))
        anchors = set(self._cat_anchor)
        candidates = [i for i in range(self.items)
                      if self._item_region[i] < 0 and self._item_created[i] < start and i not in anchors]
        item = int(rng.choice(candidates)) if candidates else self._cat_anchor[0]
        region = int(rng.integers(0, len(self.regions)))
        self._trending_region = region
        self._trending = TrendingBurst(self.item_id(item), self.regions[region], start, start + TRENDING_WINDOW_MS)

    def _build_events(self) -> _Events:
        burst = self._trending_engagements()
        need = self.events - int(burst["depth"].sum())
        parts = [burst]
        while need > 0:
            regular = self._regular_engagements(max(16, int(need / 2.5) + 16), session_base=_next_session(parts))
            parts.append(regular)
            need -= int(regular["depth"].sum())
        engagements = {key: np.concatenate([p[key] for p in parts]) for key in burst}
        return self._expand(_trim_to(engagements, self.events))

    def _trending_engagements(self) -> dict[str, np.ndarray]:
        rng, trend = self._rng, self._trending
        n = max(1, round(self.events * TRENDING_EVENT_SHARE / 4.0))
        home = np.flatnonzero(self._user_region == self._trending_region)
        from_home = (rng.random(n) < TRENDING_HOME_SHARE) & (home.size > 0)
        users = np.where(from_home, rng.choice(home if home.size else np.arange(self.users), n), rng.integers(0, self.users, n))
        item = _index(trend.item_id, "i")
        liked = self._in_taste(users, np.full(n, item))
        return {
            "user": users,
            "item": np.full(n, item),
            "time": rng.integers(trend.start_ms, trend.end_ms - 30 * MINUTE_MS, n),
            "session": np.arange(n),
            "device": np.where(rng.random(n) < 0.7, 0, rng.integers(0, len(DEVICES), n)),
            "liked": liked | (rng.random(n) < 0.7),  # a trend is liked beyond its usual audience
            "depth": _draw(rng, DEPTH_TRENDING, n) + 1,
        }

    def _regular_engagements(self, n: int, session_base: int) -> dict[str, np.ndarray]:
        rng = self._rng
        sessions = max(1, n // 3)
        lengths = rng.geometric(1 / 3, sessions)
        session = np.repeat(np.arange(sessions), lengths)
        n = session.size
        users = rng.choice(self.users, sessions, p=self._user_activity)[session]
        starts = rng.integers(self.start_ms, self.end_ms - 3 * 60 * MINUTE_MS, sessions)
        gaps = rng.exponential(90_000, n)
        within = np.cumsum(gaps) - np.repeat(np.cumsum(gaps)[np.cumsum(lengths) - lengths], lengths)
        times = starts[session] + within.astype(np.int64)
        session_device = np.where(rng.random(sessions) < 0.8, self._user_device[users[np.cumsum(lengths) - lengths]],
                                  rng.integers(0, len(DEVICES), sessions))
        cats = self._pick_categories(users)
        items = self._pick_items(cats, users, times)
        liked = self._in_taste(users, items)
        depth = np.where(liked, _draw(rng, DEPTH_IN_TASTE, n), _draw(rng, DEPTH_OFF_TASTE, n)) + 1
        return {"user": users, "item": items, "time": times, "session": session + session_base,
                "device": session_device[session], "liked": liked, "depth": depth}

    def _pick_categories(self, users: np.ndarray) -> np.ndarray:
        """Mostly from the user's taste; an exploration share uniformly."""
        rng, n = self._rng, users.size
        by_taste = (rng.random(n)[:, None] > self._taste_cdf[users]).sum(axis=1)
        uniform = rng.integers(0, len(CATEGORIES), n)
        return np.where(rng.random(n) < EXPLORATION_SHARE, uniform, np.minimum(by_taste, len(CATEGORIES) - 1))

    def _pick_items(self, cats: np.ndarray, users: np.ndarray, times: np.ndarray) -> np.ndarray:
        """Zipf picks within each category, redrawn while the item is unreleased or out of region."""
        items = self._zipf_items(cats)
        for _ in range(8):
            pending = np.flatnonzero(~self._available(items, users, times))
            if pending.size == 0:
                return items
            items[pending] = self._zipf_items(cats[pending])
        pending = np.flatnonzero(~self._available(items, users, times))
        items[pending] = np.asarray(self._cat_anchor)[cats[pending]]
        return items

    def _zipf_items(self, cats: np.ndarray) -> np.ndarray:
        items = np.empty(cats.size, dtype=np.int64)
        for cat in np.unique(cats):
            where = np.flatnonzero(cats == cat)
            items[where] = self._rng.choice(self._cat_items[cat], where.size, p=self._cat_weights[cat])
        return items

    def _available(self, items: np.ndarray, users: np.ndarray, times: np.ndarray) -> np.ndarray:
        region = self._item_region[items]
        return (self._item_created[items] <= times) & ((region < 0) | (region == self._user_region[users]))

    def _in_taste(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Whether each item has one of its user's cluster categories."""
        cluster_cats = self._cluster_cats[self._user_cluster[users]]
        return self._item_cat_mask[items[:, None], cluster_cats].any(axis=1)

    def _expand(self, eng: dict[str, np.ndarray]) -> _Events:
        """Engagements into funnel events, then into log (arrival) order."""
        rng, depth = self._rng, eng["depth"]
        owner = np.repeat(np.arange(depth.size), depth)
        first = np.cumsum(depth) - depth
        step = np.arange(owner.size) - first[owner]
        liked = eng["liked"][owner]
        kind = self._event_kinds(step, liked)
        gaps = STEP_GAP_MS[step] * rng.exponential(1.0, owner.size)
        running = np.cumsum(gaps)
        within = running - running[first][owner]
        event_time = eng["time"][owner] + within.astype(np.int64)
        delay = rng.exponential(300.0, owner.size).astype(np.int64)
        late = rng.random(owner.size) < LATE_SHARE
        delay[late] += rng.integers(MINUTE_MS, 15 * MINUTE_MS, int(late.sum()))
        arrival = event_time + delay
        order = np.argsort(arrival, kind="stable")
        value = self._event_values(kind, liked)
        return _Events(
            user=eng["user"][owner][order], item=eng["item"][owner][order], kind=kind[order], value=value[order],
            event_time=event_time[order], arrival=arrival[order], session=eng["session"][owner][order],
            device=eng["device"][owner][order],
        )

    def _event_kinds(self, step: np.ndarray, liked: np.ndarray) -> np.ndarray:
        funnel = np.array([TYPE_CODE[t] for t in FUNNEL])
        kind = funnel[np.minimum(step, OUTCOME_STEP - 1)]
        outcome = step == OUTCOME_STEP
        kind[outcome & liked] = _draw_outcome(self._rng, OUTCOMES_IN_TASTE, int((outcome & liked).sum()))
        kind[outcome & ~liked] = _draw_outcome(self._rng, OUTCOMES_OFF_TASTE, int((outcome & ~liked).sum()))
        return kind

    def _event_values(self, kind: np.ndarray, liked: np.ndarray) -> np.ndarray:
        rng, n = self._rng, kind.size
        value = np.full(n, np.nan)
        progress = kind == TYPE_CODE[EventType.PROGRESS]
        value[progress] = np.round(rng.uniform(0.3, 0.95, int(progress.sum())), 2)
        rate = kind == TYPE_CODE[EventType.RATE]
        value[rate & liked] = rng.choice(HIGH_RATINGS, int((rate & liked).sum()))
        value[rate & ~liked] = rng.choice(LOW_RATINGS, int((rate & ~liked).sum()))
        priced = np.isin(kind, [TYPE_CODE[EventType.PURCHASE], TYPE_CODE[EventType.ADD_TO_CART]])
        value[priced] = rng.choice(PRICES, int(priced.sum()))
        return value

    def _pick_malformed(self, share: float) -> dict[int, str]:
        count = round(share * self.events)
        positions = self._rng.choice(self.events, count, replace=False)
        return {int(pos): MALFORMED_KINDS[i % len(MALFORMED_KINDS)] for i, pos in enumerate(positions)}

    def _catalog_event(self, item: int) -> CatalogEvent:
        cats = self._item_cats[item]
        region = self._item_region[item]
        return CatalogEvent(
            item_id=self.item_id(item),
            title=f"{cats[0].title()} #{item}",
            categories=cats,
            regions=() if region < 0 else (self.regions[region],),
            age_rating="G" if "kids" in cats else AGE_RATINGS[self._item_age[item]],
            created_at=int(self._item_created[item]),
        )


class _Fields(NamedTuple):
    """One interaction's fields; ``encode`` writes exactly what ``schema.encode`` would, much faster."""

    user_id: str
    item_id: str
    event_type: str
    value: float
    event_time: int
    region: str
    device: str
    session_id: str

    def encode(self) -> bytes:
        # Ids, regions and devices are generated from [a-z0-9], so no JSON escaping is needed.
        value = "" if self.value != self.value else f'"value":{self.value!r},'  # NaN: no value
        return (
            f'{{"schema_version":1,"user_id":"{self.user_id}","item_id":"{self.item_id}",'
            f'"event_type":"{self.event_type}",{value}"event_time":{self.event_time},'
            f'"context":{{"region":"{self.region}","device":"{self.device}","session_id":"{self.session_id}"}}}}'
        ).encode()


def _malformed(kind: str, fields: _Fields, arrival_ms: int) -> bytes:
    """A record breaking the contract in one way, built from a real event."""
    if kind == "bad_json":
        return fields.encode()[:-7]
    if kind == "missing_field":
        return fields.encode().replace(f'"user_id":"{fields.user_id}",'.encode(), b"")
    if kind == "wrong_type":
        return fields.encode().replace(f'"event_time":{fields.event_time}'.encode(), f'"event_time":"{fields.event_time}"'.encode())
    if kind == "unknown_event_type":
        return fields._replace(event_type="teleport").encode()
    if kind == "oversized":
        return b" " * MAX_RECORD_BYTES + fields.encode()  # valid JSON, only its size is wrong
    if kind == "future_time":
        return fields._replace(event_time=arrival_ms + 100 * MAX_FUTURE_SKEW_MS).encode()
    raise ValueError(f"unknown malformed kind {kind!r}")


def _check_arguments(users: int, items: int, events: int, malformed_share: float,
                     regions: tuple[str, ...], days: int, clusters: int) -> None:
    for name, value in (("users", users), ("items", items), ("days", days), ("clusters", clusters)):
        if value < 1:
            raise KapparecError(f"{name} must be at least 1, got {value}")
    if events < 0:
        raise KapparecError(f"events cannot be negative, got {events}")
    if not 0.0 <= malformed_share <= 1.0:
        raise KapparecError(f"malformed share must be between 0 and 1, got {malformed_share}")
    if not regions:
        raise KapparecError("at least one region is needed")


def _index(entity_id: str, prefix: str) -> int:
    if not entity_id.startswith(prefix) or not entity_id[1:].isdigit():
        raise KeyError(entity_id)
    return int(entity_id[1:])


def _dirichlet_rows(rng: np.random.Generator, alpha: np.ndarray) -> np.ndarray:
    """One Dirichlet draw per row of ``alpha`` (numpy's dirichlet takes a single alpha)."""
    gamma = rng.gamma(alpha)
    return gamma / gamma.sum(axis=1, keepdims=True)


def _draw(rng: np.random.Generator, probabilities: np.ndarray, n: int) -> np.ndarray:
    return rng.choice(probabilities.size, n, p=probabilities)


def _draw_outcome(rng: np.random.Generator, outcomes: tuple[tuple[EventType, float], ...], n: int) -> np.ndarray:
    codes = np.array([TYPE_CODE[t] for t, _ in outcomes])
    return codes[_draw(rng, np.array([p for _, p in outcomes]), n)]


def _trim_to(engagements: dict[str, np.ndarray], events: int) -> dict[str, np.ndarray]:
    """The leading engagements holding exactly ``events`` events (the last one's funnel cut short)."""
    total = np.cumsum(engagements["depth"])
    keep = int(np.searchsorted(total, events)) + 1 if events else 0
    trimmed = {key: array[:keep].copy() for key, array in engagements.items()}
    if keep:
        trimmed["depth"][-1] -= int(total[keep - 1]) - events
    return trimmed


def _next_session(parts: list[dict[str, np.ndarray]]) -> int:
    return max(int(part["session"].max(initial=-1)) for part in parts) + 1


def send_synthetic(log: SyntheticLog, producer: "LogProducer", records: Iterable[LogRecord] | None = None,
                   catalog: bool = True) -> int:
    """The catalog to ``items`` first (items exist before anyone uses them), then ``records``
    (default: all of the log's interaction records) to ``events``; returns records sent."""
    from streams.topics import EVENTS, ITEMS

    sent = 0
    for topic, stream in ((ITEMS, log.catalog_records() if catalog else ()),
                          (EVENTS, log.records() if records is None else records)):
        for record in stream:
            producer.send_raw(topic, record.key, record.value, record.timestamp_ms)
            sent += 1
    return sent
