"""One retrain's compute, in a process of its own: `python -m trainer.runner WORK_DIR`.

The worker (`trainer.jobs`) writes WORK_DIR/spec.json and the dataset, starts this process
(under `torchrun` when it trains in several processes, one per GPU) and watches it. This process trains,
reporting progress and loss to Postgres and stopping between steps when a cancel is asked or
its worker died, then runs the eval gate, and writes WORK_DIR/result.json. A crash, an OOM kill
or a lost machine leaves the checkpoints in WORK_DIR, from which a re-run resumes."""
from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

import psutil
import torch

from core import db, training
from core.hyperparams import TrainConfig
from trainer import dataset, evaluate, train

logger = logging.getLogger("trainer.runner")
CANCELLED_EXIT = 3


def main(work: Path) -> int:
    spec = json.loads((work / "spec.json").read_text())
    run_id = int(spec["run_id"])
    main_process = train.process_state().is_main_process
    parent = int(spec["supervisor_pid"])

    def log(line: str) -> None:
        logger.info(line)
        if main_process:
            db.with_retry(lambda conn: training.append_log(conn, run_id, line))

    try:
        result = _run(spec, work, run_id, parent, log, main_process)
    except train.TrainingCancelled as e:
        log(str(e))
        _write(work, {"status": "cancelled", "error": str(e)}, main_process)
        return CANCELLED_EXIT
    except Exception as e:  # the boundary of the process: the worker reads the reason from result.json
        logger.exception("retrain run %s failed", run_id)
        _write(work, {"status": "failed", "error": failure_message(e, _config_of(spec)),
                      "traceback": traceback.format_exc()[-4000:]}, main_process)
        return 1
    finally:
        db.close_pools()
    _write(work, result, main_process)
    train.leave_process_group()
    return 0


def _config_of(spec: dict[str, Any]) -> TrainConfig:
    try:
        return TrainConfig.from_dict(spec["train"])
    except (KeyError, TypeError, ValueError):   # the spec itself is what failed: the defaults' advice will do
        return TrainConfig()


def failure_message(e: Exception, config: TrainConfig) -> str:
    """What the run's record says went wrong; when the GPU ran out of memory, what to change in
    a new run, from what this one used (a resume would run out again: it keeps the parameters)."""
    if not isinstance(e, torch.OutOfMemoryError):
        return f"{type(e).__name__}: {e}"
    less = [*([] if config.gradient_checkpointing is True else ["gradient_checkpointing=true"]),
            *(["packs_per_forward=1"] if config.packs_per_forward != 1 else []),   # "auto" may have taken more
            *([f"max_seq_len={config.max_seq_len // 2}"] if config.max_seq_len > 512 else [])]
    advice = ("start a new run that needs less: " + ", ".join(f"`--param {p}`" for p in less)
              + " (`flywheel train`, or the Training page's Other parameters)") if less else \
        "this run already needs little; use a GPU with more free memory"
    return (f"The GPU ran out of memory ({str(e).splitlines()[0]}). A resume keeps this run's parameters and would "
            f"run out again: {advice}. A model server on the same GPU leaves less room.")


def _run(spec: dict[str, Any], work: Path, run_id: int, parent: int, log: Any,
         main_process: bool) -> dict[str, Any]:
    from transformers import AutoTokenizer

    base_model = spec["base_model"]
    config = TrainConfig.from_dict(spec["train"])
    data = dataset.load(work / "data")
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    train_examples = train.tokenize_chat_examples(tokenizer, [e.messages for e in data.train], config.max_seq_len)
    val_examples = train.tokenize_chat_examples(tokenizer, [e.messages for e in data.val], config.max_seq_len)
    dropped = len(data.train) + len(data.val) - len(train_examples) - len(val_examples)
    log(f"tokenized {len(train_examples)} training and {len(val_examples)} held-out examples"
        + (f"; {dropped} left no room for the answer within {config.max_seq_len} tokens and were dropped"
           if dropped else ""))
    if not train_examples:
        raise dataset.DatasetError(f"No example fits in {config.max_seq_len} tokens with its answer.")

    def on_progress(step: int, total: int, loss: float, val_loss: float | None) -> None:
        db.with_retry(lambda conn: training.report_progress(   # a Postgres restart costs no training
            conn, run_id, step=step, total=total, train_loss=round(loss, 4),
            val_loss=None if val_loss is None else round(val_loss, 4)))
        if step == 1 or step == total or step % max(1, total // 10) == 0:
            log(f"step {step}/{total}: train loss {loss:.4f}"
                + (f", val loss {val_loss:.4f}" if val_loss is not None else ""))

    def should_stop() -> bool:
        if not psutil.pid_exists(parent):  # the worker died: stop rather than train for nobody
            raise RuntimeError(f"the worker process {parent} that started this training is gone")
        return db.with_retry(lambda conn: training.cancel_requested(conn, run_id))

    log(f"training process {os.getpid()} started")  # tests and operators find the process by this line
    result = train.finished_training(work)
    if result is not None:   # this run stopped after its training, in the gate
        log(f"training had finished ({result.steps} steps) before the run stopped: on to the gate")
    else:
        result = train.train_lora(base_model, train_examples, val_examples, work, config,
                                  on_progress=on_progress, should_stop=should_stop)
        if result.resumed_from is not None:
            log(f"resumed from the checkpoint at step {result.resumed_from}")
        ran = result.steps - (result.resumed_from or 0)
        how = (f"{result.packs_per_forward} pack{'s' if result.packs_per_forward > 1 else ''} per forward pass"
               + (", gradient checkpointing" if result.gradient_checkpointing else ""))
        log(f"trained {ran} steps" + (f" ({result.steps} in all)" if result.resumed_from else "")
            + f" at {result.tokens_per_s:.0f} tokens/s ({how})"
            + (", stopped early: the val loss stopped improving" if result.stopped_early else ""))
    if not main_process:
        return {}
    outcome: dict[str, Any] = {"status": "succeeded", "train": {
        "steps": result.steps, "train_loss": round(result.train_loss, 4),
        "val_loss": None if result.val_loss is None else round(result.val_loss, 4),
        "tokens_per_s": round(result.tokens_per_s, 1), "peak_mem_gb": result.peak_mem_gb,
        "resumed_from": result.resumed_from, "stopped_early": result.stopped_early,
        "packs_per_forward": result.packs_per_forward, "gradient_checkpointing": result.gradient_checkpointing}}
    if data.val:
        if should_stop():  # the gate takes minutes on a CPU: a cancel asked during training is honoured first
            raise train.TrainingCancelled(f"cancelled after {result.steps} steps, before the gate")
        _release_training_memory()
        baseline = spec.get("baseline")
        gate = evaluate.evaluate(base_model, result.adapter_dir, data.val,
                                 baseline=(baseline["name"], Path(baseline["path"])) if baseline else None,
                                 margin=float(spec["gate"]["margin"]), max_seq_len=config.max_seq_len,
                                 max_questions=int(spec["gate"]["questions"]),
                                 max_new_tokens=int(spec["gate"]["max_new_tokens"]))
        outcome["gate"] = gate.as_dict()
        log(f"gate {'passed' if gate.passed else 'failed'} against {gate.baseline_name}: "
            f"F1 {gate.candidate.token_f1} vs {gate.baseline.token_f1}, ROUGE-L {gate.candidate.rouge_l} vs "
            f"{gate.baseline.rouge_l}, grounded {gate.candidate.groundedness} vs {gate.baseline.groundedness}"
            + ("" if gate.passed else f" ({'; '.join(gate.reasons)})"))
    else:
        outcome["gate"] = {"passed": False, "reasons": ["no held-out examples: the dataset is too small to evaluate"]}
        log("gate not run: no held-out examples")
    return outcome


def _release_training_memory() -> None:
    """The gate loads the model afresh; hand back what training held (an 8B model twice is tight)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _write(work: Path, result: dict[str, Any], main_process: bool) -> None:
    if main_process:
        partial = work / "result.json.partial"
        partial.write_text(json.dumps(result, indent=2, default=_jsonable))
        partial.rename(work / "result.json")


def _jsonable(value: Any) -> Any:
    return asdict(value) if hasattr(value, "__dataclass_fields__") else str(value)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(main(Path(sys.argv[1])))
