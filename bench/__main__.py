"""`python -m bench [NAME ...]`: runs the named benchmarks (default: all quick ones)."""

from __future__ import annotations

import importlib
import sys

QUICK = ["bench_profiles", "bench_rest", "bench_mailchimp", "bench_sql"]


def main(argv: list[str]) -> int:
    names = argv or QUICK
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        print(f"== {name}", flush=True)
        code = module.main([])
        if code:
            return int(code)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
