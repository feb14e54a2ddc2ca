"""Persistence: SQLAlchemy (async) tables, repositories and Alembic migrations.

SQLite is the embedded default; PostgreSQL is selected by a `postgresql+asyncpg://`
URL. The data plane never queries the store per request: workers poll one cheap
version number and load a config document only when it changes.
"""
