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
