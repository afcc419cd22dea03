"""Settings: env parsing, the provider choice, and that every setting is documented in .env.example."""

from __future__ import annotations

import re
from pathlib import Path

from core.doctor import mask
from core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_every_setting_is_documented_in_env_example() -> None:
    documented = {line.split("=", 1)[0] for line in (ROOT / ".env.example").read_text().splitlines()
                  if re.match(r"^[A-Z_]+=", line)}
    expected = {("SWITCHBOARD_DATA_DIR" if name == "data_dir" else name.upper()) for name in Settings.model_fields}
    assert expected - documented == set()
    assert documented - expected == set()


def test_offline_is_the_default_without_a_key(monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert Settings(_env_file=None).effective_llm_provider == "offline"


def test_a_base_url_alone_selects_openai_for_local_servers() -> None:
    settings = Settings(_env_file=None, openai_base_url="http://localhost:11434/v1")
    assert settings.effective_llm_provider == "openai"


def test_lists_accept_comma_separated_env_values(monkeypatch) -> None:
    monkeypatch.setenv("DISCORD_ALLOWED_CHANNELS", "12, 34")
    monkeypatch.setenv("WEB_CORS_ORIGINS", "http://a.example,http://b.example")
    settings = Settings(_env_file=None)
    assert settings.discord_allowed_channels == [12, 34]
    assert settings.web_cors_origins == ["http://a.example", "http://b.example"]


def test_data_dir_comes_from_switchboard_data_dir(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("SWITCHBOARD_DATA_DIR", str(tmp_path))
    assert Settings(_env_file=None).data_dir == tmp_path


def test_secrets_are_masked_and_never_in_repr() -> None:
    settings = Settings(_env_file=None, slack_bot_token="xoxb-fake-middlepart-abcdefghijkl")
    assert "abcdefghijkl" not in repr(settings)
    shown = mask(settings.slack_bot_token)
    assert shown.startswith("xoxb-") and "middlepart" not in shown and shown.endswith("ijkl")
