"""Benchmarks and calibration scripts (`python -m bench.run`, `python -m bench.flops`, ...)."""
