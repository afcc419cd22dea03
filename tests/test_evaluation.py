"""Routing evaluation maths and the TSV reader."""

from __future__ import annotations

import pytest

from core.evaluation import EvalFileError, Prediction, load_labelled, score

LABELS = ["billing", "technical", "policy"]


def test_precision_recall_and_confusion() -> None:
    predictions = [
        Prediction("q1", "billing", "billing", 0.3),
        Prediction("q2", "billing", "technical", 0.01),
        Prediction("q3", "technical", "technical", 0.2),
        Prediction("q4", "policy", "policy", 0.2),
    ]
    report = score(predictions, LABELS)
    assert report.accuracy == 0.75
    assert report.recall["billing"] == 0.5 and report.precision["billing"] == 1.0
    assert report.precision["technical"] == 0.5 and report.recall["technical"] == 1.0
    assert report.confusion["billing"]["technical"] == 1
    assert report.to_json()["items"][1] == {"question": "q2", "label": "billing", "predicted": "technical",
                                            "confidence": 0.01}


def test_tsv_needs_the_header_and_known_labels(tmp_path) -> None:
    good = tmp_path / "good.tsv"
    good.write_text("label\tquestion\nbilling\tHow much?\n\npolicy\tGDPR?\n", encoding="utf-8")
    assert [q.label for q in load_labelled(good, LABELS)] == ["billing", "policy"]
    no_header = tmp_path / "bad.tsv"
    no_header.write_text("billing\tHow much?\n", encoding="utf-8")
    with pytest.raises(EvalFileError, match="header"):
        load_labelled(no_header, LABELS)
    bad_label = tmp_path / "label.tsv"
    bad_label.write_text("label\tquestion\nsales\tdiscount?\n", encoding="utf-8")
    with pytest.raises(EvalFileError, match="unknown label 'sales'"):
        load_labelled(bad_label, LABELS)
