"""The benchmark suite, outside the shop's apps (none of them imports it): `python -m benchmarks`
(`make bench`, `make bench-quick`); suite.py sizes the runs and turns them into figures, each next
to its baseline from the same run. See docs/benchmarks.md."""
