"""Reading source files into documents: Markdown (with front matter), plain text, HTML and PDF.

A file that cannot be read (binary, empty, not UTF-8, a broken PDF) becomes a one-line warning naming it;
ingestion goes on with the rest.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from knowledge.agents import default_agent_names, join_words

SUPPORTED_SUFFIXES = {".md", ".markdown", ".txt", ".html", ".htm", ".pdf"}
_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*\n", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Document:
    source: str  # path relative to its corpus root, posix
    title: str
    agent: str
    text: str  # Markdown-like text: headings as '#' lines
    content_hash: str
    cache: bool = False  # kept whole in the agent's prompt (CAG)
    meta: dict[str, Any] = field(default_factory=dict)


class UnreadableFile(ValueError):
    """A file that cannot be ingested; the message is the one-line warning shown to the user."""


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _decode(path: Path, data: bytes) -> str:
    if not data.strip():
        raise UnreadableFile(f"{path}: empty file, skipped")
    if b"\x00" in data[:8192]:
        raise UnreadableFile(f"{path}: binary file, skipped")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnreadableFile(f"{path}: not UTF-8 (byte {exc.start}), skipped; save it as UTF-8") from exc


def split_front_matter(text: str) -> tuple[dict[str, Any], str]:
    """(front matter as a dict, the text after it); no or unreadable front matter gives ({}, text)."""
    match = _FRONT_MATTER.match(text)
    if not match:
        return {}, text
    try:
        meta = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError:
        meta = {}
    return (meta if isinstance(meta, dict) else {}), text[match.end() :]


def _html_to_text(html: str) -> tuple[str, str]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    for tag in soup(["script", "style", "nav", "footer"]):
        tag.decompose()
    title = soup.title.get_text(strip=True) if soup.title else ""
    lines: list[str] = []
    for element in soup.find_all(["h1", "h2", "h3", "h4", "p", "li", "pre", "td"]):
        text = element.get_text(" ", strip=True) if element.name != "pre" else element.get_text()
        if not text:
            continue
        if element.name in ("h1", "h2", "h3", "h4"):
            lines.append(f"\n{'#' * int(element.name[1])} {text}\n")
            title = title or (text if element.name == "h1" else "")
        elif element.name == "pre":
            lines.append(f"```\n{text.strip()}\n```")
        elif element.name == "li":
            lines.append(f"- {text}")
        else:
            lines.append(text)
    return title, "\n".join(lines)


def _pdf_to_text(path: Path, data: bytes) -> tuple[str, str]:
    """(title from the PDF's metadata or "", text of every page, pages separated by blank lines)."""
    import io

    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        pages = [page.extract_text() or "" for page in reader.pages]
        title = str((reader.metadata or {}).get("/Title") or "").strip()
    except Exception as exc:  # noqa: BLE001 - any parser failure is one warning
        raise UnreadableFile(f"{path}: unreadable PDF ({type(exc).__name__}), skipped") from exc
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    if not text:
        raise UnreadableFile(f"{path}: PDF has no extractable text, skipped")
    return title, text


def _first_heading(text: str) -> str:
    match = re.search(r"^#\s+(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else ""


def agent_for(relative: Path, meta: dict[str, Any], agents: Collection[str]) -> str | None:
    """Front matter `agent:` first, else the first folder under the corpus root named after an agent.

    `agents` are the names from the agents file, so a new agent's `docs/<name>/` folder needs no code."""
    declared = str(meta.get("agent", "")).strip().lower()
    if declared in agents:
        return declared
    for part in relative.parts[:-1]:
        if part.lower() in agents:
            return part.lower()
    return None


def source_for(path: Path, root: Path) -> str:
    """A file's stable name: its path relative to the corpus root, in posix form (the same on every OS)."""
    return (path.relative_to(root) if path.is_relative_to(root) else Path(path.name)).as_posix()


def load_document(path: Path, root: Path, agents: Collection[str] | None = None) -> Document | None:
    """Read one file. Returns None for files that ask not to be ingested (`ingest: false`); raises
    `UnreadableFile` for a file that cannot be read, with the one-line warning as its message.

    `agents`: the agent names a file may belong to (default: the shipped agents file's)."""
    agents = default_agent_names() if agents is None else agents
    relative = Path(source_for(path, root))
    data = path.read_bytes()
    digest = content_hash(data)
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        meta: dict[str, Any] = {}
        title, text = _pdf_to_text(path, data)
    else:
        raw = _decode(path, data)
        if suffix in (".html", ".htm"):
            meta = {}
            title, text = _html_to_text(raw)
        else:
            meta, text = split_front_matter(raw)
            title = str(meta.get("title", "")).strip()
    if meta.get("ingest") is False:
        return None
    if not text.strip():
        raise UnreadableFile(f"{path}: no text after the front matter, skipped")
    agent = agent_for(relative, meta, agents)
    if agent is None:
        folders = join_words([f"{name}/" for name in agents], "or")
        raise UnreadableFile(f"{path}: no agent; put it under {folders} or add 'agent:' front matter, skipped")
    title = title or _first_heading(text) or path.stem.replace("-", " ").replace("_", " ").capitalize()
    return Document(
        source=relative.as_posix(),
        title=title,
        agent=agent,
        text=text.strip(),
        content_hash=digest,
        cache=bool(meta.get("cache", False)),
        meta={k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool))},
    )


def _root_of_single_file(file: Path, agents: Collection[str]) -> Path:
    """For `ingest docs/billing/x.md`: root at `docs/`, so the source is `billing/x.md` (as when the folder is
    ingested) and the agent comes from the folder name."""
    for ancestor in file.parents:
        if ancestor.name.lower() in agents:
            return ancestor.parent
    return file.parent


def discover(paths: list[Path], agents: Collection[str] | None = None) -> list[tuple[Path, Path]]:
    """(file, root) pairs for every supported file under the given files or folders, in a stable order.

    `agents` (default: the shipped agents file's names) place a single file's root above its agent folder."""
    agents = default_agent_names() if agents is None else agents
    found: list[tuple[Path, Path]] = []
    for given in paths:
        given = given.resolve()
        if given.is_file():
            found.append((given, _root_of_single_file(given, agents)))
        elif given.is_dir():
            for file in sorted(given.rglob("*")):
                if file.is_file() and file.suffix.lower() in SUPPORTED_SUFFIXES:
                    found.append((file, given))
    return found
