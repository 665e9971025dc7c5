"""/metrics in Prometheus text format, and the extension point apps add their series through.

Every series but the HTTP ones is computed when Prometheus scrapes, from the database and the
broker (tasks_admin/collectors.py, and what apps register here): the history is durable and
shared, so the figures are right whichever gunicorn worker answers and however many worker
processes ran the tasks. The HTTP histogram (tasks_admin/http_metrics.py) lives in each web
process; with PROMETHEUS_MULTIPROC_DIR set, prometheus-client's multiprocess mode adds up all
of them. Not public: METRICS_TOKEN. Proven by tests/functional/test_metrics.py and
tests/integration/test_prometheus_scrape.py.
"""

import base64
import binascii
import hmac
import logging
import os
from collections.abc import Iterator
from functools import cache

from django.conf import settings
from django.db import DatabaseError
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.http import require_safe
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from .collectors import TaskCollector

logger = logging.getLogger(__name__)

_collectors: dict[str, Collector] = {}


def register_collector(name: str, collector: Collector) -> None:
    """Add an app's series to /metrics: `collector.collect()` runs at every scrape, in the web
    process that answers, and yields metric families (prometheus_client.core), best read from
    the database. `name` labels it in `metrics_collector_up`; registering a name again replaces it."""
    _collectors[name] = collector


class _ThisProcess:
    """The HTTP series and the process's own (CPU, memory) when one process serves the shop."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


class _Registered:
    """Every registered collector, each one guarded: a collector whose database read fails
    is left out of the scrape (and says so) rather than failing the others."""

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("metrics_collector_up", "1 if the collector answered this scrape", labels=["collector"])
        for name, collector in list(_collectors.items()):
            try:
                families = list(collector.collect())
            except DatabaseError:
                logger.exception("/metrics: the %s collector failed", name)
                up.add_metric([name], 0)
                continue
            up.add_metric([name], 1)
            yield from families
        yield up


register_collector("tasks", TaskCollector())


@cache
def _registry() -> CollectorRegistry:
    """Made at the first scrape, in a web process: workers and beat, which import this module
    too, never read the multiprocess folder (gunicorn.conf.py makes it when the web starts)."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)  # every gunicorn worker's HTTP series, from their files
    else:
        registry.register(_ThisProcess())
    registry.register(_Registered())
    return registry


def scrape() -> bytes:
    """Every series, in Prometheus text format."""
    return generate_latest(_registry())


@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    """404 unless METRICS_TOKEN is set; 401 unless the request carries it (bearer or basic auth)."""
    token = settings.METRICS_TOKEN
    if not token:
        raise Http404
    if not _authorized(request.headers.get("Authorization", ""), token):
        return HttpResponse(
            "A bearer token (METRICS_TOKEN) is required.\n",
            status=401,
            content_type="text/plain",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    # The text format every Prometheus 2.x reads (metric names here are all classic ones).
    return HttpResponse(scrape(), content_type=CONTENT_TYPE_PLAIN_0_0_4)


def _authorized(header: str, token: str) -> bool:
    """`Bearer <token>`, or `Basic` with any user name and the token as the password."""
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer":
        given = credentials.strip()
    elif scheme.lower() == "basic":
        try:
            given = base64.b64decode(credentials.strip(), validate=True).decode().partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return False
    else:
        return False
    return hmac.compare_digest(given.encode(), token.encode())
