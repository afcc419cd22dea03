"""A documentation website: pages from its sitemap (ultimate-sitemap-parser) or a crawl under a URL prefix,
robots.txt obeyed (protego), main content only (trafilatura), and nothing re-read that did not change.

A page costs no request when the sitemap's `<lastmod>` for it is the one recorded last time, and one request
answered 304 when the server supports ETag/Last-Modified; only a changed page is downloaded and extracted. A
crawl records each page's links, so a page answered 304 still leads to the pages it links to.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urldefrag, urljoin, urlsplit

from knowledge.sources.base import Failed, Gone, Item, Planned, SourceDocument, SourceError, SyncContext, Unchanged
from knowledge.sources.config import SourceSpec
from knowledge.sources.http import FETCH_ERRORS, HttpPolicy, describe, session
from knowledge.sources.markdown import split_front_matter

DEFAULT_MAX_PAGES = 500
HTML_TYPES = ("text/html", "application/xhtml+xml")


@dataclass(frozen=True)
class Page:
    url: str
    lastmod: str | None = None  # the sitemap's <lastmod>, ISO text; None when it gives none


class WebsiteConnector:
    def __init__(self, spec: SourceSpec, policy: HttpPolicy) -> None:
        self.spec = spec
        self.policy = policy
        self.url = str(spec.option("url"))
        self.user_agent = str(spec.option("user_agent") or policy.user_agent)
        self.max_pages = int(spec.option("max_pages") or DEFAULT_MAX_PAGES)
        self.session = session(HttpPolicy(policy.timeout_s, policy.retries, policy.backoff_s,
                                          policy.max_retry_after_s, self.user_agent))
        self.is_sitemap = urlsplit(self.url).path.endswith((".xml", ".xml.gz", ".txt"))
        default_prefix = self._site() + "/" if self.is_sitemap else self.url.rsplit("/", 1)[0] + "/"
        self.prefix = str(spec.option("prefix") or default_prefix)

    def _site(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"

    # --- the source --------------------------------------------------------------------------------------------
    def items(self, context: SyncContext) -> Iterator[Item]:
        robots = self._robots()
        if self.is_sitemap:
            # Every page the sitemap lists: `max_pages` budgets a crawl, which has no list of its own. Capping a
            # sitemap would drop its later pages, and a later sync would remove them as "no longer listed".
            pages = [p for p in self._sitemap_pages() if self._allowed(p.url, robots)]
            yield Planned(len(pages))
            for page in pages:
                yield self._page(page, context.versions.get(page.url))
        else:
            yield from self._crawl(robots, context)

    def _robots(self) -> Any:
        """robots.txt as protego reads it; a missing one (4xx) allows everything, a 5xx stops the sync (RFC 9309
        says to assume a complete disallow; keeping the last good pages is the same, without removing any)."""
        from protego import Protego

        url = self._site() + "/robots.txt"
        try:
            response = self.session.get(url, timeout=self.policy.timeout_s)
        except FETCH_ERRORS as exc:
            raise SourceError(f"{url} cannot be fetched ({describe(exc)}); will retry later") from None
        if response.status_code >= 500 or response.status_code == 429:
            raise SourceError(f"{url} answered HTTP {response.status_code}; will retry later", response.status_code)
        return Protego.parse(response.text if response.status_code == 200 else "")

    def _allowed(self, url: str, robots: Any) -> bool:
        return url.startswith(self.prefix) and bool(robots.can_fetch(url, self.user_agent))

    def _sitemap_pages(self) -> list[Page]:
        from usp.fetch_parse import SitemapFetcher
        from usp.objects.sitemap import InvalidSitemap
        from usp.web_client.requests_client import RequestsWebClient

        client = RequestsWebClient(session=self.session)
        client.set_timeout(self.policy.timeout_s)
        tree = SitemapFetcher(self.url, recursion_level=0, web_client=client).sitemap()
        if isinstance(tree, InvalidSitemap):
            raise SourceError(f"the sitemap {self.url} cannot be read ({tree.reason}); will retry later")
        pages: dict[str, Page] = {}
        for entry in tree.all_pages():
            url = urldefrag(entry.url)[0]
            lastmod = entry.last_modified.isoformat() if entry.last_modified else None
            pages.setdefault(url, Page(url, lastmod))
        if not pages and self._has_invalid_child(tree):
            raise SourceError(f"the sitemap {self.url} lists sitemaps that cannot be read; will retry later")
        return list(pages.values())

    @staticmethod
    def _has_invalid_child(tree: Any) -> bool:
        from usp.objects.sitemap import InvalidSitemap

        return any(isinstance(s, InvalidSitemap) for s in getattr(tree, "all_sitemaps", lambda: [])())

    # --- one page ------------------------------------------------------------------------------------------
    def _page(self, page: Page, previous: dict[str, Any] | None) -> Item:
        item, _ = self._fetch(page, previous)
        return item

    def _fetch(self, page: Page, previous: dict[str, Any] | None) -> tuple[Item, list[str]]:
        """(the item for the page, the links it has); unchanged pages answer from what was recorded."""
        previous = previous or {}
        if page.lastmod and previous.get("lastmod") == page.lastmod:
            return Unchanged(page.url), list(previous.get("links", []))
        headers = {}
        if previous.get("etag"):
            headers["If-None-Match"] = previous["etag"]
        if previous.get("modified"):
            headers["If-Modified-Since"] = previous["modified"]
        try:
            response = self.session.get(page.url, headers=headers, timeout=self.policy.timeout_s)
        except FETCH_ERRORS as exc:
            return Failed(page.url, f"cannot be fetched ({describe(exc)})"), list(previous.get("links", []))
        if response.status_code == 304 and previous:
            return Unchanged(page.url, {**previous, "lastmod": page.lastmod}), list(previous.get("links", []))
        if response.status_code in (404, 410):
            return Gone(page.url, f"gone (HTTP {response.status_code})"), []
        if response.status_code != 200:
            return Failed(page.url, f"HTTP {response.status_code}"), list(previous.get("links", []))
        content_type = response.headers.get("Content-Type", "text/html").split(";")[0].strip().lower()
        if content_type not in HTML_TYPES:
            return Failed(page.url, f"not an HTML page ({content_type})"), []
        html = response.text
        links = self._links(page.url, html) if not self.is_sitemap else []
        version = {"etag": response.headers.get("ETag"), "modified": response.headers.get("Last-Modified"),
                   "lastmod": page.lastmod, "links": links}
        title, text = extract(html, page.url)
        if not text:
            return Failed(page.url, "no main content found"), links
        return SourceDocument(key=page.url, url=page.url, title=title or page.url, text=text, version=version,
                              path=urlsplit(page.url).path), links

    # --- crawling --------------------------------------------------------------------------------------------
    def _crawl(self, robots: Any, context: SyncContext) -> Iterator[Item]:
        start = urldefrag(self.url)[0]
        queue: deque[str] = deque([start])
        queued = {start}
        fetched = 0
        while queue and fetched < self.max_pages:
            url = queue.popleft()
            if not self._allowed(url, robots):
                continue
            fetched += 1
            item, links = self._fetch(Page(url), context.versions.get(url))
            if isinstance(item, Failed) and url == start:
                raise SourceError(f"the start page {url} cannot be read ({item.reason}); will retry later")
            yield item
            for link in links:
                if link not in queued and link.startswith(self.prefix):
                    queued.add(link)
                    queue.append(link)

    @staticmethod
    def _links(base: str, html: str) -> list[str]:
        from bs4 import BeautifulSoup

        found: list[str] = []
        for anchor in BeautifulSoup(html, "html.parser").find_all("a", href=True):
            url = urldefrag(urljoin(base, str(anchor["href"])))[0]
            if url.startswith(("http://", "https://")) and url not in found:
                found.append(url)
        return found


def extract(html: str, url: str) -> tuple[str, str]:
    """(title, main content as Markdown) by trafilatura: navigation, headers and footers left out."""
    from trafilatura.core import extract_with_metadata

    document = extract_with_metadata(html, url=url, output_format="markdown", include_formatting=True,
                                     include_comments=False, include_links=False, include_tables=True)
    if document is None:
        return "", ""
    _, text = split_front_matter(document.text or "")  # markdown output starts with a metadata header
    return str(document.title or ""), text.strip()
