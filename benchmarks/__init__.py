"""Benchmarks: scripts that time and score the project on real data (results under benchmarks/results/)."""
