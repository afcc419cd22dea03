"""An `Embedder` as a chromadb `EmbeddingFunction`, for tools and ad-hoc collections (the store passes vectors
itself and does not need it)."""

from __future__ import annotations

import functools
from typing import Any

from knowledge.embeddings import Embedder, LocalMiniLM, local_model

CHROMA_FUNCTION_NAME = "switchboard"


def chroma_embedding_function(embedder: Embedder) -> Any:
    """`embedder` as a chromadb `EmbeddingFunction`, for a collection that should embed texts itself.

    The store passes vectors explicitly and does not need this; it is for tools and ad-hoc collections. The
    function is registered with chromadb under the name "switchboard" and its config records the embedder's
    name, so chroma can rebuild it when a collection is reopened without one (the local model only: an OpenAI
    embedder needs a key, which is never written into a collection's config).
    """
    return _chroma_adapter_class()(embedder)


@functools.cache
def _chroma_adapter_class() -> type:
    """Built on first use so that importing this module does not import chromadb."""
    from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space
    from chromadb.utils.embedding_functions import register_embedding_function

    class SwitchboardEmbeddingFunction(EmbeddingFunction[Documents]):
        """chromadb's embedding-function protocol over an `Embedder` (vectors are unit length: cosine space)."""

        def __init__(self, embedder: Embedder) -> None:
            self.embedder = embedder

        def __call__(self, input: Documents) -> Embeddings:  # noqa: A002 - chromadb checks this parameter name
            return list(self.embedder.embed_documents(list(input)))

        def embed_query(self, input: Documents) -> Embeddings:  # noqa: A002
            return [self.embedder.embed_query(text) for text in input]

        @staticmethod
        def name() -> str:
            return CHROMA_FUNCTION_NAME

        def default_space(self) -> Space:
            return "cosine"

        def supported_spaces(self) -> list[Space]:
            return ["cosine", "ip", "l2"]  # all agree on rankings for unit vectors

        def get_config(self) -> dict[str, Any]:
            return {"embedder": self.embedder.name}

        @staticmethod
        def build_from_config(config: dict[str, Any]) -> SwitchboardEmbeddingFunction:
            if config.get("embedder") != LocalMiniLM.name:
                raise ValueError(
                    f"cannot rebuild the embedder {config.get('embedder')!r} from a collection's config "
                    "(it needs credentials); pass embedding_function=chroma_embedding_function(make_embedder(...))"
                )
            return SwitchboardEmbeddingFunction(local_model())

        def validate_config_update(self, old_config: dict[str, Any], new_config: dict[str, Any]) -> None:
            if old_config.get("embedder") != new_config.get("embedder"):
                raise ValueError("a collection's embedding model cannot change: its vectors would not compare")

    register_embedding_function(SwitchboardEmbeddingFunction)
    return SwitchboardEmbeddingFunction
