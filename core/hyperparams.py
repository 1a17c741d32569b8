"""What a retrain can be asked for: the trainer's, the dataset's and the gate's settings.

They live in `core` so that a retrain's parameters (`epochs`, `rank`, `lr`, `general_ratio`, ...
from the dashboard, the CLI or the schedule) are checked where the run is requested, and a
mistyped key is refused there, not by the worker after the run was queued. `trainer` reads
the same classes. Plain dataclasses: nothing here needs torch."""
from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, NamedTuple


class InvalidParams(ValueError):
    """A retrain parameter the trainer does not know, or a value it cannot use; the message says which."""


_MODULE_NAME = re.compile(r"[\w.]+")        # q_proj, model.layers.0.mlp.up_proj
_KERNEL_NAME = re.compile(r"[\w./-]+")     # sdpa, flash_attention_2, kernels-community/flash-attn


@dataclass(frozen=True)
class TrainConfig:
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.0                # peft's default; a dropout copies every LoRA input
    target_modules: tuple[str, ...] | str = "all-linear"
    epochs: int = 3
    lr: float = 2e-4
    max_seq_len: int = 2048
    batch_tokens: int = 16_384          # tokens per optimiser step (packs x accumulation)
    min_steps_per_epoch: int = 8        # small datasets: fewer packs per step rather than 1-2 steps
    warmup_ratio: float = 0.03
    seed: int = 0
    val_every: int = 50                 # steps between validations
    patience: int = 3                   # validations without improvement before stopping
    checkpoint_every: int = 100
    gradient_checkpointing: bool | Literal["auto"] = "auto"
    compile: bool | Literal["auto"] = "auto"    # torch.compile each decoder layer; auto: on a GPU
    attn_implementation: str = "auto"           # auto: flex_attention on a GPU, sdpa on a CPU
    loss_chunk: int = 4096              # answer tokens per vocabulary-projection chunk
    # Packs in one forward pass (larger matrix products, more activations); auto: on a GPU as many
    # as fit without gradient checkpointing, up to 4; one on a CPU.
    packs_per_forward: int | Literal["auto"] = "auto"

    def __post_init__(self) -> None:
        problems = _whole_numbers(self, ("rank", "epochs", "max_seq_len", "batch_tokens", "min_steps_per_epoch",
                                         "val_every", "patience", "checkpoint_every", "loss_chunk"))
        if self.packs_per_forward != "auto" and _whole_numbers(self, ("packs_per_forward",)):
            problems.append("packs_per_forward must be \"auto\" or a whole number of at least 1")
        if not (_is_number(self.lr) and 0 < self.lr < math.inf):
            problems.append("lr must be a positive number")
        if not (_is_number(self.alpha) and 0 < self.alpha < math.inf):
            problems.append("alpha must be a positive number")
        problems += _shares(self, ("dropout", "warmup_ratio"))
        problems += _seed(self.seed)
        for name in ("gradient_checkpointing", "compile"):
            if not (isinstance(getattr(self, name), bool) or getattr(self, name) == "auto"):   # 1 == True
                problems.append(f"{name} must be true, false or \"auto\"")
        if not (isinstance(self.target_modules, str) and self.target_modules
                or isinstance(self.target_modules, tuple) and self.target_modules
                and all(isinstance(m, str) and m for m in self.target_modules)):
            problems.append("target_modules must be \"all-linear\" or a list of module names")
        elif isinstance(self.target_modules, tuple) and (odd := [m for m in self.target_modules
                                                                 if not _MODULE_NAME.fullmatch(m)]):
            problems.append(f"target_modules: {odd[0]!r} is not a module name; give several as a list, "
                            "e.g. target_modules=[\"q_proj\", \"v_proj\"]")
        elif isinstance(self.target_modules, tuple) and "lm_head" in self.target_modules:
            # The chunked loss multiplies by the output layer's base weight: an adapter there would never train.
            problems.append("target_modules cannot include lm_head: the trainer computes the loss from its base "
                            "weights, so a LoRA adapter on it would not learn")
        if not (isinstance(self.attn_implementation, str) and _KERNEL_NAME.fullmatch(self.attn_implementation)):
            problems.append("attn_implementation must be a name such as \"sdpa\" or \"auto\"")
        if problems:
            raise ValueError("; ".join(problems))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (a tuple of module names becomes a list)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """The inverse of `as_dict`."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


@dataclass(frozen=True)
class DatasetConfig:
    val_ratio: float = 0.15          # share of domain examples held out for val loss and the gate
    general_ratio: float = 0.3       # share of general examples in the training set (0.3 = 30:70)
    seed: int = 0

    def __post_init__(self) -> None:
        problems = _shares(self, ("val_ratio", "general_ratio")) + _seed(self.seed)
        if problems:
            raise ValueError("; ".join(problems))


@dataclass(frozen=True)
class GateConfig:
    gate_questions: int = 32         # held-out questions answered by both adapters
    gate_max_new_tokens: int = 128   # the length of each of those answers

    def __post_init__(self) -> None:
        problems = _whole_numbers(self, ("gate_questions", "gate_max_new_tokens"))
        if problems:
            raise ValueError("; ".join(problems))


class RetrainParams(NamedTuple):
    train: TrainConfig
    data: DatasetConfig
    gate: GateConfig


_KEYS = {config: {f.name for f in fields(config)} for config in (TrainConfig, DatasetConfig, GateConfig)}


def from_pairs(pairs: Sequence[str]) -> dict[str, Any]:
    """`KEY=VALUE` texts (as typed after `--param`, or one per line on the Training page) into
    parameters: a value is read as JSON (`1e-4`, `true`, `["q_proj"]`), else kept as text. A
    text without "=" raises `InvalidParams`; blank ones are skipped."""
    params: dict[str, Any] = {}
    for pair in (p.strip() for p in pairs):
        if not pair:
            continue
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidParams(f"A parameter is KEY=VALUE, e.g. max_seq_len=1024; got {pair!r}.")
        try:
            params[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            params[key.strip()] = raw.strip()
    return params


def other_than(fields_shown: Sequence[str], pairs: Sequence[str]) -> dict[str, Any]:
    """`from_pairs` for a form that has fields of its own for `fields_shown` (the dashboard's
    epochs and rank): naming one of those among the others is refused, rather than one of the
    two values silently winning."""
    params = from_pairs(pairs)
    doubled = [name for name in fields_shown if name in params]
    if doubled:
        raise InvalidParams(f"Set {' and '.join(doubled)} in {'their' if len(doubled) > 1 else 'its'} own field, "
                            "not among the other parameters.")
    return params


def to_pairs(params: dict[str, Any]) -> list[str]:
    """Parameters as `KEY=VALUE` texts that `from_pairs` reads back the same."""
    return [f"{key}={json.dumps(value)}" for key, value in params.items()]


def parse(params: dict[str, Any]) -> RetrainParams:
    """A run's parameters into the three configs (`seed` sets both the trainer's and the split's).
    An unknown key or a bad value raises `InvalidParams`, naming it. A `rank` without an `alpha`
    gets alpha = 2 x rank, the trainer's default ratio; `target_modules` is "all-linear", a list
    of module names, or one name."""
    known = set().union(*_KEYS.values())
    unknown = set(params) - known
    if unknown:
        raise InvalidParams(f"Unknown retrain parameter(s) {', '.join(sorted(unknown))}; "
                            f"known: {', '.join(sorted(known))}.")
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}   # JSON has no tuples
    if isinstance(given.get("target_modules"), str) and given["target_modules"].lower() != "all-linear":
        given["target_modules"] = (given["target_modules"],)   # peft would read a lone string as a regex
    rank = given.get("rank")
    if isinstance(rank, int) and not isinstance(rank, bool) and rank >= 1 and "alpha" not in given:
        given["alpha"] = 2 * rank
    built: list[Any] = []
    problems: dict[str, None] = {}   # in order, once each: a bad seed is both the trainer's and the split's
    for config in (TrainConfig, DatasetConfig, GateConfig):
        try:
            built.append(config(**{k: v for k, v in given.items() if k in _KEYS[config]}))
        except (TypeError, ValueError) as e:
            problems.update(dict.fromkeys(str(e).split("; ")))
    if problems:
        raise InvalidParams(f"Bad retrain parameters: {'; '.join(problems)}.")
    return RetrainParams(*built)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _whole_numbers(config: object, names: tuple[str, ...]) -> list[str]:
    return [f"{name} must be a whole number of at least 1" for name in names
            if not (isinstance(getattr(config, name), int) and not isinstance(getattr(config, name), bool)
                    and getattr(config, name) >= 1)]


def _seed(seed: object) -> list[str]:
    """torch and numpy take seeds below 2**32 (torch fails on larger ones deep in a run)."""
    fits = isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < 2**32
    return [] if fits else ["seed must be a whole number from 0 to 4294967295"]


def _shares(config: object, names: tuple[str, ...]) -> list[str]:
    return [f"{name} must be at least 0 and below 1" for name in names
            if not (_is_number(getattr(config, name)) and 0 <= getattr(config, name) < 1)]
