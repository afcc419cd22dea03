"""Counting tokens: tiktoken when its encoding is on disk, else langchain's approximation.

tiktoken downloads its encoding file on first use, with no timeout; a count runs inside a turn, so that download
is never attempted here: tiktoken is used only when the file is already in its cache (`TIKTOKEN_CACHE_DIR`, or
tiktoken's default; fill it once with `python -c "import tiktoken; tiktoken.get_encoding('o200k_base')"`).
Otherwise every count uses `count_tokens_approximately` (about four characters a token, plus a few per
message), close enough for budgets that keep a margin. The check is made once per process.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.messages.utils import count_tokens_approximately

log = logging.getLogger(__name__)

PER_MESSAGE = 4  # role and separators, as OpenAI counts them
ENCODING = "o200k_base"  # the GPT-4o family's
ENCODING_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"


def _encoding_cached() -> bool:
    """Whether tiktoken's cache already holds the encoding (its layout: the SHA-1 of the file's URL)."""
    cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR") or os.path.join(
        tempfile.gettempdir(), "data-gym-cache")
    return os.path.isfile(os.path.join(cache_dir, hashlib.sha1(ENCODING_URL.encode()).hexdigest()))


@functools.lru_cache(maxsize=1)
def _encoder() -> Callable[[str], int] | None:
    if not _encoding_cached():
        log.info("tiktoken's %s encoding is not cached; token counts are approximate", ENCODING)
        return None
    try:
        import tiktoken

        encoding = tiktoken.get_encoding(ENCODING)
        encoding.encode("warm up")
    except Exception:  # noqa: BLE001 - not installed, or a damaged cache
        log.info("tiktoken is unavailable; token counts are approximate")
        return None
    return lambda text: len(encoding.encode(text, disallowed_special=()))


def count_text_tokens(text: str) -> int:
    """Tokens in a piece of text."""
    encode = _encoder()
    if encode is not None:
        return encode(text)
    return max(1, round(len(text) / 4)) if text else 0


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: text counted, images approximated by the caller's budget
        return " ".join(str(p.get("text", "")) if isinstance(p, dict) else str(p) for p in content)
    return str(content)


def count_message_tokens(messages: Sequence[BaseMessage]) -> int:
    """Tokens a list of messages costs in a request (text plus a few per message)."""
    if _encoder() is None:
        return count_tokens_approximately(list(messages))
    return sum(count_text_tokens(_content_text(m.content)) + PER_MESSAGE for m in messages)
