"""`python -m benchmarks.place_orders COUNT`: COUNT orders through the real checkout
(workflow.checkout), their workflows sent to the broker this process's environment names
(CELERY_BROKER_URL, CELERY_BROKER_QUEUE_TYPE); prints their ids as JSON.

The scaling benchmark (scale.py) places each configuration's orders from a process of its own:
the queue type is a setting, read once when Django starts.
"""

import json
import os
import sys

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")
django.setup()

from benchmarks.workflow import checkout  # noqa: E402  (imports models: after django.setup())

if __name__ == "__main__":
    print(json.dumps([checkout(n)[0] for n in range(int(sys.argv[1]))]))
