"""Data parallel training: a step's update does not depend on how its packs are split into
forward passes or across processes (torchrun on CPUs with gloo here; NCCL on GPUs takes the
same path), and a retrain through the worker in two processes registers one adapter."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file

from core import db, models, retrain
from retrain_support import ROOT, TINY_PARAMS, finished_run
from core.hyperparams import TrainConfig
from trainer import train

# Six examples of 12-18 tokens in packs of at most 32: three packs, all in one step, so two
# processes split them unevenly (two and one) and a forward pass of three holds them all.
CONFIG = dict(rank=4, alpha=8, epochs=4, lr=5e-3, max_seq_len=32, batch_tokens=128, min_steps_per_epoch=1,
              val_every=10**6, checkpoint_every=10**6)


def _examples(same_length: bool = False) -> list[train.TokenizedExample]:
    g = torch.Generator().manual_seed(1)
    out = []
    for i in range(6):
        ids = torch.randint(10, 400, (12 if same_length else 12 + i,), generator=g).tolist()
        out.append(train.TokenizedExample(ids, [train.IGNORE] * 5 + ids[5:]))
    return out


def _adapter(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "adapter" / "adapter_model.safetensors"))


def _assert_same_adapter(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    assert any(float(w.abs().max()) > 1e-3 for k, w in a.items() if "lora_B" in k)  # it trained
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-3, atol=1e-5, msg=k)


def test_a_step_gives_the_same_update_however_its_packs_are_split_into_forward_passes(
        tiny_model_dir: Path, tmp_path: Path) -> None:
    assert len(train.pack(_examples(), CONFIG["max_seq_len"])) == 3
    one = train.train_lora(tiny_model_dir, _examples(), [], tmp_path / "one", TrainConfig(**CONFIG, packs_per_forward=1))
    three = train.train_lora(tiny_model_dir, _examples(), [], tmp_path / "three",
                             TrainConfig(**CONFIG, packs_per_forward=3))
    assert one.steps == three.steps == 4 and (one.packs_per_forward, three.packs_per_forward) == (1, 3)
    assert abs(one.train_loss - three.train_loss) < 1e-4
    _assert_same_adapter(_adapter(tmp_path / "one"), _adapter(tmp_path / "three"))


def test_two_processes_train_the_same_adapter_as_one(tiny_model_dir: Path, tmp_path: Path) -> None:
    # Validated every step, each process on its share of the held-out packs: they must agree
    # on the loss, hence on which adapter is best.
    config = {**CONFIG, "val_every": 1}
    val = _examples()[::2]
    one = train.train_lora(tiny_model_dir, _examples(), val, tmp_path / "one", TrainConfig(**config))
    done = _train_in_two_processes(tiny_model_dir, tmp_path / "two", config, _examples(), val)
    assert done.returncode == 0, done.stderr[-3000:]
    val_losses = [r["val_loss"] for r in _what_each_process_saw(tmp_path)]
    assert len(val_losses) == 2 and all(abs(v - one.val_loss) < 1e-4 for v in val_losses)  # type: ignore[operator]
    _assert_same_adapter(_adapter(tmp_path / "one"), _adapter(tmp_path / "two"))


def test_with_dropout_each_process_draws_its_own_masks_and_resumes_them_from_a_checkpoint(
        tiny_model_dir: Path, tmp_path: Path) -> None:
    # One example per pack, all of one length: both processes draw masks of the same shapes, so
    # one stream for both would give both the same masks.
    config = {**CONFIG, "dropout": 0.2, "checkpoint_every": 2, "max_seq_len": 16}
    examples = _examples(same_length=True)
    assert len(train.pack(examples, 16)) == 6
    whole = _train_in_two_processes(tiny_model_dir, tmp_path / "whole" / "out", config, examples)
    assert whole.returncode == 0, whole.stderr[-3000:]
    uninterrupted = [r["next_draws"] for r in _what_each_process_saw(tmp_path / "whole")]
    assert uninterrupted[0] != uninterrupted[1]   # one stream each: not the same masks on every process

    crashed = _train_in_two_processes(tiny_model_dir, tmp_path / "resumed" / "out", config, examples,
                                      die_after_step=3)
    assert crashed.returncode != 0
    assert [p.name for p in (tmp_path / "resumed" / "out" / "checkpoints").iterdir()] == ["step-000002"]
    resumed = _train_in_two_processes(tiny_model_dir, tmp_path / "resumed" / "out", config, examples)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # Each process went on with its own stream from step 2: the same masks, the same adapter.
    assert [r["next_draws"] for r in _what_each_process_saw(tmp_path / "resumed")] == uninterrupted
    _assert_same_adapter(_adapter(tmp_path / "whole" / "out"), _adapter(tmp_path / "resumed" / "out"))


def _train_in_two_processes(model: Path, out: Path, config: dict, examples: list[train.TokenizedExample],
                            val: Sequence[train.TokenizedExample] = (),
                            die_after_step: int | None = None) -> subprocess.CompletedProcess[str]:
    """`train_process.py` under torchrun, in two processes; what they saw lands in `out`'s parent."""
    out.parent.mkdir(parents=True, exist_ok=True)
    spec = out.parent / "spec.json"
    spec.write_text(json.dumps({"model": str(model), "out": str(out), "config": config,
                                "examples": [asdict(e) for e in examples], "val": [asdict(e) for e in val],
                                "die_after_step": die_after_step}))
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(Path(__file__).with_name("train_process.py")), str(spec)],
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=300)


def _what_each_process_saw(folder: Path) -> list[dict]:
    return [json.loads((folder / f"seen-{rank}.json").read_text()) for rank in (0, 1)]


def test_a_retrain_in_two_processes_reports_once_and_registers_one_adapter(
        curated_dataset: int, start_worker: object) -> None:
    run = retrain.request_retrain(requested_by="admin", params=TINY_PARAMS)
    start_worker(FLYWHEEL_TRAIN_PROCESSES="2")  # type: ignore[operator]
    done = finished_run(run.id, timeout_s=300)
    assert done.status == "succeeded", f"{done.error}\n{done.log}"
    assert "training in 2 processes" in done.log
    assert len(re.findall(r"training process \d+ started", done.log)) == 1  # only the main process reports
    assert [p["step"] for p in done.losses] == list(range(1, len(done.losses) + 1))
    assert done.log.count("gate passed against") + done.log.count("gate failed against") == 1
    with db.connection() as conn:
        adapter = models.get(conn, done.adapter_version)  # type: ignore[arg-type]
        assert [a.version for a in models.list_adapters(conn)] == [adapter.version]  # type: ignore[union-attr]
    assert adapter is not None and adapter.status == "ready"
    assert (Path(adapter.path) / "adapter_model.safetensors").exists()
