"""A deterministic sample of a Turkish online store, for demos, tests and benchmarks.

``iter_store`` streams canonical records (fast: benchmarks generate millions);
``write_files`` writes the same store as a platform export (CSV and JSON lines, dirty
rows included) for the files source to read. Equal specs give byte-identical files.
"""

from __future__ import annotations

from crmsync.sample.spec import BUNDLED_SPEC, DEFAULT_NOW, SampleSpec
from crmsync.sample.store import items, iter_store, write_files

__all__ = ["BUNDLED_SPEC", "DEFAULT_NOW", "SampleSpec", "items", "iter_store", "write_files"]
