"""``python -m bench.stores``: many small stores at once through ``crmsync serve``.

A platform hosting many merchants serves a directory of store files (docs/service.md,
"Many stores"): here 200 generated stores of a few hundred customers each, every one with
a Mailchimp account and audience of its own on one fake server (80 ms per call), a
shared PostgreSQL state database, and a schedule that brings every store due at once.
``serve`` runs them in this machine's process (``--workers 0``) or coordinates them while
N Celery workers do the work (``--workers N``). Measured from the state database's runs
and the processes' own counters: the wall time of the first syncs of every store and of
the no-change runs that follow, CPU per profile over every process, the peak memory of
each process, and the calls against the floor per account. Figures go to
``bench/results.json`` under ``stores``.
"""
