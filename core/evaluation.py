"""Scoring answers against reference answers: token F1, ROUGE-L, citation rate, declines.

Used by `flywheel eval answers` and by the trainer's eval gate, so both measure the same way."""
from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from core.text import words

_CITATION = re.compile(r"\[\d+\]")


def tokens(text: str) -> list[str]:
    return words(_CITATION.sub(" ", text))


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD-style bag-of-tokens F1."""
    pred, ref = tokens(prediction), tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure from the longest common subsequence of tokens."""
    pred, ref = tokens(prediction), tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    previous = [0] * (len(ref) + 1)
    for p in pred:
        current = [0]
        for j, r in enumerate(ref, start=1):
            current.append(previous[j - 1] + 1 if p == r else max(previous[j], current[j - 1]))
        previous = current
    lcs = previous[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def cites(text: str) -> bool:
    return bool(_CITATION.search(text))


@dataclass(frozen=True)
class QAPair:
    question: str
    answer: str


def read_questions(path: Path) -> list[QAPair]:
    """Records with `question` and `answer` (JSONL); records without an answer are skipped."""
    pairs = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{number}: not valid JSON ({e.msg})") from e
        if record.get("question") and record.get("answer"):
            pairs.append(QAPair(record["question"], record["answer"]))
    if not pairs:
        raise ValueError(f"{path}: no records with both 'question' and 'answer'")
    return pairs


def summarise(predictions: Sequence[str], references: Sequence[str], declined: Iterable[bool]) -> dict[str, float]:
    """Mean token F1 and ROUGE-L over all questions (a declined question scores 0), the share
    of answers that cite a source, and how many were declined."""
    declined = list(declined)
    n = len(references)
    return {
        "token_f1": round(sum(token_f1(p, r) for p, r in zip(predictions, references)) / n, 4),
        "rouge_l": round(sum(rouge_l(p, r) for p, r in zip(predictions, references)) / n, 4),
        "citation_rate": round(sum(cites(p) for p in predictions) / n, 4),
        "declined": sum(declined),
        "n": n,
    }


def not_the_model_asked(model: str | None, adapter_id: str | None, *, asked_adapter: str | None,
                        model_configured: bool) -> str | None:
    """Why an answer does not measure what an evaluation asked for, or None when it does. The
    agent keeps answering people when the model server is down (excerpts) or lacks the live
    adapter (the base model); scored as the adapter's, such answers would mislead."""
    if model is None:  # declined before drafting: nothing was generated, and a decline is scored as one
        return None
    if model == "extractive":
        if model_configured:
            return "was quoted from excerpts: the model server could not be reached"
        if asked_adapter is not None:   # FLYWHEEL_LLM_BACKEND=extractive: no model at all
            return f"was quoted from excerpts: no model is configured to run adapter {asked_adapter!r}"
        return None
    if asked_adapter is not None and adapter_id != asked_adapter:
        return (f"came from the base model: the model server does not have adapter {asked_adapter!r} "
                "(start it with `flywheel serve-llm --adapter NAME=PATH`, or promote the adapter)")
    return None
