"""What every Redis-backed piece shares: the client, key names, the server clock in Lua, and readable errors.

Why the server clock: replicas on different machines disagree about wall time by milliseconds to seconds, and
a lease or a rate window computed from each replica's own clock would let them disagree about who holds what.
Every script therefore reads `TIME` on the Redis server (one clock for all replicas), unless a test injects a
clock, in which case the caller passes "now" as the script's first argument. Times inside Redis are integer
microseconds: Lua numbers are doubles (exact up to 2**53, about 285 years of microseconds) and a script's number
reply is truncated to an integer, so integers travel without loss.

One Redis (or a primary with replicas) is assumed, not Redis Cluster: the multi-key scripts do not use hash tags.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError

log = logging.getLogger("coordination")

Clock = Callable[[], float]
DEFAULT_PREFIX = "sb"

# Prepended to every script: `now_us()` is the injected time (ARGV[1], seconds as microseconds) or the server's.
NOW_LUA = """
local function now_us()
  if ARGV[1] ~= '' then return tonumber(ARGV[1]) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
"""


class CoordinationUnavailable(RuntimeError):
    """Redis could not be reached for something that cannot go on without it (queueing for a session lock)."""


def make_client(url: str, max_connections: int = 64) -> Redis:
    """A client with its own connection pool. A blocking pool: under a burst (200 replies at once) commands
    queue for one of `max_connections` connections instead of failing with "Too many connections", which the
    default pool does past its size. Short timeouts: coordination that hangs is worse than a readable error,
    and every caller has a fallback or reports the failure."""
    pool = BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=5.0,
                                           decode_responses=True, socket_connect_timeout=2.0, socket_timeout=5.0,
                                           health_check_interval=30, client_name="switchboard")
    return Redis.from_pool(pool)


def us(seconds: float) -> int:
    return int(round(seconds * 1_000_000))


def now_arg(clock: Clock | None) -> str:
    """ARGV[1] of every script: '' lets the server's clock decide; an injected clock's value otherwise."""
    return "" if clock is None else str(us(clock()))


def key_text(key: Hashable) -> str:
    """A Redis-safe spelling of any hashable key: strings as they are, anything else (tuples of ids) as JSON."""
    if isinstance(key, str):
        return key
    if isinstance(key, tuple):
        return json.dumps(list(key), default=str, separators=(",", ":"))
    return json.dumps(key, default=str)


def redact(url: str) -> str:
    """The URL with its password hidden, for messages an operator may paste somewhere."""
    parts = urlsplit(url)
    if parts.password:
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        user = parts.username or ""
        parts = parts._replace(netloc=f"{user}:***@{host}")
    return urlunsplit(parts)


async def ping_sentence(client: Redis, url: str) -> str | None:
    """None when Redis answers; otherwise one sentence with the cause and the fix (doctor, `/health`)."""
    try:
        await client.ping()
    except RedisError as exc:
        return (f"Redis at {redact(url)} is unreachable ({type(exc).__name__}: {str(exc).rstrip('.')}); start Redis or correct "
                "REDIS_URL (unset it to run a single replica with in-process coordination).")
    return None


class Throttled:
    """Logs a recurring warning at most once per `every_s`, so an outage does not flood the log."""

    def __init__(self, every_s: float = 30.0) -> None:
        self.every_s = every_s
        self._last = -every_s

    def warning(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            log.warning(message, *args)


_retrying: set[asyncio.Task[None]] = set()
RETRY_EVERY_S = 0.5


def retry_when_back(what: str, attempt: Callable[[], Awaitable[object]], give_up_s: float) -> None:
    """Keep trying `attempt` every half second in the background until Redis takes it, for up to `give_up_s`.

    For the writes that tidy up after work that is over (releasing a session lock, finishing a reply in the
    registry): left undone while Redis is away, they make others wait for an expiry once it is back (the next
    message in a thread for the lock's lease, up to 15 s) or mistake a landed reply for an orphan. Retried
    often, they land within half a second of Redis coming back. `give_up_s` is when the expiry has done the
    job anyway."""

    async def keep_trying() -> None:
        give_up = time.monotonic() + give_up_s
        while time.monotonic() < give_up:
            await asyncio.sleep(RETRY_EVERY_S)
            try:
                await attempt()
            except RedisError:
                continue
            log.info("%s: done now that Redis is back", what)
            return
        log.warning("%s: Redis did not come back within %.0fs; gave up", what, give_up_s)

    task = asyncio.get_running_loop().create_task(keep_trying(), name=f"retry: {what}")
    _retrying.add(task)
    task.add_done_callback(_retrying.discard)
