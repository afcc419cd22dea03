"""Where "Add to Slack" installations live: bolt's installation-store interface over SQLite or Postgres.

One row per workspace (or per Enterprise Grid org for an org-wide install) in `switchboard_slack_installations`,
in `slack_installations.sqlite` beside the conversations or in the Postgres of DATABASE_URL, so every replica
answers every workspace. Only the bot's installation is kept (the app asks for no user scopes): bolt is run with
`installation_store_bot_only`, so it reads `async_find_bot` per event and, with token rotation on, writes the
refreshed token back through `async_save_bot` (bolt's `AsyncTokenRotator` decides when).

Tokens are secrets at rest: the bot token, the refresh token and everything else of the installation are one
Fernet token (`cryptography`) under ENCRYPTION_KEY; only the ids, names and dates a person needs to list
installations are plain columns. Without a key nothing is stored (`TokensRefused`, one sentence with the fix);
a row the key cannot decrypt (the key was changed) is logged once and treated as not installed.
`app_uninstalled` and `tokens_revoked` (bolt's built-in listeners) delete the row.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from slack_bolt.error import BoltError
from slack_sdk.oauth.installation_store.async_installation_store import AsyncInstallationStore
from slack_sdk.oauth.installation_store.models.bot import Bot
from slack_sdk.oauth.installation_store.models.installation import Installation

from core.sql import SqlRunner, sql_runner

log = logging.getLogger(__name__)

SQLITE_FILE = "slack_installations.sqlite"
TABLE = "switchboard_slack_installations"
STATES = "switchboard_slack_oauth_states"
SCHEMA = (
    f"""CREATE TABLE IF NOT EXISTS {TABLE} (
        enterprise_key TEXT NOT NULL,
        team_key TEXT NOT NULL,
        team_name TEXT,
        enterprise_name TEXT,
        bot_user_id TEXT,
        installed_at DOUBLE PRECISION NOT NULL,
        token_expires_at DOUBLE PRECISION,
        secret {{blob}} NOT NULL,
        PRIMARY KEY (enterprise_key, team_key)
    )""",
    f"""CREATE TABLE IF NOT EXISTS {STATES} (
        state TEXT PRIMARY KEY,
        expires_at DOUBLE PRECISION NOT NULL
    )""",
)
NO_KEY = ("Slack installations are not stored without ENCRYPTION_KEY: set it to a Fernet key (`switchboard "
          "workspaces key` prints a new one) so bot tokens are encrypted at rest, then install again.")
_COLUMNS = "enterprise_key, team_key, team_name, enterprise_name, bot_user_id, installed_at, token_expires_at"
UPSERT = (f"INSERT INTO {TABLE} ({_COLUMNS}, secret) VALUES (:enterprise_key, :team_key, :team_name, "
          ":enterprise_name, :bot_user_id, :installed_at, :token_expires_at, :secret) ON CONFLICT (enterprise_key, "
          "team_key) DO UPDATE SET team_name = excluded.team_name, enterprise_name = excluded.enterprise_name, "
          "bot_user_id = excluded.bot_user_id, installed_at = excluded.installed_at, "
          "token_expires_at = excluded.token_expires_at, secret = excluded.secret")
FIND = f"SELECT secret FROM {TABLE} WHERE enterprise_key = :enterprise_key AND team_key = :team_key"
DELETE = f"DELETE FROM {TABLE} WHERE enterprise_key = :enterprise_key AND team_key = :team_key"
LIST = f"SELECT {_COLUMNS} FROM {TABLE} ORDER BY installed_at"


class TokensRefused(BoltError):
    """No ENCRYPTION_KEY: tokens are never written in clear. A `BoltError`, so bolt's OAuth flow shows its
    failure page (the log has the sentence)."""


def fernet_of(key: Any) -> Fernet | None:
    """The cipher for ENCRYPTION_KEY (a `SecretStr` or text), None when unset; a malformed key is a ValueError
    with the fix."""
    if hasattr(key, "get_secret_value"):
        key = key.get_secret_value()
    if not key:
        return None
    try:
        return Fernet(str(key).strip().encode())
    except ValueError:
        raise ValueError("ENCRYPTION_KEY is not a Fernet key (32 url-safe base64-encoded bytes): generate one with "
                         "`switchboard workspaces key`.") from None


def _keys(enterprise_id: str | None, team_id: str | None, is_enterprise_install: bool | None) -> dict[str, str]:
    """The row of a workspace, or of a whole org for an org-wide install (its team id is then empty)."""
    return {"enterprise_key": enterprise_id or "", "team_key": "" if is_enterprise_install else (team_id or "")}


def _bot_dict(bot: Bot) -> dict[str, Any]:
    return {"app_id": bot.app_id, "enterprise_id": bot.enterprise_id, "enterprise_name": bot.enterprise_name,
            "team_id": bot.team_id, "team_name": bot.team_name, "bot_token": bot.bot_token, "bot_id": bot.bot_id,
            "bot_user_id": bot.bot_user_id, "bot_scopes": ",".join(bot.bot_scopes or []),
            "bot_refresh_token": bot.bot_refresh_token, "bot_token_expires_at": bot.bot_token_expires_at,
            "is_enterprise_install": bot.is_enterprise_install, "installed_at": bot.installed_at}


@dataclass(frozen=True, slots=True)
class InstalledWorkspace:
    """What can be shown about an installation without the key."""

    enterprise_id: str
    team_id: str
    team_name: str
    bot_user_id: str
    installed_at: float
    token_expires_at: float | None


class SqlInstallationStore(AsyncInstallationStore):
    """Bot installations, encrypted, in SQLite or Postgres (see the module docstring)."""

    def __init__(self, settings: Any, runner: SqlRunner | None = None) -> None:
        self.settings = settings
        self._fernet = fernet_of(getattr(settings, "encryption_key", None))
        self.runner = runner or sql_runner(settings, SQLITE_FILE, SCHEMA, "switchboard-slack-installs")
        self._undecryptable: set[tuple[str, str]] = set()

    @property
    def logger(self) -> logging.Logger:
        return log

    @property
    def where(self) -> str:
        return f"{TABLE} in {self.runner.where}"

    # --- writing ---------------------------------------------------------------------------------------------
    async def async_save(self, installation: Installation) -> None:
        await self.async_save_bot(installation.to_bot())

    async def async_save_bot(self, bot: Bot) -> None:
        if self._fernet is None:
            log.error(NO_KEY)
            raise TokensRefused(NO_KEY)
        secret = self._fernet.encrypt(json.dumps(_bot_dict(bot)).encode())
        keys = _keys(bot.enterprise_id, bot.team_id, bot.is_enterprise_install)
        await self.runner.run(UPSERT, {**keys, "team_name": bot.team_name, "enterprise_name": bot.enterprise_name,
                                       "bot_user_id": bot.bot_user_id, "installed_at": bot.installed_at or time.time(),
                                       "token_expires_at": bot.bot_token_expires_at, "secret": secret})
        self._undecryptable.discard((keys["enterprise_key"], keys["team_key"]))
        log.info("slack: stored the installation of %s (%s)", bot.team_name or bot.enterprise_name,
                 bot.team_id or bot.enterprise_id)

    # --- reading ---------------------------------------------------------------------------------------------
    async def async_find_bot(self, *, enterprise_id: str | None, team_id: str | None,
                             is_enterprise_install: bool | None = False) -> Bot | None:
        keys = _keys(enterprise_id, team_id, is_enterprise_install)
        row = await self.runner.run(FIND, keys, "one")
        if row is None and enterprise_id and not is_enterprise_install:  # a workspace of an org installed org-wide
            row = await self.runner.run(FIND, _keys(enterprise_id, None, True), "one")
        if row is None:
            return None
        if self._fernet is None:
            log.error("slack: an installation exists for %s but ENCRYPTION_KEY is not set: set it to the key it "
                      "was stored with.", team_id or enterprise_id)
            return None
        try:
            data = json.loads(self._fernet.decrypt(bytes(row["secret"])))
        except InvalidToken:
            mark = (keys["enterprise_key"], keys["team_key"])
            if mark not in self._undecryptable:
                self._undecryptable.add(mark)
                log.error("slack: ENCRYPTION_KEY does not decrypt the installation of %s: restore the key it was "
                          "stored with, or install the app in that workspace again.", team_id or enterprise_id)
            return None
        return Bot(**data)

    async def async_find_installation(self, *, enterprise_id: str | None, team_id: str | None,
                                      user_id: str | None = None, is_enterprise_install: bool | None = False
                                      ) -> Installation | None:
        """The bot part as an installation (no user tokens are kept), for code that asks for one."""
        bot = await self.async_find_bot(enterprise_id=enterprise_id, team_id=team_id,
                                        is_enterprise_install=is_enterprise_install)
        if bot is None or user_id is not None:
            return None
        data = _bot_dict(bot)
        data.pop("bot_scopes")
        return Installation(**data, bot_scopes=bot.bot_scopes, user_id="")

    async def installed(self) -> list[InstalledWorkspace]:
        """Every installation's ids, names and dates (no key needed)."""
        rows = await self.runner.run(LIST, {}, "all")
        return [InstalledWorkspace(r["enterprise_key"], r["team_key"], r["team_name"] or "", r["bot_user_id"] or "",
                                   float(r["installed_at"]), r["token_expires_at"]) for r in rows]

    # --- deleting (app_uninstalled, tokens_revoked) --------------------------------------------------------------
    async def async_delete_bot(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        await self.runner.run(DELETE, _keys(enterprise_id, team_id, False))
        if enterprise_id and not team_id:
            await self.runner.run(DELETE, _keys(enterprise_id, None, True))
        log.info("slack: removed the installation of %s", team_id or enterprise_id)

    async def async_delete_installation(self, *, enterprise_id: str | None, team_id: str | None,
                                        user_id: str | None = None) -> None:
        if user_id is None:  # the whole installation; a user's tokens are never kept, so nothing else to drop
            await self.async_delete_bot(enterprise_id=enterprise_id, team_id=team_id)

    async def aclose(self) -> None:
        await self.runner.aclose()
