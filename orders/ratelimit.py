"""Abuse limits on checkout, the order lookup and cancellation: fixed windows counted in a
database table (RateCounter), so every gunicorn worker and every web host counts the same hits
without a shared cache (the embedded setup has none; Django's default cache is per process).

Policy: each scope allows RATE_LIMITS[scope] = (requests, seconds) per key — the client's IP
address, and for the lookup also the order number asked about — in windows aligned on multiples of
`seconds`. One more is refused with 429 and `Retry-After` (the seconds to the window's end): JSON
for the API, a page saying when to try again for the storefront. Proved by
tests/functional/test_rate_limits.py.
"""

import math
import random
import time
from collections.abc import Callable
from functools import wraps

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from shop.jsonapi import is_api_request

from .models import RateCounter

_TABLE = RateCounter._meta.db_table
_HIT = (
    f"INSERT INTO {_TABLE} (key, window_start, hits) VALUES (%s, %s, 1) "
    f"ON CONFLICT (key, window_start) DO UPDATE SET hits = {_TABLE}.hits + 1 RETURNING hits"
)
CLEANUP_CHANCE = 0.01  # one hit in a hundred deletes the windows that ended
clock = time.time  # the seconds the windows are counted in (tests fix it: no window ends mid-test)


class RateLimited(Exception):
    def __init__(self, scope: str, retry_after: int) -> None:
        self.scope, self.retry_after = scope, retry_after
        super().__init__(f"Too many requests: try again in {retry_after} seconds.")


def client_of(request: HttpRequest) -> str:
    """The client's address: REMOTE_ADDR, or behind our proxy (BEHIND_PROXY) the address it appended
    last to X-Forwarded-For (earlier entries are the client's to forge)."""
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if settings.SECURE_PROXY_SSL_HEADER and forwarded:
        return forwarded.rsplit(",", 1)[-1].strip()[:64]
    return request.META.get("REMOTE_ADDR", "")[:64]


def hit(scope: str, key: str, *, now: float | None = None) -> None:
    """Count one request of `scope` by `key`; RateLimited if it is one too many."""
    if not settings.RATE_LIMITS_ENABLED:
        return
    limit, seconds = settings.RATE_LIMITS[scope]
    now = clock() if now is None else now
    window = int(now // seconds * seconds)
    with connection.cursor() as cursor:
        cursor.execute(_HIT, [f"{scope}:{key}"[:200], window])
        hits = cursor.fetchone()[0]
    if random.random() < CLEANUP_CHANCE:
        longest = max(period for _, period in settings.RATE_LIMITS.values())
        RateCounter.objects.filter(window_start__lt=now - longest).delete()
    if hits > limit:
        raise RateLimited(scope, max(1, math.ceil(window + seconds - now)))


def limited(scope: str, methods: tuple[str, ...] = ("POST",)) -> Callable:
    """Count the view's `methods` requests per client under `scope`, and answer a RateLimited
    raised by it (or by a `hit` inside it) with 429 and Retry-After."""

    def decorate(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            try:
                if request.method in methods:
                    hit(scope, client_of(request))
                return view(request, *args, **kwargs)
            except RateLimited as exc:
                return too_many(request, exc)

        return wrapper

    return decorate


def too_many(request: HttpRequest, exc: RateLimited) -> HttpResponse:
    message = f"Too many attempts. Please wait {exc.retry_after} seconds and try again."
    if is_api_request(request):
        response = JsonResponse(
            {"message": message, "errors": {"__all__": [message]}, "retry_after": exc.retry_after}, status=429
        )
    else:
        response = render(request, "orders/rate_limited.html", {"message": message}, status=429)
    response["Retry-After"] = str(exc.retry_after)
    return response
