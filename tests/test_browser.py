"""The chat page driven in headless Chromium over the Chrome DevTools Protocol (CDP), with aiohttp only.

Debian's `chromium` package provides the browser (`.ci/run` installs it); where it is absent the browser tests
are skipped with a reason naming the package. The page is served by the real app (`create_app` over a real
orchestrator) on a loopback `TestServer`: against the fake OpenAI server with paced tokens, so streaming is
visible, and offline. A screenshot of the answered page is kept in `test-artifacts/chat-page.png`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, ClientWebSocketResponse, WSMsgType
from aiohttp.test_utils import TestServer

from bots.web.server import create_app
from core.orchestrator import build_orchestrator
from tests.conftest import ROOT, make_settings
from tests.fakes.openai_server import FakeOpenAI

ARTIFACTS = ROOT / "test-artifacts"
SKIP_REASON = ("headless Chromium not found: install Debian's `chromium` package (apt-get install chromium); "
               ".ci/run does this")
QUESTION = "What does the Enterprise plan cost?"

# The last answer bubble, as the page renders it; `data-done` is set when the stream ends.
BUBBLE_STATE = """(() => {
  const bubbles = document.querySelectorAll('.msg.bot .bubble');
  const bubble = bubbles[bubbles.length - 1];
  if (!bubble) return null;
  const text = bubble.querySelector('.text');
  return {
    count: bubbles.length,
    done: bubble.dataset.done || null,
    text: text.dataset.markdown ?? text.textContent,
    shown: text.textContent,
    strong: [...text.querySelectorAll('strong')].map(n => n.textContent),
    streaming: text.classList.contains('streaming'),
    badges: [...bubble.querySelectorAll('.badge')].map(b => b.textContent),
    sources: [...bubble.querySelectorAll('.sources li')].map(li => li.textContent),
    errors: [...bubble.querySelectorAll('.error')].map(e => e.textContent),
  };
})()"""


def chromium_or_skip() -> str:
    """Debian's binary (`chromium`, or `chromium-browser` elsewhere); skips the test when neither is installed."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.skip(SKIP_REASON)
    return binary


def test_without_chromium_the_browser_tests_skip_naming_the_package(monkeypatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    reason = r"install Debian's `chromium` package \(apt-get install chromium\)"
    with pytest.raises(pytest.skip.Exception, match=reason):
        chromium_or_skip()


class Browser:
    """A headless Chromium process; `port` is its DevTools HTTP/websocket port."""

    def __init__(self, binary: str, profile: Path) -> None:
        self.proc = subprocess.Popen(
            [binary, "--headless=new", "--remote-debugging-port=0", f"--user-data-dir={profile}", "--no-sandbox",
             "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
             "--disable-extensions", "--window-size=1000,800", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        self.stderr_tail: deque[str] = deque(maxlen=40)
        found = threading.Event()
        self.ws_url = ""

        def drain() -> None:  # keep reading stderr so Chromium never blocks on a full pipe
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                self.stderr_tail.append(line.rstrip())
                if not found.is_set() and "DevTools listening on ws://" in line:
                    self.ws_url = line.split("DevTools listening on ", 1)[1].strip()
                    found.set()

        threading.Thread(target=drain, daemon=True).start()
        if not found.wait(30):
            self.close()
            raise RuntimeError("Chromium did not print its DevTools address within 30 s:\n"
                               + "\n".join(self.stderr_tail))
        self.port = int(self.ws_url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    chromium = Browser(chromium_or_skip(), tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield chromium
    finally:
        chromium.close()


class Page:
    """One tab, driven over its CDP websocket: commands by id, events kept for inspection."""

    def __init__(self, http: ClientSession, browser: Browser, target: dict[str, Any],
                 ws: ClientWebSocketResponse) -> None:
        self.http, self.browser, self.target, self.ws = http, browser, target, ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: list[dict[str, Any]] = []
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, http: ClientSession, browser: Browser) -> Page:
        # Chromium 111+ wants PUT for /json/new.
        async with http.put(f"http://127.0.0.1:{browser.port}/json/new?about:blank") as response:
            assert response.status == 200, await response.text()
            target = await response.json(content_type=None)
        ws = await http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
        page = cls(http, browser, target, ws)
        await page.send("Page.enable")
        await page.send("Runtime.enable")
        return page

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type != WSMsgType.TEXT:
                break
            data = json.loads(message.data)
            if "id" in data:
                future = self._pending.pop(data["id"], None)
                if future is not None and not future.done():
                    future.set_result(data)
            else:
                self.events.append(data)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionError("the DevTools websocket closed"))

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        command_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[command_id] = future
        await self.ws.send_json({"id": command_id, "method": method, "params": params})
        reply = await asyncio.wait_for(future, 15)
        if "error" in reply:
            raise AssertionError(f"{method} failed: {reply['error']}")
        return reply["result"]

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 15.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {expression!r}")
            await asyncio.sleep(0.02)

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", url=url)
        await self.wait_for("document.readyState === 'complete' && location.href === %s" % json.dumps(url))

    async def type_and_press_enter(self, text: str) -> None:
        """Real input: focus the box, insert the text as typed input, then a key press of Enter."""
        await self.evaluate("document.getElementById('message').focus()")
        await self.send("Input.insertText", text=text)
        enter = {"key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "nativeVirtualKeyCode": 13}
        await self.send("Input.dispatchKeyEvent", type="keyDown", **enter)
        await self.send("Input.dispatchKeyEvent", type="keyUp", **enter)

    async def click(self, selector: str) -> None:
        """A real mouse click in the middle of the element."""
        box = await self.evaluate(
            "(() => { const r = document.querySelector(%s).getBoundingClientRect();"
            " return {x: r.x + r.width / 2, y: r.y + r.height / 2, h: innerHeight, w: innerWidth}; })()"
            % json.dumps(selector))
        assert 0 < box["x"] < box["w"] and 0 < box["y"] < box["h"], f"{selector} is scrolled out of view: {box}"
        for kind in ("mousePressed", "mouseReleased"):
            await self.send("Input.dispatchMouseEvent", type=kind, x=box["x"], y=box["y"], button="left",
                            clickCount=1)

    def exceptions(self) -> list[str]:
        return [json.dumps(e["params"]["exceptionDetails"])[:500]
                for e in self.events if e.get("method") == "Runtime.exceptionThrown"]

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        async with self.http.get(f"http://127.0.0.1:{self.browser.port}/json/close/{self.target['id']}"):
            pass


async def answer_via_api(server: TestServer, question: str) -> dict[str, Any]:
    """What the API itself says for the question, in a fresh session: the final text and the sources."""
    async with ClientSession() as http:
        async with http.post(server.make_url("/chat"), json={"message": question}) as response:
            assert response.status == 200
            raw = await response.text()
    events = {}
    for frame in raw.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in frame.splitlines())
        events[lines["event"]] = json.loads(lines["data"])
    assert "complete" in events, raw
    return {"text": events["complete"]["text"], "agent": events["agent"]["label"],
            "sources": [f"{s['title']} ({s['source']})" for s in events.get("sources", {}).get("items", [])]}


async def watch_answer(page: Page, timeout: float = 20.0) -> tuple[list[str], dict[str, Any]]:
    """Poll the last answer bubble until `data-done`; the texts seen while it streamed, and its final state."""
    partials: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        state = await page.evaluate(BUBBLE_STATE)
        if state and state["done"]:
            return partials, state
        if state and state["streaming"] and state["text"] and (not partials or partials[-1] != state["text"]):
            partials.append(state["text"])
        if time.monotonic() > deadline:
            raise AssertionError(f"the answer did not finish: {state}")
        await asyncio.sleep(0.01)


async def session_turns(page: Page, session_id: str) -> tuple[int, list[str]]:
    """GET /sessions/{id} from the page itself: its HttpOnly cookie is the session's credential (issue 15)."""
    info = await page.evaluate("fetch('/sessions/' + %s).then(async r => ({status: r.status, body: await r.json()}))"
                               % json.dumps(session_id))
    assert info["status"] == 200, info
    return info["body"]["turns"], info["body"]["agents"]


@contextlib.asynccontextmanager
async def served(settings) -> AsyncIterator[TestServer]:
    """The real app over a real orchestrator on a loopback port; always closed, even when a test fails."""
    orchestrator = await build_orchestrator(settings)
    server = TestServer(create_app(orchestrator))
    try:
        await server.start_server()
        yield server
    finally:
        await server.close()
        await orchestrator.aclose()


@contextlib.asynccontextmanager
async def new_page(browser: Browser) -> AsyncIterator[Page]:
    async with ClientSession() as http:
        page = await Page.open(http, browser)
        try:
            yield page
        finally:
            await page.close()


async def test_chat_page_streams_an_answer_in_chromium(browser: Browser, corpus_settings) -> None:
    async with FakeOpenAI(ttft_s=0.2, tokens_per_s=25) as fake:
        settings = make_settings(corpus_settings.data_dir, llm_provider="openai", openai_base_url=fake.base_url,
                                 openai_api_key="sk-test")
        async with served(settings) as server, new_page(browser) as page:
            await page.goto(str(server.make_url("/chat")))
            assert await page.evaluate("document.title") == "Switchboard"
            await page.type_and_press_enter(QUESTION)
            partials, state = await watch_answer(page)

            # The reply streamed in place: several growing partial texts before data-done was set.
            assert len(partials) >= 3, partials
            assert all(len(a) < len(b) and b.startswith(a) for a, b in zip(partials, partials[1:])), partials
            assert state["done"] == "true" and not state["errors"] and not state["streaming"]
            assert state["text"].startswith(partials[-1]) and len(partials[0]) < len(state["text"])
            assert state["badges"] == ["Billing"]
            assert await page.evaluate("document.querySelector('.msg.user .text').textContent") == QUESTION

            ARTIFACTS.mkdir(exist_ok=True)
            shot = await page.send("Page.captureScreenshot", format="png")
            png = base64.b64decode(shot["data"])
            assert png.startswith(b"\x89PNG") and len(png) > 5_000
            (ARTIFACTS / "chat-page.png").write_bytes(png)

            # Same final text and sources as the API gives for the same question.
            fake.tokens_per_s = None  # the rest need no pacing
            api = await answer_via_api(server, QUESTION)
            assert state["text"] == api["text"] and "Here is what I found" in api["text"]
            assert api["agent"] == "Billing"
            assert state["sources"] and state["sources"] == api["sources"]

            # A follow-up continues the page's session…
            first_session = await page.evaluate("sessionStorage.getItem('switchboard-session')")
            assert first_session
            await page.type_and_press_enter("Can I pay the Enterprise plan by invoice?")
            _, state = await watch_answer(page)
            assert state["done"] == "true" and state["count"] == 2
            assert await session_turns(page, first_session) == (2, ["billing"])

            # …and "New conversation" (still in view after a long thread) clears it and starts a new session.
            await page.click("#new")
            assert await page.evaluate("document.querySelectorAll('.msg').length") == 0
            assert await page.evaluate("sessionStorage.getItem('switchboard-session')") is None
            await page.type_and_press_enter("Do you comply with GDPR?")
            _, state = await watch_answer(page)
            assert state["done"] == "true" and state["badges"] == ["Policy"] and state["count"] == 1
            second_session = await page.evaluate("sessionStorage.getItem('switchboard-session')")
            assert second_session and second_session != first_session
            assert await session_turns(page, second_session) == (1, ["policy"])
            assert await session_turns(page, first_session) == (2, ["billing"])
            assert page.exceptions() == []


async def test_chat_page_offline_answer_and_readable_error(browser: Browser, corpus_settings) -> None:
    settings = make_settings(corpus_settings.data_dir, max_message_chars=80)
    async with served(settings) as server, new_page(browser) as page:
        # Browsers asking for `/` get the chat page too (content negotiation).
        await page.goto(str(server.make_url("/")))
        assert await page.evaluate("!!document.getElementById('message')")
        await page.type_and_press_enter(QUESTION)
        _, state = await watch_answer(page)
        api = await answer_via_api(server, QUESTION)
        assert state["done"] == "true" and state["badges"] == ["Billing"]
        assert state["text"] == api["text"] and "offline" in state["text"].lower()
        assert state["sources"] and state["sources"] == api["sources"]
        # The answer's Markdown is rendered, not shown raw: its bold headings are <strong>, and no ** is left.
        assert "**" in state["text"] and state["strong"] and "**" not in state["shown"]
        ARTIFACTS.mkdir(exist_ok=True)
        shot = await page.send("Page.captureScreenshot", format="png")
        (ARTIFACTS / "chat-page-offline.png").write_bytes(base64.b64decode(shot["data"]))
        hostile = await page.evaluate(
            "renderMarkdown('<img src=x onerror=alert(1)> [a](javascript:alert(1)) [b](https://x.io/?q=1&r=2) "
            "`<b>` **ok**\\n```\\n<script>x</script>\\n```')")
        assert "<img" not in hostile and "<script" not in hostile and "javascript:" not in hostile.split("href")[-1]
        assert '<a href="https://x.io/?q=1&amp;r=2"' in hostile and "<strong>ok</strong>" in hostile
        assert "<code>&lt;b&gt;</code>" in hostile and "<pre><code>&lt;script&gt;x&lt;/script&gt;</code></pre>" in hostile

        # An error is shown readably in the thread, and the page stays usable.
        too_long = "Why " + "is this so expensive and " * 4 + "what can I do?"
        await page.type_and_press_enter(too_long)
        _, state = await watch_answer(page)
        assert state["done"] == "error" and state["count"] == 2
        assert state["errors"] == [f"The message is too long ({len(too_long)} characters; the limit is 80)."]
        assert await page.evaluate("document.getElementById('send').disabled") is False
        assert page.exceptions() == []
