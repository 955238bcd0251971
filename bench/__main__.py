"""`python -m bench [NAME ...]`: runs the named benchmarks (default: all quick ones).

Not in the quick list, since it takes minutes to hours: ``bench_e2e``, the end-to-end
first, no-change and 1 %-changed runs of ``crmsync run`` against the fake Mailchimp at
10k to 1M customers on SQLite and PostgreSQL (the package ``bench/e2e``; ``python -m
bench.e2e --help``, or ``bench_e2e``, its first name, here).
"""

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
