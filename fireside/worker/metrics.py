"""The worker's HTTP port: Prometheus `/metrics`, `/livez` (the process answers) and `/readyz`
(the model is loaded and its engine healthy). A thread of its own: it answers while the event
loop is busy, and a probe never waits behind generation."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from fireside.engine import Engine


class WorkerMetrics(Collector):
    """Counters the service updates, and the engine's gauges read at each scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.engine: Engine | None = None
        self.requests = Counter(
            "fireside_worker_requests", "Generate calls received", registry=self.registry
        )
        self.cancelled = Counter(
            "fireside_worker_cancelled",
            "Generate calls cancelled by their client (gone, or past its deadline)",
            registry=self.registry,
        )
        self.tokens = Counter(
            "fireside_worker_generation_tokens", "tokens generated", registry=self.registry
        )
        self.registry.register(self)

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        if self.engine is None:
            return
        stats = self.engine.stats()
        for name, text, value in (
            ("fireside_worker_num_requests_running", "samples decoding", stats.running),
            ("fireside_worker_num_requests_waiting", "requests queued", stats.waiting),
            ("fireside_worker_kv_blocks_used", "KV cache blocks in use", stats.kv_blocks_used),
            ("fireside_worker_kv_blocks_total", "KV cache blocks", stats.kv_blocks_total),
        ):
            yield GaugeMetricFamily(name, text, value=value)
        for name, text, value in (
            ("fireside_worker_prefix_cache_queries", "prompt tokens looked up", stats.prefix_cache_queries),
            ("fireside_worker_prefix_cache_hits", "prompt tokens found cached", stats.prefix_cache_hits),
        ):  # fmt: skip
            yield CounterMetricFamily(name, text, value=value)


class MetricsServer:
    def __init__(
        self, host: str, port: int, metrics: WorkerMetrics, model: Callable[[], Any]
    ) -> None:
        registry = metrics.registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    self._answer(200, generate_latest(registry), "text/plain; version=0.0.4")
                elif self.path == "/livez":
                    self._answer(200, b"ok\n")
                elif self.path == "/readyz":
                    loaded = model()
                    ready = loaded is not None and loaded.engine.is_healthy()
                    self._answer(200 if ready else 503, b"ready\n" if ready else b"not ready\n")
                else:
                    self._answer(404, b"not found\n")

            def _answer(self, status: int, body: bytes, kind: str = "text/plain") -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # probes every few seconds would drown the log

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
