"""The eval gate: is the new adapter at least as good as what serves now?

Both arms (the new adapter, and the live adapter or else the base model) answer the held-out
questions with the prompt the agent uses; answers are scored against the curated ideal answers
(token F1 and ROUGE-L, `core.evaluation`, the same code as `flywheel eval answers`) and for
groundedness in the context they were given (`core.agent.assess.groundedness`); the val loss
on the ideal answers is measured too. The new adapter passes when no score is worse than the
other arm's by more than the margin (absolute for the 0..1 scores, relative for the loss)."""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from core import evaluation
from core.agent.assess import groundedness
from core.llm.local_model import end_of_turn_ids
from trainer import train
from trainer.dataset import SFTExample

logger = logging.getLogger(__name__)
SCORES = ("token_f1", "rouge_l", "groundedness")


@dataclass(frozen=True)
class Scores:
    val_loss: float | None
    token_f1: float
    rouge_l: float
    groundedness: float
    n: int


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    candidate: Scores
    baseline: Scores
    baseline_name: str                    # "base" or the live adapter's name
    margin: float
    reasons: list[str]                    # why it failed; empty when it passed
    samples: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(candidate: Scores, baseline: Scores, margin: float) -> tuple[bool, list[str]]:
    """Pass unless a score drops by more than `margin` (or the val loss rises by more than
    `margin` x 100 %)."""
    reasons = []
    for name in SCORES:
        new, old = getattr(candidate, name), getattr(baseline, name)
        if new < old - margin - 1e-9:
            reasons.append(f"{name} {new:.4f} is worse than {old:.4f} by more than {margin}")
    if candidate.val_loss is not None and baseline.val_loss is not None:
        if candidate.val_loss > baseline.val_loss * (1 + margin) + 1e-9:
            reasons.append(f"val_loss {candidate.val_loss:.4f} is above {baseline.val_loss:.4f}"
                           + (f" by more than {margin:.0%}" if margin else ""))
    return not reasons, reasons


def evaluate(base_model: str | Path, candidate_dir: Path, val: Sequence[SFTExample], *,
             baseline: tuple[str, Path] | None = None, margin: float = 0.0, max_seq_len: int = 2048,
             max_questions: int = 32, max_new_tokens: int = 128, batch_size: int = 8) -> GateDecision:
    """Score the candidate adapter and the baseline (the adapter `(name, folder)`, or the base
    model) on the held-out examples, and decide."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not val:
        raise ValueError("No held-out examples to evaluate on.")
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    base = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.bfloat16 if cuda else torch.float32)
    model = PeftModel.from_pretrained(base.to(device), str(candidate_dir), adapter_name="candidate").eval()
    if baseline is not None:
        model.load_adapter(str(baseline[1]), adapter_name="baseline")
    questions = list(val)[:max_questions]
    packs = train.pack(train.tokenize_chat_examples(tokenizer, [e.messages for e in val], max_seq_len), max_seq_len)

    def arm(adapter: str | None) -> tuple[Scores, list[str]]:
        with _active(model, adapter):
            loss = train.evaluate_loss(model, packs, device) if packs else None
            answers = generate_answers(model, tokenizer, [e.messages[:-1] for e in questions],
                                       max_new_tokens=max_new_tokens, batch_size=batch_size)
        return score(answers, questions, loss), answers

    new, new_answers = arm("candidate")
    old, old_answers = arm("baseline" if baseline is not None else None)
    passed, reasons = decide(new, old, margin)
    samples = [{"question": e.question, "ideal": e.answer, "candidate": a, "baseline": b}
               for e, a, b in list(zip(questions, new_answers, old_answers))[:5]]
    return GateDecision(passed, new, old, baseline[0] if baseline else "base", margin, reasons, samples)


def stop_tokens(model: Any, tokenizer: Any) -> list[int] | None:
    """Where an answer ends, as serving ends it; None when nothing is named (to the token limit)."""
    return sorted(end_of_turn_ids(model, tokenizer)) or None


def score(answers: Sequence[str], examples: Sequence[SFTExample], val_loss: float | None) -> Scores:
    summary = evaluation.summarise(answers, [e.answer for e in examples], [False] * len(examples))
    grounded = sum(groundedness(a, e.sources, question=e.question) for a, e in zip(answers, examples)) / max(len(examples), 1)
    return Scores(val_loss=None if val_loss is None else round(val_loss, 4), token_f1=summary["token_f1"],
                  rouge_l=summary["rouge_l"], groundedness=round(grounded, 4), n=len(examples))


@contextlib.contextmanager
def _active(model: Any, adapter: str | None) -> Iterator[None]:
    if adapter is None:
        with model.disable_adapter():
            yield
    else:
        model.set_adapter(adapter)
        yield


@torch.inference_mode()
def generate_answers(model: Any, tokenizer: Any, conversations: Sequence[list[dict[str, str]]], *,
                     max_new_tokens: int = 128, batch_size: int = 8) -> list[str]:
    """Greedy answers, a batch at a time (left-padded), as the chat template renders them."""
    from transformers import GenerationConfig

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad,
                              eos_token_id=stop_tokens(model, tokenizer))
    device = next(model.parameters()).device
    answers: list[str] = []
    for start in range(0, len(conversations), batch_size):
        prompts = [list(train.token_ids(tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=True)))
                   for c in conversations[start:start + batch_size]]
        width = max(len(p) for p in prompts)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
        answers += [tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in out]
    return answers
