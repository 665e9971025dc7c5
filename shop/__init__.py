"""Catalog, storefront and the project's Celery app and URL configuration."""

from .celery import app as celery_app

__all__ = ("celery_app",)
