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


def env_rate(name: str, default: str) -> tuple[int, int]:
    """A rate limit, "<requests>/<seconds>" (e.g. "10/60"): (requests, seconds)."""
    raw = os.environ.get(name) or default
    count, _, seconds = raw.partition("/")
    try:
        rate = (int(count), int(seconds))
    except ValueError:
        rate = (0, 0)
    if rate[0] < 1 or rate[1] < 1:
        raise ImproperlyConfigured(f"{name} must be <requests>/<seconds>, both positive, e.g. 10/60; got {raw!r}")
    return rate


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def private_dir(path: Path) -> Path:
    """Make the directory `path` (and missing parents), and make it 0700, its owner's only, if it is looser.

    var/ holds the SQLite database and WAL (sessions, password hashes, customers), the broker's
    append-only file (task messages), sent e-mails and SMS, SECRET_KEY and the demo admin's password.
    The project makes its folders in var/ with this helper: a private folder keeps its files private
    whatever their own mode, even files an older checkout left 0644. The umask 077 `make run` sets
    (Makefile) makes the files 0600 as well. A folder owned by another user (a deployment's read-only
    mount) is left alone. Proven by tests/security/test_local_files.py and .ci/smoke_make_run.py.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    status = path.stat()
    if status.st_mode & 0o077 and status.st_uid == os.geteuid():
        path.chmod(0o700)
    return path


def var_dir(*parts: str) -> Path:
    """A folder under the git-ignored var/ directory; it and var/ are created private on demand."""
    path = private_dir(VAR_DIR)
    for part in parts:
        path = private_dir(path / part)
    return path


def var_path(*parts: str) -> Path:
    """A file's path under var/; its folders are created private on demand."""
    *folders, name = parts
    return var_dir(*folders) / name


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
