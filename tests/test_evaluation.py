from __future__ import annotations

from pathlib import Path

import pytest

from core import evaluation


def test_token_f1_counts_overlap_and_ignores_citations() -> None:
    assert evaluation.token_f1("Laptops arrive in five days [1].", "Laptops arrive in five days") == 1.0
    assert evaluation.token_f1("nothing in common", "laptops arrive") == 0.0
    assert 0.0 < evaluation.token_f1("laptops arrive tomorrow", "laptops arrive in five days") < 1.0


def test_rouge_l_rewards_order() -> None:
    reference = "order the laptop through the it portal"
    assert evaluation.rouge_l(reference, reference) == 1.0
    in_order = evaluation.rouge_l("order laptop it portal", reference)
    shuffled = evaluation.rouge_l("portal it laptop order", reference)
    assert in_order > shuffled > 0.0


def test_summary_scores_declines_as_zero_and_counts_citations() -> None:
    summary = evaluation.summarise(["a b [1]", "I don't know"], ["a b", "c d"], [False, True])
    assert summary == {"token_f1": 0.5, "rouge_l": 0.5, "citation_rate": 0.5, "declined": 1, "n": 2}


def test_reading_questions_names_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text('{"question": "q", "answer": "a"}\n{not json\n')
    with pytest.raises(ValueError, match="q.jsonl:2"):
        evaluation.read_questions(path)
    path.write_text('{"question": "q"}\n')
    with pytest.raises(ValueError, match="no records"):
        evaluation.read_questions(path)
