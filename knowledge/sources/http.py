"""The HTTP policy every source shares: timeouts, retries, and 429s that wait as long as `Retry-After` says.

Connectors built on `requests` (website, sitemaps through ultimate-sitemap-parser, Zendesk) get a session from
`session()`, whose urllib3 retry waits `Retry-After` on 429/503 and backs off on other 5xx; the libraries with
their own retry loop (PyGithub, notion-client, atlassian-python-api) are configured from the same `HttpPolicy`.
A `Retry-After` longer than `max_retry_after_s` is not slept through: the sync of that source fails, keeps what
it had, and tries again later, so one throttled source cannot stall the others for an hour.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.util.retry import Retry

USER_AGENT = "SwitchboardBot/0.1 (+knowledge sync)"


@dataclass(frozen=True)
class HttpPolicy:
    timeout_s: float = 30.0
    retries: int = 3
    backoff_s: float = 0.5  # base of the exponential backoff for 5xx without Retry-After (0: retry at once)
    max_retry_after_s: float = 120.0
    user_agent: str = USER_AGENT


class RetryAfterTooLong(Urllib3Error):
    """A server asked us to wait longer than the policy allows. (A urllib3 error, not an OSError, so requests
    lets it through as it is instead of calling it a connection error.)"""


class _Retry(Retry):
    """urllib3's Retry, refusing to sleep through a Retry-After longer than the policy's cap."""

    max_retry_after_s: float = 120.0

    def new(self, **kw: Any) -> _Retry:
        retry = super().new(**kw)
        retry.max_retry_after_s = self.max_retry_after_s
        return retry

    def sleep_for_retry(self, response: Any = None) -> bool:
        retry_after = self.get_retry_after(response) if response is not None else None
        if retry_after is not None and retry_after > self.max_retry_after_s:
            raise RetryAfterTooLong(f"HTTP 429 asking to wait {retry_after:.0f}s, longer than "
                                    f"{self.max_retry_after_s:.0f}s (SOURCES_MAX_RETRY_AFTER_S)")
        return super().sleep_for_retry(response)


def retry(policy: HttpPolicy) -> Retry:
    """The urllib3 retry for `policy`: 429/502/503/504 retried (Retry-After honoured), the last answer returned
    as it is (not raised) so the caller can say what the server said."""
    rule = _Retry(
        total=policy.retries,
        connect=policy.retries,
        read=policy.retries,
        status=policy.retries,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=frozenset({"GET", "HEAD"}),
        backoff_factor=policy.backoff_s,
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    rule.max_retry_after_s = policy.max_retry_after_s
    return rule


def session(policy: HttpPolicy, *, auth: tuple[str, str] | None = None,
            headers: dict[str, str] | None = None) -> requests.Session:
    """A `requests.Session` with the policy's retries mounted for http and https."""
    s = requests.Session()
    adapter = HTTPAdapter(max_retries=retry(policy), pool_maxsize=4)
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    s.headers["User-Agent"] = policy.user_agent
    if headers:
        s.headers.update(headers)
    if auth:
        s.auth = auth
    return s


FETCH_ERRORS = (requests.RequestException, RetryAfterTooLong)  # what one request through `session()` can raise


def describe(exc: BaseException) -> str:
    """A short reason for a request that failed: the wait asked for, or the kind of failure."""
    return str(exc) if isinstance(exc, RetryAfterTooLong) else type(exc).__name__
