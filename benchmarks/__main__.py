"""`python -m benchmarks` (`make bench`, `make bench-quick`): the shop's settings, then the CLI (cli.py).

The benchmarks import the shop's models, so Django is set up before they are imported.
"""

import os
import sys

import django

from tasks_admin import gcfreeze

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")
django.setup()
# As a web process does once loaded (shop/wsgi.py): the admin part renders both admins' pages in
# this process, and they run here as they would there.
gcfreeze.freeze_start_up_objects()

from benchmarks.cli import main  # noqa: E402  (imports models: after django.setup())

sys.exit(main())
