"""The end-to-end bench under its first name: ``python -m bench.bench_e2e ...`` is
``python -m bench.e2e ...`` (the package ``bench/e2e`` says what it measures), and
``python -m bench bench_e2e`` finds its ``main`` here."""

from __future__ import annotations

import sys

from bench.e2e.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
