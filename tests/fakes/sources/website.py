"""A documentation website: pages wrapped in navigation and footer chrome, robots.txt, a sitemap index with two
child sitemaps (`<lastmod>` optional), and conditional GET (ETag / If-None-Match, Last-Modified /
If-Modified-Since answered 304).

    with FakeWebsite() as site:
        site.page("/docs/refunds", "Refunds", "Annual plans can be refunded within 30 days.")
        site.disallow("/docs/private/")
        site.sitemap_url                      # http://127.0.0.1:PORT/sitemap.xml (an index)
        site.edit("/docs/refunds", "…")       # new ETag, new lastmod
        site.delete("/docs/refunds")          # 404, and out of the sitemap
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from email.utils import formatdate

from tests.fakes.sources.base import FakeServer, Reply, Request

CHROME_NAV = "MENU-CHROME Home Pricing Blog Careers"
CHROME_FOOTER = "FOOTER-CHROME Copyright Lumenly. All rights reserved."


@dataclass
class FakePage:
    title: str
    body: str
    version: int = 1
    links: tuple[str, ...] = ()

    @property
    def etag(self) -> str:
        return '"' + hashlib.sha1(f"{self.title}{self.body}{self.version}".encode()).hexdigest()[:12] + '"'

    @property
    def modified(self) -> str:
        return formatdate(1_700_000_000 + self.version * 3600, usegmt=True)

    @property
    def lastmod(self) -> str:
        return f"2024-01-{self.version:02d}T00:00:00+00:00"


class FakeWebsite(FakeServer):
    def __init__(self, *, lastmod: bool = True, conditional: bool = True) -> None:
        super().__init__()
        self.pages: dict[str, FakePage] = {}
        self.disallowed: list[str] = []
        self.lastmod = lastmod  # whether the sitemaps carry <lastmod>
        self.conditional = conditional  # whether pages answer 304 to If-None-Match / If-Modified-Since
        self.raw: dict[str, Reply] = {}  # path → a fixed answer (a broken page, a PDF…)

    # --- content ---------------------------------------------------------------------------------------------
    def page(self, path: str, title: str, body: str, links: tuple[str, ...] = ()) -> None:
        self.pages[path] = FakePage(title, body, links=links)

    def edit(self, path: str, body: str) -> None:
        page = self.pages[path]
        page.body, page.version = body, page.version + 1

    def delete(self, path: str) -> None:
        del self.pages[path]

    def disallow(self, prefix: str) -> None:
        self.disallowed.append(prefix)

    @property
    def sitemap_url(self) -> str:
        return self.url + "/sitemap.xml"

    # --- answers ---------------------------------------------------------------------------------------------
    def route(self, request: Request) -> Reply:
        if request.path in self.raw:
            return self.raw[request.path]
        if request.path == "/robots.txt":
            lines = ["User-agent: *", *(f"Disallow: {p}" for p in self.disallowed), f"Sitemap: {self.sitemap_url}"]
            return Reply.text("\n".join(lines) + "\n")
        if request.path == "/sitemap.xml":
            children = "".join(f"<sitemap><loc>{self.url}/sitemap-{n}.xml</loc></sitemap>" for n in (1, 2))
            return Reply.text('<?xml version="1.0" encoding="UTF-8"?><sitemapindex xmlns='
                              f'"http://www.sitemaps.org/schemas/sitemap/0.9">{children}</sitemapindex>',
                              "application/xml")
        if request.path in ("/sitemap-1.xml", "/sitemap-2.xml"):
            return self._sitemap(int(request.path[-5]))
        page = self.pages.get(request.path)
        if page is None:
            return Reply.text("<html><body><h1>Not found</h1></body></html>", "text/html", 404)
        headers = {"ETag": page.etag, "Last-Modified": page.modified}
        if self.conditional and (request.headers.get("if-none-match") == page.etag
                                 or request.headers.get("if-modified-since") == page.modified):
            return Reply(304, b"", headers)
        return Reply.text(self.render(page), "text/html", **headers)

    def _sitemap(self, part: int) -> Reply:
        paths = sorted(self.pages)
        half = paths[: (len(paths) + 1) // 2] if part == 1 else paths[(len(paths) + 1) // 2:]
        urls = "".join(
            f"<url><loc>{self.url}{p}</loc>"
            + (f"<lastmod>{self.pages[p].lastmod}</lastmod>" if self.lastmod else "") + "</url>"
            for p in half)
        return Reply.text('<?xml version="1.0" encoding="UTF-8"?><urlset xmlns='
                          f'"http://www.sitemaps.org/schemas/sitemap/0.9">{urls}</urlset>', "application/xml")

    @staticmethod
    def render(page: FakePage) -> str:
        links = "".join(f'<li><a href="{href}">{href}</a></li>' for href in page.links)
        paragraphs = "".join(f"<p>{p}</p>" for p in page.body.split("\n\n"))
        return (f"<!doctype html><html><head><title>{page.title} | Lumenly Help</title></head><body>"
                f'<header><nav><a href="/">Home</a> {CHROME_NAV}</nav></header>'
                f"<main><article><h1>{page.title}</h1>{paragraphs}"
                f"<h2>More</h2><p>Read more about {page.title.lower()} in the related articles listed below, "
                f"or ask support if something is unclear.</p><ul>{links}</ul></article></main>"
                f"<footer><p>{CHROME_FOOTER}</p></footer></body></html>")
