"""Alembic environment and migration scripts, shipped inside the package (see `migrations`)."""
