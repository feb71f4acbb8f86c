"""The text encoder loads once, however many first callers arrive together."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from ml import embeddings


def test_concurrent_first_loads_build_one_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    import sentence_transformers

    real = sentence_transformers.SentenceTransformer
    built: list[object] = []

    def counting(*args: object, **kwargs: object) -> object:
        model = real(*args, **kwargs)
        built.append(model)
        return model

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", counting)
    monkeypatch.setattr(embeddings, "_encoder", None)
    start = threading.Barrier(4)
    seen: list[object] = []

    def first_call() -> None:
        start.wait()
        seen.append(embeddings.load_encoder())

    threads = [threading.Thread(target=first_call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(built) == 1 and all(s is built[0] for s in seen)
    assert embeddings.encode(["a movie about toys"]).shape == (1, embeddings.DIMENSIONS)


def test_a_catalog_encoded_once_is_read_back_and_a_changed_one_is_encoded_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    calls: list[list[str]] = []

    def encode(texts: list[str], **_: object) -> np.ndarray:
        calls.append(list(texts))
        vectors = np.random.default_rng(len(calls)).normal(size=(len(texts), embeddings.DIMENSIONS))
        return vectors.astype(np.float32)

    monkeypatch.setattr(embeddings, "encode", encode)
    first = embeddings.encode_cached(["Heat (1995)", "Fargo (1996)"], tmp_path)
    again = embeddings.encode_cached(["Heat (1995)", "Fargo (1996)"], tmp_path)
    assert len(calls) == 1 and np.array_equal(first, again)
    # one text changed (or two texts joined differently): encoded again, under another key
    changed = embeddings.encode_cached(["Heat (1995)", "Fargo (1996) crime"], tmp_path)
    joined = embeddings.encode_cached(["Heat (1995)Fargo (1996)"], tmp_path)
    assert len(calls) == 3 and changed.shape == (2, embeddings.DIMENSIONS) and joined.shape[0] == 1
    assert len(list(tmp_path.glob("*.npy"))) == 3 and not list(tmp_path.glob("*partial*"))
    assert embeddings.encode_cached(["x"], None).shape == (1, embeddings.DIMENSIONS) and len(calls) == 4
