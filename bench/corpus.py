"""The sample corpus, ingested once per `make bench` run and copied into each benchmark's own data directory.

Ingestion takes seconds and only `bench_retrieval` measures it; the others just need a filled store, and a
copy of the Chroma directory takes milliseconds.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path


@functools.cache
def _ingested() -> Path:
    from knowledge.base import open_store
    from knowledge.embeddings import local_model
    from knowledge.ingest import ingest
    from tests.conftest import DOCS, make_settings

    root = Path(tempfile.mkdtemp(prefix="switchboard-bench-corpus-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    ingest([DOCS], open_store(make_settings(root), local_model()))
    return root


def ingested_copy(data_dir: Path) -> None:
    """Fill `data_dir` with the ingested sample corpus."""
    shutil.copytree(_ingested(), data_dir, dirs_exist_ok=True)
