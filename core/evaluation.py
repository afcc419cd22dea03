"""Routing evaluation: accuracy, per-agent precision and recall, and a confusion matrix.

Pure functions over (label, predicted) pairs, so the maths is tested apart from the router.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class LabelledQuestion:
    label: str
    question: str


@dataclass(frozen=True, slots=True)
class Prediction:
    question: str
    label: str
    predicted: str
    confidence: float


@dataclass(frozen=True, slots=True)
class EvalReport:
    accuracy: float
    precision: dict[str, float]
    recall: dict[str, float]
    confusion: dict[str, dict[str, int]]  # confusion[label][predicted]
    items: tuple[Prediction, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "accuracy": self.accuracy,
            "precision": self.precision,
            "recall": self.recall,
            "confusion": self.confusion,
            "items": [
                {"question": p.question, "label": p.label, "predicted": p.predicted, "confidence": p.confidence}
                for p in self.items
            ],
        }


class EvalFileError(ValueError):
    """The TSV is not `label<TAB>question` with a header row."""


def load_labelled(path: Path, labels: Sequence[str]) -> list[LabelledQuestion]:
    rows: list[LabelledQuestion] = []
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None or [h.strip().lower() for h in header[:2]] != ["label", "question"]:
            raise EvalFileError(f"{path}: the first row must be the header 'label<TAB>question'.")
        for number, row in enumerate(reader, start=2):
            if not row or not "".join(row).strip():
                continue
            if len(row) != 2:
                raise EvalFileError(f"{path}:{number}: expected 2 tab-separated columns, found {len(row)}.")
            label, question = row[0].strip(), row[1].strip()
            if label not in labels:
                raise EvalFileError(f"{path}:{number}: unknown label {label!r}; use one of {', '.join(labels)}.")
            rows.append(LabelledQuestion(label, question))
    if not rows:
        raise EvalFileError(f"{path}: no questions found.")
    return rows


def score(predictions: Sequence[Prediction], labels: Sequence[str]) -> EvalReport:
    confusion = {label: {other: 0 for other in labels} for label in labels}
    for p in predictions:
        confusion[p.label][p.predicted] += 1
    correct = sum(confusion[label][label] for label in labels)
    precision, recall = {}, {}
    for label in labels:
        predicted_as = sum(confusion[other][label] for other in labels)
        actual = sum(confusion[label].values())
        precision[label] = confusion[label][label] / predicted_as if predicted_as else 0.0
        recall[label] = confusion[label][label] / actual if actual else 0.0
    accuracy = correct / len(predictions) if predictions else 0.0
    return EvalReport(accuracy, precision, recall, confusion, tuple(predictions))
