"""Data-plane plugins: one module per plugin, a pydantic config model plus a handler."""
