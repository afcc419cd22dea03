"""Which Discord gateway shards this process holds, under a lease per shard, shared out over the live processes.

Discord sends a guild's events to shard `(guild_id >> 22) % DISCORD_SHARD_COUNT` (DMs to shard 0). With more
than one shard, or with shared coordination (REDIS_URL), every worker and replica runs a `ShardKeeper`:

- A lease per shard (`coordination.leases`: Redis SET NX PX, renewed by compare-and-PEXPIRE, released by
  compare-and-delete), named `discord:shard:{count}:{id}`. A process connects a shard only while it holds the
  lease: it claims first and connects after; it disconnects first and releases after.
- A member group (`discord:shards:{count}`, a heartbeat per process with the lease's TTL) says how many
  processes share the shards. Each process aims at its fair share, `ceil(count / live)`: below it, it claims
  free shards (lowest ids first); above it (a process joined), it hands its highest shards back, which the
  newcomer claims on its next round. Nobody sheds below its share, so this settles and does not flap.
- Every round (`every_s`: a third of the lease, at most 2 s) renews the held leases, heartbeats, and claims or
  sheds. A process that dies stops renewing: its leases and its membership expire within `lease_s`, the others'
  share grows, and they claim its shards. One that stops (SIGTERM) leaves the group, disconnects its shards and
  releases their leases at once, so the others take them on their next round.
- `holds(shard)` is also a clock check: a lease counts as held only until `lease_s` after the last renewal was
  sent. A process that could not renew (Redis away, the event loop stalled) stops answering that shard's events
  before another process can have claimed it, even if its socket is still open; a renewal refused by Redis (the
  lease is gone) disconnects the shard at once.

A process holding no shard goes on serving the web and Slack. In-process coordination (one process) holds every
shard. Changing DISCORD_SHARD_COUNT: stop every replica first (replicas on different counts would each connect
their own shards and both answer in some guilds).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable

from coordination import CoordinationUnavailable, Leases

log = logging.getLogger(__name__)

MAX_ROUND_S = 2.0
Shards = Callable[[list[int]], Awaitable[None]]


def shard_of(guild_id: int | None, shard_count: int) -> int:
    """The shard that receives a guild's events (Discord's formula); DMs (no guild) are on shard 0."""
    return 0 if guild_id is None else (int(guild_id) >> 22) % shard_count


def fair_share(shard_count: int, live: int) -> int:
    """How many shards one of `live` processes aims to hold: every shard is covered, none is held twice."""
    return math.ceil(shard_count / max(1, live))


def lease_name(shard_id: int, shard_count: int) -> str:
    return f"discord:shard:{shard_count}:{shard_id}"


class ShardKeeper:
    """Claims, renews, sheds and releases this process's shards; the front-end connects and disconnects them.

    `on_gained(ids)` is awaited after the leases are claimed (connect them; do not wait for READY there, the
    renewals must go on) and `on_lost(ids)` before they are released (disconnect them). `on_round(held)` runs
    after every round, so the front-end can close any connection it holds without a lease.
    """

    def __init__(self, leases: Leases, shard_count: int, *, lease_s: float, on_gained: Shards, on_lost: Shards,
                 every_s: float | None = None, settle_s: float | None = None,
                 on_round: Callable[[set[int]], Awaitable[None]] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if shard_count < 1 or lease_s <= 0:
            raise ValueError("a ShardKeeper needs shard_count >= 1 and lease_s > 0")
        self.leases = leases
        self.shard_count = shard_count
        self.lease_s = lease_s
        self.every_s = every_s if every_s is not None else min(lease_s / 3, MAX_ROUND_S)
        self.settle_s = settle_s if settle_s is not None else self.every_s
        self.group = f"discord:shards:{shard_count}"
        self.live = 1
        self.task: asyncio.Task[None] | None = None  # the background rounds
        self._on_gained, self._on_lost, self._on_round = on_gained, on_lost, on_round
        self._clock = clock
        self._valid_until: dict[int, float] = {}  # shard -> when its lease may have expired (local clock)
        self._lock = asyncio.Lock()
        self._closed = False
        self._warned_at = -math.inf

    # --- what the front-end asks ----------------------------------------------------------------------------
    @property
    def held(self) -> list[int]:
        return sorted(self._valid_until)

    @property
    def share(self) -> int:
        return fair_share(self.shard_count, self.live)

    def holds(self, shard_id: int) -> bool:
        """True while this process holds the shard's lease, as far as it can be sure (see the module doc)."""
        until = self._valid_until.get(shard_id)
        return until is not None and self._clock() < until

    def holds_guild(self, guild_id: int | None) -> bool:
        return self.holds(shard_of(guild_id, self.shard_count))

    # --- lifecycle ----------------------------------------------------------------------------------------------
    async def start(self) -> list[int]:
        """Join the group, let processes starting at the same moment show up (`settle_s`), take this process's
        share, and keep it in the background. Returns the shards held."""
        with contextlib.suppress(CoordinationUnavailable):
            self.live = await self.leases.heartbeat(self.group, self.lease_s)
            if self.settle_s > 0 and self.shard_count > 1:
                await asyncio.sleep(self.settle_s)
        await self.round()
        self.task = asyncio.create_task(self._rounds(), name="discord-shards")
        return self.held

    async def stop(self) -> None:
        """Leave the group, disconnect every shard and release its lease (a graceful stop: the others take over
        at their next round). Idempotent: a second call does nothing."""
        if self._closed:
            return
        self._closed = True
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None
        async with self._lock:
            try:
                await self.leases.leave(self.group)
            except CoordinationUnavailable as exc:
                log.warning("discord shards: could not leave the group (%s); the entry expires by itself", exc)
            await self._drop(self.held, why="stopping")

    async def round(self) -> None:
        """One round: heartbeat, renew, then claim up to the fair share or shed what is above it."""
        async with self._lock:
            if self._closed:
                return
            try:
                await self._round()
            finally:
                if self._on_round is not None:
                    try:
                        await self._on_round(set(self.held))
                    except Exception:  # noqa: BLE001 - the next round tries again
                        log.exception("discord shards: checking the connections failed")

    # --- internals ----------------------------------------------------------------------------------------------
    async def _rounds(self) -> None:
        while True:
            await asyncio.sleep(self.every_s * random.uniform(0.9, 1.1))
            try:
                await self.round()
            except Exception:  # noqa: BLE001 - never let the keeper die: the leases would lapse silently
                log.exception("discord shards: a round failed; retrying")

    async def _round(self) -> None:
        sent = self._clock()  # a lease renewed now is good until sent + lease_s, whenever Redis answers
        try:
            self.live = await self.leases.heartbeat(self.group, self.lease_s)
        except CoordinationUnavailable as exc:
            self._warn("cannot reach the coordination store (%s); keeping shards %s while their leases last", exc)
            await self._drop([k for k in self.held if not self._lasts_a_round(k)], why="lease unconfirmed")
            return
        lost: list[int] = []
        for shard_id in self.held:
            try:
                renewed = await self.leases.renew(lease_name(shard_id, self.shard_count), self.lease_s)
            except CoordinationUnavailable as exc:
                self._warn("renewing a shard lease failed (%s); keeping shards %s while their leases last", exc)
                if not self._lasts_a_round(shard_id):
                    lost.append(shard_id)
                continue
            if renewed:
                self._valid_until[shard_id] = sent + self.lease_s
            else:
                lost.append(shard_id)
        if lost:
            log.warning("discord shards: lost the lease on shard(s) %s; disconnecting them", lost)
            await self._drop(lost, why="lease lost")
        share = self.share
        if len(self._valid_until) > share:
            extra = self.held[share:]
            log.info("discord shards: %d process(es) share %d shard(s); handing shard(s) %s over",
                     self.live, self.shard_count, extra)
            await self._drop(extra, why="rebalancing")
        elif len(self._valid_until) < share:
            await self._claim(share - len(self._valid_until), sent)

    async def _claim(self, wanted: int, sent: float) -> None:
        gained: list[int] = []
        for shard_id in range(self.shard_count):
            if len(gained) >= wanted:
                break
            if shard_id in self._valid_until:
                continue
            try:
                claimed = await self.leases.claim(lease_name(shard_id, self.shard_count), self.lease_s)
            except CoordinationUnavailable as exc:
                self._warn("claiming a shard failed (%s); holding %s for now", exc)
                break
            if claimed:
                self._valid_until[shard_id] = sent + self.lease_s
                gained.append(shard_id)
        if gained:
            log.info("discord shards: holding shard(s) %s of %d now", gained, self.shard_count)
            try:
                await self._on_gained(gained)
            except Exception:  # noqa: BLE001 - could not connect them: give them back for another process
                log.exception("discord shards: connecting shard(s) %s failed; releasing them", gained)
                await self._drop(gained, why="connect failed")

    async def _drop(self, shard_ids: list[int], *, why: str) -> None:
        """Forget, disconnect, then release: events stop counting first, the lease goes last."""
        if not shard_ids:
            return
        for shard_id in shard_ids:
            self._valid_until.pop(shard_id, None)
        try:
            await self._on_lost(list(shard_ids))
        except Exception:  # noqa: BLE001 - release anyway: holds() is already False for them
            log.exception("discord shards: disconnecting shard(s) %s failed (%s)", shard_ids, why)
        for shard_id in shard_ids:
            try:
                await self.leases.release(lease_name(shard_id, self.shard_count))
            except CoordinationUnavailable as exc:
                log.warning("discord shards: releasing shard %d failed (%s); it frees itself within %.0fs",
                            shard_id, exc, self.lease_s)

    def _lasts_a_round(self, shard_id: int) -> bool:
        """Will the lease surely still hold at the next round? (If not, let go of it now.)"""
        return self._valid_until.get(shard_id, -math.inf) - self.every_s * 1.2 > self._clock()

    def _warn(self, message: str, exc: Exception) -> None:
        now = self._clock()
        if now - self._warned_at >= 30:
            self._warned_at = now
            log.warning("discord shards: " + message, exc, self.held)
