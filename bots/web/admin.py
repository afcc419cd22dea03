"""`/admin`: the operator's dashboard, one server-rendered page on the web server (no JavaScript, no CDN).

Off unless `ADMIN_TOKEN` is set (then the routes do not exist: 404). A request is let in with
`Authorization: Bearer <token>`, or with the cookie the login form sets after the token is typed once: an HMAC of
its expiry time under the token (so changing the token logs everyone out), HttpOnly, SameSite=Strict, Secure over
HTTPS. Tokens are compared in constant time and never logged; a wrong one gets 401 and the form again.

What it shows, over a chosen period (`?days=`):
- charts (`bots/web/charts.py`, SVG drawn here): questions per day by platform and by agent, first-token time
  p50/p95 per day, and the shares: 👍 among votes, declined (the bot said it did not know), handed off, failed;
- the latest turns, searchable by words of the question or answer and filterable by platform, agent and vote,
  each linking to its conversation's transcript (`Orchestrator.transcript`) with every turn's timings;
- knowledge: documents per agent and source folder, chunks per agent, and each synced source's last sync and
  errors (`knowledge/sources/` state files).

The numbers come from the turn records (`core.turn_records`) and the votes (`bots.feedback`); a vote is counted
against the latest turn of its conversation before it was cast.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from bots.feedback import feedback_store
from bots.web import charts
from core.turn_records import Query, TurnRecord, turn_store_of
from knowledge.sources.state import StateStore

log = logging.getLogger(__name__)
COOKIE = "switchboard_admin"
COOKIE_MAX_AGE_S = 12 * 3600
PERIODS = (1, 7, 14, 30, 90)
LISTED = 50
SECURITY_HEADERS = {
    "Cache-Control": "no-store", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
}
ORCHESTRATOR_KEY: web.AppKey[Any] = web.AppKey("admin_orchestrator")


# --- auth ----------------------------------------------------------------------------------------------------------

def _signature(token: str, expires: int) -> str:
    return hmac.new(token.encode(), f"switchboard-admin:{expires}".encode(), hashlib.sha256).hexdigest()


def session_cookie(token: str, now: float | None = None) -> str:
    """`<expiry>.<hmac>`: valid until expiry, for this token only."""
    expires = int((time.time() if now is None else now) + COOKIE_MAX_AGE_S)
    return f"{expires}.{_signature(token, expires)}"


def cookie_valid(value: str, token: str, now: float | None = None) -> bool:
    expires, _, signature = value.partition(".")
    if not expires.isdigit() or int(expires) < (time.time() if now is None else now):
        return False
    return hmac.compare_digest(signature.encode(), _signature(token, int(expires)).encode())


def authorized(request: web.Request, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return hmac.compare_digest(header[7:].strip().encode(), token.encode())
    cookie = request.cookies.get(COOKIE)
    return cookie is not None and cookie_valid(cookie, token)


def _token(request: web.Request) -> str:
    secret = request.app[ORCHESTRATOR_KEY].settings.admin_token
    return str(secret.get_secret_value())


def _page(title: str, body: str, status: int = 200, **headers: str) -> web.Response:
    html = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
            f'content="width=device-width, initial-scale=1"><title>{escape(title)}</title>'
            f'<link rel="stylesheet" href="/static/admin.css"></head><body>{body}</body></html>')
    return web.Response(text=html, status=status, content_type="text/html", headers={**SECURITY_HEADERS, **headers})


def _login_form(wrong: bool) -> web.Response:
    note = '<p class="error" id="wrong">That token is not right.</p>' if wrong else ""
    return _page("Switchboard admin: sign in", f"""<main class="login"><h1>Switchboard admin</h1>{note}
<form method="post" action="/admin/login"><label>Admin token
<input type="password" name="token" id="token" autocomplete="current-password" required autofocus></label>
<button type="submit" id="sign-in">Sign in</button></form>
<p class="muted">The token is the server's ADMIN_TOKEN.</p></main>""", status=401,
                 **{"WWW-Authenticate": 'Bearer realm="switchboard-admin"'})


async def login(request: web.Request) -> web.Response:
    """The sign-in form's POST: counted against the client's WEB_RATE_LIMIT like /chat, so guessing is slow."""
    from bots.web.limits import client_id, refused
    from bots.web.server import CLIENT_LIMITS  # late: the server module mounts this one

    refusal = await request.app[CLIENT_LIMITS].hit(client_id(request))
    if refusal is not None:
        return refused(refusal)
    form = await request.post()
    typed = str(form.get("token", ""))
    token = _token(request)
    if not hmac.compare_digest(typed.encode(), token.encode()):
        log.warning("admin: a sign-in with a wrong token from %s", request.remote)
        return _login_form(wrong=True)
    response = web.HTTPSeeOther("/admin")
    response.set_cookie(COOKIE, session_cookie(token), max_age=COOKIE_MAX_AGE_S, httponly=True, samesite="Strict",
                        secure=request.secure, path="/admin")
    raise response


async def logout(request: web.Request) -> web.Response:
    response = web.HTTPSeeOther("/admin")
    response.del_cookie(COOKIE, path="/admin")
    raise response


# --- data ----------------------------------------------------------------------------------------------------------

def attach_votes(turns: Sequence[TurnRecord], votes: Sequence[dict[str, Any]]) -> dict[str, str]:
    """turn_id → vote: each vote goes to the latest turn of its session at or before it was cast (the answer the
    buttons were under), or the session's first turn when the clocks disagree."""
    by_session: dict[str, list[TurnRecord]] = defaultdict(list)
    for turn in turns:
        by_session[turn.session_key].append(turn)
    voted: dict[str, str] = {}
    for vote in sorted(votes, key=lambda v: float(v.get("at") or 0)):
        candidates = sorted(by_session.get(str(vote.get("session_key")), ()), key=lambda t: t.at)
        if not candidates:
            continue
        before = [t for t in candidates if t.at <= float(vote.get("at") or 0) + 1]
        voted[(before[-1] if before else candidates[0]).turn_id] = str(vote.get("vote"))
    return voted


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))]


def _day(at: float) -> str:
    return datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%d")


def _days(days: int, now: float) -> list[str]:
    return [_day(now - (days - 1 - i) * 86400) for i in range(days)]


def charts_html(turns: Sequence[TurnRecord], votes: dict[str, str], all_votes: Sequence[dict[str, Any]],
                days: int, now: float) -> str:
    """The chart section: per-day counts by platform and agent, first-token percentiles, shares."""
    labels = _days(max(days, 2), now)
    index = {day: i for i, day in enumerate(labels)}
    by_platform: dict[str, list[int]] = defaultdict(lambda: [0] * len(labels))
    by_agent: dict[str, list[int]] = defaultdict(lambda: [0] * len(labels))
    first_tokens: dict[str, list[float]] = defaultdict(list)
    for turn in turns:
        i = index.get(_day(turn.at))
        if i is None:
            continue
        by_platform[turn.platform][i] += 1
        by_agent[turn.agent or "none"][i] += 1
        if turn.first_token_ms is not None:
            first_tokens[_day(turn.at)].append(turn.first_token_ms)
    p50 = [percentile(first_tokens.get(day, []), 0.5) for day in labels]
    p95 = [percentile(first_tokens.get(day, []), 0.95) for day in labels]
    ups = sum(1 for v in all_votes if v.get("vote") == "up")
    downs = sum(1 for v in all_votes if v.get("vote") == "down")
    total = len(turns)

    def share(count: int) -> float | None:
        return count / total if total else None

    declined = sum(t.declined for t in turns)
    handed = sum(t.handed_off for t in turns)
    failed = sum(t.status not in ("done",) for t in turns)
    everything = [ft for values in first_tokens.values() for ft in values]
    overall = percentile(everything, 0.5), percentile(everything, 0.95)
    summary = (f'<p class="totals" id="totals"><b>{total}</b> questions · first token p50 '
               f'<b>{_ms(overall[0])}</b>, p95 <b>{_ms(overall[1])}</b> · votes: <b>{ups}</b> up, <b>{downs}</b> down</p>')
    return summary + "".join((
        _card("Questions per day by platform", charts.stacked_bars("Questions per day by platform", labels,
                                                                      by_platform)),
        _card("Questions per day by agent", charts.stacked_bars("Questions per day by agent", labels, by_agent)),
        _card("First-token time (ms)", charts.lines("First-token time per day", labels,
                                                    {"p50": p50, "p95": p95}, " ms")),
        _card("Outcomes", charts.shares("Outcomes", [
            ("Thumbs up among votes", ups / (ups + downs) if ups + downs else None, f"({ups} of {ups + downs})"),
            ("Declined (unanswered)", share(declined), f"({declined})"),
            ("Handed off", share(handed), f"({handed})"),
            ("Failed", share(failed), f"({failed})"),
        ])),
    ))


def _card(title: str, svg: str) -> str:
    return f'<section class="card"><h3>{escape(title)}</h3>{svg}</section>'


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f} ms"


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _options(name: str, values: Sequence[str], chosen: str, everything: str) -> str:
    items = [f'<option value="">{escape(everything)}</option>'] + [
        f'<option value="{escape(v)}"{" selected" if v == chosen else ""}>{escape(v)}</option>' for v in values]
    return f'<select name="{name}" id="{name}">{"".join(items)}</select>'


def turns_html(turns: Sequence[TurnRecord], votes: dict[str, str]) -> str:
    rows = []
    for turn in turns[:LISTED]:
        vote = {"up": "up", "down": "down"}.get(votes.get(turn.turn_id, ""), "")
        flags = " ".join(flag for flag, on in (("declined", turn.declined), ("handed off", turn.handed_off),
                                               (turn.error_code or turn.status, turn.status != "done")) if on)
        link = "/admin/conversation?" + urlencode({"key": turn.session_key})
        rows.append(
            f'<tr class="turn"><td>{_when(turn.at)}</td><td>{escape(turn.platform)}</td>'
            f'<td>{escape(turn.agent or "–")}</td><td class="question"><a href="{escape(link)}">'
            f'{escape(turn.question[:160])}</a></td><td>{_ms(turn.first_token_ms)}</td><td>{_ms(turn.total_ms)}</td>'
            f'<td>{"–" if turn.confidence is None else f"{turn.confidence:.2f}"}</td><td class="vote {vote}">{vote}</td>'
            f'<td>{escape(flags)}</td></tr>')
    if not rows:
        rows.append('<tr><td colspan="9" class="muted" id="no-turns">No conversations match.</td></tr>')
    return ('<table id="turns"><thead><tr><th>When</th><th>Platform</th><th>Agent</th><th>Question</th>'
            '<th>First token</th><th>Total</th><th>Confidence</th><th>Vote</th><th></th></tr></thead><tbody>'
            + "".join(rows) + "</tbody></table>")


def _knowledge_rows(orchestrator: Any) -> tuple[dict[str, Counter[str]], dict[str, int]]:
    """(agent → documents per source folder, chunks per agent), read from the store's own metadata."""
    knowledge = orchestrator.brain.knowledge
    documents: dict[str, Counter[str]] = defaultdict(Counter)
    store = getattr(knowledge, "store", None)
    if store is not None and hasattr(store, "file_hashes"):
        for source, (agent, _hash, root) in store.file_hashes().items():
            documents[agent][_source_name(source, root)] += 1
    return documents, dict(knowledge.counts())


def _source_name(source: str, root: str) -> str:
    """Where a document came from, for people: a URL's host, or the corpus folder's name."""
    if "://" in source:
        return source.split("://", 1)[1].split("/", 1)[0]
    return Path(root).name if root else "(folder)"


def knowledge_html(documents: dict[str, Counter[str]], chunks: dict[str, int], states: Sequence[Any]) -> str:
    rows = [f'<tr><td>{escape(agent)}</td><td>{escape(source)}</td><td>{count}</td>'
            f'<td>{chunks.get(agent, 0) if i == 0 else ""}</td></tr>'
            for agent in sorted(set(documents) | set(chunks))
            for i, (source, count) in enumerate(sorted(documents.get(agent, Counter({"–": 0})).items()))]
    synced = [f'<tr class="{"failing" if s.last_error else ""}"><td>{escape(s.name)}</td><td>{escape(s.kind)}</td>'
              f'<td>{s.documents}</td><td>{_when(s.last_success) if s.last_success else "never"}</td>'
              f'<td>{escape(s.last_error or "")}{f" ({s.failures} in a row)" if s.failures else ""}'
              f'{f"; {s.skipped_count} skipped" if s.skipped_count else ""}</td></tr>' for s in states]
    sources = ('<table id="sources"><thead><tr><th>Source</th><th>Kind</th><th>Documents</th><th>Last good sync'
               '</th><th>Errors</th></tr></thead><tbody>' + "".join(synced) + "</tbody></table>") if synced else (
        '<p class="muted">No synced sources (SOURCES_FILE).</p>')
    return ('<table id="documents"><thead><tr><th>Agent</th><th>Source</th><th>Documents</th><th>Chunks</th></tr>'
            '</thead><tbody>' + "".join(rows) + "</tbody></table>" + sources)


def _source_states(folder: Path) -> list[Any]:
    if not folder.is_dir():
        return []
    store = StateStore(folder)
    return [store.load(path.stem) for path in sorted(folder.glob("*.json")) if not path.name.startswith(".")]


async def _votes(settings: Any, since: float) -> list[dict[str, Any]]:
    try:
        rows = await feedback_store(settings).read()
    except Exception:  # noqa: BLE001 - the page still shows the rest
        log.warning("admin: the votes could not be read", exc_info=True)
        return []
    return [row for row in rows if float(row.get("at") or 0) >= since]


# --- pages ---------------------------------------------------------------------------------------------------------

async def dashboard(request: web.Request) -> web.Response:
    if not authorized(request, _token(request)):
        return _login_form(wrong=False)
    orchestrator = request.app[ORCHESTRATOR_KEY]
    store = turn_store_of(orchestrator)
    q = request.query
    days = int(q["days"]) if q.get("days", "").isdigit() and int(q["days"]) in PERIODS else 14
    now = time.time()
    since = now - days * 86400
    turns = await store.turns(Query(since=since, limit=20_000)) if store is not None else []
    all_votes = await _votes(orchestrator.settings, since)
    votes = attach_votes(turns, all_votes)
    text, platform, agent, vote = q.get("q", "").strip()[:200], q.get("platform", ""), q.get("agent", ""), q.get(
        "vote", "")
    listed = turns
    if text or platform or agent:
        listed = await store.turns(Query(since=since, text=text, platform=platform or None, agent=agent or None,
                                         limit=2000)) if store is not None else []
    if vote in ("up", "down"):
        listed = [t for t in listed if votes.get(t.turn_id) == vote]
    elif vote == "none":
        listed = [t for t in listed if t.turn_id not in votes]
    documents, chunks = await asyncio.to_thread(_knowledge_rows, orchestrator)
    states = await asyncio.to_thread(_source_states, Path(orchestrator.settings.sources_state_dir))
    platforms = sorted({t.platform for t in turns})
    agents = sorted({t.agent for t in turns if t.agent} | set(orchestrator.agents.names))
    periods = "".join(f'<option value="{d}"{" selected" if d == days else ""}>last {d} day{"s" * (d > 1)}</option>'
                      for d in PERIODS)
    body = f"""<header><h1>Switchboard admin</h1><form method="post" action="/admin/logout">
<button type="submit" class="link">Sign out</button></form></header><main>
<form method="get" action="/admin" id="filters" class="filters">
<select name="days" id="days">{periods}</select>
<input type="search" name="q" id="q" value="{escape(text)}" placeholder="Search questions and answers">
{_options("platform", platforms, platform, "every platform")}{_options("agent", agents, agent, "every agent")}
{_options("vote", ["up", "down", "none"], vote, "any vote")}<button type="submit" id="apply">Apply</button></form>
<div class="grid">{charts_html(turns, votes, all_votes, days, now)}</div>
<h2>Latest conversations</h2>{turns_html(listed, votes)}
<h2>Knowledge</h2>{knowledge_html(documents, chunks, states)}</main>"""
    return _page("Switchboard admin", body)


async def conversation(request: web.Request) -> web.Response:
    if not authorized(request, _token(request)):
        return _login_form(wrong=False)
    orchestrator = request.app[ORCHESTRATOR_KEY]
    key = request.query.get("key", "")[:300]
    store = turn_store_of(orchestrator)
    records = await store.turns(Query(session_key=key, limit=500)) if store is not None and key else []
    turns = await orchestrator.transcript(key) if key else []
    items = []
    for turn in turns:
        sources = "".join(f"<li>{escape(s.get('title', ''))} <span class=\"muted\">{escape(s.get('source', ''))}"
                          f"</span></li>" for s in turn.sources)
        meta = " · ".join(x for x in (turn.agent or "", "declined" if turn.declined else "",
                                      "asked for a person" if turn.asked_for_person else "",
                                      f"confidence {turn.confidence:.2f}" if turn.confidence is not None else "") if x)
        items.append(f'<article class="exchange"><p class="q">{escape(turn.question)}</p>'
                     f'<p class="a">{escape(turn.answer)}</p><p class="muted">{escape(meta)}</p>'
                     f'{f"<ul>{sources}</ul>" if sources else ""}</article>')
    if not items:
        items.append('<p class="muted">This conversation is no longer stored.</p>')
    timings = "".join(f"<tr><td>{_when(r.at)}</td><td>{escape(r.agent or '–')}</td><td>{_ms(r.first_token_ms)}</td>"
                      f"<td>{_ms(r.total_ms)}</td><td>{escape(r.status)}</td></tr>" for r in reversed(records))
    platform = records[0].platform if records else key.split(":", 1)[0]
    body = (f'<header><h1>Conversation</h1><a href="/admin">← Dashboard</a></header><main>'
            f'<p class="muted">{escape(platform)} · <code>{escape(key)}</code></p><div id="transcript">'
            + "".join(items) + '</div><h2>Turns</h2><table><thead><tr><th>When</th><th>Agent</th><th>First token'
            f'</th><th>Total</th><th>Status</th></tr></thead><tbody>{timings}</tbody></table></main>')
    return _page("Switchboard admin: conversation", body)


def install_admin(app: web.Application, orchestrator: Any) -> bool:
    """Mount /admin when ADMIN_TOKEN is set; without it nothing is mounted (404). Returns whether it was."""
    secret = getattr(orchestrator.settings, "admin_token", None)
    if secret is None or not secret.get_secret_value().strip():
        return False
    app[ORCHESTRATOR_KEY] = orchestrator
    app.router.add_get("/admin", dashboard)
    app.router.add_post("/admin/login", login)
    app.router.add_post("/admin/logout", logout)
    app.router.add_get("/admin/conversation", conversation)
    return True
