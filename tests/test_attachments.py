"""Files people attach (issue 17, part 3), end to end on Slack, Discord and the web, plus the pure pieces.

The real slack_bolt / discord.py / aiohttp clients run against the loopback fakes: Slack serves
`url_private_download` only with the bot token and answers `files.info`; Discord serves signed CDN URLs; the
fake OpenAI server records each request, so the tests read the text and image parts the model was sent, and the
replies as a user sees them. Each behaviour is covered once: a log cut to the budget with a note (Slack), a file
too large that is never fetched (Slack), a download that 404s (Slack), an image for a model without vision
(Slack), an image for a model with vision and what the checkpoint keeps of it (Discord), a PDF's text (Discord),
an upload over the cap and a text file (web), the JSON-only rule for anything but a form (web).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from bots.attachments import Refused, RemoteFile, cut, download, human_size, prepare, sniff
from bots.discord.bot import DiscordFrontend
from bots.slack.app import SlackFrontend
from bots.slack.surface import SlackLimits
from bots.web.server import create_app
from core.attachments import Attachment, model_accepts_images, question_message, vision_enabled, with_notes
from core.events import Agent, Complete, Handoff, Start, Token
from core.orchestrator import build_orchestrator
from core.retry import RetryPolicy
from tests.conftest import make_settings
from tests.fakes.discord import FakeDiscord
from tests.fakes.openai_server import FakeOpenAI, Reply, default_responder, requested_schema
from tests.fakes.slack import CHANNEL, DM_CHANNEL, FakeSlack, RateLimit

QUESTION = "My API integration keeps timing out. How do I fix this?"  # grounded: the model is asked
ANSWER = "Raise the client timeout to 30 seconds and retry with exponential backoff."
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")
MB = 1024 * 1024


def make_pdf(text: str) -> bytes:
    """A one-page PDF showing `text` in Helvetica, with a correct xref table (pypdf reads its text back)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
               b"/Resources << /Font << /F1 5 0 R >> >> >>",
               b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def answering(body: dict) -> Reply:
    return default_responder(body) if requested_schema(body) or body.get("tools") else Reply(text=ANSWER)


def answer_requests(llm: FakeOpenAI) -> list[dict]:
    """The answer requests the model got (routing calls carry tools), oldest first."""
    return [r.body for r in llm.chat_requests if not r.body.get("tools")]


def parts_of(body: dict) -> list[dict]:
    """The content parts of the question's message (a plain string counts as one text part)."""
    content = body["messages"][-1]["content"]
    return content if isinstance(content, list) else [{"type": "text", "text": content}]


def llm_values(llm: FakeOpenAI, **overrides: Any) -> dict[str, Any]:
    return {"llm_provider": "openai", "openai_base_url": llm.base_url, "openai_api_key": SecretStr("sk-test"),
            "llm_timeout_s": 5, **overrides}


@pytest.fixture
async def llm() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        fake.responder = answering
        yield fake


# ---- the pure pieces ------------------------------------------------------------------------------------------------

def test_sniffing_cutting_sizes_and_the_vision_guess() -> None:
    assert sniff(PNG, "x.txt") == "image/png" and sniff(b"%PDF-1.7 ...", "a.png") == "pdf"
    assert sniff(b"PK\x03\x04\x00\x00", "notes.txt") == "binary" and sniff(b"ERROR 42\n", "app.log") == "text"
    text = "".join(f"line {i}\n" for i in range(1000))
    short = cut(text, 900)
    assert short.startswith("line 0\n") and short.endswith("line 999\n") and "left out here" in short
    assert len(short) < 1000 and cut("small", 900) == "small"
    assert human_size(50 * MB) == "50 MB" and human_size(1.5 * MB) == "1.5 MB" and human_size(2048) == "2 KB"
    assert model_accepts_images("gpt-4o-mini") and model_accepts_images("gpt-4.1") and model_accepts_images("o3")
    assert not model_accepts_images("gpt-3.5-turbo") and not model_accepts_images("o3-mini")
    assert not model_accepts_images("gpt-4")
    settings = make_settings(Path("/nonexistent"), openai_model="gpt-3.5-turbo")
    assert not vision_enabled(settings) and vision_enabled(settings.model_copy(update={"openai_vision": True}))
    assert not vision_enabled(settings.model_copy(update={"openai_vision": True}), has_model=False)


def test_the_model_message_carries_files_as_parts_and_images_only_with_vision() -> None:
    files = (Attachment("app.log", "text", text="ERROR boom"), Attachment("s.png", "image", data=PNG,
                                                                          mime="image/png"))
    with_vision = question_message("Question: why?", files, vision=True).content
    assert with_vision[0] == {"type": "text", "text": "Question: why?"}
    assert "ERROR boom" in with_vision[1]["text"] and "app.log" in with_vision[1]["text"]
    assert with_vision[2]["image_url"]["url"] == "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert all(p["type"] == "text" for p in question_message("q", files, vision=False).content)
    assert question_message("q", (), vision=True).content == "q"


async def test_notes_come_first_and_a_handoff_gets_none() -> None:
    async def stream(*events):
        for event in events:
            yield event

    got = [e async for e in with_notes(stream(Start("k"), Agent("a", "A"), Token("Hi"), Complete("a", 1.0,
                                                                                                 text="Hi")),
                                       ["The file is gone."])]
    assert [type(e) for e in got] == [Start, Agent, Token, Token, Complete]
    assert got[2].text == "⚠️ The file is gone.\n\n" and got[-1].text == "⚠️ The file is gone.\n\nHi"
    handed = [e async for e in with_notes(stream(Start("k"), Handoff(), Complete("", 1.0)), ["x"])]
    assert [type(e) for e in handed] == [Start, Handoff, Complete] and handed[-1].text == ""


async def test_a_download_stops_at_the_cap_whatever_size_was_declared() -> None:
    async with FakeSlack() as slack, aiohttp.ClientSession() as session:
        content = b"x" * (24 * MB)  # more than loopback's socket buffers hold
        file = slack.add_file("huge.log", content, size=1000)  # Slack's size is wrong: the body is 24 MB
        auth = {"Authorization": f"Bearer {slack.bot_token}"}
        remote = RemoteFile("huge.log", file["url_private_download"], file["size"], "text/plain", auth)
        with pytest.raises(Refused, match="the limit is 1 MB"):
            await download(session, remote, MB)
        await slack.wait_for(lambda: slack.downloads and slack.downloads[-1].finished, timeout=10)
        assert slack.downloads[-1].sent < len(content)  # the reader hung up: the rest was never sent
        with pytest.raises(Refused, match="server said 403"):  # the token is what opens a Slack file
            await download(session, RemoteFile("huge.log", file["url_private_download"]), MB)
        assert "Bearer" not in repr(remote)  # the token never shows in a repr (and so in no log)


async def test_text_shares_one_budget_and_binaries_are_refused_in_a_sentence() -> None:
    from bots.attachments import LocalFile

    prepared = await prepare([LocalFile("a.csv", b"a,b\n" * 400), LocalFile("b.json", b'{"k": 1}' * 400),
                              LocalFile("c.zip", b"PK\x03\x04" + b"\x00" * 50), LocalFile("d.txt", b"")],
                             max_bytes=MB, max_chars=1000)
    assert [a.name for a in prepared.attachments] == ["a.csv"]
    assert "left out here" in prepared.attachments[0].text
    assert prepared.notes == ("I didn't read “b.json”: the files before it used the whole text budget.",
                              "I can't read “c.zip”: I can read text, logs, code, CSV, JSON, PDFs and images.",
                              "“d.txt” is empty.")


# ---- Slack -----------------------------------------------------------------------------------------------------------

@contextlib.asynccontextmanager
async def slack_bot(settings: Any, slack: FakeSlack, llm: FakeOpenAI, **overrides: Any
                    ) -> AsyncIterator[SlackFrontend]:
    settings = settings.model_copy(update={
        "slack_bot_token": SecretStr(slack.bot_token), "slack_app_token": SecretStr(slack.app_token),
        "slack_api_url": slack.api_url, "slack_edit_interval_s": 0.1, **llm_values(llm, **overrides)})
    orchestrator = await build_orchestrator(settings, retry_policy=RetryPolicy(max_retries=1, base_delay_s=0.01))
    frontend = SlackFrontend(settings, orchestrator, limits=SlackLimits(updates_per_window=20, window_s=1.0))
    try:
        await frontend.start()
        await slack.wait_for_connection()
        yield frontend
    finally:
        await frontend.stop()
        await orchestrator.aclose()


async def slack_final(slack: FakeSlack, bot: SlackFrontend, channel: str, thread_ts: str) -> str:
    await slack.wait_for(lambda: slack.bot_messages(channel, thread_ts), timeout=20)
    await asyncio.wait_for(bot.idle(), 20)
    [reply] = slack.bot_messages(channel, thread_ts)
    return slack.final_text(channel, reply.ts)


async def test_slack_a_long_log_is_cut_with_a_note_a_50_mb_file_is_not_fetched_and_a_404_is_said(
        corpus_settings, llm) -> None:
    async with FakeSlack(limits={"chat.update": RateLimit(per_minute=1200, burst=20)}) as slack, \
            slack_bot(corpus_settings, slack, llm, max_attachment_chars=2000) as bot:
        log_text = "".join(f"2026-12-01 10:00:{i % 60:02d} INFO request {i} ok\n" for i in range(400))
        log_text += "2026-12-01 10:07:00 ERROR upstream timed out after 10000 ms\n"
        log_file = slack.add_file("app.log", log_text.encode(), file_access="check_file_info")  # files.info
        big = slack.add_file("dump.zip", b"PK", size=50 * MB)
        gone = slack.add_file("trace.txt", b"never served", stored=False)
        event = slack.app_mention(QUESTION, files=[log_file, big, gone])
        await slack.send_event(event)
        final = await slack_final(slack, bot, CHANNEL, event["ts"])

    assert "dump.zip" in final and "50 MB" in final and "10 MB" in final  # said, not fetched
    assert "trace.txt" in final and "404" in final and "app.log" not in final
    assert ANSWER.split(",")[0] in final  # the question is still answered, after the notes
    assert final.index("dump.zip") < final.index(ANSWER.split(",")[0])
    fetched = {d.file_id: d for d in slack.downloads}
    assert big["id"] not in fetched and fetched[gone["id"]].status == 404
    assert fetched[log_file["id"]].authorization == f"Bearer {slack.bot_token}"
    assert [c.method for c in slack.calls if c.method == "files.info"] == ["files.info"]
    [body] = answer_requests(llm)
    [log_part] = [p for p in parts_of(body) if "app.log" in p.get("text", "")]
    assert "left out here" in log_part["text"] and "ERROR upstream timed out" in log_part["text"]  # the end kept
    assert len(log_part["text"]) < 2300 and "request 0 ok" in log_part["text"]


async def test_slack_an_image_for_a_model_without_vision_is_said_plainly_and_the_text_answered(
        corpus_settings, llm) -> None:
    async with FakeSlack(limits={"chat.update": RateLimit(per_minute=1200, burst=20)}) as slack, \
            slack_bot(corpus_settings, slack, llm, openai_model="gpt-3.5-turbo") as bot:
        event = slack.dm_message(QUESTION, files=[slack.add_file("screenshot.png", PNG)])
        await slack.send_event(event)
        final = await slack_final(slack, bot, DM_CHANNEL, event["ts"])

    assert "can't read images with this model" in final and "screenshot.png" in final
    assert ANSWER.split(",")[0] in final
    [body] = answer_requests(llm)
    assert all(p["type"] == "text" for p in parts_of(body)) and QUESTION in json.dumps(body)


# ---- Discord ---------------------------------------------------------------------------------------------------------

@contextlib.asynccontextmanager
async def discord_bot(fake: FakeDiscord, base: Any, llm: FakeOpenAI, **overrides: Any
                      ) -> AsyncIterator[tuple[DiscordFrontend, Any]]:
    core = await build_orchestrator(make_settings(base.data_dir, **llm_values(llm, **overrides)),
                                    retry_policy=RetryPolicy(max_retries=1, base_delay_s=0.01))
    frontend = DiscordFrontend(make_settings(base.data_dir, discord_token=fake.token,
                                             discord_guild_id=fake.guild_id, **overrides),
                               core, guild_ready_timeout=0.05, ready_timeout_s=10)
    try:
        await frontend.start()
        yield frontend, core
    finally:
        await frontend.stop()
        await core.aclose()


async def discord_final(fake: FakeDiscord, frontend: DiscordFrontend) -> str:
    await fake.wait_for(lambda: frontend.recent, timeout=20)
    key, outcome = frontend.recent[-1]
    return "\n".join(fake.message(h.id)["content"] for h in outcome.handles)


async def test_discord_an_image_reaches_a_vision_model_and_the_checkpoint_keeps_no_bytes(
        corpus_settings, llm) -> None:
    async with FakeDiscord() as fake, discord_bot(fake, corpus_settings, llm) as (frontend, core):
        await fake.user_message(fake.channel_id("general"), QUESTION, files=[("screenshot.png", PNG)])
        final = await discord_final(fake, frontend)
        key, _ = frontend.recent[-1]
        state = await core.graph.aget_state({"configurable": {"thread_id": key}})

    assert ANSWER in final and "can't read images" not in final
    [body] = answer_requests(llm)
    [image] = [p for p in parts_of(body) if p["type"] == "image_url"]
    assert image["image_url"]["url"] == "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert [g.status for g in fake.cdn_gets] == [200]
    question = [m for m in state.values["messages"] if m.type == "human"][-1]
    assert question.content == QUESTION  # routing and transcripts read the question alone
    assert question.additional_kwargs["attachments"] == [{"name": "screenshot.png", "kind": "image",
                                                          "size": len(PNG)}]
    assert base64.b64encode(PNG).decode()[:40] not in repr(state.values)  # the image stayed out of the state


async def test_discord_a_pdf_is_read_as_text(corpus_settings, llm) -> None:
    async with FakeDiscord() as fake, discord_bot(fake, corpus_settings, llm) as (frontend, _):
        await fake.user_message(fake.channel_id("general"), QUESTION,
                                files=[("invoice.pdf", make_pdf("Invoice INV-2041 total 480 EUR"))])
        final = await discord_final(fake, frontend)

    assert ANSWER in final and "⚠️" not in final
    [body] = answer_requests(llm)
    [pdf] = [p for p in parts_of(body) if "invoice.pdf" in p.get("text", "")]
    assert "Invoice INV-2041 total 480 EUR" in pdf["text"] and pdf["text"].startswith("Attached PDF")


# ---- the web ---------------------------------------------------------------------------------------------------------

def sse_events(raw: str) -> list[tuple[str, dict]]:
    events = []
    for frame in raw.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in frame.splitlines() if ": " in line)
        if "event" in lines:
            events.append((lines["event"], json.loads(lines["data"])))
    return events


@contextlib.asynccontextmanager
async def web_client(base: Any, llm: FakeOpenAI, **overrides: Any) -> AsyncIterator[TestClient]:
    core = await build_orchestrator(make_settings(base.data_dir, **llm_values(llm, **overrides)),
                                    retry_policy=RetryPolicy(max_retries=1, base_delay_s=0.01))
    try:
        async with TestClient(TestServer(create_app(core))) as client:
            yield client
    finally:
        await core.aclose()


async def test_web_a_form_with_a_text_file_and_one_over_the_cap(corpus_settings, llm) -> None:
    async with web_client(corpus_settings, llm, max_attachment_mb=1) as client:
        form = FormData()
        form.add_field("message", QUESTION)
        form.add_field("file", b"def retry():  # card 4111 1111 1111 1111\n    return backoff(30)\n",
                       filename="client.py",
                       content_type="text/x-python")
        form.add_field("file", b"0" * (2 * MB), filename="dump.bin", content_type="application/octet-stream")
        response = await client.post("/chat", data=form)
        assert response.status == 200, await response.text()
        events = sse_events(await response.text())
        plain = await client.post("/chat", data="question", headers={"Content-Type": "text/plain"})

    complete = events[-1][1]
    assert events[-1][0] == "complete" and complete["text"].startswith("⚠️ I didn't read “dump.bin”: it is too "
                                                                         "large, and the limit is 1 MB.")
    assert ANSWER in complete["text"]
    [body] = answer_requests(llm)
    [code] = [p["text"] for p in parts_of(body) if "client.py" in p.get("text", "")]
    assert "def retry()" in code and "[card]" in code and "4111" not in code  # REDACT applies to files too
    assert plain.status == 415  # anything but JSON or a form is still refused


def test_the_openapi_document_describes_the_form() -> None:
    from bots.web.openapi import openapi_spec

    content = openapi_spec("0")["paths"]["/chat"]["post"]["requestBody"]["content"]
    assert set(content) == {"application/json", "multipart/form-data"}


def raw_form(*parts: tuple[bytes, bytes], boundary: str = "b0undary") -> tuple[bytes, dict[str, str]]:
    """A multipart body written byte by byte (aiohttp's FormData would refuse to write the odd ones)."""
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + headers + b"\r\n\r\n" + data + b"\r\n"
                    for headers, data in parts) + b"--" + boundary.encode() + b"--\r\n"
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


async def test_web_every_malformed_form_is_a_documented_json_4xx(corpus_settings, llm) -> None:
    """What schemathesis found: a raw non-ASCII field name was a 500 (aiohttp's InvalidHeader escaped), and six
    files a 413 where the spec's `maxItems: 5` makes it an invalid request. Now each is a JSON 400/422 the
    OpenAPI document lists, and the model is never called."""
    from bots.web.openapi import openapi_spec

    documented = openapi_spec("0")["paths"]["/chat"]["post"]["responses"]
    message = (b'Content-Disposition: form-data; name="message"', QUESTION.encode())
    cases = {
        "non-ASCII field name": (raw_form((b'Content-Disposition: form-data; name="\xf1\xa5\xb0\x94\x15\xc2\xba"',
                                           b"[false]"), message), 400),
        "unknown transfer encoding": (raw_form((b'Content-Disposition: form-data; name="message"\r\n'
                                                b"Content-Transfer-Encoding: x-nope", b"hello")), 400),
        "broken boundary": ((b"--other\r\n\r\nx\r\n--other--\r\n",
                             {"Content-Type": "multipart/form-data; boundary=b0undary"}), 400),
        "six files": (raw_form(message, *[(f'Content-Disposition: form-data; name="file"; filename="f{i}.txt"'
                                           .encode(), b"log line") for i in range(6)]), 422),
    }
    async with web_client(corpus_settings, llm) as client:
        for name, ((body, headers), status) in cases.items():
            response = await client.post("/chat", data=body, headers=headers)
            assert response.status == status, (name, await response.text())
            assert str(status) in documented and response.content_type == "application/json", name
            assert set(await response.json()) == {"error", "detail"}, name
    assert answer_requests(llm) == []
