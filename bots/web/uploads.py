"""`POST /chat` as `multipart/form-data`: the question's fields and the files uploaded with it (the chat page's
upload control, or `curl -F`).

The fields are the JSON body's (`message`, `session_id`, `message_id`, `session_secret`), each a form field; every
other part with a filename is a file. Files are read in chunks into memory (never to disk) and each is cut off at
MAX_ATTACHMENT_MB: the rest of an oversized part is read and dropped, so it costs no memory and the question is
still answered with a sentence about the file (`bots.attachments`). A body larger than every allowed file together
is refused before a byte of it is read (413). More than MAX_FILES files is an invalid request (422, as the spec's
`maxItems` says), and a form aiohttp cannot parse (a header that is not valid HTTP, an unknown encoding, a broken
boundary) is a 400: every malformed form gets a documented JSON error, never a 500.
"""

from __future__ import annotations

from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from bots.attachments import DEFAULT_QUESTION, LocalFile
from bots.web.errors import BodyError, json_error

MAX_FILES = 5
FIELDS = ("message", "session_id", "message_id", "session_secret")
FORM_EXAMPLE = "-F message='your question' -F file=@app.log"
CHUNK = 64 * 1024
# What aiohttp raises for a form it cannot parse: ValueError (a bad boundary, Content-Length or charset),
# LookupError (an unknown charset), RuntimeError (an unknown Content-Encoding), AssertionError (a missing
# multipart header) and HttpProcessingError (a part header that is not valid HTTP, e.g. a raw non-ASCII name).
UNREADABLE = (ValueError, LookupError, RuntimeError, AssertionError, HttpProcessingError)


def is_multipart(request: web.Request) -> bool:
    return request.content_type == "multipart/form-data"


async def read_chat_form(request: web.Request, *, max_bytes: int, max_field_chars: int
                         ) -> tuple[dict[str, Any], list[LocalFile]]:
    """The form's fields (as the JSON body would have them) and its files; `BodyError` with a 400/413/422 JSON
    response for a body that cannot be a chat question. A form with files and no message asks about the files."""
    limit = MAX_FILES * max_bytes + 4 * max_field_chars + 64 * 1024
    if request.content_length is not None and request.content_length > limit:
        raise BodyError(json_error(413, "The upload is too large.",
                                   f"Send at most {MAX_FILES} files of up to {max_bytes // (1024 * 1024)} MB each."))
    try:
        reader = await request.multipart()
    except UNREADABLE:
        raise BodyError(json_error(400, "The form could not be read.", f"Send it as {FORM_EXAMPLE}.")) from None
    body: dict[str, Any] = {}
    files: list[LocalFile] = []
    try:
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise BodyError(json_error(400, "Nested multipart forms are not supported.",
                                           f"Send {FORM_EXAMPLE}."))
            if part.filename is not None:
                if len(files) >= MAX_FILES:
                    raise BodyError(json_error(422, f"At most {MAX_FILES} files can be sent with one question.",
                                               "Send the others with a next question."))
                files.append(await _read_file(part, max_bytes))
            elif part.name in FIELDS:
                data = await _read_capped(part, max_field_chars * 4)
                if data is None:
                    raise BodyError(json_error(413, f"The field {part.name!r} is too long."))
                body[part.name] = data.decode(part.get_charset("utf-8"), errors="replace")
            else:
                await part.release()
    except BodyError:
        raise
    except UNREADABLE:
        raise BodyError(json_error(400, "The form could not be read.", f"Send it as {FORM_EXAMPLE}.")) from None
    if files and not str(body.get("message") or "").strip():
        body["message"] = DEFAULT_QUESTION
    return body, files


async def _read_file(part: BodyPartReader, max_bytes: int) -> LocalFile:
    """One uploaded file in memory, or a `too_large` marker once it passes `max_bytes` (the rest is dropped)."""
    name = part.filename or "file"
    data = await _read_capped(part, max_bytes)
    mime = part.headers.get("Content-Type", "")
    return LocalFile(name, data, mime, too_large=data is None)


async def _read_capped(part: BodyPartReader, max_bytes: int) -> bytes | None:
    """The part's bytes, or None when it is larger than `max_bytes` (then read to its end and dropped)."""
    body = bytearray()
    while chunk := await part.read_chunk(CHUNK):
        if len(body) + len(chunk) > max_bytes:
            while await part.read_chunk(CHUNK):
                pass
            return None
        body += chunk
    return bytes(part.decode(bytes(body)))
