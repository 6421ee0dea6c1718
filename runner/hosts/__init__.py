"""Runner hosts: runs queued with `anna-run submit` and executed by `anna-run worker` processes
through Celery (a Redis broker), the same code path as a local run (``run.execute``).

    celery_app.py   the Celery app and its settings; the coordination Redis and its keys
    submit.py       validate, publish package and payload to the store, record `queued`, enqueue
    worker.py       the Celery task: lease, fetch the package, ``run.execute``, write back
    lease.py        a run's lease (a heartbeat key) and the written-once guard of its record
    livelog.py      a Redis stream per run: the worker publishes masked log lines, ``logs -f`` reads
    control.py      `cancel` and `hosts`
"""
