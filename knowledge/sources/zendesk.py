"""Zendesk Help Center articles over its REST API (`/api/v2/help_center/…/articles.json`, paginated by
`next_page`), public or with an API token; incremental by `updated_at`.

There is no Python client worth its weight for the Help Center: zenpy targets `https://<subdomain>.zendesk.com`
only (another host needs process-wide environment variables), so this speaks the documented API with the shared
`requests` session (Retry-After honoured). The listing carries each article's body, so an unchanged article
costs its share of a listing page (100 articles a request) and is neither converted nor embedded again; drafts
are left out, and an article gone from the listing is removed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from knowledge.sources.base import Item, Planned, SourceDocument, SourceError, SyncContext, Unchanged, http_problem
from knowledge.sources.config import SourceSpec
from knowledge.sources.http import FETCH_ERRORS, HttpPolicy, describe, session
from knowledge.sources.markdown import html_to_markdown

PER_PAGE = 100
MAX_PAGES = 1_000  # listing pages (100,000 articles): a next_page loop is a bug upstream, not a help center


class ZendeskConnector:
    def __init__(self, spec: SourceSpec, policy: HttpPolicy, env: Mapping[str, str]) -> None:
        self.spec = spec
        self.policy = policy
        self.base = str(spec.option("url")).rstrip("/")
        locale = str(spec.option("locale") or "").strip("/")
        self.listing = f"{self.base}/api/v2/help_center/{locale + '/' if locale else ''}articles.json"
        email = spec.plain_or_env("email", env)
        token = spec.secret("token_env", env, required=False) if spec.option("token_env") else None
        if token and not email:
            raise SourceError(f"Zendesk source {spec.name!r}: an API token needs email: (or email_env:) too")
        self.session = session(policy, auth=(f"{email}/token", token) if token else None)

    def items(self, context: SyncContext) -> Iterator[Item]:
        articles = [a for a in self._articles() if not a.get("draft")]
        yield Planned(len(articles))
        for article in articles:
            key = str(article["id"])
            updated = str(article.get("updated_at", ""))
            if context.versions.get(key) == updated:
                yield Unchanged(key)
                continue
            yield SourceDocument(key=key, url=f"{self.base}/hc/articles/{key}", title=str(article.get("title") or key),
                                 text=html_to_markdown(str(article.get("body") or "")), version=updated,
                                 labels=tuple(str(n) for n in article.get("label_names") or []),
                                 path=str(article.get("html_url") or ""))

    def _articles(self) -> list[dict[str, Any]]:
        """Every article, following `next_page`; any failure of the listing is a failure of the source."""
        found: list[dict[str, Any]] = []
        url: str | None = self.listing
        params: dict[str, Any] | None = {"per_page": PER_PAGE, "sort_by": "updated_at", "sort_order": "asc"}
        what = f"the Zendesk Help Center at {self.base}"
        for _ in range(MAX_PAGES):
            if url is None:
                return found
            try:
                response = self.session.get(url, params=params, timeout=self.policy.timeout_s)
            except FETCH_ERRORS as exc:
                raise SourceError(f"{what} cannot be reached ({describe(exc)}); will retry later") from None
            if response.status_code != 200:
                raise http_problem(response.status_code, what, str(self.spec.option("token_env") or "token_env"))
            try:
                data = response.json()
            except ValueError:
                raise SourceError(f"{what} did not answer JSON at {url}; check url:") from None
            found.extend(data.get("articles") or [])
            url, params = data.get("next_page"), None  # next_page carries its own query
        raise SourceError(f"{what} kept listing more pages after {MAX_PAGES}; will retry later")
