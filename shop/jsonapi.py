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


API_PREFIX = "/api/"


def is_api_request(request: HttpRequest) -> bool:
    return request.path_info.startswith(API_PREFIX)


class JsonErrorsMiddleware:
    """Under /api/, an error answer that is not JSON becomes {"message", "errors"}, whatever DEBUG is.

    Django answers some API errors itself, as HTML: an address no URL pattern matches, Http404
    from get_object_or_404, an unhandled exception, a bad Host header; with DEBUG (make run) as
    its debug pages, which show code and settings to the client. The outermost middleware sees
    every answer, so this is the one place for all of them, and Django's own handling (the log
    line with its traceback, got_request_exception) is kept. tests/functional/test_api_errors.py.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        content_type = response.headers.get("Content-Type", "")
        if response.status_code < 400 or content_type.startswith("application/json") or not is_api_request(request):
            return response
        errors = {"path": ["No such resource."]} if response.status_code == 404 else {}
        return ApiError(response.status_code, errors, f"{response.reason_phrase.capitalize()}.").response()


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
