""""Add to Slack": bolt's async OAuth flow, served by our aiohttp web server.

On when SLACK_CLIENT_ID and SLACK_CLIENT_SECRET are set (`Settings.slack_oauth_enabled`):
- `GET /slack/install` is the page with the "Add to Slack" button (bolt's), and sets the state cookie;
- Slack sends the installer back to `GET /slack/oauth_redirect?code=…&state=…`: the state must be one this app
  issued, not used before and not older than SLACK_INSTALL_STATE_S, presented by the browser it was issued to
  (bolt's cookie check); a tampered, replayed or expired state gets bolt's failure page with a 4xx status and
  nothing is installed. A good one is exchanged with `oauth.v2.access`, checked with `auth.test`, and stored
  encrypted (`bots.slack.installations`).
- every event then carries its workspace's ids; bolt's `AsyncInstallationStoreAuthorize` finds that
  workspace's bot token (refreshing it first with `oauth.v2.access grant_type=refresh_token` when token
  rotation is on and it expires within SLACK_TOKEN_ROTATION_MINUTES) and the listeners answer with it, over
  Socket Mode or the HTTP Events API alike.

States live in the same database as the installations (`switchboard_slack_oauth_states`), so the install page
and the redirect may be served by different replicas.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.authorization.async_authorize import AsyncInstallationStoreAuthorize
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_sdk.oauth.state_store.async_state_store import AsyncOAuthStateStore
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.installations import NO_KEY, STATES, SqlInstallationStore, fernet_of
from bots.startup import StartupError
from core.sql import SqlRunner

log = logging.getLogger(__name__)

INSTALL_PATH = "/slack/install"
REDIRECT_PATH = "/slack/oauth_redirect"
ISSUE = f"INSERT INTO {STATES} (state, expires_at) VALUES (:state, :expires_at)"
CONSUME = f"DELETE FROM {STATES} WHERE state = :state AND expires_at > :now"
PURGE = f"DELETE FROM {STATES} WHERE expires_at <= :now"


class SqlOAuthStateStore(AsyncOAuthStateStore):
    """One-time OAuth states with an expiry, in the installations' database: consuming is one DELETE, so a state
    is good once, on one replica."""

    def __init__(self, runner: SqlRunner, expiration_s: int, *, clock: Callable[[], float] = time.time) -> None:
        self.runner = runner
        self.expiration_s = expiration_s
        self.clock = clock

    @property
    def logger(self) -> logging.Logger:
        return log

    async def async_issue(self, *args: Any, **kwargs: Any) -> str:
        state = secrets.token_urlsafe(24)
        now = self.clock()
        await self.runner.run(PURGE, {"now": now})
        await self.runner.run(ISSUE, {"state": state, "expires_at": now + self.expiration_s})
        return state

    async def async_consume(self, state: str) -> bool:
        if not state:
            return False
        used = await self.runner.run(CONSUME, {"state": state, "now": self.clock()})
        if not used:
            log.info("slack: refused an OAuth redirect with an unknown, used or expired state")
        return bool(used)


@dataclass
class SlackOAuth:
    """What `AsyncApp` needs for "Add to Slack" (`oauth_settings`, `authorize`) and the routes that serve it."""

    settings: AsyncOAuthSettings
    authorize: AsyncInstallationStoreAuthorize
    store: SqlInstallationStore
    states: SqlOAuthStateStore

    def routes(self, app: Any) -> list[web.RouteDef]:
        """`/slack/install` and `/slack/oauth_redirect`, answered by the bolt app's OAuth flow."""
        flow = app.oauth_flow

        async def install(request: web.Request) -> web.Response:
            return await to_aiohttp_response(await flow.handle_installation(await to_bolt_request(request)))

        async def redirect(request: web.Request) -> web.Response:
            return await to_aiohttp_response(await flow.handle_callback(await to_bolt_request(request)))

        return [web.get(INSTALL_PATH, install), web.get(REDIRECT_PATH, redirect)]

    async def aclose(self) -> None:
        await self.store.aclose()


def build_oauth(settings: Any, client: AsyncWebClient, *, clock: Callable[[], float] = time.time) -> SlackOAuth:
    """The OAuth pieces from settings; `StartupError` (one sentence with the fix) when tokens could not be kept
    safely. `client` is the app's client (its base URL is the Slack API the tests point at the fake)."""
    try:
        if fernet_of(settings.encryption_key) is None:
            raise StartupError(NO_KEY)
    except ValueError as exc:
        raise StartupError(str(exc)) from None
    store = SqlInstallationStore(settings)
    states = SqlOAuthStateStore(store.runner, settings.slack_install_state_s, clock=clock)
    client_id = str(settings.slack_client_id)
    client_secret = settings.slack_client_secret.get_secret_value()
    oauth_settings = AsyncOAuthSettings(
        client_id=client_id, client_secret=client_secret, scopes=settings.slack_scopes,
        redirect_uri=settings.slack_redirect_uri, install_path=INSTALL_PATH, redirect_uri_path=REDIRECT_PATH,
        authorization_url=settings.slack_authorize_url, installation_store=store, installation_store_bot_only=True,
        token_rotation_expiration_minutes=settings.slack_token_rotation_minutes, state_store=states,
        state_expiration_seconds=settings.slack_install_state_s, logger=log)
    # Built here rather than by AsyncOAuthSettings so the token rotator calls the same Slack API as the app.
    authorize = AsyncInstallationStoreAuthorize(
        logger=log, installation_store=store, client_id=client_id, client_secret=client_secret, bot_only=True,
        client=client, token_rotation_expiration_minutes=settings.slack_token_rotation_minutes)
    return SlackOAuth(oauth_settings, authorize, store, states)


def oauth_app_options(oauth: SlackOAuth | None) -> dict[str, Any]:
    """The `AsyncApp` keyword arguments for "Add to Slack" (none in single-token mode)."""
    if oauth is None:
        return {}
    return {"oauth_settings": oauth.settings, "authorize": oauth.authorize}


def authorized_bot_user(body: dict[str, Any]) -> str | None:
    """The bot's user id in the workspace an event came from (`authorizations`, which Slack sends with every
    event): with many workspaces there is no single bot user to compare mentions and own messages with."""
    for authorization in body.get("authorizations") or ():
        if authorization.get("is_bot") and authorization.get("user_id"):
            return str(authorization["user_id"])
    return None
