"""Prometheus metrics under vLLM's names with a `fireside:` prefix, one registry per app.

Engine gauges (running, waiting, KV-cache use, prefix-cache counters) are read from
`EngineClient.stats()` at scrape time, so they are never stale; per-request counters and
latency histograms are observed here as outputs stream through the API.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fireside.engine.types import EngineStats, RequestOutput

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
                    2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)  # fmt: skip


class _EngineCollector(Collector):
    def __init__(self, model: str, stats: Callable[[], EngineStats | None]) -> None:
        self.model = model
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self.stats()
        if s is None:  # still loading: no engine to ask
            return
        labels = ["model_name"]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(f"fireside:{name}", doc, labels=labels)
            g.add_metric([self.model], value)
            return g

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            c = CounterMetricFamily(f"fireside:{name}", doc, labels=labels)
            c.add_metric([self.model], value)
            return c

        yield gauge("num_requests_running", "Requests in the running batch.", s.running)
        yield gauge("num_requests_waiting", "Requests waiting to be scheduled.", s.waiting)
        usage = s.kv_blocks_used / s.kv_blocks_total if s.kv_blocks_total else 0.0
        yield gauge("kv_cache_usage_perc", "KV-cache usage; 1 means 100 percent.", usage)
        yield counter("prefix_cache_queries", "Prompt tokens looked up in the prefix cache.",
                      s.prefix_cache_queries)  # fmt: skip
        yield counter("prefix_cache_hits", "Prompt tokens found in the prefix cache.",
                      s.prefix_cache_hits)  # fmt: skip


class Metrics:
    def __init__(self, model: str, stats: Callable[[], EngineStats | None]) -> None:
        self.model = model
        self.registry = CollectorRegistry()
        self.registry.register(_EngineCollector(model, stats))
        r, m = self.registry, ["model_name"]
        self.success = Counter(
            "fireside:request_success", "Finished requests by finish reason.",
            ["model_name", "finished_reason"], registry=r,
        )  # fmt: skip
        self.prompt_tokens = Counter(
            "fireside:prompt_tokens", "Prefill tokens processed.", m, registry=r
        )
        self.generation_tokens = Counter(
            "fireside:generation_tokens", "Tokens generated.", m, registry=r
        )
        self.ttft = Histogram(
            "fireside:time_to_first_token_seconds", "Time to the first generated token.",
            m, buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.itl = Histogram(
            "fireside:inter_token_latency_seconds", "Time between generated tokens.",
            m, buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.e2e = Histogram(
            "fireside:e2e_request_latency_seconds", "Arrival to last token.",
            m, buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue = Histogram(
            "fireside:request_queue_time_seconds", "Arrival to first scheduling.",
            m, buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip

        # Every HTTP request, by route template (/api/conversations/{conversation_id}, never
        # the id: one series per route, not per conversation).
        self.http_requests = Counter(
            "fireside:http_requests", "HTTP requests by method, route template and status.",
            ["method", "route", "status"], registry=r,
        )  # fmt: skip
        self.http_latency = Histogram(
            "fireside:http_request_duration_seconds",
            "HTTP request to its response's end (a stream's whole length), by route template.",
            ["method", "route"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def track(self) -> RequestTracker:
        return RequestTracker(self)


class RequestTracker:
    """One engine request's timings and counts, observed as its outputs arrive."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics
        self.arrival = time.monotonic()
        self.last: float | None = None
        self.generated = 0
        self.prompt_counted = False

    def observe(self, out: RequestOutput) -> None:
        now = time.monotonic()
        label = self.m.model
        if not self.prompt_counted:
            self.prompt_counted = True
            self.m.prompt_tokens.labels(label).inc(len(out.prompt_token_ids))
            if out.scheduled_at is not None:
                self.m.queue.labels(label).observe(max(out.scheduled_at - self.arrival, 0.0))
        new = sum(len(s.token_ids) for s in out.samples)
        if new:
            self.m.generation_tokens.labels(label).inc(new)
            if self.last is None:
                self.m.ttft.labels(label).observe(now - self.arrival)
            else:
                # A delta may carry several tokens; spread the gap over them.
                gap = (now - self.last) / new
                for _ in range(new):
                    self.m.itl.labels(label).observe(gap)
            self.last = now
            self.generated += new
        for s in out.samples:
            if s.finish_reason is not None:
                self.m.success.labels(label, s.finish_reason).inc()

    def finish(self, aborted: bool) -> None:
        """`aborted`: the client left before the end (vLLM counts these as "abort" too)."""
        self.m.e2e.labels(self.m.model).observe(time.monotonic() - self.arrival)
        if aborted:
            self.m.success.labels(self.m.model, "abort").inc()


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_template(scope: Scope) -> str:
    """The matched route's path template with its routers' prefixes, without convertors
    (/api/keys/{key_id}, /v1/models/{model_id});
    "unmatched" when no route matched. FastAPI keeps included routers nested, and the full
    template sits on the request's effective route context (what its own OpenTelemetry
    `http.route` reads); a FastAPI that flattens routers leaves it on the route itself."""
    context = scope.get("fastapi", {}).get("effective_route_context")
    route = scope.get("route")
    template = getattr(context, "path_format", None) or getattr(route, "path_format", None)
    return str(template) if template else "unmatched"


class HttpMetricsMiddleware:
    """Counts and times each HTTP request under its route's template, which the router has
    put in the scope by the time the app returns; paths no route matched share one label."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.monotonic()
        status = 500  # what the client gets when the app raises before answering

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = route_template(scope)
            method = scope["method"] if scope["method"] in _METHODS else "other"
            self.metrics.http_requests.labels(method, route, str(status)).inc()
            self.metrics.http_latency.labels(method, route).observe(time.monotonic() - start)
