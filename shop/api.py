"""GET /api/products/: the catalog as JSON, a page at a time."""

from django.core.paginator import Paginator
from django.http import HttpRequest, JsonResponse

from .jsonapi import api_view
from .selectors import product_listing, search_text

API_PAGE_SIZE = 50


@api_view(("GET",))
def product_list(request: HttpRequest) -> JsonResponse:
    products = product_listing(query=search_text(request.GET.get("q")))
    if slug := search_text(request.GET.get("category")):
        products = products.filter(category__slug=slug)  # an unknown category lists nothing
    page = Paginator(products, API_PAGE_SIZE).get_page(request.GET.get("page"))
    next_url = None
    if page.has_next():
        params = request.GET.copy()
        params["page"] = page.next_page_number()
        next_url = request.build_absolute_uri(f"{request.path}?{params.urlencode()}")
    return JsonResponse(
        {
            "results": [
                {
                    "sku": product.sku,
                    "name": product.name,
                    "price": str(product.price),
                    "stock": product.stock,
                    "url": request.build_absolute_uri(product.get_absolute_url()),
                }
                for product in page
            ],
            "next": next_url,
            "count": page.paginator.count,
        }
    )
