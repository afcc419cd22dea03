"""The handoff webhook: a signed JSON POST to HANDOFF_WEBHOOK_URL (a ticketing tool, or the web's only way to a
person), retried with backoff until it lands or the attempts run out.

Signing, so a receiver can trust the payload and refuse a replay:
- `X-Switchboard-Timestamp`: Unix seconds when the attempt was sent;
- `X-Switchboard-Signature`: `sha256=` + hex HMAC-SHA256, keyed with HANDOFF_WEBHOOK_SECRET, of
  `"{timestamp}.{raw body}"` (the body exactly as received, before any JSON parsing);
- `X-Switchboard-Delivery`: one id per handoff, the same on every retry, so a receiver can drop duplicates.
Verify by recomputing the HMAC and comparing in constant time, and refuse timestamps older than five minutes.

Retries: 429 (after its `Retry-After`, at most `MAX_RETRY_AFTER_S`), 5xx, timeouts and refused connections,
after 1 s, 2 s, 4 s…, up to `attempts` tries in all; any other 4xx is final (retrying cannot fix the request).
The sleep is injected, so tests check the schedule without waiting it out.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

log = logging.getLogger(__name__)

BASE_DELAY_S = 1.0
MAX_RETRY_AFTER_S = 60.0
TIMESTAMP_HEADER = "X-Switchboard-Timestamp"
SIGNATURE_HEADER = "X-Switchboard-Signature"
DELIVERY_HEADER = "X-Switchboard-Delivery"


@dataclass(frozen=True, slots=True)
class Delivery:
    """How a webhook delivery ended: `delivered`, after `attempts` tries; `problem` says why not."""

    delivered: bool
    attempts: int
    status: int | None = None
    problem: str = ""


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The `X-Switchboard-Signature` value for `body` sent at `timestamp`."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(secret: str, timestamp: str, body: bytes, received: str, *, max_age_s: float = 300.0,
           now: float | None = None) -> bool:
    """What a receiver does: the signature matches and the timestamp is recent (a reference for integrators)."""
    try:
        age = abs((time.time() if now is None else now) - int(timestamp))
    except ValueError:
        return False
    return age <= max_age_s and hmac.compare_digest(signature(secret, timestamp, body), received)


def _retry_after(response: aiohttp.ClientResponse) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return min(MAX_RETRY_AFTER_S, max(0.0, float(value))) if value is not None else None
    except ValueError:
        return None


async def deliver(url: str, payload: dict[str, Any], *, secret: str, attempts: int = 4, timeout_s: float = 10.0,
                  sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                  session: aiohttp.ClientSession | None = None) -> Delivery:
    """POST `payload` to `url`, signed, retrying as the module docstring says."""
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    delivery_id = str(uuid.uuid4())
    own = session is None
    client = session or aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s))
    status: int | None = None
    problem = ""
    try:
        for attempt in range(1, attempts + 1):
            timestamp = str(int(time.time()))
            headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: timestamp,
                       SIGNATURE_HEADER: signature(secret, timestamp, body), DELIVERY_HEADER: delivery_id}
            wait = BASE_DELAY_S * 2 ** (attempt - 1)
            try:
                async with client.post(url, data=body, headers=headers) as response:
                    status = response.status
                    if 200 <= status < 300:
                        return Delivery(True, attempt, status)
                    problem = f"HTTP {status}"
                    if status != 429 and status < 500:
                        return Delivery(False, attempt, status, problem)  # the request itself is refused
                    wait = _retry_after(response) if status == 429 and _retry_after(response) is not None else wait
            except (TimeoutError, aiohttp.ClientError) as exc:
                status, problem = None, f"{type(exc).__name__}: {exc}".rstrip(": ")
            log.info("handoff webhook attempt %d of %d failed (%s)", attempt, attempts, problem)
            if attempt < attempts:
                await sleep(wait)
        return Delivery(False, attempts, status, problem)
    finally:
        if own:
            await client.close()
