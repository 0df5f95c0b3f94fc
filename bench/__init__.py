"""Benchmarks: each ``bench_*.py`` module prints throughput ratios against a baseline run in the
same process, so the numbers compare like with like on any machine. ``make bench`` runs them."""
