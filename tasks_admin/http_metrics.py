"""Latency and status of every HTTP request, for /metrics (tasks_admin/prometheus.py).

A histogram in prometheus-client's default registry, labelled by method, the URL pattern that
answered (its route, so an order's id does not make a series of its own) and the status. Under
gunicorn with several workers, set PROMETHEUS_MULTIPROC_DIR (README, Operating → Metrics):
each worker then writes its samples to files there and /metrics, served by any one worker,
adds up all of them. Proven by tests/functional/test_metrics.py and
tests/integration/test_prometheus_scrape.py (two gunicorn workers scraped by a real Prometheus).
"""

import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from prometheus_client import Histogram

REQUEST_SECONDS = Histogram(
    "http_request_duration_seconds",
    "Time to answer an HTTP request, by method, route (the URL pattern) and status",
    ["method", "route", "status"],
)
UNROUTED = "unrouted"  # static files, and paths that match no URL pattern (404)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestMetricsMiddleware:
    """Outermost middleware (settings.MIDDLEWARE): times the whole answer, whatever produced it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        start = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        route = (match.route if match is not None else "") or UNROUTED
        method = request.method if request.method in METHODS else "other"  # no series per made-up verb
        REQUEST_SECONDS.labels(method, _label(route), response.status_code).observe(time.perf_counter() - start)
        return response


def _label(route: str) -> str:
    return route if route == UNROUTED else "/" + route.lstrip("/")
