"""Per-workspace (Slack) and per-server (Discord guild) settings: enabled, agents allowed, handoff place, daily
question quota, language model.

One Switchboard installed in many workspaces needs them to differ: a client's workspace limited to the billing
agent, a trial server with a small daily quota, a paused one. They live in the database beside the
conversations (`switchboard_workspaces`: SQLite `workspaces.sqlite` in the data directory, or the Postgres of
DATABASE_URL), one row per (platform, workspace id) holding only what was changed; everything else, and any
workspace never configured, takes the defaults from the environment (`WorkspaceSettings` of
`defaults_for`). Edited with `switchboard workspaces set`; read by the answer pipeline before each question
(one primary-key read, cached for a few seconds so a busy workspace costs one read per `CACHE_S`).
"""

from __future__ import annotations

import json
import time
from contextvars import ContextVar
from dataclasses import dataclass, fields, replace
from typing import Any

from core.sql import SqlRunner, sql_runner

SQLITE_FILE = "workspaces.sqlite"
TABLE = "switchboard_workspaces"
PLATFORMS = ("slack", "discord")
CACHE_S = 5.0
SCHEMA = (
    f"""CREATE TABLE IF NOT EXISTS {TABLE} (
        platform TEXT NOT NULL,
        workspace_id TEXT NOT NULL,
        settings TEXT NOT NULL DEFAULT '{{}}',
        updated_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (platform, workspace_id)
    )""",
)
GET = f"SELECT platform, workspace_id, settings, updated_at FROM {TABLE} WHERE platform = :platform AND " \
      "workspace_id = :workspace_id"
ALL = f"SELECT platform, workspace_id, settings, updated_at FROM {TABLE} ORDER BY platform, workspace_id"
UPSERT = (f"INSERT INTO {TABLE} (platform, workspace_id, settings, updated_at) VALUES (:platform, :workspace_id, "
          ":settings, :at) ON CONFLICT (platform, workspace_id) DO UPDATE SET settings = excluded.settings, "
          "updated_at = excluded.updated_at")
# The fields `switchboard workspaces set` may change (everything but the identity).
EDITABLE = ("name", "enabled", "agents", "handoff_channel", "handoff_mention", "daily_quota", "model")


class WorkspaceSettingError(ValueError):
    """A value `switchboard workspaces set` cannot use; the message says what would work."""


@dataclass(frozen=True, slots=True)
class WorkspaceSettings:
    """What applies to questions asked in one workspace or guild. `configured` lists the fields set in the
    database (the rest are the environment's defaults)."""

    platform: str
    workspace_id: str
    name: str = ""
    enabled: bool = True
    agents: tuple[str, ...] | None = None  # None: every agent of the agents file
    handoff_channel: str | None = None  # None: SLACK_HANDOFF_CHANNEL / DISCORD_HANDOFF_CHANNEL
    handoff_mention: str | None = None  # Slack user group / Discord role to ping; None: the environment's
    daily_quota: int = 0  # questions per day in the whole workspace; 0 = no limit
    model: str | None = None  # None: OPENAI_MODEL
    configured: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def defaults_for(settings: Any, platform: str, workspace_id: str) -> WorkspaceSettings:
    """The environment's settings for a workspace nobody configured."""
    if platform == "slack":
        channel, mention = getattr(settings, "slack_handoff_channel", None), getattr(settings, "slack_handoff_mention", None)
    else:
        channel, mention = getattr(settings, "discord_handoff_channel", None), getattr(settings, "discord_handoff_role", None)
    return WorkspaceSettings(platform, str(workspace_id), enabled=True, agents=None,
                             handoff_channel=str(channel) if channel is not None else None,
                             handoff_mention=str(mention) if mention is not None else None,
                             daily_quota=int(getattr(settings, "workspace_daily_quota", 0) or 0),
                             model=getattr(settings, "openai_model", None))


def parse_value(name: str, text: str | None, agent_names: list[str] | None = None) -> Any:
    """A `switchboard workspaces set NAME VALUE` value as the field's type; "default" (or None) clears it."""
    if name not in EDITABLE:
        raise WorkspaceSettingError(f"Unknown setting {name!r}: use one of {', '.join(EDITABLE)}.")
    if text is None or text.strip().lower() in ("default", ""):
        return None
    value = text.strip()
    if name == "enabled":
        lowered = value.lower()
        if lowered in ("yes", "true", "on", "1", "enabled"):
            return True
        if lowered in ("no", "false", "off", "0", "disabled"):
            return False
        raise WorkspaceSettingError(f"enabled must be yes or no, not {value!r}.")
    if name == "daily_quota":
        try:
            number = int(value)
        except ValueError:
            raise WorkspaceSettingError(f"daily_quota must be a whole number of questions (0 = no limit), not "
                                        f"{value!r}.") from None
        if number < 0:
            raise WorkspaceSettingError("daily_quota cannot be negative (0 = no limit).")
        return number
    if name == "agents":
        names = tuple(part.strip() for part in value.split(",") if part.strip())
        unknown = [n for n in names if agent_names is not None and n not in agent_names]
        if not names or unknown:
            known = ", ".join(agent_names or [])
            raise WorkspaceSettingError(f"Unknown agent(s) {', '.join(unknown) or value!r}: use a comma-separated "
                                        f"list of {known or 'agent names'}.")
        return list(names)
    return value


class Workspaces:
    """The settings store: `get` (defaults for an unknown workspace), `set`, `all`."""

    def __init__(self, settings: Any, runner: SqlRunner | None = None, *, clock: Any = time.monotonic) -> None:
        self.settings = settings
        self.runner = runner or sql_runner(settings, SQLITE_FILE, SCHEMA, "switchboard-workspaces")
        self._clock = clock
        self._cache: dict[tuple[str, str], tuple[float, WorkspaceSettings]] = {}

    @property
    def where(self) -> str:
        return f"{TABLE} in {self.runner.where}"

    def _merge(self, platform: str, workspace_id: str, stored: dict[str, Any]) -> WorkspaceSettings:
        base = defaults_for(self.settings, platform, workspace_id)
        changes = {k: v for k, v in stored.items() if k in EDITABLE and v is not None}
        if "agents" in changes:
            changes["agents"] = tuple(changes["agents"])
        return replace(base, **changes, configured=tuple(sorted(changes)))

    async def get(self, platform: str, workspace_id: str | None) -> WorkspaceSettings:
        """The settings of one workspace; the defaults when it was never configured (or has no id)."""
        if not workspace_id:
            return defaults_for(self.settings, platform, "")
        key = (platform, str(workspace_id))
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None and now - cached[0] < CACHE_S:
            return cached[1]
        row = await self.runner.run(GET, {"platform": platform, "workspace_id": str(workspace_id)}, "one")
        found = self._merge(platform, str(workspace_id), json.loads(row["settings"]) if row else {})
        self._cache[key] = (now, found)
        return found

    async def set(self, platform: str, workspace_id: str, changes: dict[str, Any]) -> WorkspaceSettings:
        """Change some fields (a value of None goes back to the default); returns the settings now in force."""
        if platform not in PLATFORMS:
            raise WorkspaceSettingError(f"Unknown platform {platform!r}: use slack or discord.")
        unknown = sorted(set(changes) - set(EDITABLE))
        if unknown:
            raise WorkspaceSettingError(f"Unknown setting(s) {', '.join(unknown)}: use {', '.join(EDITABLE)}.")
        row = await self.runner.run(GET, {"platform": platform, "workspace_id": str(workspace_id)}, "one")
        stored = json.loads(row["settings"]) if row else {}
        for name, value in changes.items():
            if value is None:
                stored.pop(name, None)
            else:
                stored[name] = value
        await self.runner.run(UPSERT, {"platform": platform, "workspace_id": str(workspace_id),
                                       "settings": json.dumps(stored, sort_keys=True), "at": time.time()})
        self._cache.pop((platform, str(workspace_id)), None)
        return self._merge(platform, str(workspace_id), stored)

    async def all(self) -> list[WorkspaceSettings]:
        """Every configured workspace, by platform and id."""
        rows = await self.runner.run(ALL, {}, "all")
        return [self._merge(r["platform"], r["workspace_id"], json.loads(r["settings"])) for r in rows]

    async def aclose(self) -> None:
        await self.runner.aclose()


def workspaces_for(orchestrator: Any) -> Workspaces | None:
    """The orchestrator's workspace settings, shared by its front-ends and closed with it; None for a test double
    without `shared`."""
    if not hasattr(orchestrator, "shared"):
        return None
    return orchestrator.shared("workspaces", lambda: Workspaces(orchestrator.settings))


def narrow_agents(channel: tuple[str, ...] | None, workspace: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """The agents a question may be routed to under both its channel's limit and its workspace's (None: all).
    A channel listing only agents its workspace does not allow gets the workspace's: the workspace is the
    contract with whoever runs it, a channel only narrows within it."""
    if channel is None or workspace is None:
        return channel if workspace is None else workspace
    both = tuple(name for name in channel if name in workspace)
    return both or workspace


# The model a workspace chose (`switchboard workspaces set … --model`), for the turn being answered. Set by the
# answer pipeline in the task that answers, read where the agent calls the model (`core.graph`); a context
# variable because the graph's nodes run in tasks that copy the answering task's context.
ANSWER_MODEL: ContextVar[str | None] = ContextVar("switchboard_answer_model", default=None)


def model_for_turn(llm: Any) -> Any:
    """`llm` answering with this turn's workspace model when one was chosen (the default model otherwise)."""
    name = ANSWER_MODEL.get()
    if not name or llm is None or getattr(llm, "model_name", None) == name or not hasattr(llm, "bind"):
        return llm
    return llm.bind(model=name)
