"""Every error the JSON API answers is JSON, {"message": "...", "errors": {...}}, whatever DEBUG is:
`make run` has DEBUG=1, where Django would answer with its HTML debug pages, production has it off."""

import uuid

import pytest
from django.test import Client

from shop import api

pytestmark = pytest.mark.django_db


@pytest.fixture(params=[True, False], ids=["DEBUG", "no DEBUG"])
def debug(request, settings) -> bool:
    settings.DEBUG = request.param
    return request.param


def assert_json_error(response, status: int) -> dict:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"] == "application/json", response.content[:300]
    body = response.json()
    assert isinstance(body["message"], str) and body["message"], body
    assert isinstance(body["errors"], dict), body
    return body


@pytest.mark.parametrize(
    "path",
    [
        f"/api/orders/{uuid.uuid4()}/",  # get_object_or_404 in the view
        "/api/orders/not-a-uuid/",  # no URL pattern matches
        "/api/no-such-endpoint/",
        "/api/",
    ],
)
def test_an_unknown_api_address_is_a_json_404(client, debug, path):
    body = assert_json_error(client.get(path), 404)

    assert body["errors"] == {"path": ["No such resource."]}


@pytest.mark.parametrize(
    "method, path",
    [("delete", "/api/orders/"), ("post", "/api/products/"), ("put", f"/api/orders/{uuid.uuid4()}/")],
)
def test_a_method_the_endpoint_does_not_take_is_a_json_405(client, debug, method, path):
    response = getattr(client, method)(path)

    assert "method" in assert_json_error(response, 405)["errors"]
    assert response["Allow"]


def test_a_server_error_is_a_json_500_that_shows_nothing_of_the_code(debug, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("secret detail of the failure")

    monkeypatch.setattr(api, "product_listing", broken)

    response = Client(raise_request_exception=False).get("/api/products/")

    assert assert_json_error(response, 500)["errors"] == {}
    assert b"secret detail" not in response.content and b"RuntimeError" not in response.content


def test_a_nul_character_in_an_api_address_is_a_json_400_that_says_so(client, debug):
    body = assert_json_error(client.get("/api/products/?q=%00"), 400)

    assert "NUL character" in body["message"]


def test_a_host_the_shop_does_not_serve_is_a_json_400(debug):
    response = Client(HTTP_HOST="evil.example", raise_request_exception=False).get("/api/products/")

    assert_json_error(response, 400)


def test_pages_outside_the_api_keep_their_html_errors(client, debug):
    response = client.get("/no-such-page/")

    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")
