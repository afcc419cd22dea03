"""Building the chat model from settings.

`ChatOpenAI` talks to OpenAI or any OpenAI-compatible server (Ollama, vLLM, LM Studio) via `OPENAI_BASE_URL`.
The client's own retries are off: `core.retry` owns retrying, so a failure after the first token is never
silently repeated.

Its HTTP transport is aiohttp (the openai SDK's `DefaultAioHttpClient`, which its README recommends "for improved
concurrency performance") instead of the default httpx over anyio: reading a streamed answer chunk by chunk cost
about half as much CPU per token in a 200-question burst (issue 12). The aiohttp session belongs to the event loop
that first uses it, so `close_chat_model` closes it with the orchestrator.
"""

from __future__ import annotations

import logging
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel

from core.settings import Settings

log = logging.getLogger(__name__)


def build_chat_model(settings: Settings) -> BaseChatModel | None:
    """Return the configured chat model, or None in offline mode."""
    if settings.effective_llm_provider == "offline":
        return None
    from langchain_openai import ChatOpenAI

    api_key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else "not-needed"
    return ChatOpenAI(
        model=settings.openai_model,
        api_key=api_key,
        base_url=settings.openai_base_url,
        timeout=settings.llm_timeout_s,
        max_retries=0,
        streaming=True,
        stream_usage=True,
        temperature=settings.llm_temperature,
        http_async_client=_aiohttp_client(settings),
    )


def _aiohttp_client(settings: Settings) -> Any | None:
    """The SDK's aiohttp-backed client with the model's timeout; None (httpx's default) if it cannot be built."""
    try:
        from openai import DefaultAioHttpClient

        return DefaultAioHttpClient(timeout=settings.llm_timeout_s)
    except Exception:  # noqa: BLE001 - the extra is missing: the default transport works, only slower
        log.info("the openai aiohttp transport is unavailable; using httpx", exc_info=True)
        return None


async def close_chat_model(model: Any) -> None:
    """Close the HTTP clients `build_chat_model` gave the model (its aiohttp session and connections) and the
    answer stream's own (`core.openai_wire`)."""
    from core.openai_wire import close_wire

    client = getattr(model, "http_async_client", None)
    if client is not None and hasattr(client, "aclose"):
        await client.aclose()
    root = getattr(model, "root_async_client", None)
    if root is not None:
        await close_wire(root)
