"""Benchmarks, run from the project root as modules: `python -m bench.run` (see README)."""
