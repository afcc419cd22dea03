"""Start-up validation for `switchboard run`: every problem as one sentence with its fix, before anything starts."""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.settings import Settings

DISCORD_TOKEN = re.compile(r"^[\w-]{20,}\.[\w-]{4,}\.[\w-]{20,}$")


class StartupError(RuntimeError):
    """A problem found before or while starting; its message says how to fix it (printed without a traceback)."""


@dataclass(frozen=True, slots=True)
class Problem:
    message: str
    fix: str


def slack_enabled(settings: Settings) -> bool:
    return settings.slack_bot_token is not None and bool(settings.slack_bot_token.get_secret_value())


def discord_enabled(settings: Settings) -> bool:
    return settings.discord_token is not None and bool(settings.discord_token.get_secret_value())


def validate_settings(settings: Settings) -> list[Problem]:
    problems: list[Problem] = []
    if slack_enabled(settings):
        bot = settings.slack_bot_token.get_secret_value()  # type: ignore[union-attr]
        if not bot.startswith("xoxb-"):
            problems.append(Problem("SLACK_BOT_TOKEN does not look like a bot token (it should start with xoxb-).",
                                    "Copy the Bot User OAuth Token from your Slack app's OAuth & Permissions page."))
        app_token = settings.slack_app_token.get_secret_value() if settings.slack_app_token else ""
        secret = settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else ""
        if app_token and not app_token.startswith("xapp-"):
            problems.append(Problem("SLACK_APP_TOKEN does not look like an app-level token (xapp-...).",
                                    "Create one under Basic Information → App-Level Tokens with connections:write."))
        if not app_token and not secret:
            problems.append(Problem("Slack needs SLACK_APP_TOKEN (Socket Mode) or SLACK_SIGNING_SECRET (HTTP events).",
                                    "Set SLACK_APP_TOKEN for local use; see README, 'Slack'."))
    elif getattr(settings, "slack_oauth_enabled", False):  # "Add to Slack" (issue 18): tokens come from installs
        problems.extend(oauth_problems(settings))
    elif settings.slack_app_token or settings.slack_signing_secret:
        problems.append(Problem("Slack settings are present but SLACK_BOT_TOKEN is missing.",
                                "Set SLACK_BOT_TOKEN (xoxb-...) or remove the other SLACK_ settings."))
    if discord_enabled(settings):
        token = settings.discord_token.get_secret_value()  # type: ignore[union-attr]
        if not DISCORD_TOKEN.match(token):
            problems.append(Problem("DISCORD_TOKEN does not look like a bot token.",
                                    "Reset and copy the token from the Developer Portal → your app → Bot."))
    if settings.effective_llm_provider == "openai" and not settings.openai_api_key and not settings.openai_base_url:
        problems.append(Problem("LLM_PROVIDER=openai but neither OPENAI_API_KEY nor OPENAI_BASE_URL is set.",
                                "Set OPENAI_API_KEY, or OPENAI_BASE_URL for a local server, or LLM_PROVIDER=auto."))
    if not 0 < settings.web_port < 65536:
        problems.append(Problem(f"WEB_PORT={settings.web_port} is not a valid port.", "Use a port like 8000."))
    from bots.support.checks import support_problems  # handoff settings (issue 13); imports this module's Problem

    problems.extend(support_problems(settings))
    return problems


def oauth_problems(settings: Settings) -> list[Problem]:
    """"Add to Slack" mode (SLACK_CLIENT_ID and SLACK_CLIENT_SECRET): the signing secret and a key for the
    tokens are required; the events arrive over Socket Mode or HTTP as in single-token mode."""
    problems: list[Problem] = []
    if not settings.slack_signing_secret:
        problems.append(Problem("\"Add to Slack\" needs SLACK_SIGNING_SECRET.",
                                "Copy the Signing Secret from Basic Information → App Credentials."))
    key = settings.encryption_key.get_secret_value() if settings.encryption_key else ""
    if not key:
        problems.append(Problem("\"Add to Slack\" stores bot tokens, and ENCRYPTION_KEY is not set, so it would "
                                "refuse to store them.",
                                "Set ENCRYPTION_KEY to the key `switchboard workspaces key` prints."))
    else:
        from cryptography.fernet import Fernet

        try:
            Fernet(key.strip().encode())
        except ValueError:
            problems.append(Problem("ENCRYPTION_KEY is not a Fernet key.",
                                    "Generate one with `switchboard workspaces key`."))
    return problems
