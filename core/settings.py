"""Every setting Switchboard reads, in one pydantic-settings class.

Read once at start-up (from the environment and `.env`) and passed down; nothing deeper in the code looks at
`os.environ`. Secrets are `SecretStr` so they never end up in a log line or a repr by accident.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from typing_extensions import Annotated


def _csv(value: object) -> object:
    """Allow comma-separated lists in env vars (`A,B,C`) as well as JSON lists."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


# The bot scopes of manifest.yml, asked for by "Add to Slack" unless SLACK_SCOPES says otherwise.
DEFAULT_SLACK_SCOPES = ("app_mentions:read", "chat:write", "commands", "channels:history", "groups:history",
                        "im:history", "assistant:write", "channels:read", "groups:read", "users:read", "files:read",
                        "im:write")  # im:write: the Home tab's modal answers in a DM (issue 20)


class Settings(BaseSettings):
    """Switchboard's configuration. Each field's env var is its upper-case name unless an alias says otherwise."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True
    )

    # --- storage -------------------------------------------------------------------------------------------------
    data_dir: Path = Field(
        default=Path("./data"), validation_alias=AliasChoices("SWITCHBOARD_DATA_DIR", "data_dir")
    )
    chroma_host: str | None = None
    chroma_port: int = 8000
    database_url: SecretStr | None = None  # Postgres: conversations and votes (core/checkpoints.py); else SQLite
    redis_url: SecretStr | None = None  # Redis: coordination shared by replicas (coordination/); else in-process
    replica_id: str | None = None  # how this process names itself to the others (default: host and pid)
    # With REDIS_URL: the lease on a thread's lock and on a reply in flight, renewed every third of it while the
    # reply runs; a replica that dies loses them this long after, and its orphaned replies are marked within
    # about 1.3 times this.
    coordination_lease_s: float = Field(default=15.0, ge=1.0, le=300.0)

    # --- language model ------------------------------------------------------------------------------------------
    llm_provider: Literal["auto", "openai", "offline"] = "auto"
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    openai_model: str = "gpt-4o-mini"
    llm_timeout_s: float = 60.0
    llm_max_retries: int = 3
    llm_temperature: float = 0.2
    # Images people attach go to the model as image input only when it accepts them: true, false, or auto (a
    # guess from OPENAI_MODEL's name, `core.attachments.model_accepts_images`). Without vision the reply says so.
    openai_vision: bool | Literal["auto"] = "auto"

    # --- attachments (files shared with a question: `bots.attachments`) -------------------------------------------
    # Larger files are refused from their declared size, and a download is cut off at this size whatever was declared.
    max_attachment_mb: float = Field(default=10.0, gt=0, le=100)
    # Characters of text taken from one message's files (text, logs, code, CSV, JSON, PDF text), shared among them;
    # the rest is cut with a note saying so, so a huge log cannot crowd out the question.
    max_attachment_chars: int = Field(default=12_000, ge=500)

    # --- embeddings and knowledge --------------------------------------------------------------------------------
    embedding_provider: Literal["local", "openai"] = "local"
    openai_embedding_model: str = "text-embedding-3-small"
    retrieval_k: int = 4
    cag_token_budget: int = 16_000
    history_token_budget: int = 2_000
    # The request sent to the model (system prompt, summary of older turns, recent turns, question and passages;
    # not a CAG agent's cached documents) stays within this; older turns are folded into a running summary.
    max_context_tokens: int = Field(default=6_000, ge=1_000,
                                    description="Token budget of the conversation sent to the model.")
    # Called into a thread (a mention in a Slack thread or Discord reply chain the bot was not part of): how
    # many earlier messages it reads, and their token budget (the oldest are left out first, and the prompt
    # says how many).
    thread_context_messages: int = Field(default=50, ge=0, le=1_000)
    thread_context_tokens: int = Field(default=2_000, ge=0)
    router_confidence: float = 0.05  # min margin between the best and second-best agent scores
    support_email: str = "support@lumenly.io"
    company_name: str = "Lumenly"
    agents_file: Path | None = None  # the agents' YAML definitions; None = the shipped knowledge/agents.yml

    # --- web -----------------------------------------------------------------------------------------------------
    web_host: str = "127.0.0.1"
    web_port: int = 8000
    web_cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["http://localhost", "http://127.0.0.1"]
    )
    max_message_chars: int = 4_000

    # --- Slack ---------------------------------------------------------------------------------------------------
    slack_bot_token: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"
    slack_streaming: Literal["edit", "native"] = "edit"
    slack_edit_interval_s: float = 1.0
    slack_max_chars: int = 3_900

    # --- Discord -------------------------------------------------------------------------------------------------
    discord_token: SecretStr | None = None
    discord_guild_id: int | None = None
    discord_allowed_guilds: Annotated[list[int], NoDecode] = Field(default_factory=list)
    discord_allowed_channels: Annotated[list[int], NoDecode] = Field(default_factory=list)
    discord_edits_per_window: int = 5
    discord_edit_window_s: float = 5.0
    discord_max_chars: int = 2_000
    # Gateway shards (DISCORD_SHARD_COUNT); with REDIS_URL each shard is held by one replica under a lease of
    # DISCORD_SHARD_LEASE_S, and a replica that dies gives its shards to the others within that time.
    discord_shard_count: int = Field(default=1, ge=1)
    discord_shard_lease_s: float = Field(default=10.0, gt=0)
    # Forum channels run as a support desk (bots/discord/forums.py): each new post is answered in its thread
    # without a mention. Forum channel ids, comma-separated, or `all` for every forum the bot can read; empty = none.
    discord_forum_channels: Annotated[list[int] | Literal["all"], NoDecode] = Field(default_factory=list)

    @field_validator("discord_forum_channels", mode="before")
    @classmethod
    def _forum_list(cls, value: object) -> object:
        """`DISCORD_FORUM_CHANNELS=all` (any case) means every forum; otherwise a list of ids."""
        if isinstance(value, str) and value.strip().lower() == "all":
            return "all"
        return _csv(value)

    # On SIGTERM/SIGINT, replies in flight may finish for this long before they are cut with an "interrupted" note.
    drain_timeout_s: float = 20.0

    log_level: str = "INFO"

    # --- many workspaces (issue 18; bots/slack/oauth.py, core/workspaces.py, coordination/quotas.py) -------------
    # "Add to Slack" distribution: with SLACK_CLIENT_ID and SLACK_CLIENT_SECRET (and SLACK_SIGNING_SECRET) set,
    # workspaces install the app at /slack/install and each is answered with its own bot token, kept encrypted
    # in the database with ENCRYPTION_KEY (a Fernet key); SLACK_BOT_TOKEN is then not used.
    slack_client_id: str | None = None
    slack_client_secret: SecretStr | None = None
    # The full redirect URL registered under OAuth & Permissions (https://<host>/slack/oauth_redirect); empty =
    # the one registered in the app (Slack then uses it).
    slack_redirect_uri: str | None = None
    slack_scopes: Annotated[list[str], NoDecode] = Field(default_factory=lambda: list(DEFAULT_SLACK_SCOPES))
    slack_authorize_url: str = "https://slack.com/oauth/v2/authorize"  # tests point it at the fake Slack
    slack_install_state_s: int = Field(default=600, ge=30)  # how long an "Add to Slack" link stays valid
    slack_token_rotation_minutes: int = Field(default=120, ge=1)  # refresh a rotating token this long before expiry
    encryption_key: SecretStr | None = None  # Fernet key (`switchboard workspaces key` prints a new one)
    # Daily question quotas (UTC days; 0 = no limit): per user, per channel, per workspace or guild (a
    # workspace's own `daily_quota` replaces WORKSPACE_DAILY_QUOTA), and per IP address on POST /chat.
    quota_user_per_day: int = Field(default=0, ge=0)
    quota_channel_per_day: int = Field(default=0, ge=0)
    workspace_daily_quota: int = Field(default=0, ge=0)
    quota_ip_per_day: int = Field(default=0, ge=0)

    @field_validator("slack_client_id", "slack_client_secret", "slack_redirect_uri", "encryption_key",
                     mode="before")
    @classmethod
    def _blank_oauth_is_unset(cls, value: object) -> object:
        """`SLACK_CLIENT_ID=` (as in .env.example) means single-token mode."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("slack_scopes", mode="before")
    @classmethod
    def _split_scopes(cls, value: object) -> object:
        """`SLACK_SCOPES=` (as in .env.example) means the manifest's scopes."""
        return list(DEFAULT_SLACK_SCOPES) if isinstance(value, str) and not value.strip() else _csv(value)

    @property
    def slack_oauth_enabled(self) -> bool:
        """"Add to Slack" mode: SLACK_CLIENT_ID and SLACK_CLIENT_SECRET are both set."""
        return bool(self.slack_client_id and self.slack_client_secret
                    and self.slack_client_secret.get_secret_value())
    # LOG_FORMAT=json: one JSON object per line (with session_key, turn_id and trace_id when known) for log stacks;
    # "text" (the default) is the readable console format (core/logging_setup.py).
    log_format: Literal["text", "json"] = "text"

    # --- the operator's view (issue 16: /admin, turn records, traces; README "The operator's dashboard") ---------
    # ADMIN_TOKEN turns /admin on (unset: 404). Sent as `Authorization: Bearer <token>` or typed once into the
    # page's login form, which sets a signed HttpOnly cookie.
    admin_token: SecretStr | None = None
    # Turn records (the dashboard's data) are pruned after RETENTION_DAYS (defined with the storage settings).
    # OTLP/HTTP collector base URL (e.g. http://otel-collector:4318): spans of every turn are exported there;
    # unset = no tracing set up at all (a no-op tracer). The standard OTEL_* variables (headers…) apply too.
    otel_exporter_otlp_endpoint: str | None = None
    otel_service_name: str = "switchboard"

    @field_validator("admin_token", "otel_exporter_otlp_endpoint", mode="before")
    @classmethod
    def _blank_admin_is_unset(cls, value: object) -> object:
        """`ADMIN_TOKEN=` (as in .env.example) means the dashboard is off."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("web_cors_origins", "discord_allowed_guilds", "discord_allowed_channels", mode="before")
    @classmethod
    def _split_lists(cls, value: object) -> object:
        return _csv(value)

    @field_validator("agents_file", mode="before")
    @classmethod
    def _blank_is_default(cls, value: object) -> object:
        """`AGENTS_FILE=` (as in .env.example) means the shipped file, not the current directory."""
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def effective_llm_provider(self) -> Literal["openai", "offline"]:
        """`auto` means: a key (or a local OpenAI-compatible base URL) selects OpenAI, nothing selects offline."""
        if self.llm_provider != "auto":
            return self.llm_provider
        return "openai" if (self.openai_api_key or self.openai_base_url) else "offline"

    @property
    def chroma_dir(self) -> Path:
        return self.data_dir / "chroma"

    @property
    def checkpoint_path(self) -> Path:
        return self.data_dir / "checkpoints.sqlite"

    @cached_property
    def docs_dir(self) -> Path:
        """The sample corpus shipped with the package."""
        return Path(__file__).resolve().parent.parent / "knowledge" / "docs"

    # --- knowledge sources (knowledge/sources/; `switchboard sync`, `switchboard sources`) --------------------------
    # SOURCES_FILE lists the sources synced into the knowledge base (websites, Confluence, Notion, GitHub, Zendesk,
    # folders), each on its own `every:` while `switchboard run` runs; empty = none. Their secrets are named in it
    # by environment variable. Status and per-document versions are kept under <data dir>/sources/.
    sources_file: Path | None = None
    sources_timeout_s: float = Field(default=30.0, gt=0)  # one HTTP request to a source
    # A 429 asking to wait longer than this ends that source's sync (it keeps its documents and retries later).
    sources_max_retry_after_s: float = Field(default=120.0, ge=0)
    sources_check_s: float = Field(default=30.0, gt=0)  # how often `switchboard run` looks for a source that is due

    @field_validator("sources_file", mode="before")
    @classmethod
    def _blank_sources_file(cls, value: object) -> object:
        """`SOURCES_FILE=` (as in .env.example) means no sources."""
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def sources_state_dir(self) -> Path:
        return self.data_dir / "sources"

    # --- the support loop (issue 13: grounded answers, handoff to a person, gaps; README "The support loop") --------
    # Below this best-passage cosine similarity the bot says it does not know instead of answering (calibrated on
    # eval/routing.tsv: 0.31 declines 46% of its `none` questions and 2 of 118 answerable ones; see README).
    confidence_threshold: float = Field(default=0.31, ge=0.0, le=1.0)
    # Per-channel agents and handoff places; empty = channels.yml beside the agents file, when there is one.
    channels_file: Path | None = None
    # Where handoffs go: a Slack channel id (the bot must be a member) and the user group it may ping (S…).
    slack_handoff_channel: str | None = None
    slack_handoff_mention: str | None = None
    # The same on Discord: a channel id, and the staff role it may ping (holders of it may press the staff buttons).
    discord_handoff_channel: int | None = None
    discord_handoff_role: int | None = None
    # A JSON POST per handoff (web, ticketing tools), signed with HMAC-SHA256 of "<timestamp>.<body>" under
    # HANDOFF_WEBHOOK_SECRET (headers X-Switchboard-Timestamp, X-Switchboard-Signature: sha256=<hex>); retried on
    # 429/5xx and network errors after 1 s, 2 s, 4 s… up to HANDOFF_WEBHOOK_ATTEMPTS tries in all.
    handoff_webhook_url: str | None = None
    handoff_webhook_secret: SecretStr | None = None
    handoff_webhook_attempts: int = Field(default=4, ge=1, le=10)
    handoff_webhook_timeout_s: float = Field(default=10.0, gt=0)

    @field_validator("channels_file", "slack_handoff_channel", "slack_handoff_mention", "discord_handoff_channel",
                     "discord_handoff_role", "handoff_webhook_url", "handoff_webhook_secret", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        """`SLACK_HANDOFF_CHANNEL=` (as in .env.example) means not configured."""
        return None if isinstance(value, str) and not value.strip() else value

    # --- web API abuse controls and liveness (issue 15; bots/web/limits.py, bots/web/heartbeat.py) ---------------
    # Per client (a known API key, else the peer address): requests to POST /chat and POST /handoff per moving
    # window, in the `limits` syntax ("30/minute", "5/second;200/hour"), and answers streaming at once; over either
    # → 429 JSON with Retry-After. Counted per process: N replicas allow N times as much.
    web_rate_limit: str = "60/minute"
    web_max_streams_per_client: int = Field(default=5, ge=1)
    # Answers generated at once by this server (each at most one model call at a time); up to WEB_ANSWER_QUEUE more
    # wait up to WEB_ANSWER_WAIT_S for a slot, the rest get 503 JSON with Retry-After.
    web_max_answers: int = Field(default=64, ge=1)
    web_answer_queue: int = Field(default=64, ge=0)
    web_answer_wait_s: float = Field(default=10.0, gt=0)
    # An SSE comment (": keep-alive") after this many seconds without a frame (before the first token and between
    # tokens), so proxies that cut idle connections (often at 60 s) keep a slow model's stream open.
    web_heartbeat_s: float = Field(default=15.0, gt=0)
    # Sessions belong to their creator (bots/web/sessions.py): each web session has a secret derived from its id
    # with this key (HMAC); set the same value on every replica. Unset: a random key kept in <data dir>.
    web_session_secret: SecretStr | None = None
    # Comma-separated keys; when set, POST /chat, POST /handoff and /sessions need one (`Authorization: Bearer` or
    # `X-API-Key`) or the chat page's signed cookie. Empty: the API is open (sessions still need their secret).
    web_api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    # One time budget per answer, across the model call's retries: past it the user gets the readable
    # "took too long" error instead of waiting up to (LLM_MAX_RETRIES + 1) x LLM_TIMEOUT_S plus back-off.
    answer_timeout_s: float = Field(default=90.0, gt=0)
    # A streaming answer's text goes on in batches: the first piece at once, then what arrived within this many
    # milliseconds together (`core.token_batching`); 0 hands on every token as the model sends it. 100 ms: ten
    # updates a second read as smooth text, and each batch costs the server a wake-up, a frame and a send.
    stream_batch_ms: float = Field(default=100.0, ge=0, le=1000)
    # Links in answers are clickable only for these domains (and their subdomains) plus the knowledge sources'
    # own domains (bots/links.py); any other link is shown as plain text with its full URL.
    link_domains: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator("web_api_keys", "link_domains", mode="before")
    @classmethod
    def _split_csv_lists(cls, value: object) -> object:
        return _csv(value)

    @field_validator("web_session_secret", mode="before")
    @classmethod
    def _blank_session_secret(cls, value: object) -> object:
        """`WEB_SESSION_SECRET=` (as in .env.example) means a key kept in the data directory."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("web_rate_limit")
    @classmethod
    def _rate_limit_parses(cls, value: str) -> str:
        """A typo in WEB_RATE_LIMIT is a start-up error, not a server without a limit."""
        from limits import parse_many

        try:
            parse_many(value)
        except ValueError as exc:
            raise ValueError(f"WEB_RATE_LIMIT={value!r} is not a rate such as 60/minute or 5/second;200/hour") from exc
        return value


    # --- bounded storage and privacy (issue 15; core/retention.py, core/redaction.py, core/datadir.py) -------------
    # Conversations, their turn records, support-log rows and votes older than this many days are deleted by
    # `switchboard prune` and by the daily job of `switchboard run`. One setting for every store.
    retention_days: int = Field(default=90, ge=1)
    # A conversation stops after this many questions: the next one is answered with a sentence asking the user to
    # start a new conversation, and the model is not called (each turn stores the whole history again).
    max_turns: int = Field(default=100, ge=1)
    # What is masked in a message before it is stored, logged or sent to the model: any of cards, emails, phones,
    # secrets (API keys, tokens, passwords), comma-separated; empty masks nothing.
    redact: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["cards", "secrets"])
    # Whether log lines may carry message text (questions, answers); off by default (personal data).
    log_content: bool = False

    @field_validator("redact", mode="before")
    @classmethod
    def _redact_kinds(cls, value: object) -> object:
        """REDACT=cards,emails: known kinds only, so a typo is a start-up error rather than data left unmasked."""
        from core.redaction import KINDS

        kinds = [str(kind).strip().lower() for kind in (_csv(value) or [])]  # type: ignore[union-attr]
        unknown = [kind for kind in kinds if kind not in KINDS]
        if unknown:
            raise ValueError(f"REDACT: unknown kind(s) {', '.join(unknown)}; use any of {', '.join(KINDS)}")
        return kinds


def load_settings(**overrides: object) -> Settings:
    """Read settings once; tests pass overrides instead of touching the environment."""
    return Settings(**overrides)  # type: ignore[arg-type]
