"""Benchmarks: commands that measure, not tests (python -m bench.<name>)."""
