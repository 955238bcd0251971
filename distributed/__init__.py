"""One pipeline run on Celery workers, on any number of machines, meeting in PostgreSQL.

``crmsync run --workers celery`` (``coordinator``) holds the pipeline's lease and runs its
phases in order, each as tasks any worker may take (``tasks``): pull every stream (the
customers first, then orders and carts), read consent back and settle earlier jobs per
destination, plan the key space a slice per task, push each destination's batches,
collect pending jobs. Results meet in the state database (``state.work_queue``), so a
task that a broker delivers twice, or a worker killed part-way, changes nothing twice.
``crmsync worker`` (``app``) takes tasks. The in-process run (``engine.pipeline``) stays
the default; this package stands above the engine, as ``service`` does.
"""
