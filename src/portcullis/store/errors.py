"""Errors raised by the store layer."""

from __future__ import annotations


class StoreError(Exception):
    """Base class for store errors that callers may want to tell apart from driver errors."""


class NotFound(StoreError, LookupError):
    """The requested record (e.g. a config version) does not exist."""


class UnsupportedDatabase(StoreError, ValueError):
    """The database URL names a backend other than SQLite or PostgreSQL."""
