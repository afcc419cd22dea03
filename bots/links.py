"""Which links in an answer may be clickable: one policy for Slack, Discord and the chat page (issue 15, item 8).

Why: a document planted in the knowledge base put a masked phishing link (`[security portal](https://evil…)`)
into answers. A link is clickable only when its host is on the allow-list (or a subdomain of an entry): the
domains of the knowledge sources (SOURCES_FILE urls, the `url:` front matter of the shipped documents) plus
LINK_DOMAINS. Any other link is shown as its label and its full URL as code (`label (`https://…`)`), so the
reader sees where it goes and no client turns it into a link (Slack and Discord link bare URLs, not code).

`defang(markdown)` rewrites the model's Markdown before a platform renderer sees it (`bots.slack.mrkdwn`, the
Discord look in `bots.discord.surface`); the chat page filters in its own renderer with the same list, which the
server sends in GET /agents (`link_domains`). Code blocks and code spans are left alone: nothing in them links.

The running process's policy is installed once by the composition root (`switchboard run` → `configure`);
until then (pure unit use) every link is allowed, as before this policy existed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

# Kinds of knowledge source whose documents live on a fixed public host.
KIND_HOSTS = {"github": ("github.com",), "notion": ("notion.so", "notion.site")}
_FENCE = re.compile(r"^ {0,3}(```|~~~)[^\n]*\n.*?(?:^ {0,3}\1[ \t]*$|\Z)", re.DOTALL | re.MULTILINE)
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
_MASKED = re.compile(r"(!?)\[([^\]\n]*)\]\(\s*<?((?:https?://|mailto:)[^\s)>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
BARE_URL = _BARE = re.compile(r"(?<![\w/`])(?:https?://|mailto:)[^\s<>()`]*[^\s<>()`.,;:!?'\"]")
_SLOT = "\ue003{}\ue004"
_SLOT_RE = re.compile("\ue003(\\d+)\ue004")


def host_of(url: str) -> str | None:
    """The lower-case host a link goes to (a mailto's domain), or None when it has none."""
    if url.lower().startswith("mailto:"):
        address = url[7:].split("?", 1)[0]
        return address.rpartition("@")[2].lower().strip(".") or None if "@" in address else None
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    return host.lower().strip(".") if host else None


@dataclass(frozen=True)
class LinkPolicy:
    """The allow-list; `domains=None` allows every link (no policy configured)."""

    domains: frozenset[str] | None

    @classmethod
    def of(cls, domains: Iterable[str]) -> LinkPolicy:
        cleaned = {_domain(d) for d in domains}
        return cls(frozenset(d for d in cleaned if d))

    def allows(self, url: str) -> bool:
        if self.domains is None:
            return True
        host = host_of(url)
        return host is not None and any(host == d or host.endswith("." + d) for d in self.domains)

    def defang(self, markdown: str) -> str:
        """The Markdown with every link this policy refuses shown as label and full URL in code, not a link."""
        if self.domains is None or not markdown:
            return markdown
        slots: list[str] = []

        def keep(value: str) -> str:
            slots.append(value)
            return _SLOT.format(len(slots) - 1)

        text = _FENCE.sub(lambda m: keep(m.group(0)), markdown)
        text = _CODE_SPAN.sub(lambda m: keep(m.group(0)), text)
        text = _MASKED.sub(lambda m: keep(m.group(0) if self.allows(m.group(3)) else plain(m.group(2), m.group(3))),
                           text)
        text = _BARE.sub(lambda m: m.group(0) if self.allows(m.group(0)) else keep(_code(m.group(0))), text)
        while _SLOT_RE.search(text):  # a kept span may hold another's placeholder
            text = _SLOT_RE.sub(lambda m: slots[int(m.group(1))], text)
        return text


def plain(label: str, url: str) -> str:
    """A refused link as text: its label (when it says something else) and its full URL as code."""
    label = label.strip()
    return f"{label} ({_code(url)})" if label and label != url else _code(url)


def _code(url: str) -> str:
    return f"`{url.replace('`', '%60')}`"


def _domain(value: str) -> str:
    value = value.strip().lower()
    if "://" in value:
        value = urlsplit(value).hostname or ""
    return value.removeprefix("*.").strip(".")


# --- where the allow-list comes from --------------------------------------------------------------------------

def policy_for(settings: Any) -> LinkPolicy:
    """The allow-list for these settings: LINK_DOMAINS, the SOURCES_FILE hosts, the documents' `url:`."""
    domains = set(getattr(settings, "link_domains", None) or ())
    sources_file = getattr(settings, "sources_file", None)
    if sources_file:
        domains |= source_domains(Path(sources_file))
    docs_dir = getattr(settings, "docs_dir", None)
    if docs_dir:
        domains |= document_domains(Path(docs_dir))
    return LinkPolicy.of(domains)


def source_domains(path: Path) -> set[str]:
    """The hosts of the sources file's entries (a website's, a Confluence or Zendesk url; GitHub; Notion)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        log.warning("Link allow-list: cannot read %s (%s); its sources' domains are not allowed", path, exc)
        return set()
    found: set[str] = set()
    for entry in data.get("sources", []) if isinstance(data, dict) else []:
        if not isinstance(entry, dict):
            continue
        found.update(KIND_HOSTS.get(str(entry.get("kind")), ()))
        for key in ("url", "api_url"):
            if isinstance(entry.get(key), str) and (host := host_of(entry[key])):
                found.add(host)
    return found


def document_domains(root: Path) -> set[str]:
    """The hosts named by the documents' `url:` front matter under `root`."""
    from knowledge.loaders import split_front_matter

    found: set[str] = set()
    for path in sorted(root.rglob("*.md")) if root.is_dir() else ():
        try:
            meta, _ = split_front_matter(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            continue
        if isinstance(meta.get("url"), str) and (host := host_of(meta["url"])):
            found.add(host)
    return found


_current = LinkPolicy(None)


def configure(policy: LinkPolicy) -> LinkPolicy:
    """Install the process's policy (the composition root does, once); returns the previous one."""
    global _current
    previous, _current = _current, policy
    return previous


def current() -> LinkPolicy:
    return _current


def defang(markdown: str, policy: LinkPolicy | None = None) -> str:
    """`markdown` under `policy` (default: the process's)."""
    return (policy or _current).defang(markdown)
