"""Knowledge-source sync benchmarks against the loopback website fake (tests/fakes/sources/website.py), through
the real sitemap parser, robots.txt, trafilatura, chunking, the local MiniLM embedder and the Chroma store:

- `sync_pages_per_s`: pages synced per second by a first sync of a 1,000-page site (sitemap index, every page
  fetched, extracted, chunked, embedded and stored).
- `resync_requests_per_page`: HTTP requests per page of a second sync with nothing changed, the sitemap carrying
  `<lastmod>` (as generated sitemaps do): only robots.txt and the sitemaps are asked for.
- `resync_requests_per_page_no_lastmod`: the same with a sitemap without `<lastmod>`, the worst case: every page
  asked conditionally and answered 304, plus robots.txt and the three sitemaps (1 + 4 / pages).
- `resync_embeddings`: texts embedded by both resyncs (target 0).

`BENCH_SOURCE_PAGES` changes the site's size (a quick check: 100).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

PAGES = int(os.environ.get("BENCH_SOURCE_PAGES", "1000"))
TOPICS = ["billing", "invoices", "API keys", "webhooks", "single sign-on", "exports", "rate limits", "audit logs"]


def run() -> dict[str, float]:
    from knowledge.base import open_store
    from knowledge.embeddings import local_model
    from knowledge.sources.config import SourceSpec
    from knowledge.sources.state import StateStore
    from knowledge.sources.sync import sync_source
    from tests.conftest import make_settings
    from tests.fakes.sources.website import FakeWebsite

    class Counting:
        """The local model, counting the texts it embeds."""

        def __init__(self, model) -> None:
            self.model, self.name, self.embedded = model, model.name, 0

        def embed_documents(self, texts):
            self.embedded += len(texts)
            return self.model.embed_documents(texts)

        def embed_query(self, text):
            return self.model.embed_query(text)

    with tempfile.TemporaryDirectory() as folder, FakeWebsite(lastmod=True) as site:
        for n in range(PAGES):
            topic = TOPICS[n % len(TOPICS)]
            site.page(f"/docs/{n}", f"{topic.title()} guide {n}",
                      f"This article {n} explains {topic} for workspace admins, step by step.\n\n"
                      f"Open Settings, choose {topic}, and follow the prompts; changes apply at once to every "
                      f"member of the workspace. Article {n} also lists the limits that apply to {topic}.")
        data = Path(folder)
        embedder = Counting(local_model())
        store = open_store(make_settings(data), embedder)
        states = StateStore(data / "sources")
        spec = SourceSpec("bench", "website", agent="technical", options={"url": site.sitemap_url})

        started = time.perf_counter()
        first = sync_source(spec, store, states, env={})
        first_s = time.perf_counter() - started
        assert first.ok and first.added == PAGES, first
        site.reset_hits()
        embedder.embedded = 0
        second = sync_source(spec, store, states, env={})
        assert second.ok and second.unchanged == PAGES, second
        with_lastmod = len(site.hits) / PAGES
        site.lastmod = False
        sync_source(spec, store, states, env={})  # the recorded dates no longer match: asked once, all 304
        site.reset_hits()
        third = sync_source(spec, store, states, env={})
        assert third.ok and third.unchanged == PAGES, third
        return {
            "sync_pages_per_s": PAGES / first_s,
            "resync_requests_per_page": with_lastmod,
            "resync_requests_per_page_no_lastmod": len(site.hits) / PAGES,
            "resync_embeddings": float(embedder.embedded),
        }
