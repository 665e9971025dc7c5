"""The benchmark suite (`python manage.py bench`, `make bench`): suite.py sizes the runs and
turns them into figures, each next to its baseline from the same run."""
