"""Start `make run` (embedded SQLite + Redis) in the background, buy through the JSON API, stop it.

Fails unless the order is confirmed within 60 seconds, and unless everything the stack wrote
under its var/ (database and WAL, broker socket and append-only file, mails, SMS, secrets) is
closed to group and others. The stack gets a var/ of its own, made by the project, under the
usual umask 022: the check sees what a fresh checkout on a laptop gets.
"""

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE = "http://127.0.0.1:8000"
METRICS_TOKEN = "smoke-metrics-token"


def request(method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(BASE + path, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def metrics(token: str) -> tuple[int, str]:
    """GET /metrics with a bearer token (README: Operating → Metrics)."""
    req = urllib.request.Request(BASE + "/metrics", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""


def wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if value := predicate():
                return value
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise SystemExit(f"FAILED: {what} within {timeout}s")


def recorded(order: dict) -> dict | None:
    """The order once every step of its workflow is recorded as succeeded."""
    return order if all(step["state"] == "SUCCESS" for step in order["steps"]) else None


def shared(var: Path) -> list[str]:
    """var/ and everything under it that group or others may access at all, with its mode."""
    found = []
    for path in (var, *var.rglob("*")):
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            continue  # a temporary file, gone since the listing
        if mode & 0o077:
            found.append(f"{stat.filemode(mode)} {path}")
    return found


def main() -> None:
    scratch = Path(tempfile.mkdtemp(prefix="smoke-make-run-"))
    var = scratch / "var"  # not there yet: the project makes it
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env["SHOP_VAR_DIR"] = str(var)
    env["METRICS_TOKEN"] = METRICS_TOKEN
    log_path = scratch / "make-run.log"
    log = open(log_path, "wb")
    stack = subprocess.Popen(
        ["make", "run"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        umask=0o022,
    )
    try:
        wait(lambda: request("GET", "/api/products/")[0] == 200, 180, "the shop answers on :8000")
        status, products = request("GET", "/api/products/")
        product = next(p for p in products["results"] if p["stock"] > 0)
        status, created = request(
            "POST",
            "/api/orders/",
            {
                "customer": {"name": "Smoke Test", "email": "smoke@example.com", "phone": "+442079460958"},
                "shipping_address": "1 CI Street",
                "items": [{"sku": product["sku"], "quantity": 1}],
                "card_number": "4242424242424242",
            },
        )
        assert status == 202, (status, created)
        print(f"Order {created['number']} accepted: {created['status_url']}")
        path = created["status_url"].removeprefix(BASE)
        started = time.monotonic()
        order = wait(
            lambda: (o := request("GET", path)[1])["status"] in ("confirmed", "failed", "cancelled") and o,
            60,
            "order finished",
        )
        print(f"Order {order['number']}: {order['status']} after {time.monotonic() - started:.1f}s")
        assert order["status"] == "confirmed", order
        # Workers record step states in batches (WRITE_BEHIND_SECONDS), a moment after the order moves on.
        order = wait(lambda: recorded(request("GET", path)[1]), 10, "every step recorded as SUCCESS")
        print("Steps: " + ", ".join(f"{s['name']} {s['state']}" for s in order["steps"]))
        assert metrics("wrong")[0] == 401
        status, text = metrics(METRICS_TOKEN)
        confirmed = 'shop_orders{status="confirmed"} 1.0'
        assert status == 200 and confirmed in text, (status, text[-3000:])
        print(f"/metrics: {confirmed}")
        if offenders := shared(var):
            print("Open to group or others under var/:\n  " + "\n  ".join(offenders))
            raise SystemExit(f"FAILED: {len(offenders)} paths under var/ are not private")
        print(f"Everything under {var} is private: {len(list(var.rglob('*')))} files and folders")
    except BaseException:
        log.flush()
        sys.stdout.write(log_path.read_text(errors="replace")[-8000:])
        print(f"The stack's var/ and log are kept in {scratch}")
        raise
    finally:
        os.killpg(stack.pid, signal.SIGINT)
        try:
            stack.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(stack.pid, signal.SIGKILL)
    shutil.rmtree(scratch)
    print("Smoke test passed: make run placed and confirmed an order, kept var/ private; the stack stopped.")


if __name__ == "__main__":
    main()
