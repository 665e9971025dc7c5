"""The synchronous baseline of the checkout benchmark: the shop's own checkout API, then the
confirmation e-mail and SMS sent inside the request, as a shop without a task queue would.

    gunicorn benchmarks.sync_checkout:application
"""

import json
import os

from django.http import HttpRequest, HttpResponse
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")

from django.conf import settings  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402

settings.ROOT_URLCONF = __name__
application = get_wsgi_application()

from notifications import services as notifications  # noqa: E402
from notifications.models import Notification  # noqa: E402
from orders import api, messages, services  # noqa: E402
from orders.models import Order  # noqa: E402


@csrf_exempt  # as the JSON API it wraps: no cookie or session authentication
def order_create_and_send(request: HttpRequest) -> HttpResponse:
    response = api.order_create(request)
    if response.status_code == 202:
        order_id = json.loads(response.content)["id"]
        notifications.queue(messages.confirmation(Order.objects.get(pk=order_id)))
        for channel in (Notification.Channel.EMAIL, Notification.Channel.SMS):
            services.send_confirmation(order_id, channel)
    return response


urlpatterns = [
    path("api/orders/", order_create_and_send),  # first: it takes the checkout over
    path("", include("shop.urls")),
]
