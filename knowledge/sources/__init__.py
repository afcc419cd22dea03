"""Knowledge sources: the places teams keep their docs, synced into the knowledge base incrementally.

    config.py    the sources file (SOURCES_FILE): entries, intervals, agent rules, secrets by env-var name
    base.py      what a connector yields (documents, unchanged, failed, gone) and `SourceError`
    http.py      the shared HTTP policy: timeouts, retries, 429s that wait for Retry-After
    sync.py      one sync of one source through `knowledge.ingest.ingest_documents`, and its safety rules
    state.py     per-source versions and status, one JSON file each under <data dir>/sources/
    markdown.py  HTML / Confluence storage / front matter to the Markdown the chunker reads
    folder (in sync.py), website.py, confluence.py, notion.py, github.py, zendesk.py: one connector per kind

Documents from a source are filed in the store under their URL (so citations can link to it) with the corpus
root `source:<name>`, which is how a sync knows which chunks are its own to remove. Nothing here imports the rest
of Switchboard; the schedule inside `switchboard run` and the CLI live in `switchboard/`.
"""
