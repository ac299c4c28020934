"""Benchmarks of the operator (issue #7): `make bench` writes BENCHMARKS.md, `make bench-smoke` runs the toy size."""
