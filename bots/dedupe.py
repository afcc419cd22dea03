"""Remembering what was already handled, so a redelivered event never produces a second answer.

Slack redelivers an event it thinks was not acknowledged in time (same `event_id`, `x-slack-retry-num` set), and
a mention in a thread arrives twice (`app_mention` and `message`). Bounded and in memory: redeliveries come
within minutes, and a restart forgets nothing that matters because Slack stops retrying after three tries.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

log = logging.getLogger(__name__)


class RecentKeys:
    """A bounded set of recently seen keys (oldest forgotten first)."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._keys: OrderedDict[Hashable, None] = OrderedDict()

    def first_time(self, *keys: Hashable | None) -> bool:
        """True when none of `keys` was seen before; all of them are remembered from now on."""
        present = [k for k in keys if k is not None]
        if any(k in self._keys for k in present):
            return False
        for key in present:
            self.add(key)
        return True

    def add(self, key: Hashable) -> None:
        """Remember `key` (again): it becomes the newest."""
        self._keys.pop(key, None)
        self._keys[key] = None
        while len(self._keys) > self.capacity:
            self._keys.popitem(last=False)

    def discard(self, key: Hashable) -> None:
        self._keys.pop(key, None)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)


class FallbackDeliveryKeys:
    """Shared delivery keys (Redis) with this process's memory as the fallback while the shared store is away.

    Why: a question must not be dropped because Redis is briefly unreachable. While it is, duplicates are still
    caught within this replica; a redelivery to another replica during the outage may be answered twice, which
    is the lesser harm. Every key is also remembered locally, so the local memory is warm when it is needed."""

    def __init__(self, shared: Any, capacity: int = 10_000) -> None:
        self._shared = shared
        self._local = RecentKeys(capacity)

    async def first_time(self, *keys: Hashable | None) -> bool:
        local = self._local.first_time(*keys)
        try:
            return bool(await self._shared.first_time(*keys))
        except Exception as exc:  # noqa: BLE001 - any failure of the shared store: fall back, say so
            log.warning("duplicate-delivery keys unavailable (%s); checking this replica's memory only", exc)
            return local
