"""Where this replica keeps conversations, and whether it may join the replicas already on its Redis.

Why: replicas sharing one Redis are one service, and a thread's next message can land on any of them, so they
must read and write one conversation store. Postgres (DATABASE_URL) is one store for every replica pointing at
it. SQLite (DATABASE_URL unset) is a file under the data directory: shared by the processes of one machine that
open that same file (`--workers N`), by nobody else. Two replicas on SQLite on different machines, or one on
SQLite beside one on Postgres, would each remember their own half of every thread, silently; so a replica that
would do that refuses to start, with one sentence saying what to set.

Each replica announces its placement in the directory of replicas (`coordination.replicas`, a lease renewed
while it serves) and checks, in the same atomic step, the others alive. "The same machine" is /etc/machine-id
(what systemd and D-Bus name a machine by) together with the host name: a container, a cloned VM or a copied
image may share one of them with another machine, rarely both, and a false "different" only asks for
Postgres, whereas a false "same" would split conversations unnoticed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bots.startup import StartupError
from core.checkpoints import uses_postgres
from core.settings import Settings

log = logging.getLogger(__name__)

MACHINE_ID_FILES = ("/etc/machine-id", "/var/lib/dbus/machine-id")
LEASE_S = 15.0  # a replica that dies stops counting within one lease
FIX = ("set DATABASE_URL to one Postgres shared by every replica (SQLite conversations are shared only by the "
       "workers of one machine)")


def this_machine() -> str:
    """This machine's name for the directory: its machine-id (when the file has one) and its host name."""
    for name in MACHINE_ID_FILES:
        with contextlib.suppress(OSError):
            machine_id = Path(name).read_text().strip()
            if machine_id:
                return f"{machine_id}/{socket.gethostname()}"
    return socket.gethostname()


@dataclass(frozen=True, slots=True)
class Placement:
    """One replica as the directory shows it: who, on which machine, keeping conversations where."""

    replica: str
    host: str
    machine: str
    store: str  # "postgres" or "sqlite"
    path: str = ""  # the SQLite file, resolved; empty on Postgres

    @classmethod
    def of(cls, settings: Settings, replica: str) -> Placement:
        if uses_postgres(settings):
            return cls(replica, socket.gethostname(), this_machine(), "postgres")
        path = str(Path(settings.checkpoint_path).resolve())
        return cls(replica, socket.gethostname(), this_machine(), "sqlite", path)

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> Placement | None:
        """None for a document that says nothing about conversations (nothing to compare)."""
        if document.get("store") not in ("postgres", "sqlite"):
            return None
        return cls(str(document.get("replica") or document.get("member") or "?"), str(document.get("host") or "?"),
                   str(document.get("machine") or ""), str(document["store"]), str(document.get("path") or ""))

    def document(self) -> dict[str, str]:
        return {"replica": self.replica, "host": self.host, "machine": self.machine, "store": self.store,
                "path": self.path}

    def shares_conversations_with(self, other: Placement) -> bool:
        """Postgres with Postgres (DATABASE_URL names one server for all; its host may be spelt differently on
        each machine, so it is not compared); SQLite only with the same file on the same machine."""
        if self.store == other.store == "postgres":
            return True
        return (self.store, self.machine, self.path) == (other.store, other.machine, other.path)

    def where(self) -> str:
        return "in Postgres" if self.store == "postgres" else f"in SQLite at {self.path}"


def clash(me: Placement, documents: list[dict[str, Any]]) -> str | None:
    """None when every replica alive shares this one's conversations; otherwise why not (no fix)."""
    for document in documents:
        other = Placement.from_document(document)
        if other is not None and not me.shares_conversations_with(other):
            return (f"replica {other.replica} on {other.host} shares this Redis and keeps its conversations "
                    f"{other.where()}, but this replica on {me.host} would keep them {me.where()}, so a thread "
                    "moving between them would lose its history")
    return None


class Membership:
    """This replica's entry in the directory: checked and added at start-up, renewed while it serves, removed on
    a clean stop. A renewal Redis cannot take is retried on the next round (the entry simply lapses meanwhile)."""

    def __init__(self, coordination: Any, placement: Placement, lease_s: float = LEASE_S) -> None:
        self.coordination = coordination
        self.placement = placement
        self.lease_s = lease_s
        self._keeper: asyncio.Task[None] | None = None

    async def join(self) -> None:
        """Add this replica, or raise `StartupError` with the sentence to fix when it would split conversations."""
        directory = self.coordination.replicas
        try:
            others = await directory.join(self.placement.document(), self.lease_s)
        except Exception as exc:  # noqa: BLE001 - Redis went away between the ping and here: a sentence
            raise StartupError(await self.coordination.ping() or f"the directory of replicas cannot be read ({exc})") \
                from None
        problem = clash(self.placement, others)
        if problem:
            with contextlib.suppress(Exception):
                await directory.leave()
            raise StartupError(f"{problem[0].upper()}{problem[1:]}: {FIX}.")
        self._keeper = asyncio.create_task(self._keep(), name="replica-membership")

    async def _keep(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                await self.coordination.replicas.join(self.placement.document(), self.lease_s)
            except Exception as exc:  # noqa: BLE001 - Redis away for a while: try again next round
                if not failing:
                    log.warning("cannot renew this replica's entry in the directory of replicas (%s); retrying", exc)
                failing = True
            else:
                failing = False

    async def aclose(self) -> None:
        if self._keeper is None:
            return
        self._keeper.cancel()
        await asyncio.gather(self._keeper, return_exceptions=True)
        self._keeper = None
        with contextlib.suppress(Exception):
            await self.coordination.replicas.leave()
