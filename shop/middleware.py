"""Request hygiene shared by every page, the API and the admin."""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest

from .jsonapi import ApiError, is_api_request


class RejectNulBytesMiddleware:
    """A NUL character in the path or query string is never meaningful, and PostgreSQL
    refuses it in any query: answer 400 here rather than a 500 from whichever page or
    list filter (ours or a library's) passes it to the database. The API's 400 is JSON, with
    this message, like its other errors."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        query = request.GET.lists()  # every value of a repeated key, not only the last
        if "\x00" in request.path or any("\x00" in key or "\x00" in "".join(values) for key, values in query):
            message = "The address contains a NUL character."
            if is_api_request(request):
                return ApiError(400, {"url": [message]}, message).response()
            return HttpResponseBadRequest(message)
        return self.get_response(request)
