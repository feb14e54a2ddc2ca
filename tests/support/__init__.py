"""Test helpers shared across the suite (importable as `support` via pytest's pythonpath)."""
