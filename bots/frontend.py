"""What `switchboard run` needs from each chat front-end.

A front-end adapts the core to one platform. It is built from settings and the shared orchestrator, started
without blocking the event loop, and stopped cleanly: replies in flight get their final edit or an
"interrupted" note before the connection closes.
"""

from __future__ import annotations

from typing import Protocol


class Frontend(Protocol):
    name: str

    async def start(self) -> None:
        """Connect and begin handling messages; return once running (work continues in tasks)."""

    def describe(self) -> str:
        """One line for the start-up report: where users reach this front-end."""

    async def stop(self) -> None:
        """Finish or mark in-flight replies, then disconnect."""
