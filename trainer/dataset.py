"""SFT examples from a curated dataset version, in the exact prompt the agent serves with.

Each accepted item becomes: the agent's system prompt with the numbered context the answer was
drafted from, the question, then the ideal answer (`core.agent.prompts.answer_messages`, so
training matches serving). Duplicated questions keep the latest curation; the train/val split
is by a hash of the question, so an item stays on its side as datasets grow; a share of
general instruction data (shipped in `general_instructions.jsonl`) keeps the model general.
Personal data was scrubbed by curation before the dataset was frozen."""
from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import psycopg

from core import curation
from core.hyperparams import DatasetConfig
from core.agent import prompts

GENERAL_FILE = Path(__file__).resolve().parent / "general_instructions.jsonl"


class DatasetError(ValueError):
    """Nothing usable to train on; the message is fit to show an admin."""


@dataclass(frozen=True)
class SFTExample:
    kind: Literal["domain", "general"]
    key: str                                  # "answer:<id>" or "general:<n>"
    messages: list[dict[str, str]]            # chat turns; the last one is the answer to learn
    question: str = ""
    answer: str = ""
    sources: list[str] = field(default_factory=list)   # context texts, for the groundedness check


@dataclass(frozen=True)
class BuiltDataset:
    train: list[SFTExample]
    val: list[SFTExample]
    manifest: dict[str, Any]


def build(conn: psycopg.Connection, version: int, config: DatasetConfig = DatasetConfig(), *,
          include_restricted: bool = False) -> BuiltDataset:
    """Read dataset `version` and turn it into train/val examples; refuses an empty result.
    Unless `include_restricted`, leaves out answers drawn from documents restricted since the
    version was made (it held none then): an adapter answers everyone."""
    if curation.get_dataset(conn, version) is None:
        raise DatasetError(f"There is no dataset version {version}.")
    items = curation.dataset_items(conn, version)
    restricted = set() if include_restricted else curation.restricted_in_dataset(conn, version)
    kept = [i for i in items if i.answer_id not in restricted]
    if items and not kept:
        raise DatasetError(f"Every answer in dataset v{version} draws on a document not everyone may see now "
                           "(restricted since the dataset was made), and an adapter answers everyone: "
                           "nothing to train on.")
    built = from_items(kept, version, config)
    return replace(built, manifest={**built.manifest, "dropped_restricted": len(items) - len(kept)})


def from_items(items: Sequence[curation.DatasetItem], version: int | None,
               config: DatasetConfig = DatasetConfig()) -> BuiltDataset:
    """`items` in the order they were curated (as `curation.dataset_items` gives them)."""
    usable = [i for i in items if i.question.strip() and i.answer.strip()]
    latest: dict[str, curation.DatasetItem] = {}
    for item in usable:
        latest[curation.question_key(item.question)] = item    # a later curation of the same question wins
    if not latest:
        raise DatasetError(f"Dataset v{version} has no accepted answers to train on: accept answers in "
                           "Curation (rejected ones never become training data) and make a new dataset.")
    domain = [_domain_example(item) for item in latest.values()]
    train, val = split(domain, config.val_ratio)
    general = general_examples(len(train), config.general_ratio, config.seed)
    manifest = {
        "dataset_version": version,
        "items": len(items),
        "dropped_empty": len(items) - len(usable),
        "dropped_duplicates": len(usable) - len(latest),
        "domain_train": len(train),
        "val": len(val),
        "general_train": len(general),
        "general_ratio": config.general_ratio,
        "val_ratio": config.val_ratio,
        "seed": config.seed,
        "val_keys": [e.key for e in val],
        "content_sha256": _digest(train + general, val),
    }
    return BuiltDataset(train + general, val, manifest)


def split(examples: Sequence[SFTExample], val_ratio: float) -> tuple[list[SFTExample], list[SFTExample]]:
    """Deterministic: an example is held out when the hash of its question falls below
    `val_ratio`, so it stays on its side as datasets grow. Small sets still hold out one
    example (once there are two) and always keep one to train on."""
    held = [_bucket(e.question) < val_ratio for e in examples]
    if val_ratio > 0 and len(examples) >= 2 and not any(held):
        held[min(range(len(examples)), key=lambda i: _bucket(examples[i].question))] = True
    if examples and all(held):
        held[max(range(len(examples)), key=lambda i: _bucket(examples[i].question))] = False
    return ([e for e, h in zip(examples, held) if not h], [e for e, h in zip(examples, held) if h])


def general_examples(n_domain: int, ratio: float, seed: int) -> list[SFTExample]:
    """Enough general examples for `ratio` of the mix (capped by the shipped file)."""
    if ratio <= 0 or n_domain == 0:
        return []
    records = [json.loads(line) for line in GENERAL_FILE.read_text().splitlines() if line.strip()]
    wanted = min(len(records), round(n_domain * ratio / (1 - ratio)))
    chosen = random.Random(seed).sample(range(len(records)), wanted)
    return [SFTExample("general", f"general:{i}", [{"role": "user", "content": records[i]["instruction"]},
                                                   {"role": "assistant", "content": records[i]["response"]}])
            for i in sorted(chosen)]


def _domain_example(item: curation.DatasetItem) -> SFTExample:
    sources = [{"n": c.get("n", i), "title": c.get("title", ""), "heading": c.get("heading", ""),
                "text": c.get("text", "")} for i, c in enumerate(item.context, start=1)]
    messages = [{"role": m.role, "content": m.content}
                for m in prompts.answer_messages(item.question, sources, [])]  # type: ignore[arg-type]
    messages.append({"role": "assistant", "content": item.answer.strip()})
    return SFTExample("domain", f"answer:{item.answer_id}", messages, item.question, item.answer.strip(),
                      [s["text"] for s in sources])


def _bucket(question: str) -> float:
    """A number in [0, 1) fixed by the question's text."""
    return int(hashlib.sha256(curation.question_key(question).encode()).hexdigest()[:12], 16) / 16**12


def _digest(train: Sequence[SFTExample], val: Sequence[SFTExample]) -> str:
    h = hashlib.sha256()
    for side, examples in (("train", train), ("val", val)):
        for e in examples:
            h.update(json.dumps([side, e.messages], sort_keys=True).encode())
    return h.hexdigest()


def save(dataset: BuiltDataset, folder: Path) -> None:
    """Write train.jsonl, val.jsonl and manifest.json: what went into a run, kept with it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, examples in (("train", dataset.train), ("val", dataset.val)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(asdict(e), ensure_ascii=False) + "\n"
                                                      for e in examples))
    (folder / "manifest.json").write_text(json.dumps(dataset.manifest, indent=2))


def load(folder: Path) -> BuiltDataset:
    def read(name: str) -> list[SFTExample]:
        return [SFTExample(**json.loads(line)) for line in (folder / f"{name}.jsonl").read_text().splitlines()
                if line.strip()]

    return BuiltDataset(read("train"), read("val"), json.loads((folder / "manifest.json").read_text()))
