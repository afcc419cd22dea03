"""Logging set-up for the CLI and servers: rich output (or JSON lines), and a filter that masks anything shaped
like a secret.

`LOG_FORMAT=json` writes one JSON object per line (time, level, logger, message, and `session_key`, `turn_id`,
`trace_id` when the line is logged during a turn) for log stacks that index fields; the readable rich format stays
the default. The turn's ids come from context variables a front-end binds when a turn begins (`core.tracing`), so
every line logged anywhere inside the turn, in any task it starts, carries them.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from datetime import datetime, timezone
from typing import Any

from rich.logging import RichHandler

_SECRET = re.compile(r"\b(xox[abpr]-[\w-]{6,}|xapp-[\w-]{6,}|sk-[\w-]{12,}|[MN][\w-]{23,25}\.[\w-]{6}\.[\w-]{27,})")


class RedactSecrets(logging.Filter):
    """Last line of defence: tokens never reach a log line even if some library prints one."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if _SECRET.search(message):
            record.msg = _SECRET.sub("[redacted]", message)
            record.args = ()
        return True


_SESSION_KEY: contextvars.ContextVar[str | None] = contextvars.ContextVar("switchboard_session_key", default=None)
_TURN_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("switchboard_turn_id", default=None)


def bind_log_context(session_key: str | None, turn_id: str | None) -> tuple[Any, Any]:
    """Log lines from here on (in this context and the tasks it starts) carry these ids; returns what
    `reset_log_context` needs to undo it."""
    return _SESSION_KEY.set(session_key), _TURN_ID.set(turn_id)


def reset_log_context(tokens: tuple[Any, Any]) -> None:
    for var, token in zip((_SESSION_KEY, _TURN_ID), tokens):
        try:
            var.reset(token)
        except ValueError:  # reset from another context: leave it, the context dies with its task
            pass


def _trace_id() -> str | None:
    try:
        from opentelemetry import trace
    except ImportError:  # pragma: no cover - opentelemetry-api is a dependency
        return None
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with the turn's ids when known and the traceback as one string."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
        }
        for name, value in (("session_key", _SESSION_KEY.get()), ("turn_id", _TURN_ID.get()),
                            ("trace_id", _trace_id())):
            if value:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = _SECRET.sub("[redacted]", self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Configure the root logger: rich console lines (`fmt="text"`) or JSON lines on stderr (`fmt="json"`)."""
    handler: logging.Handler
    if fmt == "json":
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
    else:
        handler = RichHandler(show_path=False, rich_tracebacks=False, markup=False)
    handler.addFilter(RedactSecrets())
    logging.basicConfig(level=level.upper(), format="%(message)s", handlers=[handler], force=True)
    for noisy in ("httpx", "chromadb", "discord.gateway", "slack_bolt", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


def use_log_format(fmt: str) -> None:
    """Switch the root logger's handlers to JSON lines (`fmt="json"`) after `setup_logging`; "text" keeps them."""
    if fmt != "json":
        return
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactSecrets())
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
