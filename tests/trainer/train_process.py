"""`train_lora` in one of the processes `torchrun` starts: `torchrun ... train_process.py SPEC`,
where SPEC is a JSON file with the base model, output folder, examples and config."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from trainer import train


def main(spec_file: Path) -> None:
    spec = json.loads(spec_file.read_text())
    examples = [train.TokenizedExample(**e) for e in spec["examples"]]
    train.train_lora(spec["model"], examples, [], Path(spec["out"]), train.TrainConfig(**spec["config"]))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
