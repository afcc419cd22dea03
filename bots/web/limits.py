"""Abuse controls of the web API: per-client request rate and concurrent streams, and a global cap on answers
being generated (each one is at most one model call at a time), with a short queue in front of it.

Every refusal is JSON with `Retry-After`: 429 when one client asks too much, 503 when the whole server is busy.

In-process: each replica (and each `--workers` process) counts on its own, so N replicas allow N times the
configured rates. Sharing the counts needs a shared store: `limits` speaks Redis (`async+redis://`, with the
`coredis` client) behind the same `MovingWindowRateLimiter`, and the stream counts would become a Redis hash with
a lease per stream, like `coordination`'s inflight registry.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web
from limits import parse_many
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

STREAM_RETRY_AFTER_S = 2  # a stream of the same client will likely have finished by then


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused: status, sentence, and seconds to wait."""

    status: int
    message: str
    retry_after_s: int


def client_id(request: web.Request, known_keys: Iterable[str] = ()) -> str:
    """Whom a request is counted against: a known API key (`Authorization: Bearer …` or `X-API-Key`), else the
    peer address. An unknown key is ignored, or a client could escape its caps by sending a new key each time.

    Behind a reverse proxy the peer is the proxy: run aiohttp's forwarded-header handling (or the proxy's own
    limits) there, or every client shares one budget."""
    keys = set(known_keys)
    if keys:
        auth = request.headers.get("Authorization", "")
        key = auth[7:].strip() if auth[:7].lower() == "bearer " else request.headers.get("X-API-Key", "")
        if key in keys:
            return f"key:{key}"
    return f"ip:{request.remote or 'unknown'}"


class ClientLimits:
    """Per client: at most `rate` requests (a `limits` string such as "30/minute" or "5/second;200/hour", moving
    windows) and at most `max_streams` answers streaming at once."""

    def __init__(self, rate: str, max_streams: int) -> None:
        self.items = parse_many(rate)
        self.limiter = MovingWindowRateLimiter(MemoryStorage())
        self.max_streams = max_streams
        self.streams: Counter[str] = Counter()

    async def hit(self, client: str) -> Refusal | None:
        """Count one request against every window; a refusal (nothing counted) when one is full."""
        for item in self.items:
            if not await self.limiter.test(item, client):
                stats = await self.limiter.get_window_stats(item, client)
                wait = max(1, math.ceil(stats.reset_time - time.time()))
                return Refusal(429, f"Too many requests: the limit is {item.amount} per {item.get_expiry()} s.",
                               wait)
        for item in self.items:
            await self.limiter.hit(item, client)
        return None

    @asynccontextmanager
    async def stream(self, client: str) -> AsyncIterator[Refusal | None]:
        """Hold one of the client's stream slots for the block; yields a refusal (and holds nothing) when they
        are all taken."""
        if self.streams[client] >= self.max_streams:
            yield Refusal(429, f"Too many answers at once: at most {self.max_streams} per client.",
                          STREAM_RETRY_AFTER_S)
            return
        self.streams[client] += 1
        try:
            yield None
        finally:
            self.streams[client] -= 1
            if self.streams[client] <= 0:
                del self.streams[client]


class AnswerGate:
    """At most `concurrent` answers generated at once on this server; up to `queue` more wait, each at most
    `wait_s`, and the rest are told to come back (503) instead of piling up behind a slow model."""

    def __init__(self, concurrent: int, queue: int, wait_s: float) -> None:
        self.slots = asyncio.Semaphore(concurrent)
        self.queue = queue
        self.wait_s = wait_s
        self.waiting = 0

    async def _acquire(self) -> bool:
        if not self.slots.locked():
            await self.slots.acquire()
            return True
        if self.waiting >= self.queue:
            return False
        self.waiting += 1
        try:
            await asyncio.wait_for(self.slots.acquire(), self.wait_s)
            return True
        except TimeoutError:
            return False
        finally:
            self.waiting -= 1

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[Refusal | None]:
        """Hold an answer slot for the block; yields a 503 refusal (and holds nothing) when the queue is full or
        the wait was too long."""
        if not await self._acquire():
            yield Refusal(503, "The assistant is busy right now.", max(1, math.ceil(self.wait_s)))
            return
        try:
            yield None
        finally:
            self.slots.release()


def refused(refusal: Refusal) -> web.Response:
    """The JSON answer to a refusal, with Retry-After."""
    return web.json_response(
        {"error": refusal.message, "detail": f"Try again in {refusal.retry_after_s} s."},
        status=refusal.status, headers={"Retry-After": str(refusal.retry_after_s)})
