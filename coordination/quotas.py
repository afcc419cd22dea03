"""Daily question quotas: per user, per channel, per workspace or guild, and per IP address on the web.

A quota is a count per UTC day. `take(limits)` is all or nothing: when every counter named is below its
limit, each is incremented and the question goes ahead; when any is at its limit, nothing is counted and the
refusal says which one and when the day turns (so the user can be told when to ask again). In-process by
default (`LocalQuotas`); with REDIS_URL every replica shares the counts (`RedisQuotas`: one Lua script checks
and increments atomically, keys expire a day after the day they count). A Redis outage lets questions through
(a warning, throttled): quotas protect a budget, and refusing everyone because the counter is away is worse.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from coordination._redis import DEFAULT_PREFIX, Throttled

DAY_S = 86_400

# KEYS: the counters; ARGV: their limits, then the keys' time to live (s). Returns 0 when counted, else the
# 1-based index of the first counter at its limit (nothing counted).
TAKE_LUA = """
local n = #KEYS
for i = 1, n do
  local count = tonumber(redis.call('GET', KEYS[i]) or '0')
  if count >= tonumber(ARGV[i]) then return i end
end
for i = 1, n do
  redis.call('INCR', KEYS[i])
  redis.call('EXPIRE', KEYS[i], tonumber(ARGV[n + 1]))
end
return 0
"""


@dataclass(frozen=True, slots=True)
class Limit:
    """At most `per_day` questions per UTC day for `key` in `scope` ("user", "channel", "workspace", "ip")."""

    scope: str
    key: str
    per_day: int


@dataclass(frozen=True, slots=True)
class QuotaRefusal:
    """The limit that is reached, and when (epoch seconds) its day ends."""

    limit: Limit
    resets_at: float

    def retry_after_s(self, now: float | None = None) -> int:
        return max(1, int(self.resets_at - (time.time() if now is None else now)) + 1)


def day_of(now: float) -> tuple[str, float]:
    """The UTC day `now` falls in ("2026-12-02") and when it ends (epoch seconds)."""
    day = dt.datetime.fromtimestamp(now, tz=dt.timezone.utc).date()
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.timezone.utc).timestamp()
    return day.isoformat(), end


def active(limits: Sequence[Limit]) -> list[Limit]:
    """The limits that limit anything (a limit of 0 or less means none)."""
    return [limit for limit in limits if limit.per_day > 0]


class Quotas(Protocol):
    async def take(self, limits: Sequence[Limit]) -> QuotaRefusal | None: ...
    async def aclose(self) -> None: ...


class LocalQuotas:
    """This process's counts, for one replica (the default). Only today's counters are kept."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._day = ""
        self._counts: dict[tuple[str, str], int] = {}

    async def take(self, limits: Sequence[Limit]) -> QuotaRefusal | None:
        limits = active(limits)
        if not limits:
            return None
        day, ends = day_of(self._clock())
        if day != self._day:  # a new day: yesterday's counts are gone
            self._day, self._counts = day, {}
        for limit in limits:  # no await between the check and the increments: atomic in the event loop
            if self._counts.get((limit.scope, limit.key), 0) >= limit.per_day:
                return QuotaRefusal(limit, ends)
        for limit in limits:
            self._counts[(limit.scope, limit.key)] = self._counts.get((limit.scope, limit.key), 0) + 1
        return None

    async def aclose(self) -> None:
        return None


class RedisQuotas:
    """The counts in Redis, shared by every replica; checked and incremented by one script."""

    def __init__(self, client: Redis, *, prefix: str = DEFAULT_PREFIX, clock: Callable[[], float] = time.time
                 ) -> None:
        self._client = client
        self._prefix = prefix
        self._clock = clock
        self._script = client.register_script(TAKE_LUA)
        self._outage = Throttled()

    async def take(self, limits: Sequence[Limit]) -> QuotaRefusal | None:
        limits = active(limits)
        if not limits:
            return None
        now = self._clock()
        day, ends = day_of(now)
        keys = [f"{self._prefix}:quota:{day}:{limit.scope}:{limit.key}" for limit in limits]
        try:
            refused = int(await self._script(keys=keys, args=[*(l.per_day for l in limits), DAY_S * 2]))
        except RedisError as exc:
            self._outage.warning("quotas: Redis is unreachable (%s); questions are let through uncounted",
                                 type(exc).__name__)
            return None
        return QuotaRefusal(limits[refused - 1], ends) if refused else None

    async def aclose(self) -> None:
        return None  # the client belongs to the coordination bundle, which closes it


def quotas_for(coordination: Any | None) -> Quotas:
    """Redis quotas on the coordination's client when it has one (REDIS_URL), in-process otherwise."""
    client = getattr(coordination, "_client", None) if coordination is not None else None
    if client is None:
        return LocalQuotas()
    return RedisQuotas(client, prefix=getattr(coordination, "prefix", DEFAULT_PREFIX))


def wait_words(seconds: float) -> str:
    """"5 h 12 min", "12 min", "under a minute": how long until the quota resets, for people."""
    minutes = int(seconds // 60)
    if minutes < 1:
        return "under a minute"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


WHO = {"user": "for you", "channel": "in this channel", "workspace": "here", "ip": "from your address"}


def refusal_sentence(refusal: QuotaRefusal, now: float | None = None) -> str:
    """The one friendly sentence a user over a quota reads."""
    now = time.time() if now is None else now
    who = WHO.get(refusal.limit.scope, "here")
    return (f"You've reached today's limit of {refusal.limit.per_day} questions {who}; you can ask again in "
            f"{wait_words(refusal.resets_at - now)} (at 00:00 UTC).")
