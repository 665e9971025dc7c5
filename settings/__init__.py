"""Settings package (DJANGO_SETTINGS_MODULE=settings); every value comes from the environment."""

from .celery import *  # noqa: F401,F403
from .core import *  # noqa: F401,F403
from .shop import *  # noqa: F401,F403
