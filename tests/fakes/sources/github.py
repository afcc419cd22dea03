"""GitHub's REST API as PyGithub calls it for a repository's Markdown:

    GET /repos/{owner}/{repo}                                   the repository (default_branch, html_url, url)
    GET /repos/{owner}/{repo}/git/trees/{branch}?recursive=1    {"sha", "tree": [{"path", "type", "sha"}…],
                                                                 "truncated": false}
    GET /repos/{owner}/{repo}/git/blobs/{sha}                   {"sha", "content": base64, "encoding"}

`Authorization: token …` (or Bearer) with the token; a wrong one answers 401 "Bad credentials"; a private
repository without a token answers 404, as GitHub does. Blob SHAs are git's own (`blob <size>\\0<content>`).
"""

from __future__ import annotations

import base64
import hashlib

from tests.fakes.sources.base import FakeServer, Reply, Request

TOKEN = "ghp_faketoken0123456789"
OWNER, REPO = "lumenly", "docs"


def blob_sha(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class FakeGitHub(FakeServer):
    def __init__(self, private: bool = True) -> None:
        super().__init__()
        self.private = private
        self.files: dict[str, bytes] = {}

    def put(self, path: str, text: str) -> None:
        self.files[path] = text.encode()

    def move(self, old: str, new: str) -> None:
        self.files[new] = self.files.pop(old)

    def error_reply(self, status: int) -> Reply:
        return Reply.json({"message": "Server Error", "documentation_url": "https://docs.github.com/rest"}, status)

    def rate_limited_reply(self, retry_after: float) -> Reply:
        return Reply.json({"message": "You have exceeded a secondary rate limit.",
                           "documentation_url": "https://docs.github.com/rest"}, 429,
                          **{"Retry-After": f"{retry_after:g}"})

    def route(self, request: Request) -> Reply:
        auth = request.headers.get("authorization", "")
        if auth and auth not in (f"token {TOKEN}", f"Bearer {TOKEN}"):
            return Reply.json({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest",
                               "status": "401"}, 401)
        if self.private and not auth:
            return Reply.json({"message": "Not Found", "status": "404"}, 404)
        base = f"/repos/{OWNER}/{REPO}"
        api = f"{self.url}{base}"
        if request.path == base:
            return Reply.json({"id": 1, "name": REPO, "full_name": f"{OWNER}/{REPO}", "private": self.private,
                               "default_branch": "main", "url": api, "html_url": f"https://github.com/{OWNER}/{REPO}",
                               "git_trees_url": f"{api}/git/trees{{/sha}}", "owner": {"login": OWNER}})
        if request.path == f"{base}/git/trees/main":
            entries = [{"path": path, "mode": "100644", "type": "blob", "sha": blob_sha(data), "size": len(data),
                        "url": f"{api}/git/blobs/{blob_sha(data)}"} for path, data in sorted(self.files.items())]
            folders = sorted({p.rsplit("/", 1)[0] for p in self.files if "/" in p})
            entries += [{"path": f, "mode": "040000", "type": "tree", "sha": "0" * 40, "url": f"{api}/git/trees/x"}
                        for f in folders]
            return Reply.json({"sha": "1" * 40, "url": f"{api}/git/trees/main", "tree": entries, "truncated": False})
        if request.path.startswith(f"{base}/git/blobs/"):
            sha = request.path.rsplit("/", 1)[1]
            for data in self.files.values():
                if blob_sha(data) == sha:
                    return Reply.json({"sha": sha, "node_id": "B", "size": len(data), "url": f"{api}/git/blobs/{sha}",
                                       "content": base64.encodebytes(data).decode(), "encoding": "base64"})
        return Reply.json({"message": "Not Found", "status": "404"}, 404)
