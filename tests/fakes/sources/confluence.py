"""Confluence Cloud's REST API v2, as atlassian-python-api's `ConfluenceV2` calls it, under `/wiki`:

    GET /wiki/api/v2/spaces?keys=SUP&limit=…              {"results": [{"id", "key", "name"}], "_links": {}}
    GET /wiki/api/v2/pages?space-id=…&limit=…&body-format=none[&cursor=…]
                                                          cursor pagination: "_links": {"next": "/wiki/api/v2/
                                                          pages?cursor=…&space-id=…&limit=…"}
    GET /wiki/api/v2/pages/{id}?body-format=storage       the page with "body": {"storage": {"value"}}
    GET /wiki/api/v2/pages/{id}/labels?limit=…            {"results": [{"id", "name", "prefix"}]}

Basic auth with the account's email and API token; anything else answers 401 with Confluence's error body.
`max_limit` caps the page size (the real API caps at 250) so tests see several pages of results.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from tests.fakes.sources.base import FakeServer, Reply, Request

EMAIL = "bot@example.com"
TOKEN = "confluence-api-token"
SPACE_ID = "98304"


@dataclass
class FakeConfluencePage:
    id: str
    title: str
    storage: str
    labels: list[str] = field(default_factory=list)
    version: int = 1


class FakeConfluence(FakeServer):
    def __init__(self, space: str = "SUP", max_limit: int = 2) -> None:
        super().__init__()
        self.space = space
        self.max_limit = max_limit
        self.pages: dict[str, FakeConfluencePage] = {}
        self._next_id = 1000

    def add(self, title: str, storage: str, labels: list[str] | None = None) -> str:
        self._next_id += 1
        page_id = str(self._next_id)
        self.pages[page_id] = FakeConfluencePage(page_id, title, storage, labels or [])
        return page_id

    def edit(self, page_id: str, storage: str) -> None:
        page = self.pages[page_id]
        page.storage, page.version = storage, page.version + 1

    @property
    def wiki_url(self) -> str:
        return self.url + "/wiki"

    def error_reply(self, status: int) -> Reply:
        return Reply.json({"errors": [{"status": status, "code": "ERROR", "title": f"HTTP {status}"}]}, status)

    def rate_limited_reply(self, retry_after: float) -> Reply:
        return Reply.json({"errors": [{"status": 429, "code": "TOO_MANY_REQUESTS", "title": "Rate limited"}]},
                          429, **{"Retry-After": f"{retry_after:g}"})

    def route(self, request: Request) -> Reply:
        expected = "Basic " + base64.b64encode(f"{EMAIL}:{TOKEN}".encode()).decode()
        if request.headers.get("authorization") != expected:
            return Reply.json({"code": 401, "message": "Unauthorized; scope does not match"}, 401)
        path = request.path.removeprefix("/wiki/api/v2")
        if path == "/spaces":
            keys = request.query.get("keys", "").split(",")
            found = [{"id": SPACE_ID, "key": self.space, "name": "Support"}] if self.space in keys else []
            return Reply.json({"results": found, "_links": {"base": self.wiki_url}})
        if path == "/pages":
            return self._list(request)
        parts = path.strip("/").split("/")
        if len(parts) >= 2 and parts[0] == "pages" and parts[1] in self.pages:
            page = self.pages[parts[1]]
            if len(parts) == 3 and parts[2] == "labels":
                return Reply.json({"results": [{"id": str(i), "name": n, "prefix": "global"}
                                               for i, n in enumerate(page.labels)], "_links": {}})
            if len(parts) == 2:
                data = self._summary(page)
                if request.query.get("body-format") == "storage":
                    data["body"] = {"storage": {"value": page.storage, "representation": "storage"}}
                return Reply.json(data)
        return Reply.json({"errors": [{"status": 404, "code": "NOT_FOUND", "title": "Not Found"}]}, 404)

    def _summary(self, page: FakeConfluencePage) -> dict:
        return {"id": page.id, "status": "current", "title": page.title, "spaceId": SPACE_ID,
                "version": {"number": page.version, "createdAt": "2024-01-01T00:00:00.000Z"},
                "_links": {"webui": f"/spaces/{self.space}/pages/{page.id}/{page.title.replace(' ', '+')}"}}

    def _list(self, request: Request) -> Reply:
        if request.query.get("space-id") != SPACE_ID:
            return Reply.json({"results": [], "_links": {}})
        limit = min(int(request.query.get("limit", 25)), self.max_limit)
        ids = sorted(self.pages)
        start = ids.index(request.query["cursor"]) if request.query.get("cursor") in ids else 0
        chunk = ids[start:start + limit]
        links: dict[str, str] = {"base": self.wiki_url}
        if start + limit < len(ids):
            links["next"] = f"/wiki/api/v2/pages?cursor={ids[start + limit]}&space-id={SPACE_ID}&limit={limit}"
        return Reply.json({"results": [self._summary(self.pages[i]) for i in chunk], "_links": links})
