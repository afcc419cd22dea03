"""The sources file (SOURCES_FILE): which upstream knowledge sources to sync, and into which agents.

```yaml
sources:
  - name: help-site
    kind: website
    url: https://help.example.com/sitemap.xml
    agent: technical
    every: 6h
  - name: handbook
    kind: confluence
    url: https://example.atlassian.net/wiki
    space: SUP
    email: bot@example.com
    token_env: CONFLUENCE_TOKEN          # the secret's environment variable, never the secret
    agent_by_label: {billing: billing, policy: policy}
    agent: technical
    every: 1h
```

Secrets are named by environment variable (`token_env`, `email_env`) and read only when a source syncs, from the
mapping the caller passes, so this module never looks at `os.environ` and listing sources needs no secrets. A
mistake in the file is one `SourcesFileError` sentence naming the entry and the fix.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

KINDS = ("folder", "website", "confluence", "notion", "github", "zendesk")
COMMON_KEYS = {"name", "kind", "agent", "agent_by_label", "agent_by_path", "every"}
# Settings each kind understands, beyond the common ones; anything else is a typo worth a sentence.
KIND_KEYS: dict[str, set[str]] = {
    "folder": {"path"},
    "website": {"url", "prefix", "max_pages", "user_agent"},
    "confluence": {"url", "space", "email", "email_env", "token_env"},
    "notion": {"token_env", "api_url"},
    "github": {"repo", "path", "branch", "token_env", "api_url"},
    "zendesk": {"url", "locale", "email", "email_env", "token_env"},
}
REQUIRED: dict[str, tuple[str, ...]] = {
    "folder": ("path",),
    "website": ("url",),
    "confluence": ("url", "space", "token_env"),
    "notion": ("token_env",),
    "github": ("repo",),
    "zendesk": ("url",),
}
DEFAULT_EVERY_S = 6 * 3600.0
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


class SourcesFileError(ValueError):
    """The sources file cannot be used; the message says which entry and how to fix it."""


def parse_duration(value: object) -> float:
    """`90s`, `30m`, `6h`, `1d` or a number of seconds, in seconds."""
    match = _DURATION.match(str(value))
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"{value!r} is not a duration like 30m, 6h or 1d")
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass(frozen=True)
class SourceSpec:
    """One entry of the sources file. `options` holds the kind's own settings (url, space, repo…)."""

    name: str
    kind: str
    every_s: float = DEFAULT_EVERY_S
    agent: str | None = None
    agent_by_label: Mapping[str, str] = field(default_factory=dict)
    agent_by_path: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def root(self) -> str:
        """What the store records as the corpus root of this source's chunks: it marks them as this source's, so
        a document that vanished upstream is found and removed, and nothing else is touched."""
        return f"source:{self.name}"

    @property
    def fingerprint(self) -> str:
        """Changes when anything that decides a document's content or agent changes (not the interval): the
        recorded versions are then ignored once, so every document is filed again under the new rules."""
        data = {"kind": self.kind, "agent": self.agent, "by_label": dict(self.agent_by_label),
                "by_path": dict(self.agent_by_path), "options": dict(self.options)}
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def option(self, key: str, default: Any = None) -> Any:
        return self.options.get(key, default)

    def secret(self, key: str, env: Mapping[str, str], *, required: bool = True) -> str | None:
        """The value of the environment variable that the entry's `key` (e.g. `token_env`) names."""
        variable = self.options.get(key)
        if not variable:
            if required:
                raise SourcesFileError(f"source {self.name!r}: set {key}: to the environment variable holding it")
            return None
        value = env.get(str(variable), "")
        if not value and required:
            raise SourcesFileError(f"source {self.name!r}: the environment variable {variable} ({key}) is empty; "
                                   "set it in the environment or .env")
        return value or None

    def plain_or_env(self, key: str, env: Mapping[str, str]) -> str | None:
        """`email: x` written in the file, or `email_env: VAR` read from the environment."""
        if self.options.get(key):
            return str(self.options[key])
        return self.secret(f"{key}_env", env, required=False)

    def agent_for(self, labels: Sequence[str] = (), path: str = "", declared: str | None = None,
                  agents: Collection[str] = ()) -> str | None:
        """The agent a document belongs to: its own `agent:` front matter, then the first of its labels that
        `agent_by_label` maps, then the first `agent_by_path` glob its path matches, then the entry's `agent`."""
        if declared and declared.lower() in agents:
            return declared.lower()
        by_label = {k.lower(): v for k, v in self.agent_by_label.items()}
        for label in labels:
            if label.lower() in by_label:
                return by_label[label.lower()]
        for pattern, agent in self.agent_by_path.items():
            if fnmatch.fnmatchcase(path, pattern):
                return agent
        return self.agent


def load_sources(path: Path | str, agents: Collection[str]) -> list[SourceSpec]:
    """Read and check the sources file; `agents` are the agents file's names (every agent named must be one)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise SourcesFileError(f"The sources file {path} cannot be read ({exc.strerror or exc}); "
                               "fix SOURCES_FILE") from None
    except yaml.YAMLError as exc:
        raise SourcesFileError(f"The sources file {path} is not valid YAML ({str(exc).splitlines()[0]})") from None
    entries = data.get("sources") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise SourcesFileError(f"The sources file {path} needs a top-level `sources:` list")
    specs: list[SourceSpec] = []
    for position, entry in enumerate(entries, start=1):
        spec = _spec(entry, position, path, agents)
        if any(s.name == spec.name for s in specs):
            raise SourcesFileError(f"{path}: two sources are named {spec.name!r}; names must be unique")
        specs.append(spec)
    return specs


def _spec(entry: object, position: int, path: Path, agents: Collection[str]) -> SourceSpec:
    where = f"{path}: source #{position}"
    if not isinstance(entry, dict):
        raise SourcesFileError(f"{where} is not a mapping of settings")
    name = str(entry.get("name", "")).strip()
    if not _NAME.match(name):
        raise SourcesFileError(f"{where}: name {name!r} must be lower-case letters, digits, '-' or '_'")
    where = f"{path}: source {name!r}"
    kind = str(entry.get("kind", "")).strip().lower()
    if kind not in KINDS:
        raise SourcesFileError(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}")
    unknown = set(entry) - COMMON_KEYS - KIND_KEYS[kind]
    if unknown:
        raise SourcesFileError(f"{where}: unknown setting(s) {', '.join(sorted(map(str, unknown)))} for kind "
                               f"{kind} (it takes {', '.join(sorted(KIND_KEYS[kind] | COMMON_KEYS))})")
    missing = [key for key in REQUIRED[kind] if not entry.get(key)]
    if missing:
        raise SourcesFileError(f"{where}: {kind} sources need {', '.join(missing)}")
    try:
        every = parse_duration(entry.get("every", DEFAULT_EVERY_S))
    except ValueError as exc:
        raise SourcesFileError(f"{where}: every: {exc}") from None
    agent = entry.get("agent")
    by_label = _mapping(entry.get("agent_by_label"), where, "agent_by_label")
    by_path = _mapping(entry.get("agent_by_path"), where, "agent_by_path")
    for named in [agent, *by_label.values(), *by_path.values()]:
        if named is not None and str(named) not in agents:
            raise SourcesFileError(f"{where}: agent {named!r} is not in the agents file (agents: "
                                   f"{', '.join(agents)})")
    if kind == "folder" and (agent or by_label or by_path):
        raise SourcesFileError(f"{where}: a folder's documents take their agent from their folder or `agent:` "
                               "front matter, as with `switchboard ingest`; remove agent/agent_by_*")
    if kind != "folder" and not (agent or by_label or by_path):
        raise SourcesFileError(f"{where}: say which agent its documents belong to (agent:, agent_by_label: or "
                               "agent_by_path:)")
    options = {k: v for k, v in entry.items() if k not in COMMON_KEYS}
    if kind == "folder":  # relative to the sources file, so the file means the same from any directory
        options["path"] = str((path.parent / str(options["path"])).resolve())
    return SourceSpec(name, kind, every, str(agent) if agent else None, by_label, by_path, options)


def _mapping(value: object, where: str, key: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SourcesFileError(f"{where}: {key} must map labels or paths to agents, e.g. {{billing: billing}}")
    return {str(k): str(v) for k, v in value.items()}
