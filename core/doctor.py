"""`switchboard doctor`, the core's part: what is configured, and whether each dependency of the core works, with
the fix when it does not. The command itself (and the front-ends' checks) is wired in `switchboard.doctor`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

from pydantic import SecretStr

from core.settings import Settings


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def mask(value: object) -> str:
    """Show that a secret is set without showing it: the kind prefix and the last four characters."""
    if isinstance(value, SecretStr):
        raw = value.get_secret_value()
        if not raw:
            return "(empty)"
        prefix = raw.split("-", 1)[0] + "-" if "-" in raw[:6] else ""
        return f"{prefix}…{raw[-4:]}" if len(raw) > 12 else "****"
    return "(not set)" if value is None else str(value)


def settings_rows(settings: Settings) -> Iterator[tuple[str, str]]:
    from core.checkpoints import database_url, redact_url

    for name in type(settings).model_fields:
        if name == "database_url" and database_url(settings):  # host, user and database; never the password
            yield name, redact_url(database_url(settings) or "")
            continue
        yield name, mask(getattr(settings, name))
    yield "effective_llm_provider", settings.effective_llm_provider


async def check_embeddings(settings: Settings) -> CheckResult:
    try:
        from knowledge.embeddings import make_embedder

        embedder = await asyncio.to_thread(make_embedder, settings)
        await asyncio.to_thread(embedder.embed_query, "doctor")
    except Exception as exc:  # noqa: BLE001 - reported, with the fix
        return CheckResult("embeddings", False, str(exc), "run `make install` (it installs the model weights)")
    return CheckResult("embeddings", True, f"{embedder.name} ({embedder.dim} dimensions)")


async def check_store(settings: Settings) -> CheckResult:
    """The agents file, and chunks for each of its agents (as `switchboard run` requires)."""
    from knowledge.agents import AgentsFileError
    from knowledge.store import StoreUnavailableError

    try:
        from knowledge.base import open_knowledge_base
        from knowledge.embeddings import make_embedder

        base = await asyncio.to_thread(open_knowledge_base, settings, make_embedder(settings))
        counts = await asyncio.to_thread(base.counts)
    except AgentsFileError as exc:
        return CheckResult("knowledge store", False, str(exc), "edit the agents file as it says, or unset AGENTS_FILE")
    except StoreUnavailableError as exc:  # the Chroma server of CHROMA_HOST/CHROMA_PORT: its own fix
        return CheckResult("knowledge store", False, exc.problem, exc.fix)
    except Exception as exc:  # noqa: BLE001
        return CheckResult("knowledge store", False, str(exc),
                           "check CHROMA_HOST/CHROMA_PORT or SWITCHBOARD_DATA_DIR, then `switchboard ingest`")
    total = sum(counts.values())
    detail = ", ".join(f"{agent}: {n}" for agent, n in counts.items())
    if total == 0:
        return CheckResult("knowledge store", False, "the store is empty", "run `switchboard ingest` (or `make run`)")
    empty = [agent for agent, n in counts.items() if n == 0]
    if empty:
        return CheckResult("knowledge store", False, f"{total} chunks ({detail}); {empty[0]} has no documents",
                           f"put files under docs/{empty[0]}/ (or give them `agent: {empty[0]}` front matter) and "
                           "run `switchboard ingest`")
    return CheckResult("knowledge store", True, f"{total} chunks ({detail})")


async def check_checkpoints(settings: Settings) -> CheckResult:
    from core.checkpoints import CheckpointsUnavailable, database_url, open_checkpointer, postgres_status

    url = database_url(settings)
    if url is not None:  # Postgres: reachable, and its tables ready? (read-only; `switchboard migrate` creates them)
        try:
            return CheckResult("checkpoints", True, await postgres_status(url))
        except CheckpointsUnavailable as exc:
            return CheckResult("checkpoints", False, exc.problem, exc.fix)
    try:
        saver, close = await open_checkpointer(settings)
        await close()
    except Exception as exc:  # noqa: BLE001
        return CheckResult("checkpoints", False, str(exc),
                           f"make {settings.data_dir} writable or set SWITCHBOARD_DATA_DIR to a writable folder")
    return CheckResult("checkpoints", True, f"SQLite at {settings.checkpoint_path}")


async def check_llm(settings: Settings) -> CheckResult:
    if settings.effective_llm_provider == "offline":
        return CheckResult("language model", True, "offline mode (answers quote the knowledge base); "
                           "set OPENAI_API_KEY or OPENAI_BASE_URL to use a model")
    import openai

    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else "not-needed"
    client = openai.AsyncOpenAI(api_key=key, base_url=settings.openai_base_url, timeout=10.0, max_retries=0)
    try:
        models = await client.models.list()
        names = [m.id for m in models.data]
    except openai.AuthenticationError:
        return CheckResult("language model", False, "the API key was rejected (401)", "check OPENAI_API_KEY")
    except Exception as exc:  # noqa: BLE001
        where = settings.openai_base_url or "api.openai.com"
        return CheckResult("language model", False, f"cannot reach {where}: {type(exc).__name__}",
                           "check OPENAI_BASE_URL and that the server is running, or unset it for offline mode")
    finally:
        await client.close()
    if names and settings.openai_model not in names:
        return CheckResult("language model", False, f"model {settings.openai_model!r} is not served there",
                           f"set OPENAI_MODEL to one of: {', '.join(names[:8])}")
    return CheckResult("language model", True, f"{settings.openai_model} at {settings.openai_base_url or 'OpenAI'}")


Check = Callable[[Settings], Awaitable[CheckResult | list[CheckResult]]]
CORE_CHECKS: tuple[Check, ...] = (check_embeddings, check_store, check_checkpoints, check_llm)
"""The core's checks, in the order `switchboard doctor` shows them (`switchboard.doctor` adds the front-ends')."""
