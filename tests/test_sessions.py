"""Per-session locks: one turn at a time per session, sessions independent, no leak of lock objects."""

from __future__ import annotations

import asyncio

from core.orchestrator import clean_message
from coordination import LocalSessionLocks as KeyedLocks


async def test_same_key_is_serialised_and_other_keys_are_not() -> None:
    locks = KeyedLocks()
    order: list[str] = []
    release = asyncio.Event()

    async def hold(key: str, name: str, wait: bool) -> None:
        async with locks.hold(key):
            order.append(f"{name}-in")
            if wait:
                await release.wait()
            order.append(f"{name}-out")

    first = asyncio.create_task(hold("a", "first", True))
    await asyncio.sleep(0)
    second = asyncio.create_task(hold("a", "second", False))
    other = asyncio.create_task(hold("b", "other", False))
    await asyncio.wait_for(other, 1)
    assert "second-in" not in order  # still waiting for the first
    release.set()
    await asyncio.gather(first, second)
    assert order.index("first-out") < order.index("second-in")
    assert len(locks) == 0


def test_clean_message_normalises_unicode_and_drops_control_characters() -> None:
    assert clean_message("  cafe\u0301\u0000 ok\u200b  ") == "café ok"
    assert clean_message("line one\nline two\t!") == "line one\nline two\t!"
    assert clean_message("   \n ") == ""
