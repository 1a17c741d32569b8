"""LoRA supervised fine-tuning (transformers + peft): the data, the loss, the step and the loop.

What makes it fast, and why:
- Loss only on answer tokens, and the vocabulary projection only for those tokens, in chunks
  recomputed in the backward pass: the (tokens x 128k vocabulary) logits of an 8B model are
  never materialised (`answer_loss`).
- Examples are packed into full sequences; position ids restart at each example, from which
  transformers builds a block-diagonal causal mask, so no attention crosses examples. On a GPU
  the mask goes to flex attention, which skips the blocks it masks.
- On a GPU, as many packs in one forward pass as fit (up to 4: larger matrix products), and
  gradient checkpointing only when not even one fits (`forward_plan`); bf16 autocast (LoRA
  weights and optimiser state stay float32); fused AdamW; each decoder layer compiled, for one
  shape: packs are padded to `max_seq_len` and forward passes to the same number of packs, so
  nothing is compiled again mid-run.
- The loss of a step is the mean over all its answer tokens, however its packs are split into
  forward passes (`packs_per_forward`) and across processes: the same step gives the same update.
- `accelerate` prepares the loss module and optimiser; started by `torchrun` with several
  processes (one per GPU), each takes its share of every step's packs and DDP averages the
  gradients (NCCL on GPUs, gloo on CPUs)."""
from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from core.hyperparams import TrainConfig
from trainer import checkpoints

logger = logging.getLogger(__name__)
IGNORE = -100
FINISHED = "trained.json"   # in the output folder: what a finished training gave


@dataclass(frozen=True)
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]   # IGNORE where no loss


@dataclass(frozen=True)
class TrainResult:
    adapter_dir: Path
    steps: int
    train_loss: float
    val_loss: float | None
    tokens_per_s: float
    peak_mem_gb: float | None
    resumed_from: int | None
    stopped_early: bool
    packs_per_forward: int = 1          # as run
    gradient_checkpointing: bool = False   # in any process


class TrainingCancelled(RuntimeError):
    """`should_stop` asked the run to stop; no adapter was written."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; no adapter was written."""


# -- data ------------------------------------------------------------------------------------

def tokenize_chat_example(tokenizer: Any, messages: list[dict[str, str]], max_len: int) -> TokenizedExample | None:
    """Render with the tokenizer's chat template; labels only on the final assistant turn.
    None when the prompt leaves no room for the answer within `max_len`."""
    prompt = list(token_ids(tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=True)))
    full = list(token_ids(tokenizer.apply_chat_template(messages, tokenize=True)))
    if full[: len(prompt)] != prompt:
        raise ValueError("the chat template renders the prompt differently inside the full conversation")
    full = full[:max_len]
    labels = [IGNORE] * len(prompt) + full[len(prompt):]
    labels = labels[: len(full)]
    if all(label == IGNORE for label in labels):
        return None
    return TokenizedExample(full, labels)


def tokenize_chat_examples(tokenizer: Any, conversations: Sequence[list[dict[str, str]]],
                           max_len: int) -> list[TokenizedExample]:
    """`tokenize_chat_example` for each; those without room for their answer are left out."""
    out = (tokenize_chat_example(tokenizer, messages, max_len) for messages in conversations)
    return [t for t in out if t is not None]


def token_ids(value: Any) -> Any:
    """`apply_chat_template(tokenize=True)` gives ids, or a mapping holding them."""
    return value["input_ids"] if hasattr(value, "keys") else value


@dataclass(frozen=True)
class Pack:
    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]   # restart at 0 for each example: the attention boundary

    @property
    def answer_tokens(self) -> int:
        """Tokens the loss is taken on: those with a label, after the first (nothing predicts it)."""
        return sum(1 for label in self.labels[1:] if label != IGNORE)


def pack(examples: Sequence[TokenizedExample], max_len: int) -> list[Pack]:
    """First-fit-decreasing into sequences of at most `max_len` tokens."""
    if (longest := max((len(e.input_ids) for e in examples), default=0)) > max_len:
        raise ValueError(f"An example of {longest} tokens is longer than max_seq_len {max_len}: "
                         "tokenize_chat_examples cuts them to fit.")
    bins: list[list[TokenizedExample]] = []
    room: list[int] = []
    for ex in sorted(examples, key=lambda e: -len(e.input_ids)):
        for i, free in enumerate(room):
            if len(ex.input_ids) <= free:
                bins[i].append(ex)
                room[i] -= len(ex.input_ids)
                break
        else:
            bins.append([ex])
            room.append(max_len - len(ex.input_ids))
    packs = []
    for b in bins:
        packs.append(Pack([t for e in b for t in e.input_ids], [t for e in b for t in e.labels],
                          [p for e in b for p in range(len(e.input_ids))]))
    return packs


# -- the loss --------------------------------------------------------------------------------

def answer_loss(model: Any, input_ids: torch.Tensor, labels: torch.Tensor, position_ids: torch.Tensor,
                chunk: int = 4096) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy over the answer tokens, computing logits only for them, a chunk at a
    time, recomputed in the backward pass. Returns (loss, number of answer tokens)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model.base_model.model.model
    # No cache: with one, transformers would not read packing from the position ids, and
    # attention would leak across the packed examples.
    hidden = decoder(input_ids=input_ids, position_ids=position_ids, use_cache=False).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != IGNORE
    hidden = hidden[:, :-1][keep]
    targets = targets[keep]
    n = int(targets.numel())
    if n == 0:
        return hidden.sum() * 0.0, 0
    head = model.get_output_embeddings()
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, n, chunk):
        total = total + checkpoint(_chunk_loss, head.weight, hidden[start:start + chunk],
                                   targets[start:start + chunk], use_reentrant=False)
    return total / n, n


def _chunk_loss(weight: torch.Tensor, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(F.linear(hidden, weight).float(), targets, reduction="sum")


class AnswerLoss(torch.nn.Module):
    """The summed `answer_loss` as a module, so that DDP (several processes) wraps the whole
    forward pass."""

    def __init__(self, model: Any, chunk: int) -> None:
        super().__init__()
        self.model = model
        self.chunk = chunk

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        mean, n = answer_loss(self.model, input_ids, labels, position_ids, self.chunk)
        return mean * n


# -- the loop --------------------------------------------------------------------------------

def process_state() -> Any:
    """This process's place among the training processes (`accelerate.PartialState`). Without a
    GPU, several processes started by `torchrun` train together over gloo."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def leave_process_group() -> None:
    """Before a training process exits: the group's gloo or NCCL threads still running at exit
    can abort it ("terminate called without an active exception", seen once under torchrun)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


class ForwardPlan(NamedTuple):
    packs: int              # packs per forward pass
    checkpointing: bool     # gradient checkpointing


MAX_PACKS_PER_FORWARD = 4   # 8B on an H100, one run: 1, 2, 4 packs of 2048 tokens gave 13.1k, 15.9k, 16.5k tokens/s


def prepare_model(base_model: Any, config: TrainConfig,
                  most_packs: int = MAX_PACKS_PER_FORWARD) -> tuple[Any, ForwardPlan]:
    """Load (if a path) and wrap the base model with fresh LoRA layers, checkpointed and
    compiled as planned for at most `most_packs` packs per forward pass; returns it with the plan."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    cuda = torch.cuda.is_available()
    if isinstance(base_model, (str, Path)):
        # On a GPU, straight onto this process's GPU: not the whole bf16 model in CPU memory
        # first in every process (16 GB each at 8B).
        base_model = AutoModelForCausalLM.from_pretrained(
            base_model, dtype=torch.bfloat16 if cuda else torch.float32, attn_implementation=attention(config),
            device_map={"": process_state().device} if cuda else None)
    elif cuda:   # a model given built (the bench's)
        base_model = base_model.to(process_state().device)
    lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                      target_modules=list(config.target_modules) if isinstance(config.target_modules, tuple)
                      else config.target_modules, task_type="CAUSAL_LM")
    model = get_peft_model(base_model, lora)
    memory = None
    if cuda:
        free, total = torch.cuda.mem_get_info()   # this process's GPU, the weights on it already
        memory = free + torch.cuda.memory_reserved() - torch.cuda.memory_allocated(), total   # our cache is ours
    plan = forward_plan(model.config.get_text_config(), config, memory, most_packs)
    if plan.checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    if compiles(config):
        for layer in model.get_decoder().layers:
            # For one shape (`_tensors` pads to it): a new length would be compiled again (about a
            # minute at 8B) or traced with symbolic sizes, which flex attention failed to lower.
            layer.compile(dynamic=False)
    return model, plan


def attention(config: TrainConfig) -> str:
    """The attention kernel a model is loaded with: flex attention on a GPU (it skips the blocks
    packing masks), sdpa on a CPU, unless the config names one."""
    if config.attn_implementation != "auto":
        return config.attn_implementation
    return "flex_attention" if torch.cuda.is_available() else "sdpa"


def compiles(config: TrainConfig) -> bool:
    """Whether the decoder layers are compiled: on a GPU unless turned off."""
    return config.compile is True or (config.compile == "auto" and torch.cuda.is_available())


def forward_plan(model_config: Any, config: TrainConfig, gpu_memory: tuple[int, int] | None,
                 most_packs: int = MAX_PACKS_PER_FORWARD) -> ForwardPlan:
    """Packs per forward pass (at most `most_packs`, the packs a process has per step) and
    whether to checkpoint, for what `config` leaves to "auto". On a GPU (`gpu_memory`: bytes
    free, bytes in all) the most packs (up to 4) whose activations fit without checkpointing,
    or one pack with checkpointing when not even one fits; on a CPU one pack, no checkpointing."""
    given = config.packs_per_forward
    candidates = [min(given, most_packs)] if given != "auto" else \
        list(range(min(MAX_PACKS_PER_FORWARD if gpu_memory else 1, most_packs), 0, -1))
    for packs in candidates:
        if gpu_memory is None or not checkpointing_needed(model_config, config, packs, *gpu_memory):
            return ForwardPlan(packs, config.gradient_checkpointing is True)
    return ForwardPlan(candidates[-1], config.gradient_checkpointing in (True, "auto"))


def packs_per_pass(packs: int, most: int) -> int:
    """Packs in each forward pass of a step of `packs`, at most `most` a pass, spread evenly
    (5 at most 4 a pass: 3 + 2, not 4 + 1, since a compiled pass is padded to the full number)."""
    return math.ceil(packs / math.ceil(packs / most))


def checkpointing_needed(model_config: Any, config: TrainConfig, packs: int, free_bytes: int,
                         total_bytes: int) -> bool:
    """Whether a forward pass of `packs` packs would not fit in what is free on the GPU without
    checkpointing, less a quarter of the card kept for the optimiser, the allocator and whatever
    else runs there (a model server sharing the card has taken its part of `free_bytes` already)."""
    return activation_bytes(model_config, config, packs) > free_bytes - 0.25 * total_bytes


def activation_bytes(model_config: Any, config: TrainConfig, packs: int = 1) -> int:
    """What one forward pass of `packs` packs keeps for the backward: about 34 x hidden bytes per
    token per decoder layer in bf16 (flash and flex attention keep no score matrix; measured:
    about 9 GiB for 2048 tokens of Llama-3-8B), plus one chunk of the loss's fp32 logits and
    their gradient."""
    layers = 34 * model_config.hidden_size * model_config.num_hidden_layers * config.max_seq_len * packs
    return layers + 2 * 4 * config.loss_chunk * model_config.vocab_size


def train_lora(base_model: Any, train: Sequence[TokenizedExample], val: Sequence[TokenizedExample],
               output_dir: Path, config: TrainConfig = TrainConfig(), *,
               on_progress: Callable[[int, int, float, float | None], None] | None = None,
               should_stop: Callable[[], bool] | None = None) -> TrainResult:
    """Train a LoRA adapter; save it in `output_dir/adapter` (the best by val loss when there
    is a val set). Resumes from the newest checkpoint in `output_dir/checkpoints` if a crashed
    run left one. `on_progress(step, total, train_loss, val_loss)` and `should_stop()` run on
    the main process only, between optimiser steps."""
    from accelerate import Accelerator
    from accelerate.utils import broadcast_object_list, gather_object

    if not train:
        raise ValueError("No training examples: curate and accept answers first.")
    _seed(config.seed)
    process_state()
    accelerator = Accelerator(mixed_precision="bf16" if torch.cuda.is_available() else "no",
                              cpu=not torch.cuda.is_available())
    rank, world = accelerator.process_index, accelerator.num_processes
    packs = pack(train, config.max_seq_len)
    val_packs = pack(val, config.max_seq_len)
    accumulation = max(1, min(round(config.batch_tokens / config.max_seq_len),
                              math.ceil(len(packs) / config.min_steps_per_epoch)))
    mine_per_step = math.ceil(accumulation / world)   # packs a process has in a step
    model, plan = prepare_model(base_model, config, mine_per_step)   # the same LoRA initialisation in every process
    _seed(config.seed + rank)   # but dropout masks of its own
    # Steps take consecutive slices of all epochs' orders, so a step may span two epochs and
    # none is left empty.
    total_steps = math.ceil(len(packs) * config.epochs / accumulation)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0, fused=torch.cuda.is_available())
    warmup = max(1, int(total_steps * config.warmup_ratio))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total_steps - s) / max(1, total_steps - warmup))))
    loss_module, optimizer = accelerator.prepare(AnswerLoss(model, config.loss_chunk), optimizer)
    main = accelerator.is_main_process

    checkpoint_dir = output_dir / "checkpoints"
    step, resumed_from = 0, None
    best_val, bad_validations, stopped_early = math.inf, 0, False
    latest = checkpoints.latest(checkpoint_dir)
    if latest is not None:
        step, best_val, bad_validations = checkpoints.load(latest, model, optimizer, scheduler, rank)
        resumed_from = step
        logger.info("resuming from checkpoint at step %d", step)

    order = _epoch_orders(len(packs), config.epochs, config.seed)
    # As many packs per pass in every process, which must all run as many passes a step (DDP
    # synchronises on the last): the fewest any process's GPU holds, spread evenly.
    plans = gather_object([plan]) if world > 1 else [plan]
    per_forward = packs_per_pass(mine_per_step, min(p.packs for p in plans))
    checkpointing = any(p.checkpointing for p in plans)   # for the record: each process decided its own
    # Compiled layers see one shape in training (a step's last pass may hold fewer packs) and one
    # in validation; uncompiled, each pass is only as long as its longest pack.
    compiled = compiles(config)
    shape = (per_forward, config.max_seq_len) if compiled else None
    val_shape = (1, config.max_seq_len) if compiled else None
    tokens, started, last_loss, val_loss = 0, time.perf_counter(), float("nan"), None
    loss_module.train()
    while step < total_steps:
        stop = [bool(should_stop()) if main and should_stop is not None else False]
        if world > 1:
            broadcast_object_list(stop)
        if stop[0]:
            raise TrainingCancelled(f"cancelled at step {step} of {total_steps}")
        batch = order[step * accumulation: (step + 1) * accumulation]
        answer_tokens = sum(packs[i].answer_tokens for i in batch)
        # Each process takes every world-th pack, `packs_per_forward` at a time. All run the same
        # number of backward passes (DDP synchronises on the last), a missing one as a
        # zero-weighted repeat. Each pass adds its summed loss over the step's answer tokens;
        # DDP averages over processes, hence `world`.
        mine = batch[rank::world]
        groups = [mine[i:i + per_forward] for i in range(0, len(mine), per_forward)]
        passes = math.ceil(math.ceil(len(batch) / world) / per_forward)
        loss_sum = torch.zeros((), device=accelerator.device)
        for i in range(passes):
            group, weight = (groups[i], 1.0) if i < len(groups) else (batch[:1], 0.0)
            ids, labels, positions = _tensors([packs[j] for j in group], accelerator.device, shape)
            sync = accelerator.no_sync(loss_module) if i < passes - 1 else contextlib.nullcontext()
            with sync, accelerator.autocast():
                summed = loss_module(ids, labels, positions)
                accelerator.backward(summed * (weight * world / max(answer_tokens, 1)))
            loss_sum += summed.detach().float() * weight
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        tokens += sum(len(packs[i].input_ids) for i in batch)
        if world > 1:
            loss_sum = accelerator.reduce(loss_sum, reduction="sum")
        last_loss = float(loss_sum) / max(answer_tokens, 1)
        if not math.isfinite(last_loss):
            raise TrainingDiverged(f"Training diverged at step {step} of {total_steps} (the loss is {last_loss}): "
                                   f"try a lower learning rate than {config.lr}.")
        if val_packs and (step % config.val_every == 0 or step == total_steps):
            with accelerator.autocast():
                val_loss = _validation_loss(model, val_packs, accelerator, config.loss_chunk, val_shape)
            if val_loss < best_val - 1e-4:
                best_val, bad_validations = val_loss, 0
                if main:
                    model.save_pretrained(output_dir / "adapter")
            else:
                bad_validations += 1
        if main and on_progress is not None:
            on_progress(step, total_steps, last_loss, val_loss)
        if step % config.checkpoint_every == 0 and step < total_steps:
            rng = [checkpoints.rng_state()]   # every process's, so each resumes its own dropout stream
            if world > 1:
                rng = gather_object(rng)
            if main:
                checkpoints.save(checkpoint_dir / f"step-{step:06d}", model, optimizer, scheduler,
                                 step, best_val, bad_validations, rng)
        if bad_validations >= config.patience:
            stopped_early = True
            break
    elapsed = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    result = TrainResult(output_dir / "adapter", step, last_loss, best_val if val_packs else None,
                         tokens / elapsed if elapsed else 0.0, peak, resumed_from, stopped_early, per_forward,
                         checkpointing)
    accelerator.wait_for_everyone()
    if main:
        if not val_packs or not (output_dir / "adapter").exists():
            model.save_pretrained(output_dir / "adapter")
        finished = output_dir / f"{FINISHED}.partial"
        finished.write_text(json.dumps({**asdict(result), "adapter_dir": str(result.adapter_dir)}))
        finished.rename(output_dir / FINISHED)   # before the checkpoints go: a crash after resumes from here
        shutil.rmtree(checkpoint_dir, ignore_errors=True)  # finished: the adapter is what remains
    return result


def finished_training(output_dir: Path) -> TrainResult | None:
    """What a training that finished in `output_dir` gave, if one did: a run that stopped after
    it (in the eval gate) resumes there instead of training again from the start."""
    try:
        recorded = json.loads((output_dir / FINISHED).read_text())
    except (OSError, ValueError):
        return None
    if not (output_dir / "adapter").is_dir():
        return None
    known = {f.name for f in fields(TrainResult)}
    values = {k: v for k, v in recorded.items() if k in known}
    try:
        return TrainResult(**{**values, "adapter_dir": Path(values["adapter_dir"])})
    except (KeyError, TypeError):   # written by another version: train again
        return None


def evaluate_loss(model: Any, packs: Sequence[Pack], device: Any, chunk: int = 4096) -> float:
    """Mean loss over the answer tokens of `packs`."""
    total, count = _loss_sum(model, packs, device, chunk)
    return total / max(count, 1)


def _validation_loss(model: Any, packs: Sequence[Pack], accelerator: Any, chunk: int,
                     shape: tuple[int, int] | None) -> float:
    """`evaluate_loss` with each process taking its share of the packs: every process gets the
    same figure, so all agree on the best adapter and on stopping early (a process that stopped
    alone would leave the others waiting in a collective for ever)."""
    rank, world = accelerator.process_index, accelerator.num_processes
    total, count = _loss_sum(model, packs[rank::world], accelerator.device, chunk, shape)
    sums = torch.tensor([total, count], dtype=torch.float64, device=accelerator.device)
    if world > 1:
        sums = accelerator.reduce(sums, reduction="sum")
    return float(sums[0]) / max(float(sums[1]), 1.0)


@torch.no_grad()
def _loss_sum(model: Any, packs: Sequence[Pack], device: Any, chunk: int,
              shape: tuple[int, int] | None = None) -> tuple[float, int]:
    """Summed loss over the answer tokens of `packs`, and how many there were."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for p in packs:
        ids, labels, positions = _tensors([p], device, shape)
        loss, n = answer_loss(model, ids, labels, positions, chunk)
        total += float(loss) * n
        count += n
    model.train(was_training)
    return total, count


def _tensors(group: Sequence[Pack], device: Any,
             shape: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch of packs, each padded to the longest, or to `shape` (rows, tokens) with rows of
    padding alone. The padding is an example of its own (positions from 0, no labels), so
    nothing attends to it and it has no loss."""
    rows, width = shape or (len(group), max(len(p.input_ids) for p in group))
    group = [*group, *[Pack([], [], [])] * (rows - len(group))]

    def padded(p: Pack) -> tuple[list[int], list[int], list[int]]:
        pad = width - len(p.input_ids)
        return p.input_ids + [0] * pad, p.labels + [IGNORE] * pad, p.position_ids + list(range(pad))

    ids, labels, positions = zip(*(padded(p) for p in group))
    return (torch.tensor(ids, device=device), torch.tensor(labels, device=device),
            torch.tensor(positions, device=device))


def _epoch_orders(n: int, epochs: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    order: list[int] = []
    for _ in range(epochs):
        epoch = list(range(n))
        rng.shuffle(epoch)
        order += epoch
    return order


def _seed(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


