"""Files attached to a question: how they reach the model, what the conversation keeps, and what the user is told.

Front-ends prepare files (`bots.attachments`: downloaded with a size cap, text extracted and cut to a budget) and
hand them over in `TurnInput.attachments` as `Attachment`s, with a sentence in `TurnInput.notes` for each file
they could not use. Here, platform-neutral:

- **The router sees the question alone.** The question's stored message keeps the question as its content, so
  routing, transcripts and summaries read what the person asked; the files ride along as short descriptors in
  `additional_kwargs["attachments"]` (name, kind, size: never their text or bytes).
- **The model sees the files on this turn only.** The agent node builds the model's question message with
  `question_message()`: the question (with its passages), then one text part per file, then, for a model that
  accepts images, one `image_url` data-URL part per image. The files travel in the turn's run context
  (`TurnContext.attachments`), which is never checkpointed: image bytes never enter the stored conversation, not
  even a failed turn's checkpoint, so a screenshot costs the checkpoint a few bytes of descriptor, not megabytes.
- **Notes reach the user before the answer.** `with_notes()` wraps the core's event stream: the sentences (a file
  refused, images a model cannot read) come as the reply's first words, on every platform alike, and the question
  is still answered.
"""

from __future__ import annotations

import base64
import contextlib
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from langchain_core.messages import HumanMessage

from core.events import Complete, Error, Event, Handoff, Token
from core.turn_input import TurnInput

Kind = Literal["text", "pdf", "image"]

# Model names that take image input (OpenAI's and the usual OpenAI-compatible servers' vision models); `auto`
# guesses from these. Older text-only names (gpt-3.5, gpt-4, o1-mini, o3-mini) do not match.
VISION_MODELS = re.compile(
    r"gpt-4o|gpt-4\.1|gpt-4\.5|gpt-4-turbo|gpt-5|chatgpt-4o|vision|^o1(?!-mini)|^o3(?!-mini)|^o4|omni|llava|"
    r"pixtral|qwen2?\.?5?-?vl|gemma-?3|llama-?3\.2-.*vision|llama-?4|claude-3|claude-(sonnet|opus|haiku)-4|gemini",
    re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Attachment:
    """One file ready for the model: `text` for text, logs, code, CSV, JSON and PDFs (already cut to the budget,
    with the cut said in the text); `data` (bytes) and `mime` for images."""

    name: str
    kind: Kind
    text: str = ""
    data: bytes = b""
    mime: str = ""
    size: int = 0  # bytes downloaded

    def descriptor(self) -> dict[str, Any]:
        """What the stored conversation keeps of the file: enough for a transcript to say it was there."""
        return {"name": self.name, "kind": self.kind, "size": self.size}


def redacted(attachments: Sequence[Any], redact: Callable[[str], str]) -> tuple[Any, ...]:
    """The files with REDACT applied to their text, as to the message itself, before the model sees them."""
    return tuple(replace(a, text=redact(a.text)) if isinstance(a, Attachment) and a.text else a for a in attachments)


def model_accepts_images(model: str) -> bool:
    """A guess from a model's name (OPENAI_VISION=auto); set OPENAI_VISION=true/false when it guesses wrong."""
    return bool(VISION_MODELS.search(model.rsplit("/", 1)[-1]))


def vision_enabled(settings: Any, has_model: bool = True) -> bool:
    """Whether images go to the model: never without a model (offline), else OPENAI_VISION, `auto` guessing."""
    if not has_model:
        return False
    choice = getattr(settings, "openai_vision", "auto")
    if isinstance(choice, bool):
        return choice
    return model_accepts_images(getattr(settings, "openai_model", ""))


def human_message(question: str, extras: TurnInput) -> HumanMessage:
    """The question's stored message: the question's text, the files as descriptors only (see the module doc)."""
    files = [a.descriptor() for a in extras.attachments if isinstance(a, Attachment)]
    return HumanMessage(question, additional_kwargs={"attachments": files} if files else {})


def _text_part(attachment: Attachment) -> dict[str, Any]:
    label = "PDF" if attachment.kind == "pdf" else "file"
    return {"type": "text", "text": f"Attached {label} “{attachment.name}”:\n```\n{attachment.text}\n```"}


def _image_part(attachment: Attachment) -> dict[str, Any]:
    data = base64.b64encode(attachment.data).decode("ascii")
    return {"type": "image_url", "image_url": {"url": f"data:{attachment.mime or 'image/png'};base64,{data}"}}


def question_message(text: str, attachments: Sequence[Any], vision: bool) -> HumanMessage:
    """The model's question message for this turn: `text` (the question with its passages) and the files as
    content parts; images only when the model accepts them. Without files, the plain text message as before."""
    files = [a for a in attachments if isinstance(a, Attachment)]
    parts: list[Any] = [_text_part(a) for a in files if a.kind != "image"]
    if vision:
        parts += [_image_part(a) for a in files if a.kind == "image" and a.data]
    if not parts:
        return HumanMessage(text)
    return HumanMessage([{"type": "text", "text": text}, *parts])


def notes_for(extras: TurnInput | None, *, has_model: bool, vision: bool) -> tuple[str, ...]:
    """The sentences the reply starts with: the front-end's (files refused), then what the model cannot read."""
    if extras is None:
        return ()
    notes = list(extras.notes)
    files = [a for a in extras.attachments if isinstance(a, Attachment)]
    images = [a.name for a in files if a.kind == "image"]
    others = [a.name for a in files if a.kind != "image"]
    if not has_model:
        if files:
            notes.append(f"I'm running without a language model right now, so I couldn't read {_names(files)}; "
                         "here is what the knowledge base says about your question.")
        return tuple(notes)
    if images and not vision:
        notes.append(f"I can't read images with this model, so I couldn't look at {_quoted(images)}"
                     f"{' (I did read the other files)' if others else ''}.")
    return tuple(notes)


def _names(files: Sequence[Attachment]) -> str:
    return _quoted([a.name for a in files])


def _quoted(names: Sequence[str]) -> str:
    quoted = [f"“{n}”" for n in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def notes_text(notes: Sequence[str]) -> str:
    """The notes as the reply's opening lines (each its own line, a blank line before the answer)."""
    return "".join(f"⚠️ {note}\n" for note in notes) + "\n" if notes else ""


async def with_notes(events: AsyncIterator[Event], notes: Sequence[str]) -> AsyncIterator[Event]:
    """The core's events with the notes shown first: as the first `Token` (before the answer's first words, or
    before `Complete` when nothing was streamed) and at the head of `Complete.text` / `Error.partial_text`. A
    handoff ends the turn with the desk's own sentence, so it gets none. The inner stream is always closed."""
    pending, shown = notes_text(notes), ""
    async with contextlib.aclosing(events):  # type: ignore[type-var]
        async for event in events:
            if pending and isinstance(event, Handoff):
                pending = ""
            elif pending and isinstance(event, (Token, Complete, Error)):
                yield Token(pending)
                pending, shown = "", pending
            if shown and isinstance(event, Complete):
                event = replace(event, text=shown + event.text)
            elif shown and isinstance(event, Error):
                event = replace(event, partial_text=shown + event.partial_text)
            yield event
