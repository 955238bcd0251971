"""The executor ``serve`` gives APScheduler: a bounded pool of threads that hands each due
job, with the time it was scheduled for, to the service.

APScheduler's own executors call the job's function without its scheduled time; the
service needs it, to tell a late run (beyond the misfire grace) from one on time and to
run each scheduled time once across processes. ``max_instances`` (one run of a pipeline
at a time in this process) is still APScheduler's: a job whose previous run is still
going is not submitted, and its next time is computed as usual (no pile-up).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from apscheduler.executors.base import BaseExecutor
from apscheduler.job import Job

log = logging.getLogger("crmsync.service")

Fire = Callable[[Job, datetime], None]


class RunExecutor(BaseExecutor):  # type: ignore[misc]
    """Runs up to ``workers`` jobs at once; more due jobs wait in the pool's queue."""

    def __init__(self, workers: int, fire: Fire) -> None:
        super().__init__()
        self._fire = fire
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="crmsync-run")

    def _do_submit_job(self, job: Job, run_times: list[datetime]) -> None:
        scheduled = run_times[-1]  # the jobs coalesce: the latest missed time stands for all

        def work() -> None:
            try:
                self._fire(job, scheduled)
            except BaseException as exc:  # the service logs its own; this is a bug
                log.exception("scheduled job %s crashed", job.id)
                self._run_job_error(job.id, exc, exc.__traceback__)
            else:
                self._run_job_success(job.id, [])

        self._pool.submit(work)

    def shutdown(self, wait: bool = True) -> None:
        """Takes no more jobs; the ones waiting for a thread are dropped (the service is
        stopping), the ones running are the service's to stop."""
        self._pool.shutdown(wait=wait, cancel_futures=True)
