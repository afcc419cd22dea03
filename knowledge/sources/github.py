"""Markdown under a path of a GitHub repository, through PyGithub: one request for the repository, one for its
whole tree (recursive), and one per changed file for its blob; incremental by blob SHA.

A file whose blob SHA is the one recorded is not downloaded at all. A file moved to another path is a new
document at the new path and the old path's chunks are removed, so nothing is duplicated. `token_env` is needed
for a private repository (and raises the rate limit); `api_url` points at GitHub Enterprise
(`https://HOST/api/v3`). 429s and rate-limit 403s wait as GitHub's headers say (PyGithub's `GithubRetry`).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping
from pathlib import PurePosixPath

from knowledge.sources.base import (Failed, Item, Planned, SourceDocument, SourceError, SyncContext, Unchanged,
                                    http_problem)
from knowledge.sources.config import SourceSpec
from knowledge.sources.http import HttpPolicy
from knowledge.sources.markdown import first_heading, split_front_matter

SUFFIXES = (".md", ".markdown", ".mdx", ".txt")


class GitHubConnector:
    def __init__(self, spec: SourceSpec, policy: HttpPolicy, env: Mapping[str, str]) -> None:
        from github import Auth, Github, GithubRetry

        self.spec = spec
        self.repo_name = str(spec.option("repo"))
        self.under = str(spec.option("path") or "").strip("/")
        token = spec.secret("token_env", env, required=False) if spec.option("token_env") else None
        retry = GithubRetry(total=policy.retries, status_forcelist=[429, *range(500, 600)],
                            backoff_factor=policy.backoff_s, max_rate_limit_wait=policy.max_retry_after_s)
        self.client = Github(auth=Auth.Token(token) if token else None,
                             base_url=str(spec.option("api_url") or "https://api.github.com").rstrip("/"),
                             timeout=int(policy.timeout_s), retry=retry, user_agent=policy.user_agent,
                             seconds_between_requests=None, per_page=100)

    def items(self, context: SyncContext) -> Iterator[Item]:
        from github import GithubException

        what = f"GitHub repository {self.repo_name}"
        try:
            repo = self.client.get_repo(self.repo_name)
            branch = str(self.spec.option("branch") or repo.default_branch)
            tree = repo.get_git_tree(branch, recursive=True)
        except GithubException as exc:
            raise http_problem(exc.status, what, str(self.spec.option("token_env") or "token_env")) from None
        except Exception as exc:  # noqa: BLE001 - unreachable, timeouts: keep everything, retry later
            raise SourceError(f"{what} cannot be reached ({type(exc).__name__}); will retry later") from None
        if tree.raw_data.get("truncated"):
            raise SourceError(f"{what}: the tree is too large for one request (truncated); set path: to a folder")
        files = [e for e in tree.tree if e.type == "blob" and self._wanted(e.path)]
        yield Planned(len(files))
        for entry in files:
            if context.versions.get(entry.path) == entry.sha:
                yield Unchanged(entry.path)
                continue
            try:
                blob = repo.get_git_blob(entry.sha)
                raw = base64.b64decode(blob.content) if blob.encoding == "base64" else blob.content.encode()
                text = raw.decode("utf-8-sig")
            except GithubException as exc:
                yield Failed(entry.path, f"HTTP {exc.status}")
                continue
            except (UnicodeDecodeError, ValueError):
                yield Failed(entry.path, "not UTF-8 text")
                continue
            meta, body = split_front_matter(text)
            if meta.get("ingest") is False:
                continue  # asks not to be ingested: treated as absent
            title = str(meta.get("title") or first_heading(body) or PurePosixPath(entry.path).stem)
            yield SourceDocument(key=entry.path, url=f"{repo.html_url}/blob/{branch}/{entry.path}", title=title,
                                 text=body.strip(), version=entry.sha, path=entry.path,
                                 labels=_labels(meta.get("tags")),
                                 agent=str(meta["agent"]) if meta.get("agent") else None)

    def _wanted(self, path: str) -> bool:
        inside = not self.under or path == self.under or path.startswith(self.under + "/")
        return inside and path.lower().endswith(SUFFIXES)


def _labels(tags: object) -> tuple[str, ...]:
    """Front matter `tags:` as labels for `agent_by_label` (a list, or one comma-separated string)."""
    if isinstance(tags, str):
        return tuple(t.strip() for t in tags.split(",") if t.strip())
    return tuple(str(t) for t in tags) if isinstance(tags, list) else ()
