"""Turning what sources return into the Markdown-like text the chunker reads (headings as `#` lines).

HTML bodies (Confluence storage format, Zendesk articles) go through markdownify, after Confluence's own
elements are made plain HTML: a code macro becomes a fenced block, other macros keep only their text. Markdown
files (GitHub) keep their text, with YAML front matter read for `title:` and `agent:`.
"""

from __future__ import annotations

import re

from knowledge.loaders import split_front_matter

__all__ = ["confluence_storage_to_markdown", "first_heading", "html_to_markdown", "split_front_matter"]

_BLANK_RUNS = re.compile(r"\n{3,}")


def html_to_markdown(html: str) -> str:
    """HTML to Markdown with ATX headings (`## Title`), scripts and styles dropped, blank runs collapsed."""
    from markdownify import markdownify

    text = markdownify(html, heading_style="ATX", bullets="-", strip=["script", "style", "img"])
    return _BLANK_RUNS.sub("\n\n", text).strip()


def confluence_storage_to_markdown(storage: str) -> str:
    """Confluence storage format (XHTML with `ac:` macros) to Markdown."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(storage, "html.parser")
    for macro in soup.find_all("ac:structured-macro"):
        name = macro.get("ac:name", "")
        body = macro.find("ac:plain-text-body")
        if name == "code" and body is not None:
            language = macro.find("ac:parameter", attrs={"ac:name": "language"})
            pre = soup.new_tag("pre")
            code = soup.new_tag("code")
            if language is not None:
                code["class"] = f"language-{language.get_text(strip=True)}"
            code.string = body.get_text()
            pre.append(code)
            macro.replace_with(pre)
        elif name in ("toc", "children", "attachments", "jira"):
            macro.decompose()  # generated listings, no text of their own
        else:
            for parameter in macro.find_all("ac:parameter"):
                parameter.decompose()
            macro.unwrap()
    for element in soup.find_all(re.compile(r"^(ac|ri):")):
        element.unwrap()
    return html_to_markdown(str(soup))


def first_heading(text: str) -> str:
    match = re.search(r"^#\s+(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else ""
