"""Logging set-up for the CLI and servers: rich output, and a filter that masks anything shaped like a secret."""

from __future__ import annotations

import logging
import re

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


def setup_logging(level: str = "INFO") -> None:
    handler = RichHandler(show_path=False, rich_tracebacks=False, markup=False)
    handler.addFilter(RedactSecrets())
    logging.basicConfig(level=level.upper(), format="%(message)s", handlers=[handler], force=True)
    for noisy in ("httpx", "chromadb", "discord.gateway", "slack_bolt", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
