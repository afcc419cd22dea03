"""Agents defined in one file: the shipped `knowledge/agents.yml`, a bad file's one-sentence errors, and a fourth
agent (`sales`) added through AGENTS_FILE and a docs folder alone, routed to, answering from its own documents and
tagged on the web, Slack and Discord.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from bots.discord.bot import DiscordFrontend
from bots.discord.commands import ask_description
from bots.discord.conversation import usage_text
from bots.slack.app import SlackFrontend
from bots.slack.surface import SlackLimits
from bots.startup import StartupError
from bots.web.server import create_app
from core.graph import route_choice_model
from core.orchestrator import build_orchestrator
from core.prompts import agent_system_prompt, router_system_prompt
from core.router import RouteDecision
from knowledge.agents import SHIPPED_AGENTS_FILE, AgentsFileError, check_documents, load_agents
from knowledge.loaders import load_document
from tests.conftest import DOCS, make_settings
from tests.fakes.discord import FakeDiscord
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack import CHANNEL, FakeSlack, RateLimit

SALES_ENTRY = {
    "name": "sales",
    "label": "Sales",
    "topic": "buying Lumenly",
    "strategy": "hybrid",
    "cached": ["sales/volume-discounts.md"],  # no `cache: true` front matter: the file alone makes it cached
    "description": (
        "Sales and partnerships: booking a product demo, talking to a sales representative, volume deals and "
        "multi-year contracts for large teams, purchase orders and procurement, the reseller and partner "
        "program, referral commissions."
    ),
    "lane": "You answer questions about demos, volume deals, procurement and the reseller and partner program.",
    "examples": [
        "Can I book a demo with someone from your team?",
        "I'd like to talk to a sales representative",
        "Do you have a reseller program?",
        "How do we become a partner and resell Lumenly to our clients?",
        "What commission do referral partners earn?",
        "We are evaluating vendors, can someone walk us through the product?",
        "Do you offer volume pricing for 500 seats?",
        "Can we sign a multi-year contract?",
        "Who do I contact about a purchase order for a large deployment?",
        "Is there a partner portal for agencies?",
    ],
}

SALES_DOCS = {
    "volume-discounts.md": """---
title: Volume deals
---
# Volume deals

Teams buying more than 200 seats of Lumenly can ask the sales team for a volume deal. Volume deals give 10% off
list price from 200 seats, 15% from 500 seats and 20% from 1,000 seats, on an annual or multi-year contract.
A two-year contract adds a further 5%. Volume deals are signed with an order form and paid by invoice; a
purchase order number can be printed on every invoice. Write to sales@lumenly.io with the number of seats and
the start date and a sales representative will send a quote within one business day.
""",
    "booking-a-demo.md": """---
title: Booking a demo
---
# Booking a demo

You can book a live demo of Lumenly with a product specialist. Demos last 30 minutes, run on video, and are
tailored to your use case: bring your questions about funnels, retention charts and the SDKs. Book a slot at
lumenly.io/demo, or reply to any email from the sales team. Demos are free and there is no obligation to buy.
Teams evaluating vendors can also ask for a guided 30-day pilot with a dedicated solutions engineer.
""",
    "reseller-program.md": """---
title: Reseller and partner program
agent: sales
---
# Reseller and partner program

Agencies and consultancies can join the Lumenly partner program to resell Lumenly to their clients. Resellers
buy seats at 20% below list price and bill their clients themselves; referral partners earn a 15% commission on
the first year of every customer they refer. Partners get a partner portal with deal registration, co-branded
material and a named partner manager. To join the reseller program, apply at lumenly.io/partners; applications
are answered within five business days.
""",
}

SALES_QUESTION = "How do I join your reseller program and resell Lumenly to my clients?"
DEMO_QUESTION = "Can I book a live demo of the product for my team?"


def one_sentence(message: str) -> bool:
    """No sentence break inside (a full stop followed by a capital), and ends like a sentence."""
    return message.endswith(".") and not re.search(r"[.!?]\s+[A-Z]", message)


def write_agents(path: Path, entries: list[dict]) -> Path:
    path.write_text(yaml.safe_dump({"agents": entries}, sort_keys=False, allow_unicode=True), "utf-8")
    return path


def shipped_entries() -> list[dict]:
    return yaml.safe_load(SHIPPED_AGENTS_FILE.read_text("utf-8"))["agents"]


# ---- the shipped file -----------------------------------------------------------------------------------------


def test_the_shipped_file_defines_the_three_agents_with_their_strategies_and_cached_documents() -> None:
    agents = load_agents()
    assert agents.names == ("billing", "technical", "policy")
    assert [(a.label, a.strategy) for a in agents.values()] == [
        ("Billing", "hybrid"), ("Technical", "rag"), ("Policy", "cag")]
    assert all(len(a.examples) == 22 and a.description and a.lane.startswith("You answer") for a in agents.values())
    assert agents["billing"].caches("billing/plans-and-pricing.md")
    assert not agents["billing"].caches("billing/refunds.md")
    assert agents["policy"].caches("policy/gdpr.md") and agents["technical"].cached == ()
    assert agents.topics_sentence() == "billing, the API or our policies"
    assert load_agents(None) is load_agents(SHIPPED_AGENTS_FILE)  # one registry per file version


def test_agents_file_setting_reads_the_environment_and_blank_means_the_shipped_file(tmp_path, monkeypatch) -> None:
    from core.settings import Settings

    monkeypatch.setenv("AGENTS_FILE", str(tmp_path / "agents.yml"))
    assert Settings(_env_file=None).agents_file == tmp_path / "agents.yml"
    monkeypatch.setenv("AGENTS_FILE", "")
    assert Settings(_env_file=None).agents_file is None


# ---- a bad file: one sentence naming the entry and the fix ----------------------------------------------------


def _with(**changes: object) -> list[dict]:
    """The shipped entries with the sales entry appended, changed as given (None removes a field)."""
    sales = {**SALES_ENTRY, **changes}
    return [*shipped_entries(), {k: v for k, v in sales.items() if v is not None}]


BAD_FILES = [
    ("unknown strategy", _with(strategy="vector"), ["'sales'", "unknown strategy 'vector'", "rag, cag or hybrid"]),
    ("duplicate name", [*shipped_entries(), shipped_entries()[0]], ["'billing'", "defined twice", "entries 1 and 4"]),
    ("no examples", _with(examples=[]), ["'sales'", "no examples", "`examples:`"]),
    ("examples missing", _with(examples=None), ["'sales'", "no examples"]),
    ("missing description", _with(description=None), ["'sales'", "no `description`", "add it"]),
    ("missing name", [*shipped_entries(), {k: v for k, v in SALES_ENTRY.items() if k != "name"}],
     ["Entry 4", "no `name`"]),
    ("misspelt field", _with(exmaples=["a"]), ["'sales'", "unknown field `exmaples`", "use only"]),
    ("invalid name", [*shipped_entries(), {**SALES_ENTRY, "name": "Sales Team"}], ["'Sales Team'", "lowercase"]),
    ("reserved name", [*shipped_entries(), {**SALES_ENTRY, "name": "router"}], ["'router'", "reserved"]),
    ("cached on rag", _with(strategy="rag"), ["'sales'", "cached documents", "hybrid or cag"]),
    ("examples not a list", _with(examples={"a": 1}), ["'sales'", "`examples`", "list"]),
    ("no agents", [], ["lists no agents", "add at least one"]),
]


@pytest.mark.parametrize("case,entries,expected", BAD_FILES, ids=[case for case, _, _ in BAD_FILES])
def test_a_bad_entry_is_one_sentence_naming_it_and_the_fix(tmp_path, case, entries, expected) -> None:
    with pytest.raises(AgentsFileError) as error:
        load_agents(write_agents(tmp_path / "agents.yml", entries))
    message = str(error.value)
    assert one_sentence(message), message
    for part in expected:
        assert part in message, (part, message)


@pytest.mark.parametrize("text,expected", [
    ("agents:\n  - name: sales\n    label: a: b\n", ["not valid YAML", "mapping values are not allowed here at line 3",
                                                     "fix the syntax"]),
    ("- name: sales\n", ["no `agents:` list", "start it with `agents:`"]),
])
def test_a_file_that_is_not_an_agents_list_says_how_to_write_one(tmp_path, text, expected) -> None:
    path = tmp_path / "agents.yml"
    path.write_text(text, "utf-8")
    with pytest.raises(AgentsFileError) as error:
        load_agents(path)
    assert one_sentence(str(error.value)) and all(part in str(error.value) for part in expected), str(error.value)


def test_a_missing_file_names_it_and_agents_file(tmp_path) -> None:
    with pytest.raises(AgentsFileError) as error:
        load_agents(tmp_path / "nowhere.yml")
    assert one_sentence(str(error.value)) and "nowhere.yml" in str(error.value) and "AGENTS_FILE" in str(error.value)


def test_an_agent_without_documents_stops_start_up_with_where_to_put_them() -> None:
    agents = load_agents()
    check_documents(agents, {"billing": 3, "technical": 5, "policy": 1})
    with pytest.raises(AgentsFileError) as error:
        check_documents(agents, {"billing": 3, "technical": 0, "policy": 1})
    assert str(error.value) == ("Agent 'technical' has no documents: put files under docs/technical/ (or give them "
                                "`agent: technical` front matter) and run `switchboard ingest`.")


# ---- everything else reads the registry -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sales_file(tmp_path_factory) -> Path:
    return write_agents(tmp_path_factory.mktemp("agents") / "agents.yml", [*shipped_entries(), SALES_ENTRY])


def test_the_schema_prompts_help_texts_and_loader_follow_the_file(sales_file, tmp_path) -> None:
    agents = load_agents(sales_file)
    schema = route_choice_model(agents.names).model_json_schema()
    assert schema["properties"]["agent"]["enum"] == ["billing", "technical", "policy", "sales"]
    assert "- sales: Sales and partnerships" in router_system_prompt(agents)
    prompt = agent_system_prompt(agents["billing"], agents, company="Lumenly", support_email="s@x.io")
    assert "Sales (questions about demos, volume deals" in prompt
    assert agents.topics_sentence() == "billing, the API, our policies or buying Lumenly"
    assert "buying Lumenly" in usage_text(agents, bot="Switchboard")
    assert ask_description(agents) == "Ask Switchboard about billing, the API, our policies or buying Lumenly"
    folder = tmp_path / "docs" / "sales"
    folder.mkdir(parents=True)
    (folder / "demo.md").write_text(SALES_DOCS["booking-a-demo.md"], "utf-8")
    assert load_document(folder / "demo.md", tmp_path / "docs", agents.names).agent == "sales"
    with pytest.raises(Exception, match=r"put it under billing/, technical/ or policy/"):
        load_document(folder / "demo.md", tmp_path / "docs", ("billing", "technical", "policy"))


# ---- a fourth agent, end to end ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sales_data(sales_file, ingested_dir, tmp_path_factory) -> Path:
    """A docs folder holding a copy of the sample corpus plus docs/sales/, ingested with the four agents.

    The data directory starts as a copy of the session's ingested sample corpus, so the copied articles are
    found unchanged by content hash and only the sales documents are embedded (seconds saved per run)."""
    from knowledge.base import open_store
    from knowledge.embeddings import local_model
    from knowledge.ingest import ingest

    root = tmp_path_factory.mktemp("sales-corpus")
    docs = root / "docs"
    shutil.copytree(DOCS, docs)
    (docs / "sales").mkdir()
    for name, text in SALES_DOCS.items():
        (docs / "sales" / name).write_text(text, "utf-8")
    data_dir = root / "data"
    shutil.copytree(ingested_dir, data_dir)
    store = open_store(make_settings(data_dir, agents_file=sales_file), local_model())
    report = ingest([docs], store)
    assert report.files_failed == 0 and report.files_added == len(SALES_DOCS), report
    assert store.count("sales") > 0 and store.agents == ["billing", "technical", "policy", "sales"]
    return data_dir


@pytest.fixture
def sales_settings(sales_data, sales_file, tmp_path):
    data_dir = tmp_path / "data"
    shutil.copytree(sales_data, data_dir)
    return make_settings(data_dir, agents_file=sales_file)


@pytest.fixture
async def sales_core(sales_settings):
    core = await build_orchestrator(sales_settings)
    yield core
    await core.aclose()


async def test_the_fourth_agent_is_routed_to_and_keeps_its_listed_document_cached(sales_core) -> None:
    assert sales_core.agents.names[-1] == "sales"
    check_documents(sales_core.agents, sales_core.brain.knowledge.counts())
    for question in (SALES_QUESTION, DEMO_QUESTION):
        assert (await sales_core.route(question)).agent == "sales", question
    assert (await sales_core.route("Where can I download my invoices?")).agent == "billing"
    cached = sales_core.brain.knowledge.cached_context("sales")
    assert cached is not None and cached.sources == ("sales/volume-discounts.md",)
    assert "buying Lumenly" in (sales_core.validate("") or "")


async def test_the_language_model_router_may_choose_the_fourth_agent(sales_settings) -> None:
    async with FakeOpenAI() as llm:
        settings = make_settings(sales_settings.data_dir, agents_file=sales_settings.agents_file,
                                 llm_provider="openai", openai_base_url=llm.base_url, openai_api_key="sk-test")
        core = await build_orchestrator(settings)
        try:
            unsure = RouteDecision("billing", 0.01, False, "close call")
            core.brain.router.route = lambda question, previous=None: unsure  # type: ignore[method-assign]
            decision = await core.route("Which sales person handles partner deals?")
        finally:
            await core.aclose()
    tools = [r.body.get("tools") for r in llm.chat_requests if r.body.get("tools")]
    enum = tools[0][0]["function"]["parameters"]["properties"]["agent"]["enum"]
    assert enum == ["billing", "technical", "policy", "sales"]
    assert decision.agent == "sales" and decision.reason.startswith("language model decided")


async def test_start_up_refuses_an_agent_whose_folder_was_never_ingested(sales_file, corpus_settings) -> None:
    from switchboard.run import _check_store

    core = await build_orchestrator(make_settings(corpus_settings.data_dir, agents_file=sales_file))
    try:
        with pytest.raises(StartupError, match=r"Agent 'sales' has no documents: put files under docs/sales/"):
            await _check_store(core)
    finally:
        await core.aclose()


async def test_the_web_answer_comes_from_the_fourth_agent_and_is_tagged_with_it(sales_core) -> None:
    async with TestClient(TestServer(create_app(sales_core))) as client:
        listed = await (await client.get("/agents")).json()  # the chat page's help text and badges
        response = await client.post("/chat", json={"message": SALES_QUESTION})
        raw = await response.text()
    assert [a["name"] for a in listed["agents"]][-1] == "sales"
    assert listed["topics"].endswith(sales_core.agents["sales"].topic_phrase)
    assert response.status == 200
    frames = [dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
              for block in raw.strip().split("\n\n")]
    events = [(frame["event"], json.loads(frame["data"])) for frame in frames]
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "start" and kinds[-1] == "complete"
    agent = next(data for kind, data in events if kind == "agent")
    assert (agent["name"], agent["label"]) == ("sales", "Sales")
    sources = next(data for kind, data in events if kind == "sources")["items"]
    assert sources and all(s["source"].startswith("sales/") for s in sources)
    assert "sales/reseller-program.md" in {s["source"] for s in sources}
    answer = "".join(data["text"] for kind, data in events if kind == "token")
    assert "partner" in answer.lower() and events[-1][1]["agent"] == "sales"


async def test_slack_tags_the_fourth_agents_answer(sales_core, sales_settings) -> None:
    async with FakeSlack(limits={"chat.update": RateLimit(per_minute=1200, burst=20)}) as slack:
        settings = sales_settings.model_copy(update={
            "slack_bot_token": SecretStr(slack.bot_token), "slack_app_token": SecretStr(slack.app_token),
            "slack_api_url": slack.api_url, "slack_edit_interval_s": 0.1})
        frontend = SlackFrontend(settings, sales_core, limits=SlackLimits(updates_per_window=20, window_s=1.0))
        await frontend.start()
        try:
            await slack.wait_for_connection()
            event = slack.app_mention(DEMO_QUESTION)
            await slack.send_event(event)
            await slack.wait_for(lambda: slack.bot_messages(CHANNEL, event["ts"]), timeout=30)
            await frontend.idle()
            [reply] = slack.bot_messages(CHANNEL, event["ts"])
            final = slack.final_text(CHANNEL, reply.ts)
        finally:
            await frontend.stop()
    assert final.startswith("*Sales*\n") and "demo" in final.lower()
    assert "Booking a demo" in json.dumps(reply.blocks)  # cited in the context line


async def test_discord_tags_the_fourth_agents_answer(sales_core, sales_settings) -> None:
    async with FakeDiscord() as fake:
        settings = make_settings(sales_settings.data_dir, agents_file=sales_settings.agents_file,
                                 discord_token=fake.token, discord_guild_id=fake.guild_id,
                                 discord_edit_window_s=fake.limiter.window_s)
        frontend = DiscordFrontend(settings, sales_core, guild_ready_timeout=0.05, ready_timeout_s=10)
        await frontend.start()
        try:
            commands = {c["name"]: c for c in fake.commands(fake.guild_id)}
            dm = int(fake.dm_channel()["id"])
            await fake.user_message(dm, SALES_QUESTION)
            await fake.wait_for(lambda: len(frontend.recent) >= 1, timeout=20)
            await fake.user_message(dm, "help")
            await fake.wait_for(lambda: len(fake.messages_in(dm, from_bot=True)) >= 2, timeout=20)
        finally:
            await frontend.stop()
    answer, usage = fake.messages_in(dm, from_bot=True)[:2]
    assert re.search(r"\n-# Sales · Sources: [^\n]*Reseller and partner program", answer["content"]), answer["content"]
    assert "buying Lumenly" in usage["content"] and "buying Lumenly" in commands["ask"]["description"]


# ---- the operator's view: doctor and the CLI --------------------------------------------------------------------


async def test_doctor_names_the_agent_without_documents_and_a_bad_agents_file(sales_file, corpus_settings,
                                                                           tmp_path) -> None:
    from core.doctor import check_store

    missing = await check_store(make_settings(corpus_settings.data_dir, agents_file=sales_file))
    assert not missing.ok and "sales has no documents" in missing.detail and "docs/sales/" in missing.fix
    bad = write_agents(tmp_path / "bad.yml", _with(strategy="vector"))
    broken = await check_store(make_settings(corpus_settings.data_dir, agents_file=bad))
    assert not broken.ok and "unknown strategy 'vector'" in broken.detail and "AGENTS_FILE" in broken.fix


def test_the_cli_prints_a_bad_agents_file_as_its_sentence(tmp_path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from switchboard.cli import app

    bad = write_agents(tmp_path / "bad.yml", _with(examples=[]))
    monkeypatch.setenv("AGENTS_FILE", str(bad))
    monkeypatch.setenv("SWITCHBOARD_DATA_DIR", str(tmp_path / "data"))
    for args in (["search", "demo"], ["eval", str(tmp_path / "bad.yml")], ["ask", "hello"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and "Agent 'sales'" in result.output and "no examples" in result.output, args
        assert "Traceback" not in result.output
