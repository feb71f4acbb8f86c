"""The text encoder loads once, however many first callers arrive together."""

from __future__ import annotations

import threading

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
