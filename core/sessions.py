"""What the core reports about a session. (One message at a time per thread is `coordination.SessionLocks`:
in-process by default, shared by replicas with Redis.)"""

from __future__ import annotations

from dataclasses import dataclass


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
