"""Prometheus metrics of the served models (``prometheus-client``), one registry per project.

``GET /metrics`` answers the caller's project only — a token sees its own project's versions, never
another's — so each project gets its own :class:`~prometheus_client.CollectorRegistry`:

- ``weightsmith_serve_requests_total{endpoint, version, status}``: requests answered, by HTTP status;
- ``weightsmith_serve_prompt_tokens_total{version}``, ``..._completion_tokens_total{version}``;
- ``weightsmith_serve_request_seconds{endpoint, version}``: arrival to last byte (histogram);
- ``weightsmith_serve_time_to_first_token_seconds{version}``: arrival to the first token (histogram);
- ``weightsmith_serve_batch_size{version}``: the mean decoding batch each request rode in (histogram);
- ``weightsmith_serve_queue_depth{version}``, ``..._running_requests{version}``, ``..._last_batch_size{version}``:
  the engine's own numbers at scrape time;
- ``weightsmith_serve_loaded_versions``, ``weightsmith_serve_loaded_bytes{version}``: what is in memory.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily

from weightsmith.serve.pool import EnginePool

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class _EngineCollector:
    """The engines' gauges, read when scraped: only the versions of one project."""

    def __init__(self, project: str, pool: EnginePool):
        self.project, self.pool = project, pool

    def collect(self):
        depth = GaugeMetricFamily("weightsmith_serve_queue_depth", "requests waiting for a batch slot", labels=["version"])
        running = GaugeMetricFamily("weightsmith_serve_running_requests", "requests in the running batch", labels=["version"])
        last = GaugeMetricFamily("weightsmith_serve_last_batch_size", "rows in the engine's latest decoding step",
                                 labels=["version"])
        size = GaugeMetricFamily("weightsmith_serve_loaded_bytes",
                                 "bytes a loaded version counts in the pool: weights plus its KV-cache estimate",
                                 labels=["version"])
        count = 0
        for loaded in self.pool.loaded():
            refs = sorted(ref for project, ref in loaded.versions if project == self.project)
            if not refs:
                continue
            stats = loaded.engine.stats()
            for ref in refs:
                count += 1
                depth.add_metric([ref], float(stats.get("queue_depth", 0)))
                running.add_metric([ref], float(stats.get("running", 0)))
                last.add_metric([ref], float(stats.get("last_batch_size", 0)))
                size.add_metric([ref], float(loaded.engine.memory_bytes))
        yield GaugeMetricFamily("weightsmith_serve_loaded_versions", "versions loaded now", value=count)
        yield from (depth, running, last, size)


class ProjectMetrics:
    """One project's counters and histograms, in its own registry."""

    def __init__(self, project: str, pool: EnginePool):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("weightsmith_serve_requests", "requests answered", ["endpoint", "version", "status"], registry=r)
        self.prompt_tokens = Counter("weightsmith_serve_prompt_tokens", "prompt tokens read", ["version"], registry=r)
        self.completion_tokens = Counter("weightsmith_serve_completion_tokens", "tokens generated", ["version"], registry=r)
        self.latency = Histogram("weightsmith_serve_request_seconds", "request arrival to its last byte",
                                 ["endpoint", "version"], buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("weightsmith_serve_time_to_first_token_seconds", "request arrival to its first token",
                              ["version"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("weightsmith_serve_batch_size", "mean decoding batch size a request rode in",
                                    ["version"], buckets=BATCH_BUCKETS, registry=r)
        r.register(_EngineCollector(project, pool))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class Metrics:
    """Every project's :class:`ProjectMetrics`, made on first use."""

    def __init__(self, pool: EnginePool):
        self.pool = pool
        self._projects: dict[str, ProjectMetrics] = {}
        self._lock = threading.Lock()

    def project(self, name: str) -> ProjectMetrics:
        with self._lock:
            found = self._projects.get(name)
            if found is None:
                found = self._projects[name] = ProjectMetrics(name, self.pool)
            return found

    def observe(self, project: str, endpoint: str, version: str, *, prompt_tokens: int, completion_tokens: int,
                seconds: float, ttft: float | None, batch_sizes: list[int]) -> None:
        m = self.project(project)
        m.prompt_tokens.labels(version).inc(prompt_tokens)
        m.completion_tokens.labels(version).inc(completion_tokens)
        m.latency.labels(endpoint, version).observe(seconds)
        if ttft is not None:
            m.ttft.labels(version).observe(ttft)
        if batch_sizes:
            m.batch_size.labels(version).observe(sum(batch_sizes) / len(batch_sizes))

    def count(self, project: str, endpoint: str, version: str, status: int) -> None:
        self.project(project).requests.labels(endpoint, version, str(status)).inc()

