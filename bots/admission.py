"""Whether a question may be answered now: its workspace or guild is enabled, and no daily quota is reached.

Asked by `AnswerPipeline` before the core is called, so a refused question costs no model call: the user reads
one sentence (when they can ask again), `/metrics` counts the refusal (`switchboard_quota_refusals_total`). The
workspace's settings (`core.workspaces`) also narrow the agents a question may be routed to, in the same way a
channel's do (`core.channels`).

Which workspace: Slack's team id is in the session key (`slack:T…:C…:ts`); a Discord guild is read from the
inbound's place (the message's guild, or the interaction's `guild_id`); a DM on Discord has none (defaults).
"""

from __future__ import annotations

import logging
from typing import Any

from bots import metrics
from coordination.quotas import Limit, Quotas, quotas_for, refusal_sentence
from core.workspaces import WorkspaceSettings, Workspaces, defaults_for, workspaces_for

log = logging.getLogger(__name__)

DISABLED = "Switchboard is turned off here for now; please ask your workspace admin."


def workspace_of(inbound: Any) -> str | None:
    """The Slack team or Discord guild a message was asked in; None when there is none (a Discord DM)."""
    if inbound.platform == "slack":
        parts = inbound.session_key.split(":")
        return parts[1] if len(parts) > 2 and parts[1] else None
    if inbound.platform == "discord":
        place = inbound.place
        guild_id = getattr(place, "guild_id", None)  # an interaction
        if guild_id is None:
            guild = getattr(getattr(place, "message", None), "guild", None)  # a message's place
            guild_id = getattr(guild, "id", None)
        return str(guild_id) if guild_id else None
    return None


def quotas_of(orchestrator: Any) -> Quotas:
    """The daily counters every front-end of a process shares: on the coordination's Redis when it has one."""
    coordination = getattr(orchestrator, "coordination", None)
    if not hasattr(orchestrator, "shared"):
        return quotas_for(coordination)
    return orchestrator.shared("quotas", lambda: quotas_for(coordination))


class Admission:
    """The workspace check and the daily quotas for one platform's questions."""

    def __init__(self, orchestrator: Any, platform: str) -> None:
        self.orchestrator = orchestrator
        self.platform = platform
        self.settings = getattr(orchestrator, "settings", None)
        self.workspaces: Workspaces | None = workspaces_for(orchestrator) if self.settings is not None else None
        self.quotas: Quotas | None = quotas_of(orchestrator) if self.settings is not None else None

    async def workspace(self, inbound: Any) -> WorkspaceSettings | None:
        """The settings that apply to `inbound`'s workspace (the defaults for an unknown one); None without
        settings (a test double of an orchestrator)."""
        if self.workspaces is None:
            return None
        workspace_id = workspace_of(inbound)
        try:
            return await self.workspaces.get(self.platform, workspace_id)
        except Exception:  # noqa: BLE001 - an unreadable settings table must not silence the bot: the defaults
            log.warning("%s: workspace settings unreadable; using the defaults", self.platform, exc_info=True)
            return defaults_for(self.settings, self.platform, workspace_id or "")

    async def refusal(self, inbound: Any) -> str | None:
        """None when the question may go ahead (and it is then counted); otherwise the sentence to show."""
        if self.settings is None or self.quotas is None:
            return None
        workspace = await self.workspace(inbound)
        if workspace is not None and not workspace.enabled:
            metrics.record_refusal(self.platform, "disabled")
            return DISABLED
        workspace_id = workspace_of(inbound) or "-"
        limits = [Limit("workspace", f"{self.platform}:{workspace_id}",
                        workspace.daily_quota if workspace is not None and workspace_id != "-" else 0)]
        if inbound.channel:
            limits.append(Limit("channel", f"{self.platform}:{inbound.channel}",
                                int(getattr(self.settings, "quota_channel_per_day", 0) or 0)))
        if inbound.user:
            limits.append(Limit("user", f"{self.platform}:{workspace_id}:{inbound.user}",
                                int(getattr(self.settings, "quota_user_per_day", 0) or 0)))
        refused = await self.quotas.take(limits)
        if refused is None:
            return None
        metrics.record_refusal(self.platform, refused.limit.scope)
        log.info("%s: %s quota of %d reached for %s", self.platform, refused.limit.scope, refused.limit.per_day,
                 refused.limit.key)
        return refusal_sentence(refused)


async def ip_refusal(orchestrator: Any, address: str | None) -> tuple[str, int] | None:
    """The web's per-IP daily quota (QUOTA_IP_PER_DAY): None when the question may go ahead (it is counted),
    else (the sentence, seconds until the quota resets) for a 429 with Retry-After."""
    per_day = int(getattr(getattr(orchestrator, "settings", None), "quota_ip_per_day", 0) or 0)
    if per_day <= 0 or not address:
        return None
    refused = await quotas_of(orchestrator).take([Limit("ip", address, per_day)])
    if refused is None:
        return None
    metrics.record_refusal("web", "ip")
    return refusal_sentence(refused), refused.retry_after_s()
