"""Benchmarks behind `make bench`; results go to BENCHMARKS.md with the machine they ran on."""
