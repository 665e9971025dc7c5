"""Checkout latency with slow providers: POST /api/orders/ through gunicorn while the SMS gateway
and the SMTP server each take 2 s per message, next to the synchronous baseline
(benchmarks/sync_checkout.py) that sends both inside the request.

Ours is measured twice while the workers run the orders' workflows on the same cores: at half
the measured order throughput (as customers arrive: the load the shop sustains) and flat out
(two clients back to back, several times faster than the workers can follow, so the backlog
grows and the web competes with the workers for CPU)."""

import json
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from django_celery_results.models import TaskResult

from . import workflow
from .database import BenchmarkError
from .providers import SlowProviders
from .stack import Stack
from .stats import percentiles

CLIENTS = 2  # flat out: requests in flight at once, one per web worker (the Procfile's gunicorn)
OPEN_LOOP_THREADS = 8  # at a rate: enough clients that a slow answer never delays the next arrival


def _payload(n: int) -> bytes:
    return json.dumps(
        {
            "customer": {"name": f"Bench {n}", "email": f"bench{n}@example.com", "phone": f"+4479461{n % 100000:05d}"},
            "shipping_address": f"{n} Benchmark Road",
            "items": [{"sku": f"{workflow.SKU}-{n % workflow.PRODUCTS}", "quantity": 1}],
            "card_number": "4242 4242 4242 4242",
        }
    ).encode()


def _post(url: str, n: int) -> float:
    request = urllib.request.Request(url + "/api/orders/", _payload(n), {"Content-Type": "application/json"})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as response:
        if response.status != 202:
            raise BenchmarkError(f"Checkout answered {response.status}")
        response.read()
    return time.perf_counter() - start


def _time_checkouts(
    url: str, count: int, offset: int, rate: float | None = None, warm_up: int = 2 * CLIENTS
) -> list[float]:
    """Each request's time: `rate` a second on a fixed schedule (open loop: a slow answer does
    not hold back the next customer), or, without a rate, CLIENTS clients back to back; after
    `warm_up` requests, as the first ones import and connect."""
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(lambda n: _post(url, offset - 1 - n), range(warm_up)))
    if rate is None:
        with ThreadPoolExecutor(CLIENTS) as pool:
            return list(pool.map(lambda n: _post(url, offset + n), range(count)))
    start = time.monotonic()

    def on_time(n: int) -> float:
        time.sleep(max(0.0, start + n / rate - time.monotonic()))
        return _post(url, offset + n)

    with ThreadPoolExecutor(OPEN_LOOP_THREADS) as pool:
        return list(pool.map(on_time, range(count)))


def measure(
    stack: Stack,
    requests: int,
    baseline_requests: int,
    baseline_warm_ups: int,
    delay: float,
    rate: float,
    log: Callable[[str], None],
) -> tuple[dict, dict, dict]:
    """(ours at `rate` a second, ours flat out, the synchronous baseline): each {p50, p95} in seconds."""
    workflow._reset()
    workflow._catalog()
    with SlowProviders(delay) as providers:
        workers = stack.workers(workflow.PRODUCTION_WORKERS, **providers)
        url = stack.web(workers=2, threads=1, **providers)
        log(f"  {requests} checkouts at {rate:.1f}/s with {delay:g} s providers and the workers running ...")
        at_rate = _time_checkouts(url, requests, offset=0, rate=rate)
        log(f"  {requests} checkouts, {CLIENTS} clients back to back ...")
        flat_out = _time_checkouts(url, requests, offset=requests + 10)
        stack.stop(*workers)
        stack.purge()
        sync_url = stack.web("benchmarks.sync_checkout:application", workers=2, threads=4, **providers)
        log(f"  {baseline_requests} synchronous checkouts (sending in the request) ...")
        sync = _time_checkouts(sync_url, baseline_requests, offset=100_000, warm_up=baseline_warm_ups)
    TaskResult.objects.all().delete()
    return _quantiles(at_rate), _quantiles(flat_out), _quantiles(sync)


def _quantiles(samples: list[float]) -> dict[str, float]:
    return {key: value for key, value in percentiles(samples).items() if key in ("p50", "p95")}
