"""Benchmarks for Portcullis; not part of the test suite. See benchmarks/README.md."""
