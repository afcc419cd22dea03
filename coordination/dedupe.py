"""Duplicate-delivery keys: a redelivered event (same Slack `event_id`, the `message` twin of an `app_mention`, a
Discord interaction id, a web retry's message id) is answered once, by whichever replica saw it first.

Both implementations answer `first_time(*keys)` exactly as `bots.dedupe.RecentKeys` does: True when none of the
keys was seen, and then all of them are remembered; False (remembering nothing new) when any was. `None` keys
are ignored, so a delivery missing one of its ids still counts by the others.

- `LocalDeliveryKeys`: a bounded LRU in this process (today's behaviour; one replica).
- `RedisDeliveryKeys`: `SET ... PX ttl` per key, all keys checked and set in one Lua script, so two replicas
  racing on the same delivery get exactly one True. A TTL instead of a bound: platforms redeliver within
  minutes (Slack stops after three tries), so an hour is plenty and Redis forgets by itself.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Protocol, runtime_checkable

from redis.asyncio import Redis

from coordination._redis import DEFAULT_PREFIX, key_text

DEFAULT_TTL_S = 3600.0

# KEYS: the namespaced delivery keys; ARGV[1]: the TTL in milliseconds. 1 when none existed (all now set).
FIRST_TIME_LUA = """
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then return 0 end
end
for _, key in ipairs(KEYS) do
  redis.call('SET', key, '1', 'PX', ARGV[1])
end
return 1
"""


@runtime_checkable
class DeliveryKeys(Protocol):
    """Has this delivery been handled (by any replica)?"""

    async def first_time(self, *keys: Hashable | None) -> bool:
        """True when none of `keys` was seen before; all of them are remembered from now on (atomically)."""


class LocalDeliveryKeys:
    """The in-process memory: a bounded LRU, oldest forgotten first. Atomic because it never awaits."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._keys: OrderedDict[Hashable, None] = OrderedDict()

    async def first_time(self, *keys: Hashable | None) -> bool:
        present = [k for k in keys if k is not None]
        if any(k in self._keys for k in present):
            return False
        for key in present:
            self._keys[key] = None
            self._keys.move_to_end(key)
        while len(self._keys) > self.capacity:
            self._keys.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._keys)


class RedisDeliveryKeys:
    """Delivery keys shared by every replica: `{prefix}:seen:{scope}:{key}`, each expiring after `ttl_s`."""

    def __init__(self, client: Redis, scope: str = "default", *, prefix: str = DEFAULT_PREFIX,
                 ttl_s: float = DEFAULT_TTL_S) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be > 0")
        self.namespace = f"{prefix}:seen:{scope}:"
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self._script = client.register_script(FIRST_TIME_LUA)

    async def first_time(self, *keys: Hashable | None) -> bool:
        names = list(dict.fromkeys(self.namespace + key_text(k) for k in keys if k is not None))
        if not names:
            return True
        return bool(await self._script(keys=names, args=[self.ttl_ms]))
