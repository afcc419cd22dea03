"""Knowledge sources beyond one kind: the sources file, agent rules, the ingestion entry point for loaded
documents, the folder kind, the background syncs of `switchboard run` (one replica at a time), the `sync` and
`sources` commands, and doctor. The kinds themselves are in test_sources_website.py and test_sources_apis.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from coordination import LocalLeases
from knowledge.ingest import ingest, ingest_documents
from knowledge.loaders import Document
from knowledge.sources.config import SourcesFileError, SourceSpec, load_sources, parse_duration
from tests.conftest import make_settings
from tests.fakes.sources.harness import FAST, Harness
from tests.fakes.sources.website import FakeWebsite

AGENTS = ("billing", "technical", "policy")


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    return Harness(tmp_path / "data")


@pytest.fixture
def site():
    with FakeWebsite() as fake:
        fake.page("/docs/refunds", "Refunds", "Annual plans can be refunded within 30 days of purchase.")
        fake.page("/docs/keys", "API keys", "Rotate API keys by creating the new key before deleting the old.")
        yield fake


# --- the sources file -------------------------------------------------------------------------------------------
def test_sources_file_reads_kinds_intervals_rules_and_secret_names(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "sources.yml"
    path.parent.mkdir()
    path.write_text("""
sources:
  - name: help-site
    kind: website
    url: https://help.example.com/sitemap.xml
    agent: technical
    every: 6h
  - name: handbook
    kind: confluence
    url: https://example.atlassian.net/wiki
    space: SUP
    email: bot@example.com
    token_env: CONFLUENCE_TOKEN
    agent_by_label: {billing: billing, policy: policy}
    agent: technical
    every: 1h
  - name: local
    kind: folder
    path: ../docs
""", encoding="utf-8")

    site, handbook, local = load_sources(path, AGENTS)

    assert (site.kind, site.every_s, site.agent) == ("website", 6 * 3600, "technical")
    assert handbook.every_s == 3600 and handbook.agent_by_label == {"billing": "billing", "policy": "policy"}
    assert handbook.option("token_env") == "CONFLUENCE_TOKEN", "the file names the variable, never the secret"
    assert handbook.secret("token_env", {"CONFLUENCE_TOKEN": "s3cret"}) == "s3cret"
    assert local.option("path") == str((tmp_path / "docs").resolve()), "relative to the sources file"
    assert local.every_s == 6 * 3600 and parse_duration("90s") == 90 and parse_duration("1d") == 86400


@pytest.mark.parametrize("entry, words", [
    ("{name: a, kind: sharepoint, url: x, agent: billing}", "kind 'sharepoint' is not one of"),
    ("{name: a, kind: website, url: x, agent: sales}", "agent 'sales' is not in the agents file"),
    ("{name: a, kind: website, url: x, agent: billing, max_page: 5}", "unknown setting(s) max_page"),
    ("{name: a, kind: website, agent: billing}", "website sources need url"),
    ("{name: a, kind: website, url: x}", "say which agent"),
    ("{name: a, kind: folder, path: docs, agent: billing}", "take their agent from their folder"),
    ("{name: a, kind: website, url: x, agent: billing, every: soon}", "not a duration"),
    ("{name: A b, kind: website, url: x, agent: billing}", "must be lower-case"),
])
def test_a_mistake_in_the_sources_file_is_one_sentence_naming_the_entry(tmp_path: Path, entry: str,
                                                                       words: str) -> None:
    path = tmp_path / "sources.yml"
    path.write_text(f"sources:\n  - {entry}\n", encoding="utf-8")
    with pytest.raises(SourcesFileError) as caught:
        load_sources(path, AGENTS)
    assert words in str(caught.value) and str(path) in str(caught.value)


def test_two_sources_with_one_name_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "sources.yml"
    path.write_text("sources:\n" + "  - {name: a, kind: website, url: x, agent: billing}\n" * 2, encoding="utf-8")
    with pytest.raises(SourcesFileError, match="two sources are named 'a'"):
        load_sources(path, AGENTS)


def test_agent_rules_front_matter_then_label_then_path_then_default() -> None:
    spec = SourceSpec("s", "github", agent="technical", agent_by_label={"Billing": "billing"},
                      agent_by_path={"legal/*": "policy"})
    assert spec.agent_for(("billing",), "legal/x.md", "policy", AGENTS) == "policy"
    assert spec.agent_for(("billing",), "legal/x.md", None, AGENTS) == "billing"
    assert spec.agent_for(("other",), "legal/x.md", None, AGENTS) == "policy"
    assert spec.agent_for((), "guides/x.md", None, AGENTS) == "technical"


def test_a_missing_secret_fails_the_source_and_says_which_variable(harness: Harness) -> None:
    spec = SourceSpec("wiki", "notion", agent="technical", options={"token_env": "NOTION_TOKEN"})
    report = harness.sync(spec, env={})
    assert not report.ok and "NOTION_TOKEN" in (report.error or "")
    assert harness.state("wiki").failing


# --- the ingestion entry point for loaded documents --------------------------------------------------------------
def _doc(source: str, text: str, agent: str = "technical") -> Document:
    import hashlib

    return Document(source=source, title=source.rsplit("/", 1)[-1], agent=agent, text=text,
                    content_hash=hashlib.sha256(text.encode()).hexdigest())


def test_ingest_documents_skips_unchanged_and_removes_only_under_its_own_root(harness: Harness,
                                                                             tmp_path: Path) -> None:
    folder = tmp_path / "docs" / "billing"
    folder.mkdir(parents=True)
    (folder / "plans.md").write_text("# Plans\n\nPro costs 20 dollars a month.\n", encoding="utf-8")
    ingest([tmp_path / "docs"], harness.store)
    first = ingest_documents([_doc("https://a/x", "Text of x."), _doc("https://a/y", "Text of y.")],
                             harness.store, root="source:a")
    harness.embedder.embedded = 0

    second = ingest_documents([_doc("https://a/x", "Text of x.")], harness.store, root="source:a")

    assert first.files_added == 2 and second.files_unchanged == 1 and second.files_removed == 1
    assert harness.embedder.embedded == 0
    assert set(harness.store.file_hashes()) == {"https://a/x", "billing/plans.md"}, "the folder's file stays"


def test_changing_a_sources_agent_rules_refiles_its_documents(site: FakeWebsite, harness: Harness) -> None:
    spec = SourceSpec("help", "website", agent="technical", options={"url": site.sitemap_url})
    harness.sync(spec)
    site.reset_hits()

    report = harness.sync(SourceSpec("help", "website", agent="policy", options={"url": site.sitemap_url}))

    assert report.ok and report.updated == 2 and set(harness.sources().values()) == {"policy"}
    assert len(site.hits_to("/docs/")) == 2, "new rules: recorded versions are ignored once"


# --- the folder kind ---------------------------------------------------------------------------------------------
def test_a_folder_source_is_todays_ingestion(harness: Harness, tmp_path: Path) -> None:
    docs = tmp_path / "team-docs"
    (docs / "billing").mkdir(parents=True)
    (docs / "billing" / "plans.md").write_text("# Plans\n\nPro costs 20 dollars.\n", encoding="utf-8")
    (docs / "policy.md").write_text("---\nagent: policy\n---\n# Privacy\n\nWe never sell data.\n", encoding="utf-8")
    spec = SourceSpec("local", "folder", options={"path": str(docs)})

    first = harness.sync(spec)
    (docs / "billing" / "plans.md").unlink()
    second = harness.sync(spec)
    missing = harness.sync(SourceSpec("gone", "folder", options={"path": str(tmp_path / "nowhere")}))

    assert first.ok and first.added == 2 and harness.state("local").documents == 1
    assert second.removed == 1 and set(harness.store.file_hashes()) == {"policy.md"}
    assert not missing.ok and "does not exist" in (missing.error or "")


# --- the background syncs of `switchboard run` ------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def _jobs(tmp_path: Path, harness: Harness, spec: SourceSpec, leases: LocalLeases, clock: Clock, replica: str):
    from switchboard.sync_jobs import SourceSyncJobs

    settings = make_settings(tmp_path / replica)  # each replica its own data directory (other machines)
    jobs = SourceSyncJobs(settings, [spec], harness.store, leases, env={}, clock=clock)
    jobs.policy = FAST
    return jobs


async def test_run_syncs_a_due_source_once_across_replicas_and_again_when_due(site: FakeWebsite, harness: Harness,
                                                                              tmp_path: Path) -> None:
    clock = Clock()
    leases = LocalLeases("replica-a", clock=clock)
    spec = SourceSpec("help", "website", agent="technical", every_s=3600, options={"url": site.sitemap_url})
    a = _jobs(tmp_path, harness, spec, leases, clock, "a")
    b = _jobs(tmp_path, harness, spec, leases.as_owner("replica-b"), clock, "b")

    first = await a.run_due()
    others = await b.run_due()  # its own state says "never synced", the shared lease says "just done"
    clock.now += 1800
    early = await a.run_due()
    clock.now += 1801
    again = await b.run_due()

    assert [r.added for r in first] == [2] and others == [] and early == []
    assert [r.unchanged for r in again] == [2], "due again after its interval, on whichever replica"


async def test_a_source_being_synced_by_one_replica_is_skipped_by_another(site: FakeWebsite, harness: Harness,
                                                                          tmp_path: Path) -> None:
    clock = Clock()
    leases = LocalLeases("replica-a", clock=clock)
    spec = SourceSpec("help", "website", agent="technical", options={"url": site.sitemap_url})
    b = _jobs(tmp_path, harness, spec, leases.as_owner("replica-b"), clock, "b")
    assert await leases.claim("source-sync:help", 120)  # replica A is in the middle of it

    assert await b.sync_one(spec) is None and not site.hits


# --- the commands and doctor --------------------------------------------------------------------------------------
@pytest.fixture
def cli(tmp_path: Path, monkeypatch):
    from switchboard.cli import app

    monkeypatch.chdir(tmp_path)  # no developer .env
    monkeypatch.setenv("SWITCHBOARD_DATA_DIR", str(tmp_path / "data"))
    for name in ("CHROMA_HOST", "EMBEDDING_PROVIDER", "REDIS_URL", "AGENTS_FILE"):
        monkeypatch.delenv(name, raising=False)
    from switchboard import sources_cli

    monkeypatch.setattr(sources_cli.console, "width", 200)  # rich measured the terminal when it was imported
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args), terminal_width=200)


def _rows(output: str) -> dict[str, list[str]]:
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in line.split("│")[1:-1]]
                                            for line in output.splitlines() if "│" in line) if cells}


def test_sync_command_summarises_each_source_and_sources_lists_their_status(site: FakeWebsite, cli, tmp_path: Path,
                                                                            monkeypatch) -> None:
    sources = tmp_path / "sources.yml"
    sources.write_text(f"""
sources:
  - {{name: help-site, kind: website, url: "{site.sitemap_url}", agent: technical, every: 6h}}
  - {{name: wiki, kind: notion, token_env: NOTION_TOKEN, agent: technical}}
""", encoding="utf-8")
    monkeypatch.setenv("SOURCES_FILE", str(sources))
    monkeypatch.delenv("NOTION_TOKEN", raising=False)

    synced = cli("sync")
    listed = cli("sources")

    assert synced.exit_code == 1, synced.output  # one source failed
    rows = _rows(synced.output)
    assert rows["help-site"][:7] == ["website", "2", "2", "0", "0", "0", "0"]  # seen, added … failed
    assert "source failed" in rows["wiki"][6] and "NOTION_TOKEN" in synced.output
    assert listed.exit_code == 0, listed.output
    status = _rows(listed.output)
    assert status["help-site"][:3] == ["website", "6h", "2"] and "ok" in status["help-site"][5]
    assert "failing (1×)" in status["wiki"][5] and "wiki: source 'wiki': the environment variable NOTION_TOKEN" \
        in listed.output


def test_sync_of_every_source_removes_documents_of_a_source_taken_out_of_the_file(site: FakeWebsite, cli,
                                                                                  tmp_path: Path,
                                                                                  monkeypatch) -> None:
    sources = tmp_path / "sources.yml"
    entry = f'  - {{name: help-site, kind: website, url: "{site.sitemap_url}", agent: technical}}\n'
    sources.write_text("sources:\n" + entry, encoding="utf-8")
    monkeypatch.setenv("SOURCES_FILE", str(sources))
    assert cli("sync").exit_code == 0
    assert cli("sync", "nope").exit_code == 2
    sources.write_text("sources: []\n", encoding="utf-8")

    result = cli("sync")

    assert result.exit_code == 0, result.output
    assert "Removed 2 documents of sources no longer in the sources file" in result.output


async def test_doctor_marks_a_failing_source_and_its_kept_documents(site: FakeWebsite, harness: Harness,
                                                                    tmp_path: Path) -> None:
    from switchboard.sync_jobs import check_sources

    sources = tmp_path / "sources.yml"
    sources.write_text(f'sources:\n  - {{name: help-site, kind: website, url: "{site.sitemap_url}", '
                       "agent: technical}\n", encoding="utf-8")
    settings = make_settings(tmp_path / "data", sources_file=sources)
    spec = load_sources(sources, AGENTS)[0]
    harness.sync(spec)
    site.fail("/robots.txt", status=503, times=10)
    harness.sync(spec)

    (result,) = await check_sources(settings)

    assert not result.ok and "503" in result.detail and "keeping its 2 documents" in result.detail
    assert "switchboard sync help-site" in result.fix


async def test_run_syncs_into_the_store_it_answers_from_and_cites_the_page_url(site: FakeWebsite,
                                                                               corpus_settings,
                                                                               tmp_path: Path) -> None:
    from core.events import Sources
    from core.orchestrator import build_orchestrator
    from switchboard.sync_jobs import start_source_sync

    site.page("/docs/webhooks", "Webhook signatures",
              "Every webhook carries an X-Lumenly-Signature header: an HMAC-SHA256 of the body with your "
              "signing secret. Verify the zebra-otter checksum before trusting the payload.")
    sources = tmp_path / "sources.yml"
    sources.write_text(f'sources:\n  - {{name: help-site, kind: website, url: "{site.sitemap_url}", '
                       "agent: technical}\n", encoding="utf-8")
    settings = corpus_settings.model_copy(update={"sources_file": sources})
    orchestrator = await build_orchestrator(settings)
    try:
        jobs = start_source_sync(settings, orchestrator, type("Coord", (), {"leases": LocalLeases()})())
        assert jobs is not None
        try:
            (report,) = await jobs.run_due()
        finally:
            await jobs.stop()
        events = [e async for e in orchestrator.respond("test:webhooks", "How do I verify the zebra-otter "
                                                        "checksum of a webhook signature?")]
    finally:
        await orchestrator.aclose()

    assert report.ok and report.added == 3
    cited = [ref.source for e in events if isinstance(e, Sources) for ref in e.items]
    assert f"{site.url}/docs/webhooks" in cited
