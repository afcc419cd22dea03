"""Per-session serialisation: one message at a time per thread, any number of threads at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass


class KeyedLocks:
    """An `asyncio.Lock` per key, created on demand and dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


@dataclass(frozen=True, slots=True)
class SessionInfo:
    session_key: str
    turns: int
    agents: tuple[str, ...]
    current_agent: str | None
    created_at: float | None
    updated_at: float | None

    def to_dict(self) -> dict[str, object]:
        return {
            "session_id": self.session_key,
            "turns": self.turns,
            "agents": list(self.agents),
            "current_agent": self.current_agent,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }
