"""Server-Sent Events framing for the core's events (pure functions)."""

from __future__ import annotations

import json

from core.events import Event, Start, Token, event_to_dict


def sse_frame(event: Event, session_id: str) -> bytes:
    """One SSE frame: `event: <type>` and JSON data. The start frame names the web session id."""
    if isinstance(event, Token):
        # The frame written most (one per token): built directly, not through `dataclasses.asdict`.
        data: dict[str, object] = {"text": event.text}
    elif isinstance(event, Start):
        data = {"session_id": session_id}
    else:
        data = event_to_dict(event)
        data.pop("type", None)
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"event: {event.type}\ndata: {payload}\n\n".encode()
