"""Plugin schemas: each plugin's config model, in a leaf module next to the entity models.

`model/plugins/<plugin>.py` holds what `plugins/<plugin>.py` (the handler) is built
from; it imports only `model.types` and other leaves, so validating a config never
imports a handler or what handlers need (the proxy, aiohttp, SQLAlchemy...). The
registry (`model/plugins/registry.py`) maps plugin names to these models.
"""
