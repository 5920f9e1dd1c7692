"""Throughput benchmarks of ``fstore._native``: run with ``pytest benches --benchmark-enable``."""
