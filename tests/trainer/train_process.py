"""`train_lora` in one of the processes `torchrun` starts: `torchrun ... train_process.py SPEC`,
where SPEC is a JSON file with the base model, output folder, examples (and held-out ones)
and config. Writes the best validation loss this process saw to OUT/../val-loss-RANK.json (a
file each: two processes printing to one pipe can interleave their lines)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from core.hyperparams import TrainConfig
from trainer import train


def main(spec_file: Path) -> None:
    spec = json.loads(spec_file.read_text())
    examples = [train.TokenizedExample(**e) for e in spec["examples"]]
    val = [train.TokenizedExample(**e) for e in spec["val"]]
    result = train.train_lora(spec["model"], examples, val, Path(spec["out"]), TrainConfig(**spec["config"]))
    out = Path(spec["out"]).parent / f"val-loss-{os.environ['RANK']}.json"
    out.write_text(json.dumps({"val_loss": result.val_loss}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
