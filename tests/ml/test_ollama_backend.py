"""The Ollama backend through the official client, against the Ollama-protocol test server
(tests/ollama_server.py, real SmolLM2 text): streaming, logprob scoring, model creation
with an adapter, and server errors and timeouts surfacing as LLMError for the fallback."""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from ml.llm.backends import ExplainRequest, LLMError, ScoreRequest
from ml.llm.ollama_backend import ADAPTER_FILES, OllamaBackend, explainer_tag, p_yes
from ml.llm.prompts import Profile
from tests.ollama_server import OllamaTestServer

REQUEST = ExplainRequest(
    "Aladdin (1992)", ["you rated Beauty and the Beast (1991) 5/5 and it shares Animation"]
)


@pytest.fixture(scope="module")
def ollama(base_llm) -> Iterator[OllamaTestServer]:
    model, tokenizer = base_llm
    with OllamaTestServer(model, tokenizer) as server:
        yield server


def backend(server: OllamaTestServer, **kw: object) -> OllamaBackend:
    return OllamaBackend(server.url, server.state.base_tag, max_new_tokens=12, **kw)  # type: ignore[arg-type]


def test_p_yes_reads_the_two_answers() -> None:
    entry = lambda t, lp: SimpleNamespace(token=t, logprob=lp)  # noqa: E731
    assert p_yes([entry("Yes", math.log(0.6)), entry("No", math.log(0.2))]) == pytest.approx(0.75)
    assert p_yes([entry(" No", -1.0)]) == 0.0
    assert p_yes([entry("Maybe", -0.1)]) == 0.5


async def test_stream_yields_real_text_piece_by_piece(ollama: OllamaTestServer) -> None:
    client = backend(ollama)
    try:
        pieces = [p async for p in client.stream(REQUEST)]
        assert len(pieces) > 3
        assert pieces[0].startswith("You will enjoy Aladdin (1992) because")
        [whole] = await client.explain_many([REQUEST])
        assert whole == "".join(pieces).strip()
        last = ollama.state.requests[-1]
        assert last["path"] == "/api/chat" and last["messages"][-1]["role"] == "assistant"
        assert last["keep_alive"] == "30m"
    finally:
        await client.aclose()


async def test_scores_come_from_logprobs(ollama: OllamaTestServer, base_llm) -> None:
    from ml.llm.prompts import PromptBuilder
    from ml.llm.scoring import yes_probabilities

    client = backend(ollama)
    profile = Profile(["Toy Story (1995)", "Babe (1995)"], ["Heat (1995)"])
    candidates = ["Will the user enjoy Aladdin (1992) (Animation)? Answer Yes or No."]
    try:
        [scores] = await client.score([ScoreRequest(profile, candidates)])
    finally:
        await client.aclose()
    model, tokenizer = base_llm
    builder = PromptBuilder(tokenizer)
    [local] = yes_probabilities(
        model,
        [builder.preference(ScoreRequest(profile, candidates))],
        yes_id=builder.yes_id,
        no_id=builder.no_id,
        pad_id=tokenizer.pad_token_id,
    )
    # Ollama's chat path and the in-process shared-prefix path ask the same question
    assert scores == pytest.approx(local, abs=1e-3)


async def test_promotion_creates_the_explainer_from_base_and_adapter(
    ollama: OllamaTestServer, tmp_path: Path
) -> None:
    for name in ADAPTER_FILES:
        (tmp_path / name).write_bytes(f"adapter file {name}".encode())
    client = backend(ollama)
    try:
        tag = await client.ensure_model(ollama.state.base_tag, tmp_path, "7")
        assert tag == explainer_tag("7") == client.model
        created = ollama.state.models[tag]
        assert created["from"] == ollama.state.base_tag
        digest = "sha256:" + hashlib.sha256(b"adapter file adapter_model.safetensors").hexdigest()
        assert created["adapters"]["adapter_model.safetensors"] == digest
        assert [p async for p in client.stream(REQUEST)]  # the new model answers
    finally:
        await client.aclose()


async def test_server_errors_and_timeouts_raise_llm_error(ollama: OllamaTestServer) -> None:
    client = backend(ollama, timeout_s=1.0)
    try:
        ollama.state.fail = 1
        with pytest.raises(LLMError, match="terminated"):
            await client.explain_many([REQUEST])
        ollama.state.delay = 3.0
        with pytest.raises(LLMError):
            [p async for p in client.stream(REQUEST)]
        ollama.state.delay = 0.0
        with pytest.raises(LLMError, match="ollama pull no-such-base"):
            await client.ensure_model("no-such-base:1", None, None)
        missing = OllamaBackend(ollama.url, "no-such-model:1")
        with pytest.raises(LLMError, match="not found"):
            await missing.explain_many([REQUEST])
        await missing.aclose()
        dead = OllamaBackend("http://127.0.0.1:9", "x", timeout_s=1.0)
        with pytest.raises(LLMError, match="unreachable"):
            await dead.score([ScoreRequest(Profile([], []), ["q"])])
        await dead.aclose()
    finally:
        ollama.state.delay = 0.0
        ollama.state.fail = 0
        await client.aclose()
    await asyncio.sleep(0)
