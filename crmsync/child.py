"""Child processes of a run: fresh interpreters joined to it by two one-way pipes.

A child is ``python -c`` running one function of this package (like multiprocessing's
spawn, but without re-importing the caller's ``__main__``, and allowed where
multiprocessing refuses, e.g. inside a daemonic Celery worker). It inherits no state: it
gets what it needs as pickled messages. It stops when told to, or as soon as it finds its
parent gone (``check_parent``). An error in a child is sent back as an ``("error",
exception, traceback)`` message and raised again in the parent (``raise_reported``).
Pipes carry a bounded number of bytes, so a child that gets ahead waits for its parent:
memory stays flat.

Used by the profile workers (``engine.parallel``) and the pull's reader
(``engine.read_ahead``).
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection as Pipe

from crmsync.errors import CrmsyncError


class ChildError(CrmsyncError):
    """A child process could not do its part (it died, or its setup failed)."""


@dataclass
class Child:
    """One child process and the two one-way pipes to and from it."""

    name: str
    process: subprocess.Popen[bytes]
    tasks: Pipe  # parent -> child
    results: Pipe  # child -> parent

    def send(self, message: object) -> None:
        try:
            self.tasks.send(message)
        except OSError:
            raise self.died() from None

    def receive(self) -> object:
        try:
            return self.results.recv()
        except (EOFError, OSError):  # closed, or reset by a child killed mid-message
            raise self.died() from None

    def died(self) -> ChildError:
        try:
            code = self.process.wait(5)
        except subprocess.TimeoutExpired:
            code = None
        return ChildError(f"{self.name} died (exit code {code})")

    def stop(self) -> None:
        for pipe in (self.tasks, self.results):
            pipe.close()
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def can_start() -> bool:
    return bool(sys.executable)


def start(name: str, main: str) -> Child:
    """Starts ``main`` (``"module:function"``, taking the child's ``Pipes``) in a fresh
    interpreter that finds the same modules as this one."""
    module, function = main.split(":")
    # Ctrl-C reaches every process of the terminal's group: the run's own process reports
    # it and stops its children, so a child ignores SIGINT (it stops when told to, when its
    # pipes close or when its parent is gone), instead of printing a traceback of its own
    # and it logs as this process does: at its level, personal data masked; it collects
    # garbage at crmsync's pace (``gc_pace``) from its first import on
    level = logging.getLogger().getEffectiveLevel()
    boot = (
        "import signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
        "from crmsync import gc_pace; gc_pace.widen(); "
        f"from crmsync.log_setup import child_logging; child_logging({level}); "
        f"from {module} import {function}; {function}(*sys.argv[1:])"
    )
    task_read, task_write = os.pipe()
    result_read, result_write = os.pipe()
    env = dict(os.environ)
    paths = [*sys.path, *env.get("PYTHONPATH", "").split(os.pathsep)]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    with _sigint_ignored():  # inherited through exec: no window while Python starts
        process = subprocess.Popen(
            [sys.executable, "-c", boot, str(task_read), str(result_write), str(os.getpid())],
            pass_fds=(task_read, result_write),
            stdin=subprocess.DEVNULL,
            env=env,
        )
    os.close(task_read)
    os.close(result_write)
    return Child(name, process, Pipe(task_write, readable=False), Pipe(result_read, writable=False))


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """SIGINT ignored while a child is spawned: the child inherits the disposition through
    exec, so it ignores Ctrl-C even while its interpreter starts (a Ctrl-C in these few
    milliseconds is lost, not half-handled). Only the main thread may change handlers:
    elsewhere the child's first statement does it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


@dataclass
class Pipes:
    """A child's side: its tasks, its results, and a check that its parent still runs."""

    tasks: Pipe
    results: Pipe
    parent: int

    def check_parent(self) -> None:
        if os.getppid() != self.parent:
            raise SystemExit(0)


def serve(task_fd: str, result_fd: str, parent: str, work: Callable[[Pipes], None]) -> None:
    """A child's whole life: ``work`` until it returns, the parent is gone or it fails;
    a failure is sent to the parent."""
    pipes = Pipes(
        Pipe(int(task_fd), writable=False), Pipe(int(result_fd), readable=False), int(parent)
    )
    try:
        work(pipes)
    except (EOFError, BrokenPipeError, SystemExit):
        return  # the parent is gone or stopped us: nobody to report to
    except BaseException as exc:
        where = traceback.format_exc()
        try:
            pickle.loads(pickle.dumps(exc))  # it must also come back whole
            error: object = exc
        except Exception:
            error = f"{exc.__class__.__name__}: {exc}"
        try:
            pipes.results.send(("error", error, where))
        except OSError:
            return


def raise_reported(message: tuple[object, ...], what: str) -> None:
    """Raises the error of an ``("error", error, traceback)`` message from a child."""
    _, error, where = message
    if isinstance(error, BaseException):
        error.add_note(f"in {what}:\n{where}")
        raise error
    raise ChildError(f"{what} failed: {error}\n{where}")
