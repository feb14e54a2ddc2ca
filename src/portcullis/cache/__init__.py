"""Response caching: entries, purge scopes and the backends behind one protocol."""

from portcullis.cache.backend import CacheBackend, CacheUnavailable
from portcullis.cache.entry import CacheEntry, cache_key, key_path, variant_key
from portcullis.cache.memory import MemoryCache, default_memory_cache
from portcullis.cache.purge import PurgeScope

__all__ = [
    "CacheBackend",
    "CacheEntry",
    "CacheUnavailable",
    "MemoryCache",
    "PurgeScope",
    "cache_key",
    "default_memory_cache",
    "key_path",
    "variant_key",
]
