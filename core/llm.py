"""Building the chat model from settings.

`ChatOpenAI` talks to OpenAI or any OpenAI-compatible server (Ollama, vLLM, LM Studio) via `OPENAI_BASE_URL`.
The client's own retries are off: `core.retry` owns retrying, so a failure after the first token is never
silently repeated.
"""

from __future__ import annotations

from langchain_core.language_models.chat_models import BaseChatModel

from core.settings import Settings


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
    )
