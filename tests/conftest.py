"""Shared fixtures: settings in a temporary data directory, and the sample corpus ingested once per session.

Ingesting the corpus takes a few seconds, so it is done once into a session directory; a test that needs its
own writable store gets a copy of that directory (`corpus_settings`), which takes milliseconds.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "knowledge" / "docs"


def make_settings(data_dir: Path, **overrides: object) -> Settings:
    """Settings that ignore the developer's .env and environment-specific keys."""
    values: dict[str, object] = {
        "data_dir": data_dir,
        "llm_provider": "offline",
        "openai_api_key": None,
        "openai_base_url": None,
        "chroma_host": None,
        "embedding_provider": "local",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def ingested_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from knowledge.base import open_store
    from knowledge.embeddings import local_model
    from knowledge.ingest import ingest

    data_dir = tmp_path_factory.mktemp("corpus-data")
    store = open_store(make_settings(data_dir), local_model())
    report = ingest([DOCS], store)
    assert report.files_failed == 0 and report.chunks_added > 100
    return data_dir


@pytest.fixture
def corpus_settings(ingested_dir: Path, tmp_path: Path) -> Settings:
    """Offline settings over a private copy of the ingested sample corpus."""
    data_dir = tmp_path / "data"
    shutil.copytree(ingested_dir, data_dir)
    return make_settings(data_dir)


@pytest.fixture(scope="session")
def shared_store(ingested_dir: Path):
    """Read-only store over the session corpus (do not write to it)."""
    from knowledge.base import open_store
    from knowledge.embeddings import local_model

    return open_store(make_settings(ingested_dir), local_model())
