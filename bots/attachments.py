"""Files people attach, fetched and read for the model: platform-neutral, in memory, never logged.

A front-end lists the message's files as `RemoteFile`s (Slack: `url_private_download` with the bot token; Discord:
the CDN URL; the web: bytes already uploaded, `LocalFile`) and calls `prepare()`, which returns the
`core.attachments.Attachment`s the model reads and one plain sentence per file it could not use:

- a declared size over MAX_ATTACHMENT_MB is refused before any byte is fetched, and a download is cut off at that
  size whatever was declared (a platform's size can be wrong; a body can be endless);
- the type is sniffed from the bytes (PDF and image signatures, NUL bytes for other binaries), the name and the
  declared type only break ties, so a `.txt` that is really a ZIP is refused instead of fed to the model as noise;
- text, logs, code, CSV and JSON are decoded and cut to the message's share of MAX_ATTACHMENT_CHARS, keeping the
  start and the end (a log's error is usually last) with a line saying what was left out; a PDF's text comes from
  pypdf; PNG, JPEG, GIF and WebP images are kept as bytes for a model with vision (`core.attachments` decides);
- anything else, a failed download (404, refused, timeout) or a PDF without text is one sentence for the reply.

Files stay in memory (never written to disk) and neither their names, URLs nor contents are logged: a log line
says how many files were refused and why, by kind of failure only.
"""

from __future__ import annotations

import asyncio
import io
import logging
import mimetypes
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp

from core.attachments import Attachment
from core.turn_input import TurnInput

log = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_S = 30.0
CHUNK = 64 * 1024
IMAGE_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF87a", "image/gif"),
                    (b"GIF89a", "image/gif"))
TEXT_TYPES = ("application/json", "application/xml", "application/x-yaml", "application/yaml", "application/csv",
              "application/javascript", "application/x-sh", "application/sql", "application/x-ndjson")
READABLE = "I can read text, logs, code, CSV, JSON, PDFs and images"
DEFAULT_QUESTION = "Please look at the attached file."


@dataclass(frozen=True, slots=True)
class RemoteFile:
    """A file to fetch: where, with which headers (a bearer token: kept out of repr), and what the platform says
    it is. `size` is the declared size in bytes (None: unknown)."""

    name: str
    url: str
    size: int | None = None
    mime: str = ""
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True, slots=True)
class LocalFile:
    """A file already received (a web upload): its bytes, or None with `too_large` when it was cut off."""

    name: str
    data: bytes | None
    mime: str = ""
    too_large: bool = False


class Refused(Exception):
    """A file that cannot be used; the message is the sentence the user reads."""


def human_size(size: float) -> str:
    """'50 MB', '1.5 MB', '800 KB': how a person says a file's size."""
    mb = size / (1024 * 1024)
    if mb >= 1:
        return f"{mb:.0f} MB" if mb >= 10 or mb.is_integer() else f"{mb:.1f} MB"
    return f"{max(1, round(size / 1024))} KB"


def too_large(name: str, size: int | None, max_bytes: int) -> str:
    shown = f" is {human_size(size)}" if size else " is too large"
    return f"I didn't read “{name}”: it{shown}, and the limit is {human_size(max_bytes)}."


async def download(session: aiohttp.ClientSession, file: RemoteFile, max_bytes: int,
                   timeout_s: float = DOWNLOAD_TIMEOUT_S) -> bytes:
    """The file's bytes, read in chunks and abandoned as soon as they pass `max_bytes`; `Refused` otherwise."""
    if file.size is not None and file.size > max_bytes:
        raise Refused(too_large(file.name, file.size, max_bytes))
    try:
        async with asyncio.timeout(timeout_s), session.get(file.url, headers=dict(file.headers),
                                                           allow_redirects=True) as response:
            if response.status != 200:
                log.info("attachments: a download answered HTTP %s", response.status)
                raise Refused(f"I couldn't download “{file.name}” (the server said {response.status}); "
                              "try attaching it again.")
            declared = response.content_length
            if declared is not None and declared > max_bytes:
                raise Refused(too_large(file.name, declared, max_bytes))
            body = bytearray()
            async for chunk in response.content.iter_chunked(CHUNK):
                body += chunk
                if len(body) > max_bytes:  # the connection is closed with the response: the rest never comes
                    raise Refused(too_large(file.name, None, max_bytes))
            return bytes(body)
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.info("attachments: a download failed (%s)", type(exc).__name__)
        raise Refused(f"I couldn't download “{file.name}”; try attaching it again.") from None


def sniff(data: bytes, name: str, mime: str = "") -> str:
    """'pdf', 'image/<type>', 'text' or 'binary', from the bytes first."""
    if data.startswith(b"%PDF-"):
        return "pdf"
    for signature, image in IMAGE_SIGNATURES:
        if data.startswith(signature):
            return image
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    head = data[:8192]
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 text has NULs: its BOM says so first
        return "text"
    if b"\x00" in head:
        return "binary"
    return "text"


def decode(data: bytes) -> str:
    """Text from bytes: a BOM's encoding, else UTF-8 with anything invalid replaced (Latin-1 logs stay readable)."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace")
    return data.decode("utf-8-sig", errors="replace").replace("\r\n", "\n")


def cut(text: str, budget: int) -> str:
    """`text` within `budget` characters: the start and the end kept (a log's error is usually at the end), and a
    line in the middle saying how much was left out."""
    if len(text) <= budget:
        return text
    head = budget * 2 // 3
    tail = budget - head
    left_out = len(text) - head - tail
    return (f"{text[:head]}\n[… {left_out:,} characters of {len(text):,} left out here to stay within the "
            f"attachment budget …]\n{text[-tail:] if tail else ''}")


def pdf_text(data: bytes) -> str:
    """A PDF's text, page after page (pypdf, in memory)."""
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    if reader.is_encrypted:
        try:
            reader.decrypt("")
        except Exception:  # noqa: BLE001 - pypdf raises several kinds; all mean "locked"
            raise Refused("locked") from None
    return "\n\n".join((page.extract_text() or "").strip() for page in reader.pages).strip()


def read(name: str, data: bytes, mime: str, budget: int) -> Attachment:
    """One downloaded file as an `Attachment` (text cut to `budget` characters), or `Refused`."""
    kind = sniff(data, name, mime)
    if kind == "pdf":
        try:
            text = pdf_text(data)
        except Refused:
            raise Refused(f"I couldn't read “{name}”: the PDF is password-protected.") from None
        except Exception:  # noqa: BLE001 - a damaged PDF is the user's problem to hear about, not a crash
            raise Refused(f"I couldn't read “{name}”: the PDF seems damaged.") from None
        if not text:
            raise Refused(f"I couldn't find any text in “{name}” (it may be a scan); paste the relevant part "
                          "as text.")
        return Attachment(name, "pdf", text=cut(text, budget), size=len(data))
    if kind.startswith("image/"):
        return Attachment(name, "image", data=data, mime=kind, size=len(data))
    if kind == "binary" or _unreadable_type(mime or mimetypes.guess_type(name)[0] or ""):
        raise Refused(f"I can't read “{name}”: {READABLE}.")
    return Attachment(name, "text", text=cut(decode(data), budget), size=len(data))


def _unreadable_type(mime: str) -> bool:
    """A declared type that says the bytes are not text even when they look like it (SVG and HTML are text;
    `application/octet-stream`, what platforms say of any unknown name, leaves it to the bytes)."""
    main = mime.split(";")[0].strip().lower()
    if not main or main.startswith("text/") or main in TEXT_TYPES or main.endswith(("+json", "+xml")):
        return False
    return main.startswith(("audio/", "video/", "font/")) or main in (
        "application/zip", "application/x-tar", "application/gzip",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document", "application/msword")


async def prepare(files: Sequence[RemoteFile | LocalFile], *, max_bytes: int, max_chars: int,
                  session: aiohttp.ClientSession | None = None,
                  timeout_s: float = DOWNLOAD_TIMEOUT_S) -> TurnInput:
    """The files as a `TurnInput` (attachments and notes): fetched one after the other (a message has a few),
    each text file getting what the ones before it left of `max_chars`."""
    if not files:
        return TurnInput()
    owned = session is None and any(isinstance(f, RemoteFile) for f in files)
    if owned:
        session = aiohttp.ClientSession()
    attachments: list[Attachment] = []
    notes: list[str] = []
    left = max_chars
    try:
        for file in files:
            try:
                if isinstance(file, LocalFile):
                    if file.too_large or file.data is None:
                        raise Refused(too_large(file.name, None, max_bytes))
                    data = file.data
                else:
                    assert session is not None
                    data = await download(session, file, max_bytes, timeout_s)
                if not data:
                    raise Refused(f"“{file.name}” is empty.")
                attachment = await asyncio.to_thread(read, file.name, data, file.mime, max(0, left))  # PDFs: CPU
                if attachment.kind != "image" and left <= 0:
                    raise Refused(f"I didn't read “{file.name}”: the files before it used the whole text budget.")
                left -= len(attachment.text)
                attachments.append(attachment)
            except Refused as refused:
                notes.append(str(refused))
    finally:
        if owned and session is not None:
            await session.close()
    if notes:
        log.info("attachments: %d of %d files could not be used", len(notes), len(files))
    return TurnInput(attachments=tuple(attachments), notes=tuple(notes))


def merged(extras: TurnInput | None, files: TurnInput) -> TurnInput:
    """The turn's input with the files added (the thread context a front-end already put there is kept)."""
    if extras is None:
        return files
    return replace(extras, attachments=(*extras.attachments, *files.attachments),
                   notes=(*extras.notes, *files.notes))


def with_files(inbound: Any, files: TurnInput) -> Any:
    """An `Inbound` carrying the files; a message that is only a file is asked about that file."""
    if not files.attachments and not files.notes:
        return inbound
    text = inbound.text or (DEFAULT_QUESTION if files.attachments else "")
    return replace(inbound, text=text, extras=merged(inbound.extras, files))


def max_bytes_of(settings: Any) -> int:
    return int(settings.max_attachment_mb * 1024 * 1024)
