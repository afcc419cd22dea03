"""The Zendesk Help Center API's article listing, offset-paginated as Zendesk does it:

    GET /api/v2/help_center[/{locale}]/articles.json?per_page=…&page=…&sort_by=updated_at
        → {"articles": [{"id", "title", "body" (HTML), "html_url", "updated_at", "label_names", "draft"}…],
           "next_page": absolute URL or null, "page", "per_page", "page_count", "count"}

Public by default; `auth=True` requires basic auth `{email}/token:{token}` and answers 401 `Couldn't
authenticate you` otherwise. `max_per_page` caps page sizes so tests see several pages.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from tests.fakes.sources.base import FakeServer, Reply, Request

EMAIL = "agent@example.com"
TOKEN = "zendesk-api-token"


@dataclass
class FakeArticle:
    id: int
    title: str
    body: str
    labels: list[str] = field(default_factory=list)
    updated_at: str = "2024-01-01T10:00:00Z"
    draft: bool = False


class FakeZendesk(FakeServer):
    def __init__(self, auth: bool = True, max_per_page: int = 2) -> None:
        super().__init__()
        self.auth = auth
        self.max_per_page = max_per_page
        self.articles: dict[int, FakeArticle] = {}
        self._next = 360000

    def add(self, title: str, body: str, labels: list[str] | None = None, draft: bool = False) -> int:
        self._next += 1
        self.articles[self._next] = FakeArticle(self._next, title, body, labels or [], draft=draft)
        return self._next

    def edit(self, article_id: int, body: str, updated_at: str) -> None:
        article = self.articles[article_id]
        article.body, article.updated_at = body, updated_at

    def error_reply(self, status: int) -> Reply:
        return Reply.json({"error": "InternalError", "description": f"HTTP {status}"}, status)

    def route(self, request: Request) -> Reply:
        if self.auth:
            expected = "Basic " + base64.b64encode(f"{EMAIL}/token:{TOKEN}".encode()).decode()
            if request.headers.get("authorization") != expected:
                return Reply.json({"error": "Couldn't authenticate you"}, 401)
        if not (request.path.startswith("/api/v2/help_center/") and request.path.endswith("/articles.json")):
            return Reply.json({"error": "InvalidEndpoint", "description": "Not found"}, 404)
        per_page = min(int(request.query.get("per_page", 30)), self.max_per_page)
        page = int(request.query.get("page", 1))
        ordered = sorted(self.articles.values(), key=lambda a: (a.updated_at, a.id))
        chunk = ordered[(page - 1) * per_page: page * per_page]
        more = page * per_page < len(ordered)
        base = f"{self.url}{request.path}"
        return Reply.json({
            "articles": [{"id": a.id, "title": a.title, "body": a.body, "draft": a.draft,
                          "html_url": f"{self.url}/hc/en-us/articles/{a.id}-{a.title.replace(' ', '-')}",
                          "updated_at": a.updated_at, "label_names": a.labels, "locale": "en-us"} for a in chunk],
            "next_page": f"{base}?page={page + 1}&per_page={per_page}" if more else None,
            "previous_page": None, "page": page, "per_page": per_page, "count": len(ordered),
            "page_count": -(-len(ordered) // per_page), "sort_by": "updated_at", "sort_order": "asc"})
