"""`train_lora` in one of the processes `torchrun` starts: `torchrun ... train_process.py SPEC`,
where SPEC is a JSON file with the base model, output folder, examples (and held-out ones),
config, and optionally a step after which the main process dies ("die_after_step"). Writes the
best validation loss this process saw, and the next numbers its random generator draws, to
OUT/../seen-RANK.json (a file each: two processes printing to one pipe can interleave
their lines)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

from core.hyperparams import TrainConfig
from trainer import train


def main(spec_file: Path) -> None:
    spec = json.loads(spec_file.read_text())
    examples = [train.TokenizedExample(**e) for e in spec["examples"]]
    val = [train.TokenizedExample(**e) for e in spec["val"]]

    def progress(step: int, *_: object) -> None:
        if step == spec.get("die_after_step"):
            os._exit(1)   # as a crash does: no clean-up

    result = train.train_lora(spec["model"], examples, val, Path(spec["out"]), TrainConfig(**spec["config"]),
                              on_progress=progress)
    out = Path(spec["out"]).parent / f"seen-{os.environ['RANK']}.json"
    out.write_text(json.dumps({"val_loss": result.val_loss, "next_draws": torch.rand(4).tolist()}))
    train.leave_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
