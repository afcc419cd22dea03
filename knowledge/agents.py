"""The specialist agents, defined in one YAML file: `knowledge/agents.yml`, or the file `AGENTS_FILE` names.

Agents are data, not code. The router embeds each agent's `description` and `examples`, the graph gives each
agent a node and reads its `strategy` (retrieval, cached documents or both), the loader maps a `docs/<name>/`
folder to it, and every help text names its `topic`. A team adds an agent by adding an entry and a folder of
documents. The definitions live in `knowledge/` (not `core/`) because ingestion needs the names too, and
`knowledge/` imports nothing from `core/`.

A bad file stops start-up with `AgentsFileError`, whose message is one sentence naming the entry and the fix;
an agent whose collection is empty does too (`check_documents`), once the store is open.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

Strategy = Literal["rag", "cag", "hybrid"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
SHIPPED_AGENTS_FILE = Path(__file__).resolve().parent / "agents.yml"

# A folder name, a Chroma collection suffix (which must end in a letter or digit) and a graph node name.
_NAME = re.compile(r"^[a-z](?:[a-z0-9_-]{0,38}[a-z0-9])?$")
_RESERVED = {"router"}  # the graph's own node
_REQUIRED = ("label", "strategy", "description", "lane", "examples")
_FIELDS = ("name", "label", "topic", "strategy", "cached", "description", "lane", "examples")


class AgentsFileError(ValueError):
    """The agents file cannot be used (or an agent has no documents); the message is the one-sentence fix."""


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """One specialist. `cached` holds source-path globs of documents kept whole in the prompt (CAG)."""

    name: str
    label: str
    strategy: Strategy
    description: str
    lane: str  # one sentence for the system prompt: what this agent does and does not handle
    examples: tuple[str, ...]
    topic: str = ""  # a short phrase for help texts ("the API"); the label in lower case when empty
    cached: tuple[str, ...] = ()

    @property
    def topic_phrase(self) -> str:
        return self.topic or self.label.lower()

    def caches(self, source: str) -> bool:
        """Whether the agents file lists `source` (a corpus-relative posix path) among the cached documents."""
        return any(fnmatch.fnmatchcase(source, pattern) for pattern in self.cached)


class AgentRegistry(Mapping[str, AgentSpec]):
    """The agents in file order, by name. Read-only; `source` is the file they came from (None when built in code)."""

    def __init__(self, specs: Iterable[AgentSpec], source: Path | None = None) -> None:
        self._specs = {spec.name: spec for spec in specs}
        self.source = source

    def __getitem__(self, name: str) -> AgentSpec:
        return self._specs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def __repr__(self) -> str:
        return f"AgentRegistry({', '.join(self._specs)})"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._specs)

    def topics_sentence(self, conjunction: str = "or") -> str:
        """The agents' topics as one phrase for help texts: "billing, the API or our policies"."""
        return join_words([spec.topic_phrase for spec in self._specs.values()], conjunction)


def join_words(words: Sequence[str], conjunction: str = "or") -> str:
    """"a", "a or b", "a, b or c"."""
    if len(words) <= 1:
        return "".join(words)
    return f"{', '.join(words[:-1])} {conjunction} {words[-1]}"


def load_agents(path: Path | str | None = None) -> AgentRegistry:
    """Read and check an agents file (None: the shipped one). Raises `AgentsFileError`.

    Memoised per file version (path, modification time, size), so every part of the program that loads the
    same file shares one registry and an edited file is read afresh."""
    file = Path(path).expanduser() if path is not None else SHIPPED_AGENTS_FILE
    try:
        info = file.stat()
    except OSError:
        raise AgentsFileError(
            f"The agents file {file} does not exist: set AGENTS_FILE to an existing YAML file, or unset it to "
            "use the shipped knowledge/agents.yml."
        ) from None
    return _load(str(file.resolve()), info.st_mtime_ns, info.st_size)


@functools.lru_cache(maxsize=8)
def _load(path: str, _mtime_ns: int, _size: int) -> AgentRegistry:
    file = Path(path)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "a syntax error"
        raise AgentsFileError(
            f"The agents file {file} is not valid YAML ({problem}{where}): fix the syntax there."
        ) from None
    except UnicodeDecodeError:
        raise AgentsFileError(f"The agents file {file} is not UTF-8 text: save it as UTF-8.") from None
    except OSError as exc:
        raise AgentsFileError(
            f"The agents file {file} cannot be read ({exc.strerror or exc}): point AGENTS_FILE at a readable YAML file."
        ) from None
    entries = data.get("agents") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise AgentsFileError(
            f"The agents file {file} has no `agents:` list: start it with `agents:` followed by one `- name: …` "
            "entry per agent, as in the shipped knowledge/agents.yml."
        )
    if not entries:
        raise AgentsFileError(f"The agents file {file} lists no agents: add at least one entry under `agents:`.")
    specs: list[AgentSpec] = []
    seen: dict[str, int] = {}
    for number, entry in enumerate(entries, start=1):
        spec = parse_entry(entry, number, file)
        if spec.name in seen:
            raise AgentsFileError(
                f"Agent '{spec.name}' is defined twice in {file} (entries {seen[spec.name]} and {number}): rename or "
                "remove one of them."
            )
        seen[spec.name] = number
        specs.append(spec)
    return AgentRegistry(specs, source=file)


def parse_entry(entry: Any, number: int, file: Path) -> AgentSpec:
    """One `agents:` entry as an `AgentSpec`, or `AgentsFileError` naming the entry and the fix."""
    if not isinstance(entry, dict):
        raise AgentsFileError(f"Entry {number} in {file} is not a mapping: write each agent as `- name: …` "
                              "followed by its fields.")
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise AgentsFileError(f"Entry {number} in {file} has no `name`: give it a lowercase name such as `sales`.")
    if not _NAME.match(name):
        raise AgentsFileError(f"Agent {name!r} in {file} has an invalid name: use up to 40 lowercase letters, digits, "
                              "'-' or '_', starting with a letter and ending with a letter or digit.")
    who = f"Agent '{name}' in {file}"
    if name in _RESERVED:
        raise AgentsFileError(f"{who} uses a name reserved for the router: choose another name.")
    unknown = [key for key in entry if key not in _FIELDS]
    if unknown:
        raise AgentsFileError(f"{who} has an unknown field `{unknown[0]}`: use only {join_words(_FIELDS, 'and')}.")
    for key in _REQUIRED:
        if entry.get(key) in (None, "", []):
            if key == "examples":
                raise AgentsFileError(f"{who} has no examples: list a few questions it should answer under "
                                      "`examples:`, one `- …` line each.")
            raise AgentsFileError(f"{who} has no `{key}`: add it (see the comments at the top of the shipped "
                                  "knowledge/agents.yml).")
    for key in ("label", "topic", "strategy", "description", "lane"):
        if key in entry and entry[key] is not None and not isinstance(entry[key], str):
            raise AgentsFileError(f"{who} has a `{key}` that is not text: write it as one line of text.")
    strategy = entry["strategy"].strip()
    if strategy not in STRATEGIES:
        raise AgentsFileError(f"{who} has the unknown strategy '{strategy}': use rag, cag or hybrid.")
    examples = _texts(entry["examples"], "examples", who)
    cached = _texts(entry.get("cached") or [], "cached", who)
    if cached and strategy == "rag":
        raise AgentsFileError(f"{who} lists cached documents but its strategy is rag: make it hybrid or cag, or "
                              "remove `cached`.")
    return AgentSpec(
        name=name,
        label=entry["label"].strip(),
        strategy=strategy,  # type: ignore[arg-type]
        description=entry["description"].strip(),
        lane=entry["lane"].strip(),
        examples=examples,
        topic=(entry.get("topic") or "").strip(),
        cached=cached,
    )


def _texts(value: Any, key: str, who: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) and item.strip() for item in value):
        raise AgentsFileError(f"{who} has a `{key}` that is not a list of text: write one `- …` line per item.")
    return tuple(item.strip() for item in value)


def check_documents(registry: Mapping[str, AgentSpec], counts: Mapping[str, int]) -> None:
    """Refuse to start when an agent has nothing to answer from: its collection (`counts[name]`) is empty.

    Called once the store is open (`counts` = chunks per agent); raises `AgentsFileError` for the first such
    agent, in file order."""
    for name in registry:
        if not counts.get(name):
            raise AgentsFileError(
                f"Agent '{name}' has no documents: put files under docs/{name}/ (or give them `agent: {name}` front "
                "matter) and run `switchboard ingest`."
            )


def default_agent_names() -> tuple[str, ...]:
    """The shipped agents' names: the default for code that is not told which agents exist (tests, tools)."""
    return load_agents(None).names
