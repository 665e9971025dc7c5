"""A process's start-up objects, frozen out of Python's cyclic garbage collector.

A worker process holds over 120,000 objects from its start (Django, Celery, kombu, the apps'
modules), and they live as long as it does. A full collection walked all of them: 60 ms idle
and 120–200 ms under load on the benchmark's machine, about once a minute a pool process. The task
it runs waits that long, and in a threads worker every task and the consumer with it. A web
process holds about 113,000 once its application has loaded; a full collection there held a
request for 60–84 ms, and 7–37 ms frozen (docs/benchmarks.md, "Python's garbage collector").
`gc.freeze()` moves them into a permanent generation that later collections leave out. What tasks
and requests allocate is collected as before.

It runs once the process is up: a prefork pool process after its fork (`worker_process_init`),
the worker's own process once it is ready (`worker_ready`: the prefork main process, or a
threads or solo worker, which runs its tasks itself), and a web process once its WSGI
application has loaded (shop/wsgi.py). Proven by tests/integration/test_gc_freeze.py.
"""

import gc


def freeze_start_up_objects(**kwargs) -> None:
    gc.freeze()
