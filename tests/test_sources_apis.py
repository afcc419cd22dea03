"""Confluence, Notion, GitHub and Zendesk sources end to end: each kind's real client library (atlassian-python-api,
notion-client, PyGithub, requests for the Help Center) against a loopback fake of its API, with pagination,
labels or paths mapped to agents, a document edited and one deleted between two syncs, bad credentials, a 429
with Retry-After, and a document that cannot be read."""

from __future__ import annotations

from pathlib import Path

import pytest

from knowledge.sources.config import SourceSpec
from tests.fakes.sources import confluence as fc
from tests.fakes.sources import github as fg
from tests.fakes.sources import notion as fn
from tests.fakes.sources import zendesk as fz
from tests.fakes.sources.harness import Harness


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    return Harness(tmp_path / "data")


def _gap(hits: list) -> float:
    """Seconds between a 429 and the request after it."""
    first = next(i for i, h in enumerate(hits) if h.status == 429)
    return hits[first + 1].at - hits[first].at


# --- Confluence -------------------------------------------------------------------------------------------------
CONFLUENCE_ENV = {"CONFLUENCE_TOKEN": fc.TOKEN}


@pytest.fixture
def confluence():
    with fc.FakeConfluence(max_limit=2) as fake:  # three pages: two listing requests
        fake.add("Invoices", "<h2>Where</h2><p>Invoices are under Settings, Billing.</p>", labels=["billing"])
        fake.add("Install the agent", '<p>Install it with:</p><ac:structured-macro ac:name="code">'
                 "<ac:plain-text-body><![CDATA[curl -sSL get.lumenly.io | sh]]></ac:plain-text-body>"
                 "</ac:structured-macro>")
        fake.add("Data retention", "<p>Logs are kept for 30 days.</p>", labels=["policy"])
        yield fake


def _confluence(fake: fc.FakeConfluence) -> SourceSpec:
    return SourceSpec("handbook", "confluence", agent="technical",
                      agent_by_label={"billing": "billing", "policy": "policy"},
                      options={"url": fake.wiki_url, "space": "SUP", "email": fc.EMAIL,
                               "token_env": "CONFLUENCE_TOKEN"})


def test_confluence_space_is_paged_filed_by_label_and_resynced_by_version(confluence, harness: Harness) -> None:
    ids = sorted(confluence.pages)
    report = harness.sync(_confluence(confluence), CONFLUENCE_ENV)

    base = f"{confluence.wiki_url}/spaces/SUP/pages"
    assert report.ok and report.added == 3
    assert len([h for h in confluence.hits_to("/api/v2/pages") if h.path.endswith("/pages")]) == 2
    assert harness.sources() == {f"{base}/{ids[0]}": "billing", f"{base}/{ids[1]}": "technical",
                                 f"{base}/{ids[2]}": "policy"}
    assert "curl -sSL get.lumenly.io | sh" in harness.text(f"{base}/{ids[1]}")

    confluence.edit(ids[0], "<p>Invoices are now emailed on the first of the month.</p>")
    del confluence.pages[ids[2]]
    confluence.reset_hits()
    report = harness.sync(_confluence(confluence), CONFLUENCE_ENV)

    assert (report.updated, report.removed, report.unchanged) == (1, 1, 1)
    bodies = {h.path for h in confluence.hits if h.query.get("body-format") == "storage"}
    assert bodies == {f"/wiki/api/v2/pages/{ids[0]}"}, "only the page whose version moved is read in full"
    assert "first of the month" in harness.text(f"{base}/{ids[0]}")
    assert f"{base}/{ids[2]}" not in harness.sources()


def test_confluence_bad_token_keeps_every_page(confluence, harness: Harness) -> None:
    harness.sync(_confluence(confluence), CONFLUENCE_ENV)
    before = harness.store.file_hashes()

    report = harness.sync(_confluence(confluence), {"CONFLUENCE_TOKEN": "revoked"})

    assert not report.ok and "401" in (report.error or "") and "CONFLUENCE_TOKEN" in (report.error or "")
    assert harness.store.file_hashes() == before and harness.state("handbook").failures == 1


def test_confluence_429_honoured_and_a_broken_page_skipped(confluence, harness: Harness) -> None:
    broken = sorted(confluence.pages)[1]
    confluence.throttle("/wiki/api/v2/pages", retry_after=1)
    confluence.fail(f"/pages/{broken}", status=500, times=10)

    report = harness.sync(_confluence(confluence), CONFLUENCE_ENV)

    assert _gap(confluence.hits_to("/wiki/api/v2/pages")) >= 0.95
    assert report.ok and report.added == 2 and report.failed == 1
    assert any(broken in w and "500" in w for w in report.warnings)


# --- Notion -----------------------------------------------------------------------------------------------------
NOTION_ENV = {"NOTION_TOKEN": fn.TOKEN}


@pytest.fixture
def notion():
    with fn.FakeNotion(max_page_size=2) as fake:
        fake.add("Refund policy", [fn.heading(2, "Annual plans"), fn.paragraph("Refunded within 30 days."),
                                   fn.bullet("Monthly plans", [fn.paragraph("are not refunded")])],
                 tags=["Billing"])
        fake.add("SSO setup", [fn.paragraph("Enable SAML under Settings, Security.")])
        fake.add("Status page", [fn.paragraph("status.lumenly.io shows incidents.")])
        yield fake


def _notion(fake: fn.FakeNotion) -> SourceSpec:
    return SourceSpec("wiki", "notion", agent="technical", agent_by_label={"billing": "billing"},
                      options={"token_env": "NOTION_TOKEN", "api_url": fake.api_url})


def _notion_url(page_id: str) -> str:
    return "https://www.notion.so/" + page_id.replace("-", "")


def test_notion_pages_and_nested_blocks_resynced_by_last_edited_time(notion, harness: Harness) -> None:
    refund, sso, status = notion.pages
    report = harness.sync(_notion(notion), NOTION_ENV)

    assert report.ok and report.added == 3
    assert len(notion.hits_to("/v1/search")) == 2, "search is paginated"
    assert harness.sources()[_notion_url(refund)] == "billing"
    text = harness.text(_notion_url(refund))
    assert "Refunded within 30 days." in text and "are not refunded" in text, "nested blocks are read"
    assert "Annual plans" in harness.headings(_notion_url(refund))

    notion.edit(sso, [fn.paragraph("Enable SAML or OIDC under Settings, Security.")], "2024-02-01T10:00:00.000Z")
    notion.pages[status].in_trash = True
    notion.reset_hits()
    report = harness.sync(_notion(notion), NOTION_ENV)

    assert (report.updated, report.removed, report.unchanged) == (1, 1, 1)
    assert {h.path for h in notion.hits_to("/v1/blocks/")} == {f"/v1/blocks/{sso}/children"}
    assert "OIDC" in harness.text(_notion_url(sso)) and _notion_url(status) not in harness.sources()


def test_notion_invalid_token_keeps_every_page(notion, harness: Harness) -> None:
    harness.sync(_notion(notion), NOTION_ENV)
    before = harness.store.file_hashes()

    report = harness.sync(_notion(notion), {"NOTION_TOKEN": "secret_wrong"})

    assert not report.ok and "401" in (report.error or "") and harness.store.file_hashes() == before


def test_notion_429_honoured_and_a_broken_page_skipped(notion, harness: Harness) -> None:
    broken = list(notion.pages)[2]
    notion.throttle("/v1/search", retry_after=1)
    notion.fail(f"/v1/blocks/{broken}/", status=500, times=10)

    report = harness.sync(_notion(notion), NOTION_ENV)

    assert _gap(notion.hits_to("/v1/search")) >= 0.95
    assert report.ok and report.added == 2 and report.failed == 1 and any("Status page" in w for w in report.warnings)


# --- GitHub -----------------------------------------------------------------------------------------------------
GITHUB_ENV = {"GITHUB_TOKEN": fg.TOKEN}


@pytest.fixture
def github():
    with fg.FakeGitHub(private=True) as fake:
        fake.put("docs/billing/refunds.md", "---\ntitle: Refunds\nagent: billing\n---\nAnnual plans: 30 days.\n")
        fake.put("docs/setup.md", "# Setup\n\nRun the installer, then sign in.\n")
        fake.put("docs/api/limits.md", "# Limits\n\n600 requests a minute.\n")
        fake.put("docs/logo.png", "\x89PNG not text")
        fake.put("README.md", "# Repo readme, outside docs/\n")
        yield fake


def _github(fake: fg.FakeGitHub) -> SourceSpec:
    return SourceSpec("docs-repo", "github", agent="technical",
                      options={"repo": f"{fg.OWNER}/{fg.REPO}", "path": "docs", "token_env": "GITHUB_TOKEN",
                               "api_url": fake.url})


def test_github_markdown_under_a_path_resynced_by_blob_sha(github, harness: Harness) -> None:
    blob = f"https://github.com/{fg.OWNER}/{fg.REPO}/blob/main"
    report = harness.sync(_github(github), GITHUB_ENV)

    assert report.ok and report.added == 3
    assert harness.sources() == {f"{blob}/docs/billing/refunds.md": "billing", f"{blob}/docs/setup.md": "technical",
                                 f"{blob}/docs/api/limits.md": "technical"}
    assert harness.title(f"{blob}/docs/billing/refunds.md") == "Refunds"

    github.put("docs/setup.md", "# Setup\n\nRun the installer, sign in, then invite your team.\n")
    github.move("docs/api/limits.md", "docs/api/rate-limits.md")
    github.reset_hits()
    report = harness.sync(_github(github), GITHUB_ENV)

    assert (report.updated, report.added, report.removed, report.unchanged) == (1, 1, 1, 1)
    assert len(github.hits_to("/git/blobs/")) == 2, "the unchanged blob is not downloaded"
    assert f"{blob}/docs/api/limits.md" not in harness.sources(), "moved, not duplicated"
    assert "invite your team" in harness.text(f"{blob}/docs/setup.md")


def test_github_bad_credentials_keep_every_file(github, harness: Harness) -> None:
    harness.sync(_github(github), GITHUB_ENV)
    before = harness.store.file_hashes()

    report = harness.sync(_github(github), {"GITHUB_TOKEN": "ghp_revoked"})

    assert not report.ok and "401" in (report.error or "") and harness.store.file_hashes() == before


def test_github_429_on_the_tree_waits_for_retry_after(github, harness: Harness) -> None:
    github.throttle("/git/trees/", retry_after=1)

    report = harness.sync(_github(github), GITHUB_ENV)

    assert _gap(github.hits_to("/git/trees/")) >= 0.95 and report.ok and report.added == 3


# --- Zendesk ----------------------------------------------------------------------------------------------------
ZENDESK_ENV = {"ZENDESK_TOKEN": fz.TOKEN}


@pytest.fixture
def zendesk():
    with fz.FakeZendesk(auth=True, max_per_page=2) as fake:
        fake.add("Change your plan", "<h2>Upgrade</h2><p>Upgrades are prorated.</p>", labels=["billing"])
        fake.add("Reset 2FA", "<p>Ask an admin to reset two-factor authentication.</p>")
        fake.add("Privacy", "<p>We never sell data.</p>", labels=["policy"])
        fake.add("Unpublished", "<p>Draft text.</p>", draft=True)
        yield fake


def _zendesk(fake: fz.FakeZendesk) -> SourceSpec:
    return SourceSpec("help-center", "zendesk", agent="technical",
                      agent_by_label={"billing": "billing", "policy": "policy"},
                      options={"url": fake.url, "email": fz.EMAIL, "token_env": "ZENDESK_TOKEN"})


def test_zendesk_articles_paged_filed_by_label_and_resynced_by_updated_at(zendesk, harness: Harness) -> None:
    plan, reset, privacy, _ = zendesk.articles
    report = harness.sync(_zendesk(zendesk), ZENDESK_ENV)

    assert report.ok and report.added == 3, "the draft is left out"
    assert len(zendesk.hits_to("articles.json")) == 2
    assert harness.sources() == {f"{zendesk.url}/hc/articles/{plan}": "billing",
                                 f"{zendesk.url}/hc/articles/{reset}": "technical",
                                 f"{zendesk.url}/hc/articles/{privacy}": "policy"}
    assert "Upgrade" in harness.headings(f"{zendesk.url}/hc/articles/{plan}")

    zendesk.edit(reset, "<p>Admins reset 2FA from the Members page.</p>", "2024-03-01T10:00:00Z")
    del zendesk.articles[privacy]
    report = harness.sync(_zendesk(zendesk), ZENDESK_ENV)

    assert (report.updated, report.removed, report.unchanged) == (1, 1, 1)
    assert harness.embedder.embedded == 1, "only the edited article is embedded again"
    assert "Members page" in harness.text(f"{zendesk.url}/hc/articles/{reset}")


def test_zendesk_auth_failure_keeps_every_article(zendesk, harness: Harness) -> None:
    harness.sync(_zendesk(zendesk), ZENDESK_ENV)
    before = harness.store.file_hashes()

    report = harness.sync(_zendesk(zendesk), {"ZENDESK_TOKEN": "wrong"})

    assert not report.ok and "401" in (report.error or "") and harness.store.file_hashes() == before


def test_zendesk_429_waits_for_retry_after(zendesk, harness: Harness) -> None:
    zendesk.throttle("articles.json", retry_after=1)

    report = harness.sync(_zendesk(zendesk), ZENDESK_ENV)

    assert _gap(zendesk.hits_to("articles.json")) >= 0.95 and report.ok and report.added == 3
