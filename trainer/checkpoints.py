"""Training checkpoints: the adapter so far, the optimiser and scheduler state and the loop's
counters, written so that a crash mid-save never leaves one that looks complete; the newest
complete one is where a re-run resumes."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch


def latest(folder: Path) -> Path | None:
    """The newest complete checkpoint in `folder`, if any."""
    found = sorted(folder.glob("step-*")) if folder.exists() else []
    complete = [f for f in found if (f / "state.json").exists()]
    return complete[-1] if complete else None


def rng_state() -> dict[str, torch.Tensor | None]:
    """This process's random generators: dropout draws from the CPU's, or from its GPU's."""
    return {"cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}


def save(folder: Path, model: Any, optimizer: Any, scheduler: Any, step: int, best_val: float,
         bad_validations: int, rng: list[dict[str, torch.Tensor | None]]) -> None:
    """Write a checkpoint to `folder`, with every training process's `rng_state()` (in rank
    order); keep only the newest two."""
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial / "adapter")
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng},
               partial / "optimizer.pt")
    (partial / "state.json").write_text(json.dumps({"step": step, "best_val": best_val,
                                                    "bad_validations": bad_validations}))
    partial.rename(folder)  # a crash mid-save never leaves a checkpoint that looks complete
    for old in sorted(folder.parent.glob("step-*"))[:-2]:
        shutil.rmtree(old, ignore_errors=True)


def load(folder: Path, model: Any, optimizer: Any, scheduler: Any, rank: int = 0) -> tuple[int, float, int]:
    """Restore a checkpoint into the model, optimiser and scheduler, and process `rank`'s random
    generators; returns (step, best val loss, validations without improvement)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, load_file(str(folder / "adapter" / "adapter_model.safetensors")))
    # Tensors and numbers only: nothing to unpickle. Loaded on the CPU, not on the GPU they were
    # saved from (GPU 0, for every process), and moved to each parameter's device by the optimiser.
    state = torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rng = state["rng"]
    if isinstance(rng, torch.Tensor):   # written before each process saved its own: the main one's
        rng = [{"cpu": rng, "cuda": state.get("cuda_rng")}]
    # Resumed with more processes than saved it, a new one keeps the stream it was seeded with.
    if rank < len(rng):
        torch.set_rng_state(rng[rank]["cpu"])
        if isinstance(rng[rank]["cuda"], torch.Tensor) and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng[rank]["cuda"])
    meta = json.loads((folder / "state.json").read_text())
    return int(meta["step"]), float(meta["best_val"]), int(meta["bad_validations"])
