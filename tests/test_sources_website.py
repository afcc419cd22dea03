"""The website source against a loopback documentation site, through the real ultimate-sitemap-parser, protego,
trafilatura and requests: sitemap index, robots.txt, main content only, conditional GET, edits, deletions,
429 with Retry-After, a broken page, a site that is down, and a crawl under a prefix with a page budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from knowledge.sources.config import SourceSpec
from tests.fakes.sources.base import Reply
from tests.fakes.sources.harness import Harness
from tests.fakes.sources.website import CHROME_FOOTER, CHROME_NAV, FakeWebsite

REFUNDS = "Annual plans can be refunded within 30 days of purchase. Send the invoice number to support."
KEYS = "Rotate API keys by creating a new key first, deploying it, then deleting the old key."
LIMITS = "The API allows 600 requests a minute per workspace; bursts above that answer 429."


@pytest.fixture
def site():
    with FakeWebsite() as fake:
        fake.page("/docs/refunds", "Refunds", REFUNDS)
        fake.page("/docs/keys", "API keys", KEYS)
        fake.page("/docs/limits", "Rate limits", LIMITS)
        fake.page("/docs/private/roadmap", "Roadmap", "Unannounced features that must never be indexed.")
        fake.disallow("/docs/private/")
        yield fake


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    return Harness(tmp_path / "data")


def _spec(url: str, **options: object) -> SourceSpec:
    return SourceSpec("help-site", "website", agent="technical",
                      agent_by_path={"/docs/refunds*": "billing"}, options={"url": url, **options})


def test_sitemap_sync_indexes_main_content_only_and_obeys_robots(site: FakeWebsite, harness: Harness) -> None:
    report = harness.sync(_spec(site.sitemap_url))

    assert report.ok and (report.seen, report.added, report.failed) == (3, 3, 0)
    assert harness.sources() == {f"{site.url}/docs/refunds": "billing", f"{site.url}/docs/keys": "technical",
                                 f"{site.url}/docs/limits": "technical"}
    text = harness.text(f"{site.url}/docs/refunds")
    assert REFUNDS in text and CHROME_NAV.split()[0] not in text and CHROME_FOOTER.split()[0] not in text
    assert harness.title(f"{site.url}/docs/refunds") == "Refunds"
    assert not site.hits_to("/docs/private/"), "robots.txt disallows it: never fetched"
    assert {h.path for h in site.hits_to("/sitemap")} == {"/sitemap.xml", "/sitemap-1.xml", "/sitemap-2.xml"}
    state = harness.state("help-site")
    assert state.documents == 3 and state.last_error is None and state.next_due == pytest.approx(
        state.last_started + 6 * 3600)


def test_the_page_budget_bounds_a_crawl_never_a_sitemap(site: FakeWebsite, harness: Harness) -> None:
    """A sitemap is the site's own list: all of it is synced whatever `max_pages` says (a cap would drop its later
    pages, and a resync would remove them as no longer listed)."""
    report = harness.sync(_spec(site.sitemap_url, max_pages=1))
    assert report.ok and (report.seen, report.added) == (3, 3)
    again = harness.sync(_spec(site.sitemap_url, max_pages=1))
    assert again.ok and again.removed == 0 and again.unchanged == 3


def test_resync_with_nothing_changed_costs_one_304_per_page_and_no_embedding(harness: Harness) -> None:
    with FakeWebsite(lastmod=False) as site:  # no <lastmod>: every page must be asked, conditionally
        site.page("/docs/refunds", "Refunds", REFUNDS)
        site.page("/docs/keys", "API keys", KEYS)
        harness.sync(_spec(site.sitemap_url))
        site.reset_hits()

        report = harness.sync(_spec(site.sitemap_url))

        pages = site.hits_to("/docs/")
        assert report.ok and (report.unchanged, report.added, report.updated) == (2, 0, 0)
        assert sorted(h.path for h in pages) == ["/docs/keys", "/docs/refunds"]
        assert all(h.status == 304 and h.headers.get("if-none-match") for h in pages)
        assert harness.embedder.embedded == 0


def test_resync_skips_pages_whose_sitemap_lastmod_did_not_move(site: FakeWebsite, harness: Harness) -> None:
    harness.sync(_spec(site.sitemap_url))
    site.reset_hits()

    report = harness.sync(_spec(site.sitemap_url))

    assert report.unchanged == 3 and not site.hits_to("/docs/") and harness.embedder.embedded == 0


def test_an_edited_page_is_updated_and_a_deleted_one_removed(site: FakeWebsite, harness: Harness) -> None:
    harness.sync(_spec(site.sitemap_url))
    site.edit("/docs/keys", "Keys now expire after 90 days unless renewed from the dashboard settings page.")
    site.delete("/docs/limits")
    site.reset_hits()

    report = harness.sync(_spec(site.sitemap_url))

    assert (report.updated, report.removed, report.unchanged) == (1, 1, 1)
    assert f"{site.url}/docs/limits" not in harness.sources()
    assert "expire after 90 days" in harness.text(f"{site.url}/docs/keys")
    assert [h.path for h in site.hits_to("/docs/")] == ["/docs/keys"], "only the edited page is downloaded"


def test_429_waits_for_retry_after_then_the_page_lands(site: FakeWebsite, harness: Harness) -> None:
    site.throttle("/docs/keys", retry_after=1)

    report = harness.sync(_spec(site.sitemap_url))

    first, second = site.hits_to("/docs/keys")
    assert first.status == 429 and second.status == 200
    assert second.at - first.at >= 0.95, "the retry came before Retry-After"
    assert report.ok and f"{site.url}/docs/keys" in harness.sources()


def test_a_broken_page_is_skipped_and_reported_and_keeps_its_last_good_copy(site: FakeWebsite,
                                                                          harness: Harness) -> None:
    harness.sync(_spec(site.sitemap_url))
    site.edit("/docs/keys", "A newer text that cannot be read because the server fails on it.")
    site.fail("/docs/keys", status=500, times=10)
    site.edit("/docs/refunds", "Refunds are now possible within 60 days of purchase, for every plan.")

    report = harness.sync(_spec(site.sitemap_url))

    assert report.ok and report.failed == 1 and report.updated == 1
    assert any("/docs/keys" in w and "500" in w for w in report.warnings)
    assert KEYS in harness.text(f"{site.url}/docs/keys"), "the last good copy stays"
    assert "60 days" in harness.text(f"{site.url}/docs/refunds"), "the rest still syncs"
    assert any("/docs/keys" in s for s in harness.state("help-site").skipped)


def test_a_site_that_is_down_keeps_every_document_and_backs_off(site: FakeWebsite, harness: Harness) -> None:
    harness.sync(_spec(site.sitemap_url))
    before = harness.store.file_hashes()
    site.raw["/robots.txt"] = Reply.text("unavailable", status=503)
    site.raw["/sitemap.xml"] = Reply.text("unavailable", status=503)

    report = harness.sync(_spec(site.sitemap_url))

    state = harness.state("help-site")
    assert not report.ok and "503" in (report.error or "")
    assert harness.store.file_hashes() == before
    assert state.failures == 1 and state.last_error == report.error and state.documents == 3
    assert state.next_due == pytest.approx(state.last_attempt + 60), "first retry after a minute, not 6 hours"


def test_a_sitemap_that_suddenly_lists_nothing_removes_nothing(site: FakeWebsite, harness: Harness) -> None:
    harness.sync(_spec(site.sitemap_url))
    for path in list(site.pages):
        site.delete(path)

    report = harness.sync(_spec(site.sitemap_url))

    assert not report.ok and "listed no documents" in (report.error or "")
    assert len(harness.sources()) == 3


def test_crawl_stays_under_its_prefix_within_the_page_budget(harness: Harness) -> None:
    with FakeWebsite() as site:
        site.page("/docs/", "Docs home", "Start here to learn the product and its API.",
                  links=("/docs/a", "/docs/b", "/docs/c", "/blog/news", "/docs/private/x"))
        for name in "abc":
            site.page(f"/docs/{name}", f"Article {name.upper()}", f"Article {name} explains feature {name} in depth.",
                      links=("/docs/",))
        site.page("/blog/news", "News", "Company news that is outside the docs prefix.")
        site.page("/docs/private/x", "Private", "Disallowed by robots.txt.")
        site.disallow("/docs/private/")

        report = harness.sync(_spec(f"{site.url}/docs/", max_pages=3))

        assert report.ok and report.seen == 3
        fetched = {h.path for h in site.hits if h.path.startswith(("/docs", "/blog"))}
        assert fetched == {"/docs/", "/docs/a", "/docs/b"}
        assert not site.hits_to("/blog/") and not site.hits_to("/private/")


def test_a_429_asking_for_too_long_a_wait_skips_the_page_instead_of_stalling(site: FakeWebsite,
                                                                             harness: Harness) -> None:
    site.throttle("/docs/keys", retry_after=3600)

    report = harness.sync(_spec(site.sitemap_url))

    assert report.ok and report.added == 2 and report.seconds < 5
    assert any("/docs/keys" in w and "3600s" in w for w in report.warnings)
