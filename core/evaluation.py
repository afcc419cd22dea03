"""Routing evaluation: accuracy, per-agent precision and recall, and a confusion matrix; and declining.

The label `none` marks a question the knowledge base cannot answer; a prediction is `none` when the bot
declined (`core.grounding`). Besides the routing figures, the report gives the precision and recall of
declining (of the questions it declined, how many were unanswerable; of the unanswerable, how many it
declined) and the routing accuracy over the answerable questions alone, whatever the decline decided.

Pure functions over (label, predicted) pairs, so the maths is tested apart from the router.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

NONE = "none"  # the label of a question the knowledge base cannot answer, and the prediction of a decline


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
    routed: str | None = None  # the agent routing chose when `predicted` is "none" (None: same as predicted)
    grounding: float | None = None  # the turn's confidence (best passage similarity, `core.grounding`)

    @property
    def routed_agent(self) -> str:
        return self.routed or self.predicted


@dataclass(frozen=True, slots=True)
class EvalReport:
    accuracy: float
    precision: dict[str, float]
    recall: dict[str, float]
    confusion: dict[str, dict[str, int]]  # confusion[label][predicted]
    items: tuple[Prediction, ...]
    routing_accuracy: float = 0.0  # over answerable questions: the routed agent is the label
    decline: dict[str, float] | None = None  # precision, recall, declined, unanswerable (when "none" occurs)

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {
            "accuracy": self.accuracy,
            "routing_accuracy": self.routing_accuracy,
            "precision": self.precision,
            "recall": self.recall,
            "confusion": self.confusion,
            "items": [_item(p) for p in self.items],
        }
        if self.decline is not None:
            data["decline"] = self.decline
        return data


def _item(p: Prediction) -> dict[str, object]:
    item: dict[str, object] = {"question": p.question, "label": p.label, "predicted": p.predicted,
                               "confidence": p.confidence}
    if p.routed is not None:
        item["routed"] = p.routed
    if p.grounding is not None:
        item["grounding"] = p.grounding
    return item


class EvalFileError(ValueError):
    """The TSV is not `label<TAB>question` with a header row."""


def tsv_rows(path: Path, columns: tuple[str, str], error: type[Exception]) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) of each row of a two-column eval file after its header row (which must name
    `columns`); blank lines and `#` comments are skipped. A wrong header raises `error` naming the file."""
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None or [h.strip().lower() for h in header[:2]] != list(columns):
            raise error(f"{path}: the first row must be the header '{columns[0]}<TAB>{columns[1]}'.")
        for number, row in enumerate(reader, start=2):
            if row and "".join(row).strip() and not row[0].lstrip().startswith("#"):
                yield number, row


def load_labelled(path: Path, labels: Sequence[str]) -> list[LabelledQuestion]:
    """The questions of a `label<TAB>question` file; a label is an agent of `labels` or `none`."""
    labels = [*labels, NONE]
    rows: list[LabelledQuestion] = []
    for number, row in tsv_rows(path, ("label", "question"), EvalFileError):
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
    """The report over `labels` (the agents); "none" joins them when a label or a prediction is "none"."""
    labels = list(labels)
    if NONE not in labels and any(NONE in (p.label, p.predicted) for p in predictions):
        labels.append(NONE)
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
    answerable = [p for p in predictions if p.label != NONE]
    routing = sum(p.routed_agent == p.label for p in answerable) / len(answerable) if answerable else 0.0
    decline = None
    if NONE in labels:
        declined = sum(p.predicted == NONE for p in predictions)
        unanswerable = sum(p.label == NONE for p in predictions)
        decline = {"precision": precision[NONE], "recall": recall[NONE], "declined": declined,
                   "unanswerable": unanswerable,
                   "answerable_declined": sum(p.predicted == NONE for p in answerable)}
    return EvalReport(accuracy, precision, recall, confusion, tuple(predictions), routing, decline)
