"""The ``kapparec.v1.Recommender`` servicer: validate, run the funnel, convert, map every error to a status.

Every failure leaves with a precise status and a one-line message: INVALID_ARGUMENT for a
request that breaks a limit or an event that breaks the log's schema, UNAUTHENTICATED for a
LogEvents call without the token, UNAVAILABLE when the broker cannot take events. A Redis
outage is not an error for the read RPCs: they answer from the last snapshot, degraded.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import NamedTuple

import grpc

from kapparec.v1 import recommender_pb2 as pb
from kapparec.v1 import recommender_pb2_grpc as pb_grpc
from serving import admission, limits, metrics
from serving.cache import ResponseCache
from serving.config import FunnelConfig
from serving.funnel import Funnel
from serving.impressions import ImpressionLog, impression
from serving.live import REDIS_ERRORS, ExperimentsWatcher, LiveFeatures, ModelWatcher
from serving.log_writer import EventWriter, LoggedEvent, LogUnavailable
from featurestore.reader import UserFeatures
from featurestore.user_read import user_features_unless
from serving.model import ServingModel
from serving.neighbours import NeighbourCache
from serving.request import Filters, Page, Query
from streams.schema import InvalidRecord, parse_interaction

log = logging.getLogger("kapparec.serving")


class RecommenderService(pb_grpc.RecommenderServicer):
    def __init__(self, features: LiveFeatures, models: ModelWatcher, events: EventWriter, config: FunnelConfig,
                 token: str | None = None, cache: ResponseCache | None = None,
                 experiments: ExperimentsWatcher | None = None, impressions: ImpressionLog | None = None,
                 admitted: int | None = None):
        self.features, self.models, self.events, self.config = features, models, events, config
        self._admitted = admitted  # what the worker's ``AdmittingPool`` admits at once: named when it refuses
        self.token = token
        self.cache = cache or ResponseCache()
        self.neighbours = NeighbourCache()
        self.experiments, self.impressions = experiments, impressions

    # -- RPCs ------------------------------------------------------------------------------

    def Recommend(self, request: pb.RecommendRequest, context: grpc.ServicerContext) -> pb.RecommendResponse:
        return self._answer("Recommend", context, lambda: self._recommend(request))

    def SimilarItems(self, request: pb.SimilarItemsRequest, context: grpc.ServicerContext) -> pb.RecommendResponse:
        def similar() -> pb.RecommendResponse:
            item_id = limits.identifier("item_id", request.item_id)
            user_id = limits.identifier("user_id", request.user_id, required=False)
            k = limits.k_of(request.k)
            return self._page(lambda funnel: Page(funnel.similar(item_id, k, user_id), "full"), self._default())

        return self._answer("SimilarItems", context, similar)

    def Trending(self, request: pb.TrendingRequest, context: grpc.ServicerContext) -> pb.RecommendResponse:
        def trending() -> pb.RecommendResponse:
            region, k = limits.text("region", request.region), limits.k_of(request.k)
            return self._page(lambda funnel: Page(funnel.trending(region, k), "full"), self._default())

        return self._answer("Trending", context, trending)

    def LogEvents(self, request: pb.LogEventsRequest, context: grpc.ServicerContext) -> pb.LogEventsResponse:
        def log_events() -> pb.LogEventsResponse:
            self._authenticate(context)
            if not request.events:
                raise limits.InvalidRequest("events is empty")
            if len(request.events) > limits.MAX_EVENTS_PER_CALL:
                raise limits.InvalidRequest(f"at most {limits.MAX_EVENTS_PER_CALL} events per call, got {len(request.events)}")
            events = [_validated_event(n, event) for n, event in enumerate(request.events)]
            self.events.append(events)
            metrics.EVENTS_LOGGED.inc(len(events))
            return pb.LogEventsResponse(accepted=len(events))

        return self._answer("LogEvents", context, log_events)

    # -- plumbing ----------------------------------------------------------------------------

    def _recommend(self, request: pb.RecommendRequest) -> pb.RecommendResponse:
        clock = metrics.StageClock()
        with clock.stage("request"):
            query = _query(request)
            treatment = self._treatment(query.user_id)
            metrics.child(metrics.REQUESTS_BY_BUCKET, treatment.bucket).inc()
            key = (query.user_id, treatment.bucket, request.SerializeToString(deterministic=True))
            # The cache's validity stamp: the served model and the user's stored features. The user's
            # stamp is compared in Redis, which sends the features only when it moved.
            model_version = treatment.model.version if treatment.model else ""
            held = self.cache.peek(key)
        read = self._user(query.user_id, held.stamp[1:] if held and held.stamp[0] == model_version else None, clock)
        user = read[1] if read else None
        # Every part of the handler runs in a stage, so the stages' CPU adds up to the handler's.
        if read and user is None:
            with clock.stage("request"):
                metrics.child(metrics.CACHE_LOOKUPS, "hit").inc()
                page = held.page()
        else:
            # A user read that failed serves this request from the snapshot: a second read would wait as long.
            page = self._run(lambda funnel: funnel.recommend(query, user), treatment, clock, readable=read is not None)
            with clock.stage("request"):
                metrics.child(metrics.CACHE_LOOKUPS, "miss").inc()
                for source, count in page.candidates.items():
                    metrics.child(metrics.CANDIDATES, source).observe(count)
                if read and page.served_from == "full":
                    self.cache.put(key, (model_version, *read[0]), page)
        with clock.stage("response"):
            response = self._response(page, treatment)
            if not request.preview:
                self._log_impression(query.user_id, response)
        clock.record()
        return response

    def _default(self) -> Treatment:
        return Treatment("", self.config, self.models.model)

    def _treatment(self, user_id: str) -> Treatment:
        """What the user's A/B bucket serves: its funnel settings and model (the default outside experiments)."""
        live = self.experiments.live if self.experiments else None
        bucket = live.assign(user_id) if live else None
        if bucket is None:
            return self._default()
        variant = bucket.variant
        if variant.popularity_only:
            model = None
        elif variant.model_version:
            model = live.models[variant.model_version]
        else:
            model = self.models.model
        return Treatment(bucket.label, live.configs[(bucket.experiment, variant.name)], model)

    def _user(self, user_id: str, known: tuple | None, clock: metrics.StageClock) -> tuple[tuple, UserFeatures | None] | None:
        """The user's stamp and, unless it equals ``known``, their features, in one round trip (None
        while Redis is down: the page is degraded)."""
        reader = self.features.reader if self.features.healthy else None
        if reader is None:
            return None
        try:
            with clock.stage("features"):
                read = user_features_unless(reader, user_id, known)
        except REDIS_ERRORS as exc:
            self.features.request_failed(exc)
            return None
        self.features.request_read()
        return read

    def _page(self, run: Callable[[Funnel], Page], treatment: Treatment) -> pb.RecommendResponse:
        clock = metrics.StageClock()
        page = self._run(run, treatment, clock)
        clock.record()
        return self._response(page, treatment)

    def _run(self, run: Callable[[Funnel], Page], treatment: Treatment, clock: metrics.StageClock,
             readable: bool = True) -> Page:
        reader = self.features.reader if self.features.healthy and readable else None
        try:
            return run(self._funnel(reader, treatment, clock))
        except REDIS_ERRORS as exc:
            self.features.request_failed(exc)
            return run(self._funnel(None, treatment, clock))

    def _funnel(self, reader, treatment: Treatment, clock: metrics.StageClock) -> Funnel:
        return Funnel(reader, treatment.model, self.features.snapshot, treatment.config, clock, self.neighbours)

    def _response(self, page: Page, treatment: Treatment) -> pb.RecommendResponse:
        metrics.child(metrics.RESPONSES_BY_ORIGIN, page.served_from, str(page.widened).lower()).inc()
        for source, count in Counter(item.source for item in page.items).items():
            metrics.child(metrics.ITEMS_BY_SOURCE, source).inc(count)
        response = pb.RecommendResponse(
            request_id=uuid.uuid4().hex,
            model_version=treatment.model.version if treatment.model else "",
            bucket=treatment.bucket,
            served_from=page.served_from,
            widened=page.widened,
        )
        add = response.items.add  # built in place: a list of items passed to the constructor is copied item by item
        for rank, item in enumerate(page.items, start=1):
            add(item_id=item.item_id, rank=rank, score=item.score, source=item.source, explanation=item.explanation,
                title=item.title)
        return response

    def _log_impression(self, user_id: str, response: pb.RecommendResponse) -> None:
        if self.impressions is None or not response.items:
            return
        self.impressions.offer(impression(
            response.request_id, user_id, int(time.time() * 1000), response.bucket, response.model_version,
            response.served_from, ((i.item_id, i.rank, i.source) for i in response.items),
        ))

    def _authenticate(self, context: grpc.ServicerContext) -> None:
        if not self.token:
            return
        sent = dict(context.invocation_metadata()).get("authorization", "")
        if sent != f"Bearer {self.token}":
            raise Unauthenticated("LogEvents needs metadata 'authorization: Bearer <token>'")

    def _answer(self, rpc: str, context: grpc.ServicerContext, handle: Callable):
        if admission.refused():
            metrics.child(metrics.REQUESTS, rpc, grpc.StatusCode.RESOURCE_EXHAUSTED.name).inc()
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"this worker holds {self._admitted} requests already: retry with backoff")
        started, started_cpu = time.perf_counter(), time.thread_time()
        code = grpc.StatusCode.OK
        try:
            return handle()
        except limits.InvalidRequest as exc:
            code, message = grpc.StatusCode.INVALID_ARGUMENT, str(exc)
        except Unauthenticated as exc:
            code, message = grpc.StatusCode.UNAUTHENTICATED, str(exc)
        except LogUnavailable as exc:
            code, message = grpc.StatusCode.UNAVAILABLE, str(exc)
        except Exception as exc:  # noqa: BLE001 - the last line: a status with one line, never a traceback
            log.exception("event=rpc_failed rpc=%s", rpc)
            code, message = grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        finally:
            cpu_s = time.thread_time() - started_cpu  # read inside the wall interval: never more than it
            metrics.child(metrics.RPC_SECONDS, rpc).observe(time.perf_counter() - started)
            metrics.child(metrics.RPC_CPU_SECONDS, rpc).inc(cpu_s)
            metrics.child(metrics.REQUESTS, rpc, code.name).inc()
        context.abort(code, message)


class Treatment(NamedTuple):
    """How one request is served: its bucket's label, funnel settings and model (None: no personal model)."""

    bucket: str
    config: FunnelConfig
    model: ServingModel | None


class Unauthenticated(Exception):
    """The call lacks the configured token."""


def _query(request: pb.RecommendRequest) -> Query:
    filters = request.filters
    return Query(
        user_id=limits.identifier("user_id", request.user_id),
        k=limits.k_of(request.k),
        page=limits.text("context.page", request.context.page, limits.PAGES) or "home",
        region=limits.text("context.region", request.context.region),
        device=limits.text("context.device", request.context.device),
        current_item_id=limits.identifier("context.current_item_id", request.context.current_item_id, required=False),
        filters=Filters(
            include_categories=limits.texts("filters.include_categories", filters.include_categories),
            exclude_categories=limits.texts("filters.exclude_categories", filters.exclude_categories),
            max_age_rating=limits.age_rating(filters.max_age_rating),
            exclude_item_ids=limits.texts(
                "filters.exclude_item_ids", filters.exclude_item_ids, limits.MAX_EXCLUDED_IDS,
                lambda item: limits.identifier("filters.exclude_item_ids", item),
            ),
        ),
        onboarding_categories=limits.texts("categories", request.categories),
    )


def _validated_event(index: int, event: pb.Event) -> LoggedEvent:
    """The event as the log's bytes, judged by the log's own parser: an event LogEvents accepts is one
    the pipelines accept. The broker stamps it about now, so now is its log time."""
    ctx = event.context
    context = {"region": ctx.region or None, "device": ctx.device or None, "page": ctx.page or None,
               "position": ctx.position if ctx.HasField("position") else None,
               "request_id": ctx.request_id or None, "session_id": ctx.session_id or None}
    fields = {"user_id": event.user_id, "item_id": event.item_id, "event_type": event.event_type,
              "value": event.value if event.HasField("value") else None, "event_time": event.event_time,
              "context": _present(context)}
    # json, not orjson or msgspec: they would write a NaN value as null, which the log reads as no value.
    raw = json.dumps(_present(fields), separators=(",", ":"), ensure_ascii=False).encode()
    try:
        parse_interaction(raw, log_time_ms=int(time.time() * 1000))
    except InvalidRecord as refused:
        raise limits.InvalidRequest(f"events[{index}]: {refused.detail}") from None
    return LoggedEvent(event.user_id, raw)


def _present(fields: dict) -> dict:
    return {name: value for name, value in fields.items() if value is not None}

