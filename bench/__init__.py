"""Benchmarks behind `make bench`; each module registers functions that return figures."""
