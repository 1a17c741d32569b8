"""The training core on the CPU with a tiny model of SmolLM2's architecture."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from core.hyperparams import TrainConfig
from trainer import train

MESSAGES = [{"role": "system", "content": "Answer from the context."},
            {"role": "user", "content": "How long does laptop delivery take?"},
            {"role": "assistant", "content": "Five working days in Lisbon [1]."}]


def _examples(n: int, seed: int = 0, shortest: int = 12) -> list[train.TokenizedExample]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        length = shortest + i % 7
        ids = torch.randint(10, 400, (length,), generator=g).tolist()
        out.append(train.TokenizedExample(ids, [train.IGNORE] * 5 + ids[5:]))
    return out


@pytest.fixture
def tiny(tiny_model_dir: Path) -> torch.nn.Module:
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir)


def test_labels_cover_only_the_answer(tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    ex = train.tokenize_chat_example(tokenizer, MESSAGES, max_len=512)
    assert ex is not None
    answer = tokenizer.decode([t for t in ex.labels if t != train.IGNORE])
    assert answer.startswith("Five working days in Lisbon [1].")
    prompt = tokenizer.decode([t for t, label in zip(ex.input_ids, ex.labels) if label == train.IGNORE])
    assert "How long does laptop delivery take?" in prompt and "Five" not in prompt
    assert train.tokenize_chat_example(tokenizer, MESSAGES, max_len=10) is None  # no room for the answer


def test_packed_loss_equals_loss_of_examples_one_by_one(tiny: torch.nn.Module) -> None:
    examples = _examples(4)
    [packed] = train.pack(examples, max_len=256)
    assert packed.position_ids.count(0) == 4
    ids, labels, pos = (torch.tensor([x]) for x in (packed.input_ids, packed.labels, packed.position_ids))
    with torch.no_grad():
        loss, n = train.answer_loss(tiny, ids, labels, pos)
        total, count = 0.0, 0
        for ex in examples:
            t = torch.tensor([ex.input_ids])
            one, k = train.answer_loss(tiny, t, torch.tensor([ex.labels]), torch.arange(len(ex.input_ids))[None])
            total += float(one) * k
            count += k
    assert n == count
    assert float(loss) == pytest.approx(total / count, rel=1e-5)  # no attention across examples


def test_chunked_loss_matches_full_cross_entropy_in_value_and_gradient(tiny: torch.nn.Module) -> None:
    ex = _examples(1)[0]
    ids, labels = torch.tensor([ex.input_ids]), torch.tensor([ex.labels])
    pos = torch.arange(ids.shape[1])[None]
    chunked, _ = train.answer_loss(tiny, ids, labels, pos, chunk=3)
    chunked.backward()
    grad_chunked = tiny.model.layers[0].self_attn.q_proj.weight.grad.clone()
    tiny.zero_grad()
    full = tiny(input_ids=ids, labels=labels).loss
    full.backward()
    assert chunked.item() == pytest.approx(full.item(), rel=1e-5)
    assert torch.allclose(grad_chunked, tiny.model.layers[0].self_attn.q_proj.weight.grad, atol=1e-6)


def _config(**kwargs: object) -> TrainConfig:
    defaults = dict(rank=4, alpha=8, dropout=0.0, epochs=30, lr=5e-3, max_seq_len=64, batch_tokens=64,
                    val_every=5, patience=100, checkpoint_every=10)
    return TrainConfig(**{**defaults, **kwargs})  # type: ignore[arg-type]


def test_training_lowers_the_loss_on_what_it_learns(tiny: torch.nn.Module, tiny_model_dir: Path,
                                                   tmp_path: Path) -> None:
    examples = _examples(2)
    before = train.evaluate_loss(tiny, train.pack(examples, 64), "cpu")  # about ln(49152) = 10.8
    result = train.train_lora(tiny_model_dir, examples, examples, tmp_path, _config())
    # The tiny model's frozen tied embeddings and final norm cap its logits, so the loss cannot
    # fall far; a LoRA that learns nothing stays within noise of `before`.
    assert result.val_loss is not None and result.val_loss < before - 0.5
    assert (result.adapter_dir / "adapter_config.json").exists()
    assert not (tmp_path / "checkpoints").exists()


def test_same_seed_gives_the_same_adapter(tiny_model_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    a = train.train_lora(tiny_model_dir, _examples(3), [], tmp_path / "a", _config(epochs=2))
    b = train.train_lora(tiny_model_dir, _examples(3), [], tmp_path / "b", _config(epochs=2))
    wa, wb = (load_file(str(r.adapter_dir / "adapter_model.safetensors")) for r in (a, b))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_crashed_run_resumes_from_its_last_checkpoint(tiny_model_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    def crash(step: int, total: int, loss: float, val: float | None) -> None:
        if step == 15:
            raise RuntimeError("worker killed")

    with pytest.raises(RuntimeError, match="worker killed"):
        train.train_lora(tiny_model_dir, _examples(2), [], tmp_path, _config(epochs=20), on_progress=crash)
    assert (tmp_path / "checkpoints" / "step-000010" / "state.json").exists()
    resumed = train.train_lora(tiny_model_dir, _examples(2), [], tmp_path, _config(epochs=20))
    assert resumed.resumed_from == 10 and resumed.steps == 20
    # The checkpoint brought back the adapter, optimiser and schedule: the same adapter as a run
    # that never stopped.
    whole = train.train_lora(tiny_model_dir, _examples(2), [], tmp_path / "whole", _config(epochs=20))
    wa, wb = (load_file(str(r.adapter_dir / "adapter_model.safetensors")) for r in (resumed, whole))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_checkpoint_from_before_every_process_kept_its_generators_still_resumes(
        tiny_model_dir: Path, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model

    from trainer import checkpoints

    def fresh() -> tuple[object, torch.optim.Optimizer, object]:
        torch.manual_seed(0)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                               LoraConfig(r=4, target_modules=["q_proj"]))
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
        return model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)

    folder = tmp_path / "step-000003"
    torch.manual_seed(7)
    saved = torch.get_rng_state()
    checkpoints.save(folder, *fresh(), 3, 1.5, 0, [checkpoints.rng_state()])
    # As written then: one CPU generator, the main process's, beside the optimiser's state.
    state = torch.load(folder / "optimizer.pt", weights_only=True)
    torch.save({**state, "rng": saved, "cuda_rng": None}, folder / "optimizer.pt")
    for rank in (0, 1):
        model, optimizer, scheduler = fresh()
        torch.manual_seed(99)
        own = torch.get_rng_state()
        assert checkpoints.load(folder, model, optimizer, scheduler, rank) == (3, 1.5, 0)
        # The main process resumes its stream; a process the checkpoint has none for keeps its own.
        assert torch.equal(torch.get_rng_state(), saved if rank == 0 else own)


def test_a_finished_training_is_on_record_for_a_run_that_stops_after_it(tiny_model_dir: Path, tmp_path: Path) -> None:
    assert train.finished_training(tmp_path) is None
    done = train.train_lora(tiny_model_dir, _examples(2), _examples(1, seed=1), tmp_path, _config(epochs=3))
    assert not (tmp_path / "checkpoints").exists()   # gone: what a resume would start from is the record
    assert train.finished_training(tmp_path) == done
    # A record another version wrote: fields it lacks take their defaults, fields it adds are left,
    # and one without a field that has no default is not taken up (the run trains again).
    recorded = json.loads((tmp_path / train.FINISHED).read_text())
    del recorded["packs_per_forward"]
    (tmp_path / train.FINISHED).write_text(json.dumps({**recorded, "tokens_seen": 123}))
    assert train.finished_training(tmp_path) == done
    del recorded["steps"]
    (tmp_path / train.FINISHED).write_text(json.dumps(recorded))
    assert train.finished_training(tmp_path) is None
    (tmp_path / train.FINISHED).write_text(json.dumps({**recorded, "steps": done.steps}))
    (tmp_path / "adapter").rename(tmp_path / "lost")
    assert train.finished_training(tmp_path) is None   # without its adapter, the record is worth nothing


def test_cancel_stops_between_steps_without_an_adapter(tiny_model_dir: Path, tmp_path: Path) -> None:
    calls = iter(range(100))
    with pytest.raises(train.TrainingCancelled, match="cancelled at step 3"):
        train.train_lora(tiny_model_dir, _examples(2), [], tmp_path, _config(), should_stop=lambda: next(calls) >= 3)
    assert not (tmp_path / "adapter").exists()


def test_early_stopping_when_validation_loss_stops_improving(tiny_model_dir: Path, tmp_path: Path) -> None:
    unrelated = _examples(2, seed=99)
    result = train.train_lora(tiny_model_dir, _examples(2), unrelated, tmp_path,
                              _config(epochs=200, val_every=2, patience=2))
    assert result.stopped_early and result.steps < 200


def test_every_step_trains_on_some_packs_when_steps_span_epochs(tiny_model_dir: Path, tmp_path: Path) -> None:
    # 5 packs, 2 per step, 3 epochs: 8 steps, the last one with a single pack (none empty).
    losses: list[float] = []
    config = _config(epochs=3, batch_tokens=32, max_seq_len=16, min_steps_per_epoch=1)
    result = train.train_lora(tiny_model_dir, _examples(5), [], tmp_path, config,
                              on_progress=lambda step, total, loss, val: losses.append(loss))
    assert result.steps == len(losses) == 8
    assert all(loss > 0 for loss in losses) and result.train_loss == losses[-1] > 0


def test_a_diverging_loss_stops_training_with_a_clear_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(train.TrainingDiverged, match="lower learning rate"):
        train.train_lora(tiny_model_dir, _examples(2), [], tmp_path, _config(lr=1e30))
    assert not (tmp_path / "adapter").exists()


def test_no_examples_is_a_clear_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="No training examples"):
        train.train_lora(tiny_model_dir, [], [], tmp_path, _config())


def test_an_example_longer_than_max_seq_len_is_refused_naming_both_lengths(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="An example of 80 tokens is longer than max_seq_len 64"):
        train.train_lora(tiny_model_dir, _examples(2) + _examples(1, shortest=80), [], tmp_path, _config())


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_the_memory_estimate_that_decides_on_checkpointing_grows_with_the_packs_of_a_forward_pass() -> None:
    from transformers import LlamaConfig

    llama3_8b = LlamaConfig(hidden_size=4096, num_hidden_layers=32, vocab_size=128256)
    one = train.activation_bytes(llama3_8b, TrainConfig(max_seq_len=2048), packs=1)
    assert 12 * 2**30 < one < 13 * 2**30   # about 8.5 GiB of layers (9 measured) and 4 GiB of loss logits
    two = train.activation_bytes(llama3_8b, TrainConfig(max_seq_len=2048), packs=2)
    # The second pack adds its layers' activations, near the 9 GiB measured for 2048 tokens on an
    # H100; the loss keeps one chunk of logits whatever the packs.
    assert 8 * 2**30 < two - one < 9.5 * 2**30


def test_a_forward_pass_takes_as_many_packs_as_free_gpu_memory_holds_and_checkpoints_only_if_one_does_not_fit() -> None:
    from transformers import LlamaConfig

    llama3_8b = LlamaConfig(hidden_size=4096, num_hidden_layers=32, vocab_size=128256)
    h100, weights, gib = 80 * 2**30, 16 * 2**30, 2**30
    auto = TrainConfig(max_seq_len=2048)

    def plan(free: int, config: TrainConfig = auto, most_packs: int = 8) -> train.ForwardPlan:
        return train.forward_plan(llama3_8b, config, (free, h100), most_packs)

    # The card to itself: four packs (38 GiB of activations) fit beside the weights, a quarter kept free.
    assert plan(h100 - weights) == (4, False)
    # 46 GiB free holds two packs (21 GiB), 36 GiB one (12.5 GiB with the loss chunk).
    assert plan(46 * gib) == (2, False)
    assert plan(36 * gib) == (1, False)
    # A model server on the same card holding 40 GiB: not even one pack fits without checkpointing.
    assert plan(h100 - weights - 40 * gib) == (1, True)
    # No more packs than a process has in a step.
    assert plan(h100 - weights, auto, most_packs=3) == (3, False)
    assert plan(h100 - weights, TrainConfig(max_seq_len=2048, packs_per_forward=4), most_packs=1) == (1, False)
    # What the run was given is kept; checkpointing stays "auto" unless given.
    assert plan(36 * gib, TrainConfig(max_seq_len=2048, packs_per_forward=2)) == (2, True)
    assert plan(h100 - weights - 40 * gib, TrainConfig(max_seq_len=2048, gradient_checkpointing=False)) == (1, False)
    assert plan(h100 - weights, TrainConfig(max_seq_len=2048, gradient_checkpointing=True)) == (4, True)
    # Without a GPU: one pack unless given, checkpointing only if asked for.
    assert train.forward_plan(llama3_8b, auto, None, 8) == (1, False)
    assert train.forward_plan(llama3_8b, TrainConfig(packs_per_forward=3, gradient_checkpointing=True), None, 2) \
        == (2, True)


def test_a_step_s_packs_are_spread_evenly_over_its_forward_passes() -> None:
    assert [train.packs_per_pass(packs, 4) for packs in (1, 3, 4, 5, 6, 8, 9)] == [1, 3, 4, 3, 3, 4, 3]


def test_padding_a_forward_pass_to_one_shape_leaves_its_loss_as_it_was(tiny: torch.nn.Module) -> None:
    [packed] = train.pack(_examples(3), max_len=64)
    with torch.no_grad():
        as_long_as_the_pack = train.answer_loss(tiny, *train._tensors([packed], "cpu"))
        with_padding_and_a_row_of_it = train.answer_loss(tiny, *train._tensors([packed], "cpu", shape=(2, 96)))
    assert with_padding_and_a_row_of_it[1] == as_long_as_the_pack[1]
    assert float(with_padding_and_a_row_of_it[0]) == pytest.approx(float(as_long_as_the_pack[0]), rel=1e-5)


@pytest.mark.gpu
@needs_cuda
def test_on_the_gpu_compiled_bf16_training_lowers_the_loss(tiny_model_dir: Path, tmp_path: Path) -> None:
    # Packs of several lengths, longer than one of flex attention's 128-token blocks, and a
    # validation pack: the compiled layers are given them padded to one shape (on an H100 this
    # test took 38 s so, 103 s when each new length was compiled again).
    examples = _examples(9, shortest=60)
    val = examples[:3]   # random tokens: only what was trained on can get a lower loss
    lengths = {len(p.input_ids) for p in train.pack(examples, 256)}
    assert len(lengths) > 1 and max(lengths) > 128
    result = train.train_lora(tiny_model_dir, examples, val, tmp_path,
                              _config(epochs=30, max_seq_len=256, batch_tokens=256))  # GPU defaults
    assert result.peak_mem_gb is not None and result.peak_mem_gb > 0
    assert result.val_loss is not None and result.val_loss < 10.5  # from about ln(49152) = 10.8
    assert (result.adapter_dir / "adapter_model.safetensors").exists()


@pytest.mark.gpu
@needs_cuda
def test_on_the_gpu_flex_attention_keeps_packed_examples_apart(tiny_model_dir: Path) -> None:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="flex_attention").cuda()
    examples = _examples(4)
    [packed] = train.pack(examples, max_len=256)
    ids, labels, pos = (torch.tensor([x], device="cuda") for x in (packed.input_ids, packed.labels, packed.position_ids))
    with torch.no_grad():
        loss, n = train.answer_loss(model, ids, labels, pos)
        total = 0.0
        for ex in examples:
            one, k = train.answer_loss(model, torch.tensor([ex.input_ids], device="cuda"),
                                       torch.tensor([ex.labels], device="cuda"),
                                       torch.arange(len(ex.input_ids), device="cuda")[None])
            total += float(one) * k
    assert float(loss) == pytest.approx(total / n, rel=1e-4)
