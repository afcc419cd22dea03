"""OpenTelemetry traces of every turn: front-end receive → route → retrieve → model → each platform write.

Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` is set: then `setup_tracing` installs an SDK tracer provider with a
batching OTLP/HTTP exporter (the standard `OTEL_*` variables, headers and so on, apply). Otherwise nothing is
set up and `span()` uses OpenTelemetry's API-only no-op tracer, which costs a context-manager per step.

Spans and attributes:
- `switchboard.turn` (started by the front-end: `begin_turn`): `switchboard.platform`,
  `switchboard.session` (the session key *hashed*: traces leave the machine, session keys name users' threads),
  `switchboard.turn_id`, then the outcome: agent, status, confidence, declined, first-token and total ms.
- `switchboard.route` (graph router): chosen agent, reason, handoff, route ms.
- `switchboard.retrieve` (agent node): agent, passages, best score.
- `switchboard.model` (agent node, model call or offline answer): agent, output tokens.
- `switchboard.write` (each platform call of the renderer): write kind (post/edit/finalize).

The turn span is made current with `contextvars`, so the graph's tasks and the renderer's flusher, started inside
the turn, parent their spans to it; the log context (`core.logging_setup`) carries the same turn id and trace id.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import uuid
from collections.abc import Iterator
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace

from core.logging_setup import bind_log_context, reset_log_context

log = logging.getLogger(__name__)
INSTRUMENTATION = "switchboard"
_provider: Any = None  # the SDK provider set up here (or by a test): spans go to it, not to the global one


def hash_key(session_key: str) -> str:
    """A stable, non-reversible name for a session in traces (sha256, 16 hex digits)."""
    return hashlib.sha256(session_key.encode("utf-8")).hexdigest()[:16]


def tracer() -> trace.Tracer:
    provider = _provider if _provider is not None else trace.get_tracer_provider()
    return provider.get_tracer(INSTRUMENTATION)


def install(provider: Any) -> Any:
    """Send spans to `provider` (an SDK `TracerProvider`), or back to the global default with None; returns the
    previous one. Tests use this with an in-memory exporter."""
    global _provider
    previous, _provider = _provider, provider
    return previous


def setup_tracing(settings: Any) -> Any:
    """With OTEL_EXPORTER_OTLP_ENDPOINT: an SDK provider exporting batches over OTLP/HTTP to
    `<endpoint>/v1/traces`; returns it (call `shutdown()` on it at exit to flush). Without: None, nothing set up."""
    endpoint = getattr(settings, "otel_exporter_otlp_endpoint", None)
    if not endpoint:
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create(
        {"service.name": getattr(settings, "otel_service_name", "switchboard")}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=traces_url(endpoint))))
    install(provider)
    log.info("tracing: exporting spans over OTLP/HTTP to %s", traces_url(endpoint))
    return provider


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL of a base endpoint, as the OpenTelemetry spec derives it."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else f"{endpoint}/v1/traces"


def _clean(attributes: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attributes.items() if v is not None}


@contextlib.contextmanager
def span(name: str, **attributes: Any) -> Iterator[Any]:
    """A child span of the current one (the turn's) for one step; attributes that are None are left out.
    Attribute names without a dot get the `switchboard.` prefix. Never raises because of tracing."""
    attrs = _clean({(k if "." in k else f"switchboard.{k}"): v for k, v in attributes.items()})
    with tracer().start_as_current_span(name, attributes=attrs) as current:
        yield current


def annotate(current: Any, **attributes: Any) -> None:
    """Set outcome attributes on a span (None values skipped)."""
    if current is None or not current.is_recording():
        return
    for key, value in _clean(attributes).items():
        current.set_attribute(key if "." in key else f"switchboard.{key}", value)


class Turn:
    """The root span of one turn plus its log context, begun by a front-end and ended once.

    Made current by attaching to the context of the coroutine that begins it (not a `with` block), so a
    front-end can begin and end it around existing code; `end` must be called in the same coroutine."""

    def __init__(self, platform: str, session_key: str) -> None:
        self.turn_id = uuid.uuid4().hex
        self.span = tracer().start_span("switchboard.turn", attributes={
            "switchboard.platform": platform, "switchboard.session": hash_key(session_key),
            "switchboard.turn_id": self.turn_id})
        self._token = otel_context.attach(trace.set_span_in_context(self.span))
        self._log = bind_log_context(session_key, self.turn_id)
        self._ended = False

    @property
    def trace_id(self) -> str | None:
        ctx = self.span.get_span_context()
        return format(ctx.trace_id, "032x") if ctx.is_valid else None

    def end(self, **outcome: Any) -> None:
        if self._ended:
            return
        self._ended = True
        annotate(self.span, **outcome)
        self.span.end()
        with contextlib.suppress(Exception):  # detaching in another context only warns; never break a reply
            otel_context.detach(self._token)
        reset_log_context(self._log)


def begin_turn(platform: str, session_key: str) -> Turn:
    return Turn(platform, session_key)


def start_step(name: str, **attributes: Any) -> Any:
    """A child span of the current one that is not made current (for a step whose code should not be
    re-indented into a `with` block); end it with `end_step`."""
    attrs = _clean({(k if "." in k else f"switchboard.{k}"): v for k, v in attributes.items()})
    return tracer().start_span(name, attributes=attrs)


def end_step(step: Any, **attributes: Any) -> None:
    annotate(step, **attributes)
    step.end()
