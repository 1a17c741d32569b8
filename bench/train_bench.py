"""GPU training speed: our trainer's step against a plain transformers + peft loop, same model,
same tokens, same run.

The model has Llama-3-8B's architecture (hidden 4096, 32 layers, 32 heads, 8 KV heads, MLP
14336, vocabulary 128256), randomly initialised in bf16 on the GPU: weights do not change the
cost of a step, and none can be downloaded there. LoRA r=16 on every linear projection;
sequences of 2048 tokens made of four 512-token examples (384 prompt + 128 answer tokens, the
shape of a curated answer with its context). The plain loop feeds each 2048-token sequence to
`model(input_ids, labels=labels).loss.backward()` with and without gradient checkpointing; our
trainer runs `trainer.train.train_lora` on the same examples (packed, answer-only chunked loss,
as many packs per forward pass as fit, no checkpointing when memory allows, bf16 autocast,
fused AdamW, and on a GPU flex attention and compiled decoder layers), with its defaults and
with some of them off. Tokens/s count every token of every sequence, after warm-up steps. Prints
one JSON object last.

Run on a GPU: `python bench/train_bench.py [--layers 32] [--variants ...]`.

Measured on one H100 80GB (torch 2.11, transformers 5.17, peft 0.21), 3 warm-up + 10 timed steps:
  plain, checkpointing              4,569 tokens/s  19.0 GiB   (these two: an earlier run)
  plain                             7,279 tokens/s  36.5 GiB
  plain, batch 2                    8,108 tokens/s  57.4 GiB   (8,054 and 8,091 in other runs)
  ours, one pack per pass, sdpa, eager      6,965 tokens/s  30.6 GiB   (these three: an earlier run,
  ours, one pack per pass, sdpa, compiled  12,156 tokens/s  26.3 GiB    one pack per optimiser step,
  ours, one pack per pass, flex, eager      7,167 tokens/s  29.6 GiB    not eight)
  ours, one pack per pass (ours_1pack)     13,702 tokens/s  25.5 GiB   (13,086 and 13,855 in other runs)
  ours, two packs per pass (ours_2packs)   15,858 tokens/s  35.1 GiB
  ours (four packs per pass, as chosen)    16,609 tokens/s  54.8 GiB   2.05x plain batch 2 in the same run
5,000 examples x 512 tokens x 3 epochs: 7.7 minutes of steps at that rate, 8.2 with the warm-up
(compilation, 32.5 s); validation passes and the eval gate come on top."""
from __future__ import annotations

import argparse
import gc
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SEQ, EXAMPLE, ANSWER = 2048, 512, 128
IGNORE = -100


def llama3_8b(layers: int = 32) -> object:
    from transformers import LlamaConfig

    return LlamaConfig(hidden_size=4096, num_hidden_layers=layers, num_attention_heads=32, num_key_value_heads=8,
                       intermediate_size=14336, vocab_size=128256, max_position_embeddings=8192,
                       rope_theta=500000.0, tie_word_embeddings=False, rms_norm_eps=1e-5)


def build_model(config: object, attn: str) -> torch.nn.Module:
    """Random bf16 weights, created on the GPU (initialising 8B parameters on a CPU takes minutes)."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda"):
            model = LlamaForCausalLM._from_config(config, attn_implementation=attn, dtype=torch.bfloat16)
    finally:
        torch.set_default_dtype(previous)
    return model


def examples(n_sequences: int, vocab: int) -> list:
    from trainer import train

    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n_sequences * SEQ // EXAMPLE):
        ids = torch.randint(0, vocab, (EXAMPLE,), generator=g).tolist()
        out.append(train.TokenizedExample(ids, [IGNORE] * (EXAMPLE - ANSWER) + ids[EXAMPLE - ANSWER:]))
    return out


def plain(config: object, data: list, *, checkpointing: bool, warmup: int, steps: int, batch: int = 1) -> dict:
    """The loop a tutorial writes: peft model, full logits and loss from transformers."""
    from peft import LoraConfig, get_peft_model

    model = build_model(config, "sdpa")
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    per_seq = SEQ // EXAMPLE
    seqs = [(torch.tensor([t for e in data[i:i + per_seq] for t in e.input_ids]),
             torch.tensor([t for e in data[i:i + per_seq] for t in e.labels])) for i in range(0, len(data), per_seq)]
    torch.cuda.reset_peak_memory_stats()
    stamps = []
    for step in range(warmup + steps):
        chunk = [seqs[(step * batch + j) % len(seqs)] for j in range(batch)]
        ids = torch.stack([c[0] for c in chunk]).cuda()
        labels = torch.stack([c[1] for c in chunk]).cuda()
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        stamps.append(time.perf_counter())
    tokens = steps * batch * SEQ
    result = {"tokens_per_s": round(tokens / (stamps[-1] - stamps[warmup - 1])),
              "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1), "loss": round(float(loss), 3)}
    del model, optimizer, loss
    return result


def ours(config: object, data: list, *, warmup: int, steps: int, **options: object) -> dict:
    """`trainer.train.train_lora` with its GPU defaults (flex attention, compiled decoder
    layers, as many packs per forward pass as fit, its packs per optimiser step), or with
    `options` changing them; timed per optimiser step."""
    from core.hyperparams import TrainConfig
    from trainer import train

    cfg = TrainConfig(rank=16, alpha=32, epochs=1, max_seq_len=SEQ, min_steps_per_epoch=1,
                      val_every=10**9, checkpoint_every=10**9, warmup_ratio=0.0, **options)  # type: ignore[arg-type]
    attn = train.attention(cfg)   # on the GPU: flex attention unless an option names another
    model = build_model(config, attn)
    stamps: list[float] = []

    def on_progress(step: int, total: int, loss: float, val: float | None) -> None:
        torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    per_step = cfg.batch_tokens // SEQ
    with tempfile.TemporaryDirectory() as out:
        result = train.train_lora(model, data[:(warmup + steps) * per_step * SEQ // EXAMPLE], [], Path(out), cfg,
                                  on_progress=on_progress)
    out = {"tokens_per_s": round((len(stamps) - warmup) * per_step * SEQ / (stamps[-1] - stamps[warmup - 1])),
           "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1), "loss": round(result.train_loss, 3),
           "attention": attn, "compiled": train.compiles(cfg), "warmup_s": round(stamps[warmup - 1] - started, 1),
           "packs_per_forward": result.packs_per_forward, "gradient_checkpointing": result.gradient_checkpointing}
    del model, result
    return out


VARIANTS = {
    "plain_gc": lambda c, d, w, s: plain(c, d, checkpointing=True, warmup=w, steps=s),
    "plain": lambda c, d, w, s: plain(c, d, checkpointing=False, warmup=w, steps=s),
    "plain_b2": lambda c, d, w, s: plain(c, d, checkpointing=False, warmup=w, steps=s, batch=2),
    # One pack per forward pass, with and without each of the other speed-ups.
    "ours_sdpa_eager": lambda c, d, w, s: ours(c, d, warmup=w, steps=s, packs_per_forward=1, attn_implementation="sdpa",
                                               compile=False),
    "ours_sdpa_compiled": lambda c, d, w, s: ours(c, d, warmup=w, steps=s, packs_per_forward=1,
                                                  attn_implementation="sdpa"),
    "ours_flex_eager": lambda c, d, w, s: ours(c, d, warmup=w, steps=s, packs_per_forward=1, compile=False),
    "ours_1pack": lambda c, d, w, s: ours(c, d, warmup=w, steps=s, packs_per_forward=1),
    "ours_2packs": lambda c, d, w, s: ours(c, d, warmup=w, steps=s, packs_per_forward=2),
    "ours": lambda c, d, w, s: ours(c, d, warmup=w, steps=s),  # the trainer's GPU defaults
}


def main() -> None:
    from core.hyperparams import TrainConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("train_bench needs a CUDA GPU")
    config = llama3_8b(args.layers)
    packs_per_step = TrainConfig().batch_tokens // SEQ   # the trainer's default step
    data = examples(packs_per_step * (args.warmup + args.steps), config.vocab_size)  # type: ignore[attr-defined]
    results: dict[str, dict] = {}
    for name in args.variants:
        t0 = time.perf_counter()
        try:
            results[name] = VARIANTS[name](config, data, args.warmup, args.steps)
        except torch.OutOfMemoryError as e:
            results[name] = {"error": f"out of memory: {str(e)[:120]}"}
        results[name]["wall_s"] = round(time.perf_counter() - t0, 1)
        print(name, json.dumps(results[name]), flush=True)
        gc.collect()
        torch.cuda.empty_cache()
    fastest = max(((n, r) for n, r in results.items() if n.startswith("ours") and "tokens_per_s" in r),
                  key=lambda item: item[1]["tokens_per_s"], default=(None, {}))
    best, warmup_s = fastest[1].get("tokens_per_s"), fastest[1].get("warmup_s", 0.0)
    ratios = {f"vs_{n}": round(best / r["tokens_per_s"], 2)
              for n, r in results.items() if n.startswith("plain") and "tokens_per_s" in r and best}
    summary = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "layers": args.layers,
               "seq": SEQ, "example_tokens": EXAMPLE, "answer_tokens": ANSWER, "lora_rank": 16,
               "results": results, "best_ours_tokens_per_s": best, "ratio": ratios,
               # 5,000 curated examples x 512 tokens x 3 epochs: the steps, and with the warm-up (compilation)
               # the fastest variant took; validation passes and the gate come on top
               "minutes_for_5000x512x3": round(5000 * 512 * 3 / best / 60, 1) if best else None,
               "minutes_for_5000x512x3_with_warmup": round((5000 * 512 * 3 / best + warmup_s) / 60, 1) if best else None}
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
