"""Typed readers for configuration taken from the environment (twelve-factor style)."""

import os
import secrets
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("SHOP_VAR_DIR", BASE_DIR / "var"))

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), got {raw!r}")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}") from None


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def var_path(*parts: str) -> Path:
    """A path under the git-ignored var/ directory, created on demand."""
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    return VAR_DIR.joinpath(*parts)


def secret_key() -> str:
    """SECRET_KEY from the environment, else a random key kept in var/secret_key.

    The file keeps sessions valid across restarts on a laptop without putting a
    secret in the repository; several hosts must share SECRET_KEY from the environment.
    """
    if key := os.environ.get("SECRET_KEY"):
        return key
    path = var_path("secret_key")
    if not path.exists():
        # Write a complete file, then link it into place: web, worker and beat may
        # start together, and all of them must end up with the same key.
        tmp = var_path(f".secret_key.{os.getpid()}")
        tmp.write_text(secrets.token_urlsafe(50))
        tmp.chmod(0o600)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()
