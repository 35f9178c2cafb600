"""Benchmarks: scripts, not tests (`uv run --frozen python bench/<name>.py`); bench/README.md."""
