"""Per-channel settings: which agents a channel routes to, and where its handoffs go.

A `#billing-help` channel should only ever get the billing agent, and its handoffs should reach the billing
team, not the general on-call. That is configuration, so it lives in a YAML file beside the agents file
(`channels.yml` next to `AGENTS_FILE`, or the file `CHANNELS_FILE` names):

    channels:
      - platform: slack            # slack | discord
        channel: C0BILLING01       # the channel id (a Discord thread counts as its parent channel)
        name: billing-help         # optional, for people reading the file
        agents: [billing]          # optional: route among these agents only
        handoff_channel: C0STAFF02 # optional: this channel's staff place instead of SLACK_HANDOFF_CHANNEL
        handoff_mention: S0ONCALL2 # optional: the Slack user group to ping (Discord: handoff_role, a role id)

The file is read once, by `build_orchestrator` (so `switchboard run` refuses to start on a bad one): every
mistake is one sentence naming the entry and the fix, all of them at once. `ChannelsFileError` is an
`AgentsFileError`, so start-up reports it the same way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from knowledge.agents import SHIPPED_AGENTS_FILE, AgentsFileError, join_words

FILE_NAME = "channels.yml"
PLATFORMS = ("slack", "discord")
_FIELDS = ("platform", "channel", "name", "agents", "handoff_channel", "handoff_mention", "handoff_role")
_SLACK_CHANNEL = re.compile(r"^[CGD][A-Z0-9]{2,}$")
_SLACK_GROUP = re.compile(r"^S[A-Z0-9]{2,}$")
_DISCORD_ID = re.compile(r"^\d{1,20}$")


class ChannelsFileError(AgentsFileError):
    """The channels file cannot be used; the message is one sentence per mistake, each with its fix."""


@dataclass(frozen=True, slots=True)
class ChannelRule:
    """What one channel changes: its agents (None: all) and its handoff place and ping (None: the defaults)."""

    platform: str
    channel: str
    name: str = ""
    agents: tuple[str, ...] | None = None
    handoff_channel: str | None = None
    handoff_mention: str | None = None  # Slack user group id, or Discord role id


class ChannelSettings:
    """The rules of the channels file, by (platform, channel id). Empty when there is no file."""

    def __init__(self, rules: Mapping[tuple[str, str], ChannelRule] | None = None, source: Path | None = None
                 ) -> None:
        self._rules = dict(rules or {})
        self.source = source

    def __len__(self) -> int:
        return len(self._rules)

    def rule_for(self, platform: str, channel: str | None) -> ChannelRule | None:
        return self._rules.get((platform, str(channel))) if channel is not None else None

    def agents_for(self, where: tuple[str, str] | None) -> tuple[str, ...] | None:
        """The agents a question asked in `where` (platform, channel id) may be routed to; None means all."""
        rule = self.rule_for(*where) if where else None
        return rule.agents if rule else None


def channels_path(settings: Any) -> Path | None:
    """The channels file: CHANNELS_FILE (which must exist), else channels.yml beside the agents file when there is
    one, else None."""
    named = getattr(settings, "channels_file", None)
    if named:
        return Path(named)
    beside = Path(getattr(settings, "agents_file", None) or SHIPPED_AGENTS_FILE).parent / FILE_NAME
    return beside if beside.exists() else None


def load_channel_settings(settings: Any, agents: Mapping[str, Any]) -> ChannelSettings:
    """The channel rules the settings point at, checked against the agents; `ChannelsFileError` lists every
    mistake, one sentence each."""
    path = channels_path(settings)
    if path is None:
        return ChannelSettings()
    if not path.exists():
        raise ChannelsFileError(f"CHANNELS_FILE names {path}, which does not exist: create it or leave "
                                "CHANNELS_FILE empty.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ChannelsFileError(f"{path} is not valid YAML{where}: fix the indentation or quoting there.") from None
    return parse_channels(data, agents, path)


def parse_channels(data: Any, agents: Mapping[str, Any], path: Path) -> ChannelSettings:
    """Rules from the parsed YAML; every mistake in `ChannelsFileError`, one line each."""
    if data is None:
        return ChannelSettings(source=path)
    if not isinstance(data, dict) or not isinstance(data.get("channels"), list):
        raise ChannelsFileError(f"{path} must have a top-level `channels:` list of entries.")
    problems: list[str] = []
    rules: dict[tuple[str, str], ChannelRule] = {}
    for number, entry in enumerate(data["channels"], start=1):
        rule = _rule(entry, number, path, agents, problems)
        if rule is None:
            continue
        key = (rule.platform, rule.channel)
        if key in rules:
            problems.append(f"{path}, entry {number}: {rule.platform} channel {rule.channel} is listed twice; "
                            "merge the two entries.")
            continue
        rules[key] = rule
    if problems:
        raise ChannelsFileError("\n".join(problems))
    return ChannelSettings(rules, path)


def _rule(entry: Any, number: int, path: Path, agents: Mapping[str, Any], problems: list[str]) -> ChannelRule | None:
    who = f"{path}, entry {number}"
    if not isinstance(entry, dict):
        problems.append(f"{who} is not a mapping: write it as `- platform: slack` with `channel:` under it.")
        return None
    before = len(problems)
    unknown = sorted(set(entry) - set(_FIELDS))
    if unknown:
        problems.append(f"{who} has unknown field(s) {', '.join(unknown)}: use {', '.join(_FIELDS)}.")
    platform = str(entry.get("platform") or "").strip().lower()
    channel = str(entry.get("channel") or "").strip()
    if platform not in PLATFORMS:
        problems.append(f"{who} needs `platform: slack` or `platform: discord`.")
        return None
    who = f"{who} ({platform} {channel or 'without a channel'})"
    id_pattern, id_example = ((_SLACK_CHANNEL, "C0123ABCD") if platform == "slack" else (_DISCORD_ID, "123456789012345678"))
    if not id_pattern.match(channel):
        problems.append(f"{who}: `channel` must be a {platform} channel id such as {id_example}.")
    names = entry.get("agents")
    allowed: tuple[str, ...] | None = None
    if names is not None:
        if isinstance(names, str):
            names = [names]
        if not isinstance(names, list) or not names:
            problems.append(f"{who}: `agents` must be a list of agent names, e.g. [billing].")
        else:
            allowed = tuple(str(n) for n in names)
            missing = [n for n in allowed if n not in agents]
            if missing:
                problems.append(f"{who}: unknown agent(s) {', '.join(missing)}; use "
                                f"{join_words(list(agents), 'or')} (from the agents file).")
    handoff_channel = entry.get("handoff_channel")
    if handoff_channel is not None and not id_pattern.match(str(handoff_channel)):
        problems.append(f"{who}: `handoff_channel` must be a {platform} channel id such as {id_example}.")
    mention = entry.get("handoff_mention") if platform == "slack" else entry.get("handoff_role")
    wrong = entry.get("handoff_role") if platform == "slack" else entry.get("handoff_mention")
    if wrong is not None:
        right = "handoff_mention (a user group id)" if platform == "slack" else "handoff_role (a role id)"
        problems.append(f"{who}: a {platform} channel pings with {right}.")
    if mention is not None and not (_SLACK_GROUP if platform == "slack" else _DISCORD_ID).match(str(mention)):
        example = "a user group id such as S0123ABCD" if platform == "slack" else "a role id such as 123456789012345678"
        problems.append(f"{who}: the handoff ping must be {example}.")
    if len(problems) > before:
        return None
    return ChannelRule(platform, channel, str(entry.get("name") or ""), allowed,
                       str(handoff_channel) if handoff_channel is not None else None,
                       str(mention) if mention is not None else None)
