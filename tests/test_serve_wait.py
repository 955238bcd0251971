"""``crmsync run`` and ``backfill`` beside ``serve``: never a run of the same pipeline at
the same time; without --wait they exit 4 naming who runs it, with --wait they wait for
it (saying so, once) and run after it, or give up after --wait-timeout."""

from __future__ import annotations

import threading
from pathlib import Path

from state.store import Store
from tests.e2e import AS_OF, make_site

HOLDER = "serve-host:4242"


def test_a_run_beside_another_process_names_the_holder_and_exits_4(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    site = make_site(tmp_path, url, customers=10)
    store = Store(url)
    assert store.acquire_lease("pipeline:main", 600, holder=HOLDER) is not None
    store.close()
    result = site.cli("backfill", "--pipeline", "main", "--full", "--as-of", AS_OF)
    assert result.exit_code == 4
    assert "already running in another process (serve-host:4242" in result.stderr
    assert "--wait" in result.stderr
    waited = site.cli("run", "--as-of", AS_OF, "--wait", "--wait-timeout", "0.5")
    assert waited.exit_code == 4
    assert "waiting for pipeline 'main': running in another process (serve-host:4242" in (
        waited.stderr
    )
    assert "still running in another process (serve-host:4242" in waited.stderr
    assert "(--wait-timeout)" in waited.stderr
    assert site.batch_files() == set()


def test_with_wait_a_backfill_runs_once_the_other_run_ends(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    site = make_site(tmp_path, url, customers=10)
    store = Store(url)
    assert store.acquire_lease("pipeline:main", 600, holder=HOLDER) is not None
    released = threading.Event()

    def release() -> None:
        store.release_lease("pipeline:main", HOLDER)
        released.set()

    timer = threading.Timer(1.0, release)
    timer.start()
    try:
        result = site.cli("backfill", "--pipeline", "main", "--full", "--as-of", AS_OF, "--wait")
    finally:
        timer.cancel()
        store.close()
    assert released.is_set()
    assert result.exit_code == 0, result.output
    assert result.stderr.count("waiting for pipeline 'main'") == 1
    assert site.batch_files()  # it ran, after the other
