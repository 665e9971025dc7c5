"""The Celery app's configuration (shop/celery.py): every CELERY_ setting of settings/celery.py, and
nothing else of Django's settings."""

from django.conf import settings

from shop.celery import app


def celery_settings() -> dict[str, object]:
    return {name: getattr(settings, name) for name in dir(settings) if name.startswith("CELERY_")}


def test_every_celery_setting_reaches_the_app():
    assert celery_settings()
    for name, value in celery_settings().items():
        assert app.conf[name] == value, name
    assert app.conf.task_serializer == "json"
    assert app.conf.task_acks_late is True
    assert app.conf.result_backend == settings.CELERY_RESULT_BACKEND
    # Read by Celery's Django fixup under its prefixed name.
    assert app.conf.get("CELERY_DB_REUSE_MAX") == settings.CELERY_DB_REUSE_MAX


def test_other_django_settings_stay_out_of_celery():
    """Celery's configuration (`celery inspect conf`, `celery report`) never holds the secret key
    or the database credentials (celery/celery#5024)."""
    for name in ("SECRET_KEY", "DATABASES", "INSTALLED_APPS"):
        assert name not in app.conf
        assert name not in app.conf.table(with_defaults=True, censored=False)


def test_a_default_setting_is_read_from_celery():
    """A setting settings/celery.py leaves out has Celery's default."""
    assert "CELERY_TASK_DEFAULT_PRIORITY" not in celery_settings()
    assert app.conf.task_default_priority is None
    assert app.conf.task_protocol == 2
