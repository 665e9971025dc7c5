"""Celery's own canvas integration tests against the shop's result backend, with the stock
django-celery-results backend as the control: `make test-celery-canvas`.

Downloads Celery's sdist (the installed version) into var/celery-canvas/ (Celery's code is not
kept in this repository), installs the pytest plugins its suite needs there, and runs its
t/integration/test_canvas.py once per backend, with Celery's own session worker (a real
prefork worker) on a private Redis (a broker of its own: nothing else consumes its queue) and
the database of DATABASE_URL, migrated first. It fails if a test fails with the shop's backend
that passes with the stock one.

    python -m tests.celery_canvas [-k EXPRESSION]
"""

import argparse
import os
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import celery

from shop import embedded_redis
from tests.fakes.smtp_server import free_port

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "var" / "celery-canvas"
# The versions Celery 5.7.0's requirements/test.txt names; pydantic for its t/integration/tasks.py.
PLUGINS = ["pytest-subtests==0.15.0", "pytest-rerunfailures==16.7", "pytest-order==1.5.0"]
LIBRARIES = ["pydantic>=2,<3"]
BACKENDS = {
    "shop": "tasks_admin.backend:ShopDatabaseBackend",
    "stock": "django_celery_results.backends.database:DatabaseBackend",
}
# Loaded into Celery's pytest run: Django set up (our backends are Django models) before its worker starts.
DJANGO_PLUGIN = "tests.celery_canvas_django"


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--quiet", *args], check=True)


def celery_source() -> Path:
    """The test suite (t/) of Celery's sdist of the installed version, unpacked once under
    var/celery-canvas/ (its tests run against the installed Celery, not the sdist's copy)."""
    source = WORK / f"celery-{celery.__version__}"
    if not (source / "pyproject.toml").exists():
        WORK.mkdir(parents=True, exist_ok=True)
        pip("download", "--no-deps", "--no-binary", ":all:", "-d", str(WORK), f"celery=={celery.__version__}")
        with tarfile.open(WORK / f"celery-{celery.__version__}.tar.gz") as sdist:
            suite = [
                member
                for member in sdist.getmembers()
                if member.name.startswith(f"{source.name}/t/") or member.name == f"{source.name}/pyproject.toml"
            ]
            sdist.extractall(WORK, members=suite, filter="data")
    return source


def plugins() -> Path:
    target = WORK / "plugins"
    if not target.exists():
        pip("install", "--target", str(target), "--no-deps", *PLUGINS)  # not a second pytest
        pip("install", "--target", str(target), *LIBRARIES)
    return target


def run(backend: str, source: Path, broker_url: str, expression: str | None) -> dict[str, str]:
    """Each test's outcome (passed, failed, skipped) with this backend."""
    report = WORK / f"{backend}.xml"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "settings",
        "TEST_BROKER": broker_url,
        "TEST_BACKEND": BACKENDS[backend],
        "PYTHONPATH": os.pathsep.join([str(source), str(ROOT), str(plugins())]),
    }
    # Celery's own pytest configuration (its pyproject.toml), not this project's (pytest-django, its options).
    command = [
        sys.executable, "-m", "pytest", "t/integration/test_canvas.py", "-c", "pyproject.toml", "--rootdir", ".",
        "-p", "no:django", "-p", "no:cacheprovider", "-p", "celery.contrib.pytest", "-p", DJANGO_PLUGIN,
        "-q", "--timeout", "120", f"--junitxml={report}",
    ]  # fmt: skip
    if expression:
        command += ["-k", expression]
    print(f"==> {backend}: {BACKENDS[backend]}", flush=True)
    subprocess.run(command, cwd=source, env=env, check=False)
    outcomes = {}
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        found = {child.tag for child in case}
        outcomes[name] = "failed" if found & {"failure", "error"} else "skipped" if "skipped" in found else "passed"
    return outcomes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", dest="expression", help="only the tests matching this pytest expression")
    args = parser.parse_args()
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, check=True)
    source = celery_source()
    port = free_port()
    redis_server = embedded_redis.start_on_port(port, WORK / "redis")
    try:
        broker_url = f"redis://127.0.0.1:{port}/0"
        results = {backend: run(backend, source, broker_url, args.expression) for backend in BACKENDS}
    finally:
        redis_server.kill()
        redis_server.wait()
    shop, stock = results["shop"], results["stock"]
    worse = sorted(name for name, outcome in shop.items() if outcome == "failed" and stock.get(name) == "passed")
    for backend, outcomes in results.items():
        counts = {o: list(outcomes.values()).count(o) for o in ("passed", "failed", "skipped")}
        print(f"{backend}: {counts}")
    for name in worse:
        print(f"fails with the shop's backend, passes with the stock one: {name}")
    return 1 if worse else 0


if __name__ == "__main__":
    sys.exit(main())
