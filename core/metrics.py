"""Prometheus metrics. Latency is measured where it happens (per process); counts of questions,
routes, feedback, reviews and retrain runs are read from Postgres at scrape time, so every
process reports the same totals however many bots and workers run."""
from __future__ import annotations

import logging
from collections.abc import Iterator

import psycopg
from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

REGISTRY = CollectorRegistry()

ANSWER_SECONDS = Histogram(
    "flywheel_answer_seconds", "Time to answer a question, by step (generation included in 'total').",
    ["step"], buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60), registry=REGISTRY,
)


def observe_timings(timings: dict[str, float]) -> None:
    for step, seconds in timings.items():
        ANSWER_SECONDS.labels(step=step).observe(seconds)


class DatabaseCollector(Collector):
    """Totals from the records themselves: what the loop has done so far."""

    def __init__(self, url: str) -> None:
        self._url = url

    def collect(self) -> Iterator[Metric]:
        questions = GaugeMetricFamily("flywheel_questions", "Questions asked, by surface and route.",
                                      labels=["surface", "route"])
        feedback = GaugeMetricFamily("flywheel_feedback", "Votes on answers, by rating.", labels=["rating"])
        reviews = GaugeMetricFamily("flywheel_reviews", "Reviews, by status.", labels=["status"])
        runs = GaugeMetricFamily("flywheel_retrain_runs", "Retrain runs, by status.", labels=["status"])
        up = GaugeMetricFamily("flywheel_database_up", "1 when the database answered this scrape.")
        try:
            with psycopg.connect(self._url, connect_timeout=3) as conn:
                for surface, route, n in conn.execute(
                        "SELECT surface, coalesce(route, 'none'), count(*) FROM answers GROUP BY 1, 2"):
                    questions.add_metric([surface, route], n)
                for rating, n in conn.execute("SELECT rating, count(*) FROM feedback GROUP BY 1"):
                    feedback.add_metric([rating], n)
                for status, n in conn.execute("SELECT status, count(*) FROM reviews GROUP BY 1"):
                    reviews.add_metric([status], n)
                for status, n in conn.execute("SELECT status, count(*) FROM training_runs GROUP BY 1"):
                    runs.add_metric([status], n)
            up.add_metric([], 1)
        except psycopg.Error:
            logger.warning("metrics: the database did not answer", exc_info=True)
            up.add_metric([], 0)
            yield up
            return
        yield from (questions, feedback, reviews, runs, up)


_collector: DatabaseCollector | None = None


def watch_database(url: str) -> None:
    """Report the database totals from this process's registry (once per process)."""
    global _collector
    if _collector is None:
        _collector = DatabaseCollector(url)
        REGISTRY.register(_collector)


def start_exporter(port: int, url: str) -> bool:
    """Serve /metrics on `port` from a background thread (processes without an HTTP server).
    A port already taken (a second bot or worker on this host) costs the metrics, not the
    process: False, with a warning."""
    try:
        start_http_server(port, addr="127.0.0.1", registry=REGISTRY)
    except OSError as e:
        logger.warning("metrics not served: port %d is taken (%s); set FLYWHEEL_BOT_METRICS_PORT or "
                       "FLYWHEEL_WORKER_METRICS_PORT to another, or 0 for none", port, e.strerror or e)
        return False
    watch_database(url)
    logger.info("metrics on http://127.0.0.1:%d/metrics", port)
    return True
