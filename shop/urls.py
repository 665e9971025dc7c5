"""Root URL configuration."""

from django.contrib import admin
from django.urls import include, path

from orders import api as orders_api
from orders import views as orders_views
from tasks_admin.dashboard import dashboard_view
from tasks_admin.prometheus import metrics_view

from . import api, views

storefront = (
    [
        path("", views.product_list, name="product_list"),
        path("products/<slug:slug>/", views.product_detail, name="product_detail"),
        path("cart/", views.cart_detail, name="cart"),
        path("cart/add/", views.cart_add, name="cart_add"),
        path("cart/update/", views.cart_update, name="cart_update"),
        path("cart/remove/", views.cart_remove, name="cart_remove"),
    ],
    "shop",
)

orders = (
    [
        path("checkout/", orders_views.checkout, name="checkout"),
        path("orders/find/", orders_views.order_lookup, name="lookup"),
        path("orders/<uuid:pk>/", orders_views.order_detail, name="order_detail"),
        path("orders/<uuid:pk>/cancel/", orders_views.order_cancel, name="order_cancel"),
    ],
    "orders",
)

json_api = (
    [
        path("products/", api.product_list, name="product_list"),
        path("orders/", orders_api.order_create, name="order_create"),
        path("orders/lookup/", orders_api.order_lookup, name="order_lookup"),
        path("orders/<uuid:pk>/", orders_api.order_detail, name="order_detail"),
        path("orders/<uuid:pk>/cancel/", orders_api.order_cancel, name="order_cancel"),
    ],
    "api",
)

urlpatterns = [
    path("", include(storefront)),
    path("", include(orders)),
    path("api/", include(json_api)),
    path("admin/tasks/dashboard/", admin.site.admin_view(dashboard_view), name="tasks_dashboard"),
    path("admin/", admin.site.urls),
    path("metrics", metrics_view, name="metrics"),
]

handler404 = views.page_not_found
handler500 = views.server_error
