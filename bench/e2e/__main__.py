"""``python -m bench.e2e``: see the package's docstring."""

from __future__ import annotations

import sys

from bench.e2e.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
