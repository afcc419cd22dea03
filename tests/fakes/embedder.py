"""A stand-in embedding model for tests that exercise storage and ingestion, not retrieval quality."""

from __future__ import annotations

import hashlib
import re

import numpy as np


class HashEmbedder:
    """Words hashed into 384 buckets, L2-normalised: similar wording, similar vectors; no model needed."""

    dim = 384

    def __init__(self, name: str = "test:hash") -> None:
        self.name = name

    def embed_documents(self, texts):
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"[a-z0-9]+", text.lower()):
                out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)

    def embed_query(self, text):
        return self.embed_documents([text])[0]
