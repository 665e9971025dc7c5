"""Load the demo catalog: 5 categories, 50 products. Safe to run again: existing rows are kept as they are."""

from decimal import Decimal

from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils.text import slugify

from shop.models import Category, Product

CATALOG = {
    "Coffee": [
        "Ethiopia Yirgacheffe",
        "Colombia Huila",
        "Kenya AA",
        "Guatemala Antigua",
        "Brazil Cerrado",
        "Sumatra Mandheling",
        "Costa Rica Tarrazú",
        "Rwanda Bourbon",
        "Espresso Blend",
        "Decaf House Blend",
    ],
    "Tea": [
        "Darjeeling First Flush",
        "Assam Breakfast",
        "Sencha",
        "Gyokuro",
        "Earl Grey",
        "Jasmine Pearls",
        "Oolong Tieguanyin",
        "Rooibos",
        "Chamomile",
        "Masala Chai",
    ],
    "Brewing": [
        "Pour-over Dripper",
        "Paper Filters (100)",
        "Gooseneck Kettle",
        "French Press",
        "Moka Pot",
        "Hand Grinder",
        "Burr Grinder",
        "Digital Scale",
        "Cold Brew Jar",
        "Aeropress",
    ],
    "Cups & Mugs": [
        "Espresso Cup",
        "Cappuccino Cup",
        "Stoneware Mug",
        "Glass Tumbler",
        "Double-wall Glass",
        "Travel Mug",
        "Tea Bowl",
        "Latte Bowl",
        "Enamel Camp Mug",
        "Porcelain Teacup",
    ],
    "Snacks": [
        "Almond Biscotti",
        "Dark Chocolate 70%",
        "Shortbread",
        "Cantuccini",
        "Stroopwafels",
        "Ginger Cookies",
        "Matcha Wafers",
        "Salted Caramels",
        "Oat Crunchies",
        "Candied Orange Peel",
    ],
}


class Command(BaseCommand):
    help = __doc__

    @transaction.atomic
    def handle(self, *args, **options) -> None:
        created = 0
        for c_index, (category_name, names) in enumerate(CATALOG.items()):
            category, _ = Category.objects.get_or_create(slug=slugify(category_name), defaults={"name": category_name})
            for p_index, name in enumerate(names):
                number = c_index * 10 + p_index + 1
                _, was_created = Product.objects.get_or_create(
                    sku=f"DEMO-{number:03d}",
                    defaults={
                        "category": category,
                        "name": name,
                        "slug": slugify(name),
                        "description": f"{name}, from our {category_name.lower()} range.",
                        "price": Decimal(4 + (number * 37) % 60) + Decimal("0.90"),
                        "stock": 5 + (number * 13) % 40,
                    },
                )
                created += was_created
        self.stdout.write(f"Demo catalog: {created} products created, {Product.objects.count()} in the catalog.")
