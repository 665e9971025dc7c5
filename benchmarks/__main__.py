"""`python -m benchmarks` (`make bench`, `make bench-quick`): the shop's settings, then the CLI (cli.py).

The benchmarks import the shop's models, so Django is set up before they are imported.
"""

import os
import sys

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")
django.setup()

from benchmarks.cli import main  # noqa: E402  (imports models: after django.setup())

sys.exit(main())
