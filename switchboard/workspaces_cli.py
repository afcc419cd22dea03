"""`switchboard workspaces list | show | set | key`: per-workspace (Slack) and per-server (Discord) settings.

Only wiring: the settings and their store are `core.workspaces`, the Slack installations
`bots.slack.installations`. `set` changes only the fields named; `default` puts one back to the environment's.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from core.settings import Settings, load_settings

console = Console()
err_console = Console(stderr=True)
workspaces_app = typer.Typer(help="Per-workspace and per-server settings: enabled, agents, handoff place, daily "
                             "quota, model.", no_args_is_help=True)

PLATFORM_HELP = "slack (a team id, T…) or discord (a guild id)."


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (tuple, list)):
        return ", ".join(value)
    return str(value)


def _field_text(name: str, value: Any) -> str:
    if name == "agents" and value is None:
        return "all"
    if name == "daily_quota" and value == 0:
        return "no limit"
    if value is None or value == "":
        return "—"
    return _shown(value)


async def _installed(settings: Settings) -> list[Any]:
    """The Slack installations ("Add to Slack"), when that mode is on: ids and names only, no key needed."""
    if not settings.slack_oauth_enabled:
        return []
    from bots.slack.installations import SqlInstallationStore

    store = SqlInstallationStore(settings)
    try:
        return await store.installed()
    finally:
        await store.aclose()


async def _list(settings: Settings) -> tuple[list[Any], list[Any], str]:
    from core.workspaces import Workspaces

    workspaces = Workspaces(settings)
    try:
        return await workspaces.all(), await _installed(settings), workspaces.where
    finally:
        await workspaces.aclose()


@workspaces_app.command(name="list")
def list_command() -> None:
    """Every configured workspace or server, and the Slack workspaces that installed the app (one line each)."""
    settings = load_settings()
    configured, installed, where = _run(_list(settings))
    if not configured and not installed:
        console.print("No workspace is configured: every workspace and server uses the defaults from the "
                      "environment. Change one with `switchboard workspaces set slack T0123 --daily-quota 200`.")
        return
    console.print(f"[dim]{where}[/]")
    installs = {i.team_id or i.enterprise_id: i for i in installed}
    seen = set()
    for ws in configured:
        seen.add((ws.platform, ws.workspace_id))
        install = installs.get(ws.workspace_id) if ws.platform == "slack" else None
        console.print(_line(ws, install), highlight=False, soft_wrap=True)
    for team, install in installs.items():
        if ("slack", team) not in seen:
            console.print(f"slack {team} \"{install.team_name}\": defaults · installed {_when(install.installed_at)}",
                          highlight=False, soft_wrap=True)


def _line(ws: Any, install: Any | None) -> str:
    name = ws.name or (install.team_name if install is not None else "")
    parts = ["enabled" if ws.enabled else "turned off", f"agents {_field_text('agents', ws.agents)}",
             f"{ws.daily_quota} questions/day" if ws.daily_quota else "no daily limit",
             f"model {_field_text('model', ws.model)}"]
    if ws.handoff_channel:
        parts.append(f"handoffs to {ws.handoff_channel}")
    if install is not None:
        parts.append(f"installed {_when(install.installed_at)}")
    label = f' "{name}"' if name else ""
    return f"{ws.platform} {ws.workspace_id}{label}: " + " · ".join(parts)


def _when(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


async def _show(settings: Settings, platform: str, workspace_id: str) -> Any:
    from core.workspaces import Workspaces

    workspaces = Workspaces(settings)
    try:
        return await workspaces.get(platform, workspace_id)
    finally:
        await workspaces.aclose()


def _print(ws: Any) -> None:
    from core.workspaces import EDITABLE

    table = Table(title=f"{ws.platform} {ws.workspace_id}")
    table.add_column("setting")
    table.add_column("value")
    table.add_column("from")
    for name in EDITABLE:
        table.add_row(name, _field_text(name, getattr(ws, name)),
                      "set" if name in ws.configured else "default")
    console.print(table)


def _platform(value: str) -> str:
    value = value.strip().lower()
    if value not in ("slack", "discord"):
        err_console.print(f"[red]Unknown platform {value!r}:[/] use slack or discord.")
        raise typer.Exit(2)
    return value


@workspaces_app.command(name="show")
def show_command(platform: str = typer.Argument(..., help=PLATFORM_HELP),
                 workspace_id: str = typer.Argument(..., help="The team or guild id.")) -> None:
    """The settings in force for one workspace or server (an unknown one shows the defaults)."""
    settings = load_settings()
    _print(_run(_show(settings, _platform(platform), workspace_id)))


@workspaces_app.command(name="set")
def set_command(
    platform: str = typer.Argument(..., help=PLATFORM_HELP),
    workspace_id: str = typer.Argument(..., help="The team or guild id."),
    name: Optional[str] = typer.Option(None, "--name", help="A name for people reading the list."),
    enabled: Optional[str] = typer.Option(None, "--enabled", help="yes or no: whether the bot answers there."),
    agents: Optional[str] = typer.Option(None, "--agents", help="Comma-separated agents allowed there."),
    handoff_channel: Optional[str] = typer.Option(None, "--handoff-channel", help="Where its handoffs go."),
    handoff_mention: Optional[str] = typer.Option(None, "--handoff-mention",
                                                  help="The user group (Slack) or role (Discord) to ping."),
    daily_quota: Optional[str] = typer.Option(None, "--daily-quota", help="Questions per day there (0 = no limit)."),
    model: Optional[str] = typer.Option(None, "--model", help="The language model to answer with there."),
) -> None:
    """Change some settings of one workspace or server; `default` puts a setting back to the environment's."""
    from core.workspaces import WorkspaceSettingError, parse_value

    settings = load_settings()
    given = {"name": name, "enabled": enabled, "agents": agents, "handoff_channel": handoff_channel,
             "handoff_mention": handoff_mention, "daily_quota": daily_quota, "model": model}
    given = {k: v for k, v in given.items() if v is not None}
    if not given:
        err_console.print("Nothing to change: name at least one option, e.g. --daily-quota 200 (see --help).")
        raise typer.Exit(2)
    try:
        changes = {k: parse_value(k, v, _agent_names(settings) if k == "agents" else None) for k, v in given.items()}
    except WorkspaceSettingError as exc:
        err_console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    _print(_run(_set(settings, _platform(platform), workspace_id, changes)))


async def _set(settings: Settings, platform: str, workspace_id: str, changes: dict[str, Any]) -> Any:
    from core.workspaces import Workspaces

    workspaces = Workspaces(settings)
    try:
        return await workspaces.set(platform, workspace_id, changes)
    finally:
        await workspaces.aclose()


@workspaces_app.command(name="key")
def key_command() -> None:
    """Print a new ENCRYPTION_KEY (a Fernet key) for the Slack tokens kept by "Add to Slack"."""
    from cryptography.fernet import Fernet

    console.print(Fernet.generate_key().decode(), highlight=False)


def _agent_names(settings: Settings) -> list[str]:
    from knowledge.agents import AgentsFileError, load_agents

    try:
        return list(load_agents(settings.agents_file))
    except AgentsFileError as exc:
        err_console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None


def _run(coro: Any) -> Any:
    """Run a store operation; a database that cannot be used is one sentence, not a traceback."""
    from core.checkpoints import CheckpointsUnavailable

    try:
        return asyncio.run(coro)
    except CheckpointsUnavailable as exc:
        err_console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
