"""Benchmarks: figures and ratios written to bench/results.json, never asserted in tests."""
