"""The retrieval eval: its file format, its metrics, and `switchboard eval-retrieval` / `search --json`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.retrieval_eval import RetrievalCase, RetrievalCasesError, evaluate, load_cases, rank_of
from knowledge.types import Passage


def _p(source: str, heading: str) -> Passage:
    return Passage("text", source, "T", heading, "billing", 0.5)


def test_cases_file_reads_source_heading_and_question(tmp_path: Path) -> None:
    good = tmp_path / "cases.tsv"
    good.write_text("source\tquestion\nbilling/a.md\tHow much?\n\n# a comment\npolicy/b.md#Data residency\tWhere?\n",
                    encoding="utf-8")
    assert load_cases(good) == [RetrievalCase("billing/a.md", "", "How much?"),
                                RetrievalCase("policy/b.md", "Data residency", "Where?")]
    bad = tmp_path / "bad.tsv"
    bad.write_text("label\tquestion\nbilling\tx\n", encoding="utf-8")
    with pytest.raises(RetrievalCasesError, match="header"):
        load_cases(bad)


def test_a_named_section_must_be_one_part_of_the_heading_path() -> None:
    case = RetrievalCase("policy/b.md", "Data residency", "Where?")
    passages = [_p("policy/b.md", "Cookies > Cookies on the site"), _p("policy/c.md", "Data residency"),
                _p("policy/b.md", "Cookies > Data residency")]
    assert rank_of(case, passages) == 3
    assert rank_of(RetrievalCase("policy/b.md", "", "Where?"), passages) == 1


def test_top1_top3_and_mrr_at_5_overall_and_per_agent() -> None:
    cases = [RetrievalCase(f"{agent}/{n}.md", "", f"q{n}") for agent, n in
             [("billing", 1), ("billing", 2), ("policy", 3), ("policy", 4)]]
    found = {"q1": ["billing/1.md"], "q2": ["billing/x.md", "billing/y.md", "billing/2.md"],
             "q3": ["policy/x.md", "policy/3.md"], "q4": ["policy/x.md"] * 5 + ["policy/4.md"]}
    agent_of = {c.source: c.source.split("/")[0] for c in cases}
    report = evaluate(cases, agent_of, lambda agent, q, k: [_p(s, "H") for s in found[q]][:k])
    assert report.overall.top1 == 0.25 and report.overall.top3 == 0.75
    assert report.overall.mrr == pytest.approx((1 + 1 / 3 + 1 / 2 + 0) / 4)
    assert report.per_agent["billing"].top1 == 0.5 and report.per_agent["policy"].mrr == pytest.approx(0.25)
    assert [m.case.question for m in report.misses] == ["q2", "q3", "q4"] and report.misses[2].rank is None
    assert report.to_json()["misses"][0] == {"question": "q2", "expected": "billing/2.md", "agent": "billing",
                                             "rank": 3, "found": ["billing/x.md#H", "billing/y.md#H",
                                                                  "billing/2.md#H"]}
    with pytest.raises(RetrievalCasesError, match="not in the knowledge base: billing/1.md"):
        evaluate(cases, {}, lambda agent, q, k: [])


# --- the CLI, over the shipped corpus (a copy of the session's ingested store) ------------------------------
@pytest.fixture
def cli(corpus_settings, monkeypatch):
    from switchboard.cli import app

    monkeypatch.setenv("SWITCHBOARD_DATA_DIR", str(corpus_settings.data_dir))
    for name in ("CHROMA_HOST", "EMBEDDING_PROVIDER", "AGENTS_FILE"):
        monkeypatch.delenv(name, raising=False)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args), terminal_width=200)


def test_cli_eval_retrieval_reports_figures_per_agent_and_lists_misses(cli, tmp_path: Path) -> None:
    cases = tmp_path / "cases.tsv"
    cases.write_text("source\tquestion\npolicy/gdpr.md\tDo you comply with GDPR?\n"
                     "billing/refunds.md\tDo you comply with GDPR?\n", encoding="utf-8")
    result = cli("eval-retrieval", str(cases), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["top1"] == 0.5 and set(report["per_agent"]) == {"billing", "policy"}
    assert [m["expected"] for m in report["misses"]] == ["billing/refunds.md"]
    table = cli("eval-retrieval", str(cases))
    assert "MRR@5" in table.output and "✗ billing/refunds.md" in table.output
    unknown = tmp_path / "unknown.tsv"
    unknown.write_text("source\tquestion\nbilling/nope.md\tx\n", encoding="utf-8")
    refused = cli("eval-retrieval", str(unknown))
    assert refused.exit_code == 2 and "billing/nope.md" in refused.output


def test_cli_search_json_gives_passages_with_scores_source_heading_and_section(cli) -> None:
    result = cli("search", "set up SAML in Okta", "--agent", "technical", "-k", "2", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    first = payload["passages"][0]
    assert payload["query"] == "set up SAML in Okta" and len(payload["passages"]) == 2
    assert first["source"] == "technical/sso-and-scim.md" and first["heading"].endswith("> Okta")
    assert first["relevance"] >= first["score"] > 0 and first["section"]["heading"].endswith("Setting up SAML")
