"""The Notion API (version 2025-09-03) as notion-client calls it:

    POST /v1/search  {"filter": {"property": "object", "value": "page"}, "page_size", "start_cursor"}
                     → {"object": "list", "results": [page…], "next_cursor", "has_more"}
    GET  /v1/blocks/{id}/children?page_size=…&start_cursor=…   → the same list shape, of blocks

Bearer auth with the integration token and a `Notion-Version` header; errors are Notion's
`{"object": "error", "status", "code", "message"}` (401 `unauthorized`, 429 `rate_limited` with Retry-After).
`page_size` is capped at `max_page_size` so tests see several pages of results.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from tests.fakes.sources.base import FakeServer, Reply, Request

TOKEN = "secret_notion_integration_token"


@dataclass
class FakeNotionPage:
    id: str
    title: str
    blocks: list[dict]
    tags: list[str] = field(default_factory=list)
    edited: str = "2024-01-01T10:00:00.000Z"
    in_trash: bool = False


def paragraph(text: str) -> dict:
    return {"type": "paragraph", "paragraph": {"rich_text": [{"type": "text", "plain_text": text,
                                                              "text": {"content": text}}]}}


def heading(level: int, text: str) -> dict:
    key = f"heading_{level}"
    return {"type": key, key: {"rich_text": [{"type": "text", "plain_text": text, "text": {"content": text}}]}}


def bullet(text: str, children: list[dict] | None = None) -> dict:
    block = {"type": "bulleted_list_item",
             "bulleted_list_item": {"rich_text": [{"type": "text", "plain_text": text, "text": {"content": text}}]}}
    if children:
        block["children"] = children
    return block


class FakeNotion(FakeServer):
    def __init__(self, max_page_size: int = 2) -> None:
        super().__init__()
        self.max_page_size = max_page_size
        self.pages: dict[str, FakeNotionPage] = {}
        self.blocks: dict[str, list[dict]] = {}  # parent id → child blocks (with ids)

    def add(self, title: str, blocks: list[dict], tags: list[str] | None = None) -> str:
        page_id = str(uuid.uuid4())
        self.pages[page_id] = FakeNotionPage(page_id, title, blocks, tags or [])
        self._store_blocks(page_id, blocks)
        return page_id

    def edit(self, page_id: str, blocks: list[dict], edited: str) -> None:
        page = self.pages[page_id]
        page.blocks, page.edited = blocks, edited
        self._store_blocks(page_id, blocks)

    def _store_blocks(self, parent: str, blocks: list[dict]) -> None:
        stored = []
        for block in blocks:
            block = dict(block)
            children = block.pop("children", None)
            block.update(object="block", id=str(uuid.uuid4()), has_children=bool(children))
            if children:
                self._store_blocks(block["id"], children)
            stored.append(block)
        self.blocks[parent] = stored

    @property
    def api_url(self) -> str:
        return self.url

    def error_reply(self, status: int) -> Reply:
        return Reply.json({"object": "error", "status": status, "code": "internal_server_error",
                           "message": f"HTTP {status}"}, status)

    def rate_limited_reply(self, retry_after: float) -> Reply:
        return Reply.json({"object": "error", "status": 429, "code": "rate_limited",
                           "message": "You have been rate limited."}, 429, **{"Retry-After": f"{retry_after:g}"})

    def route(self, request: Request) -> Reply:
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return Reply.json({"object": "error", "status": 401, "code": "unauthorized",
                               "message": "API token is invalid."}, 401)
        if not request.headers.get("notion-version"):
            return Reply.json({"object": "error", "status": 400, "code": "missing_version",
                               "message": "Notion-Version header failed validation."}, 400)
        if request.method == "POST" and request.path == "/v1/search":
            body = request.json()
            pages = [self._page(p) for p in self.pages.values()]
            return self._list(pages, body.get("start_cursor"), body.get("page_size", 100), "page_or_data_source")
        parts = request.path.strip("/").split("/")
        if request.method == "GET" and len(parts) == 4 and parts[:2] == ["v1", "blocks"] and parts[3] == "children":
            if parts[2] not in self.blocks:
                return Reply.json({"object": "error", "status": 404, "code": "object_not_found",
                                   "message": "Could not find block."}, 404)
            return self._list(self.blocks[parts[2]], request.query.get("start_cursor"),
                              int(request.query.get("page_size", 100)), "block")
        return Reply.json({"object": "error", "status": 400, "code": "invalid_request_url",
                           "message": "Invalid request URL."}, 400)

    def _list(self, items: list[dict], cursor: str | None, size: int, kind: str) -> Reply:
        size = min(int(size), self.max_page_size)
        start = int(cursor) if cursor else 0
        chunk = items[start:start + size]
        more = start + size < len(items)
        return Reply.json({"object": "list", "results": chunk, "next_cursor": str(start + size) if more else None,
                           "has_more": more, "type": kind, kind: {}})

    def _page(self, page: FakeNotionPage) -> dict:
        return {
            "object": "page", "id": page.id, "created_time": "2024-01-01T09:00:00.000Z",
            "last_edited_time": page.edited, "in_trash": page.in_trash, "archived": page.in_trash,
            "url": f"https://www.notion.so/{page.title.replace(' ', '-')}-{page.id.replace('-', '')}",
            "parent": {"type": "workspace", "workspace": True},
            "properties": {
                "Name": {"id": "title", "type": "title",
                         "title": [{"type": "text", "plain_text": page.title, "text": {"content": page.title}}]},
                "Tags": {"id": "tags", "type": "multi_select",
                         "multi_select": [{"id": t, "name": t, "color": "default"} for t in page.tags]},
            },
        }
