"""The laptop setup's var/ (database, broker queue, sent e-mails and SMS, SECRET_KEY, admin password) is its
user's alone: no other account on the machine may read or change it. `.ci/smoke_make_run.py` checks the same
of a whole `make run` after an order."""

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from settings import env
from shop import embedded_redis

ROOT = Path(__file__).resolve().parent.parent.parent
LAPTOP_UMASK = 0o022  # the usual default: new files readable by everyone


def shared(root: Path) -> list[str]:
    """root and everything under it that group or others may access at all, with its mode."""
    paths = [root, *root.rglob("*")]
    return [f"{path} {stat.filemode(path.lstat().st_mode)}" for path in paths if path.lstat().st_mode & 0o077]


def start_project(var_dir: Path) -> None:
    """`manage.py check` in a fresh process: what web, worker and beat do first when they start."""
    environ = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "EMAIL_FILE_PATH", "SMS_FILE_PATH")}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={**environ, "SHOP_VAR_DIR": str(var_dir)},
        umask=LAPTOP_UMASK,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def laptop_umask() -> Iterator[None]:
    previous = os.umask(LAPTOP_UMASK)
    yield
    os.umask(previous)


def test_the_project_creates_var_and_its_folders_for_its_user_only(tmp_path: Path) -> None:
    var = tmp_path / "var"

    start_project(var)

    assert shared(var) == []
    assert {"mail", "static", "secret_key"} <= {path.name for path in var.iterdir()}


def test_the_project_closes_a_var_left_open_by_an_older_checkout(tmp_path: Path) -> None:
    var = tmp_path / "var"
    (var / "mail").mkdir(parents=True)
    (var / "mail" / "order.log").write_text("To: ada@example.com")
    for path in (var, var / "mail"):
        path.chmod(0o755)

    start_project(var)

    for path in (var, var / "mail"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path


def test_var_path_creates_the_folders_of_the_path_private(tmp_path: Path, monkeypatch, laptop_umask) -> None:
    monkeypatch.setattr(env, "VAR_DIR", tmp_path / "var")

    path = env.var_path("bench", "scratch.sqlite3")

    assert path == tmp_path / "var" / "bench" / "scratch.sqlite3"
    assert path.parent.is_dir()
    assert shared(tmp_path / "var") == []


def test_the_embedded_redis_keeps_its_socket_and_queue_private(tmp_path: Path, laptop_umask) -> None:
    """Task messages (order ids, e-mail and SMS jobs) live in the append-only file."""
    data, sock = tmp_path / "data", tmp_path / "redis.sock"
    server = embedded_redis.start(sock, data)
    try:
        redis.Redis(unix_socket_path=str(sock)).lpush("celery", "a task message")
        assert [path for path in data.rglob("*") if path.is_file()], "the append-only file is written at start"
        assert shared(data) == [] and shared(sock) == []
    finally:
        server.terminate()
        server.wait(timeout=10)
