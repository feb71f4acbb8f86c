"""An Ollama-protocol test server: the one stand-in the suite uses (no Ollama binary can be
installed on these machines).

It implements the endpoints cinerec's Ollama backend calls, with Ollama's field names:
``/api/version``, ``/api/tags``, ``/api/show``, ``/api/create`` (streamed status lines),
``HEAD``/``POST /api/blobs/<digest>`` (sha256-checked), and ``/api/chat`` and
``/api/generate`` (streamed NDJSON or one object, with ``logprobs``/``top_logprobs``). The
text is real: it comes from the in-process SmolLM2 model through transformers. ``fail``
and ``delay`` make it answer with a server error or too slowly, for the fallback tests;
``fail_create`` refuses to create a model from an adapter.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import torch
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.conftest import ThreadedUvicorn


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class OllamaState:
    model: Any
    tokenizer: Any
    base_tag: str
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    fail: int = 0  # answer the next `fail` generation requests with HTTP 500
    delay: float = 0.0  # seconds to wait before answering a generation request
    fail_create: bool = False  # refuse /api/create (an adapter Ollama cannot load)
    generated_tokens: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _prompt_ids(state: OllamaState, messages: list[dict[str, str]]) -> list[int]:
    """Ollama's chat templating: a trailing assistant message is continued, not closed."""
    tok = state.tokenizer
    if messages and messages[-1]["role"] == "assistant":
        text = tok.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
        text += messages[-1]["content"]
    else:
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return list(tok.encode(text, add_special_tokens=False))


def _step(state: OllamaState, ids: list[int], cache: Any) -> tuple[torch.Tensor, Any]:
    with state.lock, torch.inference_mode():
        out = state.model(input_ids=torch.tensor([ids]), cache=cache, use_cache=True)
    return torch.log_softmax(out.logits[0, -1].float(), -1), out.cache


def _logprob_entry(state: OllamaState, logprobs: torch.Tensor, token: int, top: int) -> dict[str, Any]:
    values, indices = logprobs.topk(max(top, 1))
    return {
        "token": state.tokenizer.decode([token]),
        "logprob": float(logprobs[token]),
        "top_logprobs": [
            {"token": state.tokenizer.decode([int(i)]), "logprob": float(v)}
            for v, i in zip(values.tolist(), indices.tolist(), strict=True)
        ][:top],
    }


async def _tokens(
    state: OllamaState, ids: list[int], options: dict[str, Any], top: int | None
) -> AsyncIterator[tuple[str, dict[str, Any] | None]]:
    """Greedy decoding, one token per step, off the event loop."""
    limit = int(options.get("num_predict", 64))
    eos = state.tokenizer.eos_token_id
    cache, feed, produced = None, ids, []
    for _ in range(limit):
        logprobs, cache = await asyncio.to_thread(_step, state, feed, cache)
        token = int(logprobs.argmax())
        if token == eos:
            break
        entry = _logprob_entry(state, logprobs, token, top) if top is not None else None
        produced.append(token)
        state.generated_tokens += 1
        yield state.tokenizer.decode([token]), entry
        feed = [token]


def create_app(state: OllamaState) -> Starlette:
    async def version(_: Request) -> Response:
        return JSONResponse({"version": "0.13.0"})

    def _known(name: str) -> bool:
        return name == state.base_tag or name in state.models

    async def tags(_: Request) -> Response:
        names = [state.base_tag, *state.models]
        return JSONResponse(
            {
                "models": [
                    {
                        "name": n,
                        "model": n,
                        "modified_at": _now(),
                        "size": 0,
                        "digest": hashlib.sha256(n.encode()).hexdigest(),
                        "details": {"format": "gguf", "family": "llama", "parameter_size": "135M"},
                    }
                    for n in names
                ]
            }
        )

    async def show(request: Request) -> Response:
        body = await request.json()
        name = body.get("model") or body.get("name", "")
        if not _known(name):
            return JSONResponse({"error": f"model '{name}' not found"}, status_code=404)
        info = state.models.get(name, {})
        return JSONResponse(
            {
                "modelfile": f"FROM {info.get('from', name)}",
                "parameters": "",
                "template": "{{ .Prompt }}",
                "details": {"format": "gguf", "family": "llama", "parameter_size": "135M"},
                "model_info": {"general.architecture": "llama"},
                "adapters": info.get("adapters", {}),
            }
        )

    async def blob(request: Request) -> Response:
        digest = request.path_params["digest"]
        if request.method == "HEAD":
            return Response(status_code=200 if digest in state.blobs else 404)
        data = await request.body()
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            return JSONResponse({"error": "digest mismatch"}, status_code=400)
        state.blobs[digest] = data
        return Response(status_code=201)

    async def create(request: Request) -> Response:
        body = await request.json()
        state.requests.append({"path": "/api/create", **body})
        base = body.get("from", "")
        if not _known(base):
            return JSONResponse({"error": f"base model '{base}' not found"}, status_code=404)
        if state.fail_create:
            return JSONResponse({"error": "llama runner: failed to load adapter"}, status_code=500)
        missing = [d for d in (body.get("adapters") or {}).values() if d not in state.blobs]
        if missing:
            return JSONResponse({"error": f"blob {missing[0]} not found"}, status_code=400)
        state.models[body["model"]] = {"from": base, "adapters": body.get("adapters") or {}}
        lines = [{"status": "parsing modelfile"}, {"status": "creating adapter layer"}, {"status": "success"}]
        if body.get("stream", True) is False:
            return JSONResponse(lines[-1])
        return StreamingResponse(
            (json.dumps(line) + "\n" for line in lines), media_type="application/x-ndjson"
        )

    async def _generation(request: Request, chat: bool) -> Response:
        body = await request.json()
        state.requests.append({"path": request.url.path, **body})
        name = body.get("model", "")
        if not _known(name):
            return JSONResponse({"error": f"model '{name}' not found, try pulling it first"}, status_code=404)
        if state.fail > 0:
            state.fail -= 1
            return JSONResponse({"error": "llama runner process has terminated"}, status_code=500)
        if state.delay:
            await asyncio.sleep(state.delay)
        if chat:
            ids = _prompt_ids(state, body.get("messages") or [])
        else:
            prompt = body.get("prompt", "")
            if not body.get("raw"):
                prompt = state.tokenizer.apply_chat_template(
                    [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
                )
            ids = list(state.tokenizer.encode(prompt, add_special_tokens=False))
        top = int(body.get("top_logprobs") or 0) if body.get("logprobs") else None
        options = body.get("options") or {}
        started = time.perf_counter_ns()

        def chunk(text: str, entry: dict[str, Any] | None, done: bool, count: int) -> dict[str, Any]:
            out: dict[str, Any] = {"model": name, "created_at": _now(), "done": done}
            if chat:
                out["message"] = {"role": "assistant", "content": text}
            else:
                out["response"] = text
            if entry is not None:
                out["logprobs"] = [entry]
            if done:
                out.update(
                    done_reason="stop",
                    total_duration=time.perf_counter_ns() - started,
                    prompt_eval_count=len(ids),
                    eval_count=count,
                )
            return out

        if body.get("stream", True) is False:
            pieces = [(t, e) async for t, e in _tokens(state, ids, options, top)]
            whole = chunk("".join(t for t, _ in pieces), None, True, len(pieces))
            if top is not None:
                whole["logprobs"] = [e for _, e in pieces]
            return JSONResponse(whole)

        async def lines() -> AsyncIterator[str]:
            count = 0
            async for text, entry in _tokens(state, ids, options, top):
                count += 1
                yield json.dumps(chunk(text, entry, False, count)) + "\n"
            yield json.dumps(chunk("", None, True, count)) + "\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    async def chat(request: Request) -> Response:
        return await _generation(request, chat=True)

    async def generate(request: Request) -> Response:
        return await _generation(request, chat=False)

    return Starlette(
        routes=[
            Route("/api/version", version),
            Route("/api/tags", tags),
            Route("/api/show", show, methods=["POST"]),
            Route("/api/blobs/{digest}", blob, methods=["HEAD", "POST"]),
            Route("/api/create", create, methods=["POST"]),
            Route("/api/chat", chat, methods=["POST"]),
            Route("/api/generate", generate, methods=["POST"]),
        ]
    )


class OllamaTestServer(ThreadedUvicorn):
    """The test server on a free port, served by uvicorn in a background thread."""

    def __init__(self, model: Any, tokenizer: Any, base_tag: str = "smollm2:135m") -> None:
        self.state = OllamaState(model, tokenizer, base_tag)
        super().__init__(create_app(self.state))
