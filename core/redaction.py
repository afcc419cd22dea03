"""Masking personal data and secrets in a message before anything keeps it (`REDACT`).

Applied once, at the core's entry (`Orchestrator.respond`, right after `clean_message`): what is masked there is
never checkpointed, logged, recorded as an open turn or sent to the model, because nothing downstream ever sees
the original. Each kind is a pattern plus, for cards, a Luhn check, so order numbers and dates stay readable.
The mask names the kind (`[card]`), so the model can still answer "I see you pasted a card number".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

KINDS = ("cards", "emails", "phones", "secrets")

# 13-19 digits, optionally grouped by single spaces or dashes (4-4-4-4, 4-6-5 for Amex…).
_CARD = re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])")
_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# A leading + and 8-15 digits, or a grouped national number such as (415) 555-0123 / 415-555-0123 / 020 7946 0958.
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d[\d ().-]{6,18}\d"
    r"|\(?\d{2,4}\)?[ .-]\d{3,4}[ .-]\d{3,4})(?![\w])"
)
_SECRETS = (
    re.compile(r"\b(?:sk|pk|rk)-(?:proj-|live-|test-)?[A-Za-z0-9_-]{16,}"),  # OpenAI / Stripe style keys
    re.compile(r"\b(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{16,}"),
    re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),  # Slack tokens
    re.compile(r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{30,}|\bgithub_pat_[A-Za-z0-9_]{30,}"),
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),  # AWS access key id
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),  # JWT
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)"),
)
# "password: hunter2", "api_key=…", "token = …": the value after the label.
_LABELLED = re.compile(r"(?i)\b(password|passwd|pwd|secret|api[_ -]?key|access[_ -]?token|token)"
                       r"(\s*[:=]\s*|\s+is\s+)([^\s,;'\"]{6,})|\b(bearer)(\s+)([A-Za-z0-9._~+/-]{12,}=*)")


def _luhn(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _cards(text: str) -> str:
    def mask(match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group())
        return "[card]" if 13 <= len(digits) <= 19 and _luhn(digits) else match.group()

    return _CARD.sub(mask, text)


def _emails(text: str) -> str:
    return _EMAIL.sub("[email]", text)


def _phones(text: str) -> str:
    def mask(match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group())
        return "[phone]" if 7 <= len(digits) <= 15 else match.group()

    return _PHONE.sub(mask, text)


def _secrets(text: str) -> str:
    for pattern in _SECRETS:
        text = pattern.sub("[secret]", text)
    def mask(match: re.Match[str]) -> str:
        label, gap, value = match.group(1, 2, 3) if match.group(1) else match.group(4, 5, 6)
        return match.group() if value == "[secret]" else f"{label}{gap}[secret]"

    return _LABELLED.sub(mask, text)


# Cards before phones (a card number also looks like a long phone number); secrets first (a key may hold digits).
_ORDER: tuple[tuple[str, Callable[[str], str]], ...] = (
    ("secrets", _secrets), ("cards", _cards), ("emails", _emails), ("phones", _phones))


class Redactor:
    """The kinds `REDACT` names, applied in a fixed order; `Redactor(())` changes nothing."""

    def __init__(self, kinds: Iterable[str]) -> None:
        wanted = {kind.strip().lower() for kind in kinds}
        unknown = wanted - set(KINDS)
        if unknown:
            raise ValueError(f"unknown redaction kind(s): {', '.join(sorted(unknown))}")
        self._steps = [step for kind, step in _ORDER if kind in wanted]

    def __call__(self, text: str) -> str:
        for step in self._steps:
            text = step(text)
        return text


def redactor_for(settings: object) -> Redactor:
    """The redactor of `settings.redact` (default cards and secrets)."""
    return Redactor(getattr(settings, "redact", ("cards", "secrets")))


def content(text: str, settings: object) -> str:
    """What a log line may show of a message: the text when `LOG_CONTENT=true`, else only its length."""
    if getattr(settings, "log_content", False):
        return repr(text)
    return f"<{len(text)} chars>"


__all__ = ["CONTENT_LOGGERS", "KINDS", "Redactor", "content", "guard_log_content", "redactor_for"]


# Libraries that log request and event bodies (so message text) at DEBUG: the OpenAI client's request options,
# slack_sdk's request bodies, discord.py's gateway events, httpx/httpcore traces, LangChain callbacks.
# aiosqlite logs every statement with its parameters (the checkpoint blobs) at DEBUG.
CONTENT_LOGGERS = ("openai", "httpx", "httpcore", "httpx2", "httpcore2", "slack_sdk", "slack_bolt",
                   "discord.gateway", "discord.http", "discord.client", "discord.state", "langchain",
                   "langchain_core", "langgraph", "langsmith", "aiohttp.client", "urllib3", "aiosqlite", "psycopg",
                   "chromadb")


def guard_log_content(settings: object) -> None:
    """Unless `LOG_CONTENT=true`, keep the loggers that print message text at INFO or above, whatever LOG_LEVEL
    says: our own log lines name sessions, never text, and these are the rest."""
    import logging

    if getattr(settings, "log_content", False):
        return
    for name in CONTENT_LOGGERS:  # set on the logger itself: a root level lowered later does not reach them
        logger = logging.getLogger(name)
        if logger.level < logging.INFO:  # NOTSET (inherit) included
            logger.setLevel(logging.INFO)
