"""Embeddings from any OpenAI-compatible endpoint: the `EMBEDDING_PROVIDER=openai` choice."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class OpenAIEmbedder:
    """Any OpenAI-compatible embeddings endpoint (OpenAI, Ollama, vLLM, ...) through langchain-openai.

    `check_embedding_ctx_length=False` makes langchain send the raw strings: otherwise it tokenizes them with
    tiktoken first, and tiktoken downloads its encodings at run time, which fails on a machine without internet
    (and is pointless against a server that is not OpenAI's). The dimension is whatever the server returns,
    learned from the first response.
    """

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None,
        base_url: str | None,
        timeout_s: float | None = 60.0,
        max_retries: int = 2,
    ) -> None:
        from langchain_openai import OpenAIEmbeddings

        self.name = f"openai:{model}"
        self._client = OpenAIEmbeddings(
            model=model,
            api_key=api_key or "not-needed",  # local OpenAI-compatible servers often need no key
            base_url=base_url,
            check_embedding_ctx_length=False,
            timeout=timeout_s,
            max_retries=max_retries,
        )
        self._dim: int | None = None

    @property
    def dim(self) -> int:
        """The server's vector size; asks the server once if nothing has been embedded yet."""
        if self._dim is None:
            self.embed_query("dimension probe")
        assert self._dim is not None
        return self._dim

    def _normalise(self, rows: list[list[float]]) -> np.ndarray:
        matrix = np.asarray(rows, dtype=np.float32)
        matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
        self._dim = matrix.shape[1]
        return matrix

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("embed_documents takes a sequence of texts, not one string")
        if not texts:
            return np.zeros((0, self._dim or 0), dtype=np.float32)
        return self._normalise(self._client.embed_documents(list(texts)))

    def embed_query(self, text: str) -> np.ndarray:
        return self._normalise([self._client.embed_query(text)])[0]
