"""The HTTP API (aiohttp): SSE chat, sessions, health, metrics, docs, and the browser chat page.

Bad input gets a JSON error with the right status and a sentence a person can act on (`bots/web/errors.py`:
aiohttp's own 404/405/413 too, and anything unexpected); the stream itself always ends with a `complete` or
`error` event, its frames are valid UTF-8 whatever the model wrote, and a silent stretch (a slow first token) is
filled with `: keep-alive` comments (`bots/web/heartbeat.py`). Abuse controls (`bots/web/limits.py`): per-client
request rate and concurrent streams (429), a cap on answers generated at once with a short queue (503), both with
Retry-After; CORS for the configured origins only, on the SSE response too (`bots/web/cors.py`). The Slack HTTP
Events endpoint mounts on the same app when Slack runs in HTTP mode.

The support loop (`bots.support`): `POST /handoff` is the chat page's "Talk to a person" (on the web a handoff goes
to HANDOFF_WEBHOOK_URL, the only staff place the web has); a request for a person in words does the same inside
the stream, and every turn's outcome is recorded, as on the chat platforms.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from aiohttp import web

from bots import links, metrics
from bots.admission import ip_refusal
from bots.dedupe import FallbackDeliveryKeys
from bots.inflight import Inflight
from bots.support.desk import HandoffRequest, SupportDesk, desk_or_none
from bots.web.cors import Cors
from bots.web.errors import BodyError, json_error, json_errors, read_json_object
from bots.web.heartbeat import Heartbeat
from bots.web.limits import AnswerGate, ClientLimits, client_id, refused
from bots.web.openapi import DOCS_PAGE, openapi_spec
from bots.web.uploads import is_multipart, read_chat_form
from bots.attachments import max_bytes_of, prepare
from core.turn_input import TurnInput
from bots.web.sessions import SECRET_HEADER, SessionGuard, start_frame
from bots.web.sse import HEARTBEAT as HEARTBEAT_FRAME
from bots.web.sse import sse_frame
from coordination import connect as connect_coordination
from core.events import Complete, Error, Sources, Start, Token
from core.orchestrator import Orchestrator, clean_message
from core.retry import USER_MESSAGES
from core.tracing import begin_turn
from core.turn_records import TurnFacts, turn_store_of
from knowledge.sources.state import StateStore

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
SESSION_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")  # always `fullmatch`: "abc\n" matches `^…$`
ORCHESTRATOR = web.AppKey("orchestrator", Orchestrator)
INFLIGHT = web.AppKey("inflight", Inflight)
STATE = web.AppKey("state", dict)  # mutable flags such as "shutting_down"
DELIVERIES = web.AppKey("deliveries", object)  # (session_id, message_id) seen: shared by replicas with Redis
SUPPORT: web.AppKey[SupportDesk | None] = web.AppKey("support")  # the support desk (`bots.support.desk`)
CLIENT_LIMITS = web.AppKey("client_limits", ClientLimits)
ANSWER_GATE = web.AppKey("answer_gate", AnswerGate)
SESSIONS = web.AppKey("sessions", SessionGuard)  # who may use which web session (`bots/web/sessions.py`)
CHAT_EXAMPLE = '{"message": "your question"}'
EXTRAS = web.RequestKey("extras", TurnInput)  # the files uploaded with a question (`bots/web/uploads.py`)
RESTARTING = "The server is restarting; the answer was interrupted. Please ask again."


def app_version() -> str:
    try:
        return version("switchboard")
    except PackageNotFoundError:  # pragma: no cover - running from a checkout without install
        return "0.0.0"


@web.middleware
async def count_requests(request: web.Request, handler: Any) -> web.StreamResponse:
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
        metrics.REQUESTS.labels(request.method, route, str(status)).inc()


async def index(request: web.Request) -> web.StreamResponse:
    """Browsers get the chat page; API clients get name, version and links."""
    accept = request.headers.get("Accept", "")
    if "text/html" in accept:
        return await chat_page(request)
    return web.json_response({
        "name": "Switchboard", "version": app_version(),
        "links": {"chat": "/chat", "docs": "/docs", "openapi": "/openapi.json", "health": "/health",
                  "metrics": "/metrics", "sessions": "/sessions/{session_id}"},
    })


async def chat_page(request: web.Request) -> web.StreamResponse:
    """The chat page, with the signed browser cookie that owns its sessions (and stands in for an API key)."""
    response = web.FileResponse(STATIC / "index.html")
    request.app[SESSIONS].issue_cookie(request, response)
    return response


def not_allowed() -> web.Response:
    """401 for a request without a known API key (or the chat page's cookie) while WEB_API_KEYS is set."""
    response = json_error(401, "An API key is required.",
                          "Send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'.")
    response.headers["WWW-Authenticate"] = 'Bearer realm="switchboard"'
    return response


def not_yours(session_id: str) -> web.Response:
    """403 for posting to a conversation without its credential."""
    return json_error(403, f"Session {session_id!r} belongs to someone else.",
                      f"Send its session_secret ({SECRET_HEADER} header), or omit session_id to start a new "
                      "conversation.")


async def static_file(request: web.Request) -> web.StreamResponse:
    """A file of the chat page's folder; a missing one is a JSON 404 like every other (aiohttp's static route
    answers an empty octet-stream 404 that no middleware sees)."""
    root = STATIC.resolve()
    path = (root / request.match_info["name"]).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise web.HTTPNotFound()
    return web.FileResponse(path)


async def chat(request: web.Request) -> web.StreamResponse:
    orchestrator = request.app[ORCHESTRATOR]
    client = client_id(request, known_api_keys(orchestrator))
    limits = request.app[CLIENT_LIMITS]
    refusal = await limits.hit(client)  # before reading the body: an abusive client costs as little as possible
    if refusal is not None:
        return refused(refusal)
    guard = request.app[SESSIONS]
    if not guard.api_allowed(request):
        return not_allowed()
    files: list[Any] = []
    try:
        if is_multipart(request):  # a question with files (`bots/web/uploads.py`); JSON only otherwise
            body, files = await read_chat_form(request, max_bytes=max_bytes_of(orchestrator.settings),
                                               max_field_chars=orchestrator.settings.max_message_chars)
        else:
            body = await read_json_object(request, CHAT_EXAMPLE)
    except BodyError as exc:
        return exc.response
    if files:  # read in memory (`bots.attachments`); `_stream_answer` hands them to the core
        request[EXTRAS] = await prepare(files, max_bytes=max_bytes_of(orchestrator.settings),
                                        max_chars=orchestrator.settings.max_attachment_chars)
    message = body.get("message")
    if not isinstance(message, str) or not clean_message(message):
        return json_error(422, "The message is empty.", "Ask a question in the 'message' field.")
    limit = orchestrator.settings.max_message_chars
    if len(message) > limit:
        return json_error(413, f"The message is too long ({len(message):,} characters; the limit is {limit:,}).",
                          "Shorten the message and send it again.")
    session_id = body.get("session_id")
    message_id = body.get("message_id")
    for name, value in (("session_id", session_id), ("message_id", message_id)):
        if value is not None and (not isinstance(value, str) or not SESSION_ID.fullmatch(value)):
            return json_error(422, f"{name} must be 1-128 letters, digits, '.', '_', ':' or '-'.")
    if session_id is None:  # a new conversation: the server names it (`bots/web/sessions.py`)
        session_id = guard.new_session_id(guard.browser_of(request))
    elif not guard.owns(request, session_id, body) and \
            await orchestrator.session_info(f"web:{session_id}") is not None:
        return not_yours(session_id)  # an unused id may be claimed; an existing conversation is its owner's
    over_quota = await ip_refusal(orchestrator, request.remote)  # QUOTA_IP_PER_DAY; the model is not called
    if over_quota is not None:
        return json_error(429, over_quota[0], "Each address may ask a limited number of questions a day.",
                          {"Retry-After": str(over_quota[1])})
    async with limits.stream(client) as too_many:
        if too_many is not None:
            return refused(too_many)
        async with request.app[ANSWER_GATE].slot() as busy:  # may wait a little in the queue
            if busy is not None:
                return refused(busy)
            # Marked as seen only now: a request refused above was not received, and its retry is answered.
            if message_id is not None and not await request.app[DELIVERIES].first_time((session_id, message_id)):
                # A client retrying a request it thinks was lost (possibly on another replica): answered once.
                return json_error(409, "This message was already received; its answer is in the session.",
                                  f"GET /sessions/{session_id} shows the conversation.")
            return await _answer(request, orchestrator, session_id, message)


async def _answer(request: web.Request, orchestrator: Orchestrator, session_id: str, message: str
                  ) -> web.StreamResponse:
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no", "Connection": "keep-alive",
    })
    await response.prepare(request)  # the CORS headers are added here (`Cors.add_headers`)
    request.app[INFLIGHT].track()
    last = await _stream_answer(request, response, orchestrator, session_id, message)
    try:
        await response.write_eof(last)  # the final frames and the end of the body in one write
    except ConnectionResetError:
        pass
    return response


def known_api_keys(orchestrator: Orchestrator) -> frozenset[str]:
    """The API keys a client may be counted by instead of its address (WEB_API_KEYS, once that setting exists;
    until then every client is its address)."""
    keys = getattr(orchestrator.settings, "web_api_keys", None) or ()
    return frozenset(k.get_secret_value() if hasattr(k, "get_secret_value") else str(k) for k in keys)


async def _stream_answer(request: web.Request, response: web.StreamResponse, orchestrator: Orchestrator,
                         session_id: str, message: str) -> bytes:
    """The core's events as SSE frames, recorded like every front-end's replies (first token = first token
    written to the client). Returns the frames still to write with the end of the body: the turn's last events
    (its sources, then `complete` or `error`) come back to back, and one write of them is one `send`, not three."""
    started = time.monotonic()
    first_token_at: float | None = None
    status, agent, code = "error", None, "interrupted"
    turn = begin_turn("web", f"web:{session_id}")  # the trace's root span and the log context
    facts = TurnFacts()  # for the turn record (the dashboard's data)
    events = orchestrator.respond(f"web:{session_id}", message, user=request.remote, extras=request.get(EXTRAS))
    events = facts.watch(_with_support(request, session_id, message, events))  # handoffs in words; outcomes recorded
    ended = False  # a `complete` or `error` frame was written (or is held for the end of the body)
    held = b""  # sources, complete, error: written with what follows them
    try:
        async with Heartbeat(response.write, orchestrator.settings.web_heartbeat_s, HEARTBEAT_FRAME) as beat:
            async for event in events:
                frame = sse_frame(event, session_id)
                if isinstance(event, Token):
                    if first_token_at is None:
                        first_token_at = time.monotonic()
                elif isinstance(event, Start):  # the new session's secret, for API clients to continue it
                    frame = start_frame(session_id, request.app[SESSIONS].secret_for(session_id))
                elif isinstance(event, (Sources, Complete, Error)):
                    held += frame
                    if isinstance(event, Complete):
                        status, agent, code, ended = "done", event.agent, None, True
                    elif isinstance(event, Error):
                        code, ended = event.code, True
                    continue
                await response.write(held + frame if held else frame)
                held = b""
                beat.wrote()
    except (ConnectionResetError, asyncio.CancelledError) as exc:
        if isinstance(exc, asyncio.CancelledError) and request.app[STATE].get("shutting_down"):
            # Shutdown mid-stream: tell the client why the answer stops here.
            interrupted = Error("interrupted", RESTARTING)
            try:
                await asyncio.shield(response.write(sse_frame(interrupted, session_id)))
                await asyncio.shield(response.write_eof())
            except Exception:  # noqa: BLE001
                pass
            raise
        if isinstance(exc, asyncio.CancelledError):
            raise
        code = "client_gone"
        log.info("[web:%s] client went away mid-stream", session_id)
    except Exception:  # the headers are sent: the promise is kept with a final `error` frame, not a 500
        log.exception("[web:%s] the answer stream failed", session_id)
        code = "internal"
        if not ended:
            held += sse_frame(Error("internal", USER_MESSAGES["internal"]), session_id)
    finally:
        await events.aclose()
        metrics.record_reply("web", status=status, agent=agent, error_code=code,
                             first_token_s=first_token_at - started if first_token_at is not None else None)
        first_ms = (first_token_at - started) * 1000 if first_token_at is not None else None
        total_ms = (time.monotonic() - started) * 1000
        turn.end(agent=agent, status=status, error_code=code, first_token_ms=first_ms, total_ms=total_ms,
                 confidence=facts.complete.confidence if facts.complete else None, handed_off=facts.handed_off)
        store = turn_store_of(orchestrator)
        if store is not None:
            store.record_soon(facts.record("web", f"web:{session_id}", message, first_token_ms=first_ms,
                                           total_ms=total_ms, status=status, error_code=code))
    return held


def _with_support(request: web.Request, session_id: str, message: str, events: Any) -> Any:
    """The core's events through the support desk (`SupportDesk.watch`), when there is one."""
    desk = request.app[SUPPORT]
    if desk is None:
        return events
    where = HandoffRequest("web", f"web:{session_id}", request.remote, None, {}, "words")
    return desk.watch(events, where, message)


async def handoff(request: web.Request) -> web.Response:
    """The chat page's "Talk to a person": the conversation goes to HANDOFF_WEBHOOK_URL; the JSON says what
    happens next, in a sentence for the user."""
    refusal = await request.app[CLIENT_LIMITS].hit(client_id(request, known_api_keys(request.app[ORCHESTRATOR])))
    if refusal is not None:
        return refused(refusal)
    if not request.app[SESSIONS].api_allowed(request):
        return not_allowed()
    try:
        body: dict[str, Any] | None = await read_json_object(request, '{"session_id": "<the conversation>"}')
    except BodyError as exc:
        if exc.response.status in (413, 415):
            return exc.response
        body = None
    session_id = body.get("session_id") if body is not None else None
    if not isinstance(session_id, str) or not SESSION_ID.fullmatch(session_id):
        return json_error(422, "session_id is required.", 'Send {"session_id": "<the conversation>"}.')
    desk = request.app[SUPPORT]
    key = f"web:{session_id}"
    if not request.app[SESSIONS].owns(request, session_id, body):  # the same 404 as "no such session"
        return json_error(404, f"No session {session_id!r}.", "Ask a question first with POST /chat.")
    if desk is None or await request.app[ORCHESTRATOR].session_info(key) is None:
        return json_error(404, f"No session {session_id!r}.", "Ask a question first with POST /chat.")
    text = await desk.request(HandoffRequest("web", key, request.remote, None, {}, "button"))
    record = await desk.store.get_handoff(key)
    return web.json_response({"session_id": session_id, "message": text,
                              "status": record.status if record is not None else "not_requested"})


def _session_access(request: web.Request) -> web.Response | None:
    """401 without an API key (when required); the same 404 for someone else's session as for none at all, so
    ids cannot be probed."""
    guard = request.app[SESSIONS]
    if not guard.api_allowed(request):
        return not_allowed()
    session_id = request.match_info["session_id"]
    if not SESSION_ID.fullmatch(session_id) or not guard.owns(request, session_id):
        return json_error(404, f"No session {session_id!r}.", "Start one with POST /chat.")
    return None


async def get_session(request: web.Request) -> web.Response:
    if (refusal := _session_access(request)) is not None:
        return refusal
    session_id = request.match_info["session_id"]
    info = await request.app[ORCHESTRATOR].session_info(f"web:{session_id}")
    if info is None:
        return json_error(404, f"No session {session_id!r}.", "Start one with POST /chat.")
    data = info.to_dict()
    data["session_id"] = session_id
    return web.json_response(data)


async def delete_session(request: web.Request) -> web.Response:
    if (refusal := _session_access(request)) is not None:
        return refusal
    session_id = request.match_info["session_id"]
    orchestrator = request.app[ORCHESTRATOR]
    if await orchestrator.session_info(f"web:{session_id}") is None:
        return json_error(404, f"No session {session_id!r}.")
    await orchestrator.reset(f"web:{session_id}")
    return web.Response(status=204)


async def health(request: web.Request) -> web.Response:
    """200 "ok"; 200 "degraded" when a knowledge source's last sync failed (the bot still answers, from that
    source's last good documents); 503 "unavailable" when a store the answers need cannot be used."""
    orchestrator = request.app[ORCHESTRATOR]
    report = await orchestrator.health()
    failing = report.failing
    degraded = [f"source {name}" for name in
                await asyncio.to_thread(StateStore(orchestrator.settings.sources_state_dir).failing)]
    status = "unavailable" if failing else "degraded" if degraded else "ok"
    body = {"status": status, "failing": failing, "degraded": degraded, "checks": report.checks(),
            "version": app_version()}
    return web.json_response(body, status=503 if failing else 200)


async def agents(request: web.Request) -> web.Response:
    """The agents of the agents file, for the chat page's help text and badges."""
    registry = request.app[ORCHESTRATOR].agents
    return web.json_response({
        "agents": [{"name": spec.name, "label": spec.label, "description": spec.description}
                   for spec in registry.values()],
        "topics": registry.topics_sentence(),
        # the chat page's link allow-list (`bots/links.py`); null: no policy configured, every link is clickable
        "link_domains": None if (domains := links.current().domains) is None else sorted(domains),
    })


async def metrics_endpoint(request: web.Request) -> web.Response:
    return web.Response(body=metrics.render(), content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type": "text/plain; version=0.0.4"})


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(openapi_spec(app_version()))


async def docs(request: web.Request) -> web.Response:
    return web.Response(text=DOCS_PAGE, content_type="text/html")


async def _cancel_inflight(app: web.Application) -> None:
    """On shutdown, streams in flight get their 'interrupted' frame before the connection closes."""
    app[STATE]["shutting_down"] = True
    await app[INFLIGHT].drain(timeout_s=5)


def create_app(orchestrator: Orchestrator, *, extra_routes: list[web.RouteDef] | None = None) -> web.Application:
    settings = orchestrator.settings
    app = web.Application(
        middlewares=[count_requests, json_errors],
        client_max_size=max(1024**2, settings.max_message_chars * 8),
    )
    Cors(settings.web_cors_origins).install(app)
    app[CLIENT_LIMITS] = ClientLimits(settings.web_rate_limit, settings.web_max_streams_per_client)
    app[SESSIONS] = SessionGuard.from_settings(settings)
    app[ANSWER_GATE] = AnswerGate(settings.web_max_answers, settings.web_answer_queue, settings.web_answer_wait_s)
    app[ORCHESTRATOR] = orchestrator
    app[INFLIGHT] = Inflight("web")
    coordination = getattr(orchestrator, "coordination", None) or connect_coordination(None)
    app[DELIVERIES] = FallbackDeliveryKeys(coordination.delivery_keys("web"))
    app[SUPPORT] = desk_or_none(orchestrator)
    app[STATE] = {}
    app.router.add_get("/", index)
    app.router.add_get("/chat", chat_page)
    app.router.add_post("/chat", chat)
    app.router.add_post("/handoff", handoff)
    app.router.add_get("/health", health)
    app.router.add_get("/agents", agents)
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_get("/openapi.json", openapi_json)
    app.router.add_get("/docs", docs)
    app.router.add_get("/sessions/{session_id}", get_session)
    app.router.add_delete("/sessions/{session_id}", delete_session)
    app.router.add_get("/static/{name:.+}", static_file)
    from bots.web.admin import install_admin

    install_admin(app, orchestrator)  # /admin when ADMIN_TOKEN is set; otherwise not mounted (404)
    if extra_routes:
        app.add_routes(extra_routes)
    app.on_shutdown.append(_cancel_inflight)
    return app
