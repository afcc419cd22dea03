"""Notion through the official client (notion-client): every page shared with the integration (search,
cursor-paginated), its blocks (recursively) turned into Markdown, its select/multi-select/status values as labels;
incremental by `last_edited_time`.

Notion rounds `last_edited_time` to the minute, so a page edited in the same minute as the last sync looked at it
would keep its old time: a page whose time is within a minute of the last sync's start is read again (the content
hash then spares it the embedding if it did not change after all). notion-client retries 429s itself, waiting
`Retry-After`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from knowledge.sources.base import (Failed, Item, Planned, SourceDocument, SourceError, SyncContext, Unchanged,
                                    http_problem)
from knowledge.sources.config import SourceSpec
from knowledge.sources.http import HttpPolicy

MAX_DEPTH = 4  # nested blocks read below a page (toggles in lists in callouts…)
SAME_MINUTE_S = 60.0


class NotionConnector:
    def __init__(self, spec: SourceSpec, policy: HttpPolicy, env: Mapping[str, str]) -> None:
        from notion_client import Client
        from notion_client.client import RetryOptions

        self.spec = spec
        self.client = Client(
            auth=spec.secret("token_env", env),
            base_url=str(spec.option("api_url") or "https://api.notion.com"),
            timeout_ms=int(policy.timeout_s * 1000),
            retry=RetryOptions(max_retries=policy.retries, initial_retry_delay_ms=int(policy.backoff_s * 1000),
                               max_retry_delay_ms=int(policy.max_retry_after_s * 1000)),
        )

    def items(self, context: SyncContext) -> Iterator[Item]:
        from notion_client.helpers import collect_paginated_api

        try:
            pages = collect_paginated_api(self.client.search, filter={"property": "object", "value": "page"},
                                          page_size=100)
        except Exception as exc:  # noqa: BLE001 - auth, 5xx, timeouts: keep everything, retry later
            raise _problem(exc, str(self.spec.option("token_env"))) from None
        pages = [p for p in pages if p.get("object") == "page" and not (p.get("in_trash") or p.get("archived"))]
        yield Planned(len(pages))
        for page in pages:
            key = str(page["id"])
            edited = str(page.get("last_edited_time", ""))
            if context.versions.get(key) == edited and not _near(edited, context.since):
                yield Unchanged(key)
                continue
            try:
                text = "\n\n".join(self._blocks(key, 0))
            except Exception as exc:  # noqa: BLE001 - one unreadable page is skipped and reported
                yield Failed(key, f"{_title(page) or key}: {_reason(exc)}")
                continue
            yield SourceDocument(key=key, url="https://www.notion.so/" + key.replace("-", ""),
                                 title=_title(page) or "Untitled", text=text, version=edited,
                                 labels=_labels(page), path=_title(page))

    def _blocks(self, block_id: str, depth: int) -> Iterator[str]:
        from notion_client.helpers import iterate_paginated_api

        numbered = 0
        for block in iterate_paginated_api(self.client.blocks.children.list, block_id=block_id, page_size=100):
            kind = block.get("type", "")
            numbered = numbered + 1 if kind == "numbered_list_item" else 0
            line = render_block(block, numbered)
            if line is not None:
                yield ("  " * depth) + line if depth and not line.startswith("```") else line
            if block.get("has_children") and kind not in ("child_page", "child_database") and depth < MAX_DEPTH:
                yield from self._blocks(str(block["id"]), depth + 1)


def render_block(block: dict[str, Any], number: int = 1) -> str | None:
    """One block as a Markdown line (or fenced block); None for blocks without text of their own."""
    kind = block.get("type", "")
    body = block.get(kind) or {}
    text = rich_text(body.get("rich_text", []))
    if kind.startswith("heading_"):
        return f"{'#' * int(kind[-1])} {text}"
    if kind == "paragraph":
        return text or None
    if kind in ("bulleted_list_item", "toggle"):
        return f"- {text}"
    if kind == "numbered_list_item":
        return f"{number}. {text}"
    if kind == "to_do":
        return f"- [{'x' if body.get('checked') else ' '}] {text}"
    if kind in ("quote", "callout"):
        return f"> {text}"
    if kind == "code":
        return f"```{body.get('language', '')}\n{text}\n```"
    if kind == "table_row":
        return "| " + " | ".join(rich_text(cell) for cell in body.get("cells", [])) + " |"
    if kind == "divider":
        return "---"
    return text or None


def rich_text(parts: list[dict[str, Any]]) -> str:
    return "".join(str(part.get("plain_text", "")) for part in parts)


def _title(page: dict[str, Any]) -> str:
    for prop in (page.get("properties") or {}).values():
        if prop.get("type") == "title":
            return rich_text(prop.get("title", [])).strip()
    return ""


def _labels(page: dict[str, Any]) -> tuple[str, ...]:
    labels: list[str] = []
    for prop in (page.get("properties") or {}).values():
        kind = prop.get("type")
        if kind == "multi_select":
            labels.extend(str(o.get("name", "")) for o in prop.get("multi_select") or [])
        elif kind in ("select", "status") and prop.get(kind):
            labels.append(str(prop[kind].get("name", "")))
    return tuple(label for label in labels if label)


def _near(edited: str, since: float | None) -> bool:
    """Whether an edit time (minute precision) is too close to the last sync's start to trust."""
    if since is None or not edited:
        return False
    try:
        when = datetime.fromisoformat(edited.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return True
    return when >= since - SAME_MINUTE_S


def _reason(exc: Exception) -> str:
    status = getattr(exc, "status", None)
    return f"HTTP {status}" if status else type(exc).__name__


def _problem(exc: Exception, token_env: str) -> SourceError:
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        return http_problem(status, "Notion", token_env)
    return SourceError(f"Notion cannot be reached ({type(exc).__name__}); will retry later")
