"""Confluence Cloud through atlassian-python-api's v2 client: a space's pages (cursor-paginated), each page's
storage format turned into Markdown, its labels for the agent rules; incremental by page version.

Listing asks for no bodies (`body-format=none`), so an unchanged page costs its share of one listing request;
only a page whose version number moved is read in full (its body and labels). A page keeps its id when it is
moved or renamed, and its store `source` is built from the id, so a move updates it instead of duplicating it.
Labels are read with a changed page: a label added to a page that is not edited applies at its next edit, or at
once with `switchboard sync --full`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from typing import Any

from knowledge.sources.base import (Failed, Item, Planned, SourceDocument, SourceError, SyncContext, Unchanged,
                                    http_problem)
from knowledge.sources.config import SourceSpec
from knowledge.sources.http import HttpPolicy
from knowledge.sources.markdown import confluence_storage_to_markdown

PAGE_LIMIT = 250  # the v2 API's largest page of results


class ConfluenceConnector:
    def __init__(self, spec: SourceSpec, policy: HttpPolicy, env: Mapping[str, str]) -> None:
        from atlassian import ConfluenceV2

        self.spec = spec
        self.base = str(spec.option("url")).rstrip("/")
        self.space = str(spec.option("space"))
        token = spec.secret("token_env", env)
        email = spec.plain_or_env("email", env)
        credentials: dict[str, Any] = {"username": email, "password": token} if email else {"token": token}
        with warnings.catch_warnings():  # the client warns that v1 methods are deprecated; we use v2 only
            warnings.simplefilter("ignore", DeprecationWarning)
            self.client = ConfluenceV2(
                self.base, timeout=int(policy.timeout_s), backoff_and_retry=True,
                retry_status_codes=[429, 502, 503, 504], max_backoff_retries=policy.retries,
                max_backoff_seconds=int(policy.max_retry_after_s), backoff_factor=policy.backoff_s,
                backoff_jitter=0.0, **credentials)
        self.client._session.headers["User-Agent"] = policy.user_agent

    def items(self, context: SyncContext) -> Iterator[Item]:
        what = f"Confluence at {self.base}"
        try:
            space = self.client.get_space_by_key(self.space)
            pages = self.client.get_pages(space_id=space["id"], limit=PAGE_LIMIT, get_body=False)
        except ValueError:
            raise SourceError(f"{what} has no space {self.space!r} (or the token cannot see it); check space:")
        except Exception as exc:  # noqa: BLE001 - requests/atlassian errors: one sentence, no listing, keep all
            raise _problem(exc, what, str(self.spec.option("token_env"))) from None
        yield Planned(len(pages))
        for page in pages:
            key = str(page["id"])
            version = int((page.get("version") or {}).get("number") or 0)
            if key in context.versions and context.versions[key] == version:
                yield Unchanged(key)
                continue
            try:
                yield self._document(key, version)
            except Exception as exc:  # noqa: BLE001 - one bad page is skipped and reported
                status = getattr(getattr(exc, "response", None), "status_code", None)
                yield Failed(key, f"{page.get('title', key)}: " + (f"HTTP {status}" if status else type(exc).__name__))

    def _document(self, key: str, version: int) -> SourceDocument:
        page = self.client.get_page_by_id(key, body_format="storage")
        labels = tuple(str(label.get("name", "")) for label in self.client.get_page_labels(key))
        storage = ((page.get("body") or {}).get("storage") or {}).get("value") or ""
        url = f"{self.base}/spaces/{self.space}/pages/{key}"  # the id, not the title: stable across renames
        return SourceDocument(key=key, url=url, title=str(page.get("title") or key),
                              text=confluence_storage_to_markdown(storage), version=version, labels=labels,
                              path=str(((page.get("_links") or {}).get("webui")) or ""))


def _problem(exc: Exception, what: str, token_env: str) -> SourceError:
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status:
        return http_problem(int(status), what, token_env)
    return SourceError(f"{what} cannot be reached ({type(exc).__name__}); will retry later")
