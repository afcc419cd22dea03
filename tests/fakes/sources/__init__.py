"""Loopback fakes of the APIs knowledge sources are synced from: a documentation website, Confluence Cloud (REST
v2), Notion, GitHub (REST: repository, git trees, blobs) and the Zendesk Help Center. Each speaks its API's shape
(pagination, auth errors, 429 with Retry-After) so the real client libraries can be pointed at 127.0.0.1."""
