"""Shared state behind one small interface: in-process (`MemoryStore`) or Redis (`RedisStore`)."""

from __future__ import annotations

from app.settings import Settings
from app.store.base import RateDecision, Store
from app.store.memory import MemoryStore
from app.store.redis_store import RedisStore

__all__ = ["MemoryStore", "RateDecision", "RedisStore", "Store", "store_from_settings"]


def store_from_settings(settings: Settings) -> Store:
    """Redis when REDIS_URL is set (shared by every instance), else an in-process store."""
    if settings.redis_url:
        return RedisStore.from_url(settings.redis_url, timeout=settings.upstream_connect_timeout)
    return MemoryStore()
