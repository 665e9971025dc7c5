"""The keys, in the broker's Redis, through which the ceiling's no-op tasks (stock_app.tick) say
when the first and the last of them ran: shared by the stock app and the benchmark, which must
not import the stock app (its Celery app would become the current one in the shop's process)."""

COUNT, FIRST, LAST = "bench:ticks", "bench:first-tick", "bench:last-tick"
