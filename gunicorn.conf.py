"""gunicorn reads this file from the directory it starts in (the repository's root).

prometheus-client's multiprocess mode (README: Operating → Metrics): with
PROMETHEUS_MULTIPROC_DIR set, each web worker writes its HTTP series to files there, and
/metrics adds them up. The folder must start empty (values of an earlier run would be added
again), and a worker that exits leaves its files, which still count (its requests happened).
Proven by tests/integration/test_prometheus_scrape.py.
"""

import os
import shutil
from pathlib import Path


def on_starting(server) -> None:
    """Before the workers fork: empty the multiprocess folder (create it if missing)."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        path = Path(folder)
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(mode=0o700, parents=True)


# LOG_FORMAT=json (the Procfile's default): gunicorn's own lines, its error log on stderr and its
# access log on stdout, as JSON objects like the shop's (settings.LOGGING), so that a log shipper
# reads one format (tests/integration/test_json_logs.py).
if os.environ.get("LOG_FORMAT", "plain") == "json":
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "tasks_admin.logcontext.json_formatter"}},
        "handlers": {
            "error": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"},
            "access": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"},
        },
        "root": {"level": "INFO", "handlers": ["error"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["error"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["access"], "propagate": False},
        },
    }
