"""Helpers for the JSON API: request bodies in, errors out, always JSON, never a 500 for bad input."""

import json
from collections.abc import Callable
from functools import wraps

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt


class ApiError(Exception):
    def __init__(self, status: int, errors: dict[str, list[str]], message: str = "") -> None:
        super().__init__(message or "; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))
        self.status, self.errors = status, errors

    def response(self) -> JsonResponse:
        return JsonResponse({"message": str(self), "errors": self.errors}, status=self.status)


def api_view(methods: tuple[str, ...]) -> Callable:
    """A JSON endpoint: no cookies or sessions authenticate it, so it is exempt from CSRF."""

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @csrf_exempt
        @wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if request.method not in methods:
                response = ApiError(405, {"method": [f"Use {' or '.join(methods)}."]}).response()
                response["Allow"] = ", ".join(methods)
                return response
            try:
                return view(request, *args, **kwargs)
            except ApiError as exc:
                return exc.response()

        return wrapper

    return decorator


def read_json_object(request: HttpRequest) -> dict:
    if request.content_type != "application/json":
        raise ApiError(415, {"body": ["Send a JSON object with Content-Type: application/json."]})
    try:
        body = request.body
    except RequestDataTooBig:
        raise ApiError(413, {"body": ["The request body is too large."]}) from None
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise ApiError(400, {"body": ["The request body is not valid JSON."]}) from None
    try:
        # A "\ud800" escape (or those bytes in the body) decodes to a lone surrogate: not text,
        # and no database can store or even be queried with it. Refuse it here, once for all fields.
        json.dumps(data, ensure_ascii=False).encode()
    except (UnicodeEncodeError, RecursionError):
        raise ApiError(400, {"body": ["The request body contains text that is not valid Unicode."]}) from None
    if not isinstance(data, dict):
        raise ApiError(400, {"body": ["The request body must be a JSON object."]})
    return data
