"""Server-Sent Events framing for the core's events (pure functions). Every frame is valid UTF-8, whatever the
model wrote."""

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
    frame = f"event: {event.type}\ndata: {payload}\n\n"
    try:
        return frame.encode()
    except UnicodeEncodeError:  # a lone surrogate from the model: not UTF-8, and the stream must go on
        return valid_utf8(frame).encode()


# Written between frames when nothing else was for a while, so proxies that cut idle connections (60 s is common)
# keep a slow model's stream open; EventSource and our chat page ignore comment lines.
HEARTBEAT = b": keep-alive\n\n"


def valid_utf8(text: str) -> str:
    """`text` with surrogate pairs joined and lone surrogates replaced by U+FFFD: encodable as UTF-8."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
