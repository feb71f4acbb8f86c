"""The LLM through the real server: batched explanations over HTTP, streamed explanations
over graphql-transport-ws (websockets to uvicorn), auth refusals with 4401/4403, the
RATE_LIMITED queue, the template fallback, rerank batching, `cinerec llm finetune`, and
promotion to the in-process and the Ollama backends."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from app.serving.llm_holder import NOT_READY
from ml.llm.prompts import display_title
from ml.registry import CHAMPION, LLM
from tests.conftest import LiveServer
from tests.e2e.conftest import Recommender, cli, wait_until
from tests.ollama_server import OllamaTestServer

EXPLAIN = """query($u: Int!, $n: Int) { recommendations(userId: $u, first: $n) {
  movie { movieId } explanation explanationSource evidence { reason similarity weight kind movie { movieId title } } } }"""
STREAM = """subscription($u: Int!, $m: Int!) { explanation(userId: $u, movieId: $m) {
  text done source error evidence { reason movie { movieId } } } }"""


def metric(server: LiveServer, name: str, **labels: str) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def ws_url(server: LiveServer) -> str:
    return server.url.replace("http://", "ws://") + "/graphql"


async def subscribe(
    server: LiveServer,
    token: str | None,
    variables: dict[str, int],
    *,
    on_chunk: Callable[[dict[str, Any]], Any] | None = None,
    stop_after: int | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(chunks, errors) of one explanation subscription; ``stop_after`` chunks then disconnect."""
    chunks: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    async with websockets.connect(ws_url(server), subprotocols=["graphql-transport-ws"]) as ws:
        payload = {"authorization": f"Bearer {token}"} if token else {}
        await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(
            json.dumps({"id": "1", "type": "subscribe", "payload": {"query": STREAM, "variables": variables}})
        )
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 120))
            if message["type"] == "complete":
                break
            if message["type"] == "error":
                errors += message["payload"]
                break
            assert message["type"] == "next"
            if message["payload"].get("errors"):
                errors += message["payload"]["errors"]
                break
            chunk = message["payload"]["data"]["explanation"]
            chunks.append({**chunk, "at": time.perf_counter()})
            if on_chunk is not None:
                await on_chunk(chunk)
            if stop_after is not None and len(chunks) >= stop_after:
                break
    return chunks, errors


async def close_code(
    server: LiveServer, payload: dict[str, Any], variables: dict[str, int] | None = None
) -> int:
    async with websockets.connect(ws_url(server), subprotocols=["graphql-transport-ws"]) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        try:
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 60))
                if message["type"] == "connection_ack" and variables is not None:
                    await ws.send(
                        json.dumps(
                            {
                                "id": "1",
                                "type": "subscribe",
                                "payload": {"query": STREAM, "variables": variables},
                            }
                        )
                    )
        except websockets.ConnectionClosed as closed:
            assert closed.rcvd is not None
            return closed.rcvd.code
    raise AssertionError("the server did not close the socket")


def on_ollama(recommender: Recommender, ollama: OllamaTestServer) -> Any:
    """The shared server's settings with the Ollama backend pointed at the test server."""
    return recommender.settings.model_copy(
        update={
            "llm_backend": "ollama",
            "llm_ollama_url": ollama.url,
            "llm_ollama_base_tag": ollama.state.base_tag,
        }
    )


def consistent(rec: dict[str, Any]) -> bool:
    """An explanation reads as its source says: the model's opening and words of its own past
    the opening's ", and"; or the server's: the template, or the opening's sentence alone."""
    text = rec["explanation"]
    if rec["explanationSource"] == "LLM":
        return text.startswith("You will enjoy ") and ", and " in text
    return text.startswith("We picked ") or (text.startswith("You will enjoy ") and ", and " not in text)


def first_recommendation(rec: Recommender, user: int = 1) -> int:
    data = rec.server.gql(
        "query($u: Int!) { recommendations(userId: $u, first: 1) { movie { movieId } } }",
        {"u": user},
        token=rec.admin_token,
    )
    return data["data"]["recommendations"][0]["movie"]["movieId"]


def test_explanations_of_a_request_are_one_batch(recommender: Recommender) -> None:
    server = recommender.server
    batches = metric(server, "cinerec_llm_batches_total", kind="generate")
    size = metric(server, "cinerec_llm_batch_size_sum", kind="generate")
    written = metric(server, "cinerec_explanations_total", source="llm")
    result = server.gql(EXPLAIN, {"u": 1, "n": 3}, token=recommender.user_token)
    assert "errors" not in result, result
    recs = result["data"]["recommendations"]
    assert metric(server, "cinerec_llm_batches_total", kind="generate") == batches + 1
    assert metric(server, "cinerec_llm_batch_size_sum", kind="generate") == size + 3
    assert result["extensions"]["explanations"]["source"] == "llm"
    assert result["extensions"]["explanations"]["backend"] == "transformers"
    # each text is the model's (every claim checked) or, where it made a claim the facts do not
    # hold, the template's; the label says which, and the counter agrees
    llm = [r for r in recs if r["explanationSource"] == "LLM"]
    assert metric(server, "cinerec_explanations_total", source="llm") == written + len(llm)
    for rec in recs:
        assert consistent(rec), rec
        assert rec["evidence"], "the engine found no evidence for a user with 272 ratings"
        for fact in rec["evidence"]:
            # a reason is one of the user's ratings, named as a person reads the title ("The
            # Professional", not the catalog's "Professional, The"), or the movie's popularity
            title = re.escape(display_title(fact["movie"]["title"]))
            if fact["kind"] == "RATING":
                assert re.match(rf"you rated {title} \(\d{{4}}\) [\d.]+/5", fact["reason"]), fact
            else:
                assert fact["kind"] == "POPULARITY" and fact["movie"]["movieId"] == rec["movie"]["movieId"]
                assert re.match(r"it is widely (liked|watched): ", fact["reason"]), fact
        # the largest parts of the score first, each its share of what raised it
        weights = [f["weight"] for f in rec["evidence"]]
        assert weights == sorted(weights, reverse=True) and 0 < weights[-1] and sum(weights) <= 1 + 1e-6


async def test_explanation_streams_over_websocket(recommender: Recommender) -> None:
    server = recommender.server
    # a (user, movie) whose explanation the model wrote and the checker passed, asked alone (a
    # batch of one, as a stream is decoded): the stream must then give the same text
    written = None
    for user in range(1, 9):
        [found] = server.gql(EXPLAIN, {"u": user, "n": 1}, token=recommender.admin_token)["data"][
            "recommendations"
        ]
        if found["explanationSource"] == "LLM":
            written = (user, found)
            break
    assert written, "the checker refused the model's text for the top movie of users 1-8"
    user, http = written
    movie = http["movie"]["movieId"]
    tokens_at_first: list[float] = []

    async def on_chunk(chunk: dict[str, Any]) -> None:
        if not tokens_at_first:
            async with httpx.AsyncClient() as client:
                text = (await client.get(f"{server.url}/metrics")).text
            tokens_at_first.append(
                next(
                    s.value
                    for f in text_string_to_metric_families(text)
                    for s in f.samples
                    if s.name == "cinerec_llm_generated_tokens_total"
                )
            )

    chunks, errors = await subscribe(
        server, recommender.admin_token, {"u": user, "m": movie}, on_chunk=on_chunk
    )
    assert not errors
    assert len(chunks) >= 3 and chunks[-1]["done"] and not any(c["done"] for c in chunks[:-1])
    assert chunks[0]["evidence"] and chunks[-1]["evidence"] == chunks[0]["evidence"]
    assert all(c["evidence"] is None for c in chunks[1:-1])
    # first the server's opening (the closest evidence, true as it stands), then the model's clauses
    assert chunks[0]["source"] == "TEMPLATE" and all(c["source"] == "LLM" for c in chunks[1:])
    # the first chunk left the server before the last token was generated
    assert tokens_at_first[0] < metric(server, "cinerec_llm_generated_tokens_total")
    streamed = "".join(c["text"] for c in chunks)
    # the same explanation, asked for over HTTP, is the concatenation of the chunks
    assert http["explanation"] == streamed.strip()


async def test_disconnecting_stops_the_generation(recommender: Recommender) -> None:
    server = recommender.server
    before = metric(server, "cinerec_llm_generated_tokens_total")

    async def once_generating(_: dict[str, Any]) -> None:
        # the first chunk is the server's opening; leave once the model has begun writing
        deadline = time.monotonic() + 30
        while metric(server, "cinerec_llm_generated_tokens_total") == before:
            assert time.monotonic() < deadline, "the generation never started"
            await asyncio.sleep(0.02)

    chunks, _ = await subscribe(
        server,
        recommender.user_token,
        {"u": 1, "m": first_recommendation(recommender)},
        on_chunk=once_generating,
        stop_after=1,
    )
    assert len(chunks) == 1
    deadline = time.monotonic() + 30
    # wait for the server to say the stream is closed and its batch has ended
    while metric(server, "cinerec_llm_active_streams") or metric(server, "cinerec_llm_running_calls"):
        assert time.monotonic() < deadline, "the stopped stream's generation never ended"
        await asyncio.sleep(0.05)
    generated = metric(server, "cinerec_llm_generated_tokens_total") - before
    assert 0 < generated < recommender.settings.llm_max_new_tokens  # stopped early, at the close


async def test_websocket_auth_refusals(recommender: Recommender) -> None:
    server = recommender.server
    assert await close_code(server, {}) == 4401
    assert await close_code(server, {"authorization": "Bearer not-a-token"}) == 4401
    # a user may not stream another user's explanation: FORBIDDEN, then 4403
    forbidden = {"authorization": f"Bearer {recommender.user_token}"}
    assert await close_code(server, forbidden, {"u": 2, "m": 1}) == 4403
    chunks, errors = await subscribe(server, recommender.admin_token, {"u": 2, "m": 1})
    assert not errors and chunks[-1]["done"]
    _, errors = await subscribe(server, recommender.admin_token, {"u": 2, "m": 99999999})
    assert errors[0]["extensions"]["code"] == "NOT_FOUND"


@pytest.fixture(scope="module")
def busy_server(recommender: Recommender, module_server_factory: Callable[..., LiveServer]) -> LiveServer:
    """One stream at a time and one waiting, and the LLM rerank forced on."""
    settings = recommender.settings.model_copy(
        update={"llm_max_batch": 1, "llm_max_pending": 1, "llm_rerank_weight": 1.0, "llm_max_new_tokens": 24}
    )
    return module_server_factory(settings)


async def test_a_full_stream_queue_answers_rate_limited(
    recommender: Recommender, busy_server: LiveServer
) -> None:
    movie = first_recommendation(recommender)
    results = await asyncio.gather(
        *(subscribe(busy_server, recommender.admin_token, {"u": u, "m": movie}) for u in (1, 2, 3, 4, 5))
    )
    codes = [errors[0]["extensions"]["code"] for _, errors in results if errors]
    assert "RATE_LIMITED" in codes and set(codes) == {"RATE_LIMITED"}
    assert any(chunks and chunks[-1]["done"] for chunks, _ in results)


def test_rerank_scores_every_pair_of_a_request_in_one_batch(
    recommender: Recommender, busy_server: LiveServer
) -> None:
    batches = metric(busy_server, "cinerec_llm_batches_total", kind="score")
    pairs = metric(busy_server, "cinerec_llm_batch_size_sum", kind="score")
    query = "{ a: recommendations(userId: 1, first: 5) { rank movie { movieId } } b: recommendations(userId: 2, first: 5) { rank } }"
    result = busy_server.gql(query, token=recommender.admin_token)
    assert "errors" not in result and len(result["data"]["a"]) == 5
    assert metric(busy_server, "cinerec_llm_batches_total", kind="score") == batches + 1
    assert metric(busy_server, "cinerec_llm_batch_size_sum", kind="score") == pairs + 40  # 2 users x top 20
    rerank = result["extensions"]["recommender"]["rerank"]
    assert set(rerank["weights"].values()) == {1.0} and "error" not in rerank
    plain = recommender.server.gql(query, token=recommender.admin_token)["data"]["a"]
    pool = recommender.server.gql(
        "{ recommendations(userId: 1, first: 20) { movie { movieId } } }", token=recommender.admin_token
    )
    top20 = {r["movie"]["movieId"] for r in pool["data"]["recommendations"]}
    assert {r["movie"]["movieId"] for r in result["data"]["a"]} <= top20  # reranked within the top 20
    assert [r["rank"] for r in plain] == [1, 2, 3, 4, 5]


async def test_llm_failure_falls_back_to_the_template(recommender: Recommender, server_factory) -> None:
    settings = recommender.settings.model_copy(
        update={
            "llm_backend": "ollama",
            "llm_ollama_url": "http://127.0.0.1:9",  # nothing listens there
            "llm_timeout_seconds": 2.0,
            "llm_rerank_weight": 1.0,
        }
    )
    server = server_factory(settings)
    result = server.gql(EXPLAIN + "", {"u": 1, "n": 2}, token=recommender.user_token)
    assert "errors" not in result
    recs = result["data"]["recommendations"]
    assert len(recs) == 2 and all(r["explanation"].startswith("We picked") for r in recs)
    assert result["extensions"]["explanations"]["source"] == "template"
    assert "unreachable" in result["extensions"]["explanations"]["error"]
    assert "unreachable" in result["extensions"]["recommender"]["rerank"]["error"]
    chunks, errors = await subscribe(
        server, recommender.user_token, {"u": 1, "m": recs[0]["movie"]["movieId"]}
    )
    # the server's opening went out before the model failed; the stream ends it there, as the
    # server's words, with the reason
    assert (
        not errors and all(c["source"] == "TEMPLATE" for c in chunks) and "unreachable" in chunks[-1]["error"]
    )
    # the opening states the largest reason: the movie's popularity, or the first rated reason
    # that shares a genre (else the first rated one) as what it is
    evidence = recs[0]["evidence"]
    if evidence[0]["kind"] == "POPULARITY":
        said = evidence[0]["reason"]
    else:
        rated = [e["reason"] for e in evidence if e["kind"] == "RATING"]
        reason = next((r for r in rated if " and it shares" in r), rated[0]).split(" and it shares")[0]
        title, rating = re.fullmatch(r"you rated (.+) ([\d.]+/5)", reason).groups()  # type: ignore[union-attr]
        said = f"many who watched {title}, which you rated {rating}, watched it too"
    text = "".join(c["text"] for c in chunks)
    assert text.startswith("You will enjoy ") and text.endswith(f"because {said}."), text


def test_finetune_registers_an_adapter_that_promotion_serves(
    recommender: Recommender, server_factory, base_llm
) -> None:
    # `make demo`'s server: no Redis, the template until a tuned adapter is the champion
    waiting = server_factory(
        recommender.settings.model_copy(
            update={"redis_url": None, "llm_adapter_required": True, "poll_without_redis_seconds": 0.2}
        )
    )
    movie = waiting.gql(EXPLAIN, {"u": 1, "n": 1}, token=recommender.user_token)["data"]["recommendations"][0]
    chunks, errors = asyncio.run(
        subscribe(waiting, recommender.user_token, {"u": 1, "m": movie["movie"]["movieId"]})
    )
    assert (
        not errors and chunks and all(c["source"] == "TEMPLATE" and c["error"] == NOT_READY for c in chunks)
    )
    done = cli(
        recommender.env | {"CINEREC_LLM_CACHE_DIR": str(recommender.settings.llm_cache_dir)},
        "llm",
        "finetune",
        "--max-steps",
        "2",
        "--eval-users",
        "3",
        "--candidates-per-user",
        "2",
        "--batch-users",
        "1",
        "--explain-batch",
        "1",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{LLM} version 1: serving (champion)" in done.stdout

    # the command announced nothing (no Redis): the waiting server finds the champion itself
    def explained_by() -> dict[str, Any]:
        return waiting.gql(EXPLAIN, {"u": 1, "n": 1}, token=recommender.user_token)["extensions"][
            "explanations"
        ]

    wait_until(lambda: explained_by().get("version") == "1", "the waiting server serves LLM version 1", 120)
    assert explained_by()["backend"] == "transformers"
    chunks, errors = asyncio.run(
        subscribe(waiting, recommender.user_token, {"u": 1, "m": movie["movie"]["movieId"]})
    )
    assert not errors and all(c["error"] != NOT_READY for c in chunks), chunks
    versions = recommender.server.gql(
        "{ modelVersions(model: LLM) { version aliases metrics { name value } } }",
        token=recommender.admin_token,
    )["data"]["modelVersions"]
    assert versions[0]["version"] == "1" and CHAMPION in versions[0]["aliases"]
    names = {m["name"] for m in versions[0]["metrics"]}
    assert {"auc_base", "auc_tuned", "train_tokens_per_s"} <= names
    promoted = recommender.server.gql(
        'mutation { promoteModel(model: LLM, version: "1") { name version aliases } }',
        token=recommender.admin_token,
    )
    assert promoted["data"]["promoteModel"] == {"name": LLM, "version": "1", "aliases": [CHAMPION]}
    result = recommender.server.gql(EXPLAIN, {"u": 1, "n": 1}, token=recommender.user_token)
    assert result["extensions"]["explanations"]["version"] == "1"
    assert consistent(result["data"]["recommendations"][0])
    denied = recommender.server.gql(
        'mutation { promoteModel(model: LLM, version: "1") { version } }', token=recommender.user_token
    )
    assert denied["errors"][0]["extensions"]["code"] == "FORBIDDEN"

    # The Ollama backend: at start-up it creates cinerec-explainer:1 from the base tag + adapter.
    model, tokenizer = base_llm
    with OllamaTestServer(model, tokenizer) as ollama:
        server = server_factory(on_ollama(recommender, ollama))
        assert "cinerec-explainer:1" in ollama.state.models
        assert set(ollama.state.models["cinerec-explainer:1"]["adapters"]) == {
            "adapter_model.safetensors",
            "adapter_config.json",
        }
        result = server.gql(EXPLAIN, {"u": 1, "n": 1}, token=recommender.user_token)
        assert result["extensions"]["explanations"] == {
            "backend": "ollama",
            "model": LLM,
            "version": "1",
            "source": "llm",
        }
        chunks, errors = asyncio.run(
            subscribe(
                server,
                recommender.user_token,
                {"u": 1, "m": result["data"]["recommendations"][0]["movie"]["movieId"]},
            )
        )
        assert (
            not errors
            and "".join(c["text"] for c in chunks).strip()
            == result["data"]["recommendations"][0]["explanation"]
        )
        assert any(
            r["model"] == "cinerec-explainer:1" and r["path"] == "/api/chat" for r in ollama.state.requests
        )
        server.__exit__()


async def test_promoting_the_llm_drains_work_in_flight(recommender: Recommender) -> None:
    """A promotion during 8 streams and 2 HTTP explanation requests: the work begun on the old
    backend finishes there (no error, no template), new work goes to the new one, and the old
    one is closed once idle."""
    server = recommender.server
    champion = server.gql("{ modelVersions(model: LLM) { version aliases } }", token=recommender.admin_token)
    versions = [v["version"] for v in champion["data"]["modelVersions"] if CHAMPION in v["aliases"]]
    assert versions, (
        "needs an LLM version: test_finetune_registers_an_adapter_that_promotion_serves runs first"
    )
    movies = [
        r["movie"]["movieId"]
        for r in server.gql(
            "{ recommendations(userId: 2, first: 8) { movie { movieId } } }", token=recommender.admin_token
        )["data"]["recommendations"]
    ]
    started = asyncio.Event()
    begun = 0

    async def on_chunk(_: dict[str, Any]) -> None:
        nonlocal begun
        begun += 1
        if begun >= 8:
            started.set()

    async def explain(user: int) -> dict:
        async with httpx.AsyncClient(timeout=120) as client:
            response = await client.post(
                f"{server.url}/graphql",
                json={"query": EXPLAIN, "variables": {"u": user, "n": 1}},
                headers={"authorization": f"Bearer {recommender.admin_token}"},
            )
            return response.json()

    async def promote() -> dict:
        await started.wait()  # every stream has its first chunk: all are in flight
        async with httpx.AsyncClient(timeout=120) as client:
            response = await client.post(
                f"{server.url}/graphql",
                json={
                    "query": f'mutation {{ promoteModel(model: LLM, version: "{versions[0]}") {{ version }} }}'
                },
                headers={"authorization": f"Bearer {recommender.admin_token}"},
            )
            return response.json()

    streams = [
        subscribe(server, recommender.admin_token, {"u": 2, "m": m}, on_chunk=on_chunk) for m in movies
    ]
    results = await asyncio.gather(*streams, *(explain(u) for u in (31, 32)), promote())
    *streamed, promoted = results
    assert promoted["data"]["promoteModel"]["version"] == versions[0], promoted
    for chunks, errors in streamed[:8]:
        assert not errors and chunks[-1]["done"], errors
        # the drain costs nothing: no chunk is a fallback for a failure (the checker may still
        # refuse a claim, which is the explanation's own doing)
        assert all(
            c["error"] is None or c["error"].startswith(("unsupported claim", "the model wrote"))
            for c in chunks
        ), chunks[-1]
    for answer in streamed[8:]:
        assert "errors" not in answer and answer["extensions"]["explanations"]["source"] == "llm", answer
    wait_until(lambda: metric(server, "cinerec_llm_running_calls") == 0, "the LLM idle after the drain")


def test_an_adapter_ollama_cannot_load_is_not_claimed(
    recommender: Recommender, server_factory: Callable[..., LiveServer], base_llm
) -> None:
    """Ollama refuses to create the champion adapter's model: the base tag writes, and
    extensions.explanations says the base model wrote, not the adapter version."""
    model, tokenizer = base_llm
    with OllamaTestServer(model, tokenizer) as ollama:
        ollama.state.fail_create = True
        server = server_factory(on_ollama(recommender, ollama))
        try:
            assert any(r["path"] == "/api/create" for r in ollama.state.requests)  # it tried
            result = server.gql(EXPLAIN, {"u": 3, "n": 1}, token=recommender.admin_token)
            served = result["extensions"]["explanations"]
            assert served["source"] == "llm" and served["model"] == "base" and "version" not in served, served
            assert "could not create version" in served["note"]
            chats = [r for r in ollama.state.requests if r["path"] == "/api/chat"]
            assert chats and {r["model"] for r in chats} == {ollama.state.base_tag}
        finally:
            server.__exit__()


def test_more_explanations_than_the_llm_writes_per_request_are_refused_before_any_work(
    recommender: Recommender, server_factory: Callable[..., LiveServer]
) -> None:
    # a server that writes at most 4 per request (the default, 16, is above what the query
    # cost lets one request ask for: 470 points an explanation, 5000 at most)
    server = server_factory(recommender.settings.model_copy(update={"llm_max_explanations": 4}))
    try:
        batches = metric(server, "cinerec_llm_batches_total", kind="generate")
        five = server.gql(
            "{ recommendations(userId: 1, first: 5) { explanation } }", token=recommender.admin_token
        )
        error = five["errors"][0]
        assert error["extensions"]["code"] == "QUERY_TOO_COMPLEX" and five["data"] is None
        assert (error["extensions"]["explanations"], error["extensions"]["maxExplanations"]) == (5, 4)
        # aliases add up; explanation and explanationSource of one item are one generation
        split = server.gql(
            "{ a: recommendations(userId: 1, first: 3) { explanation explanationSource } "
            "b: recommendations(userId: 2, first: 2) { explanationSource } }",
            token=recommender.admin_token,
        )
        assert split["errors"][0]["extensions"]["explanations"] == 5
        assert metric(server, "cinerec_llm_batches_total", kind="generate") == batches  # nothing generated
        # beyond the cost limit, the price refuses first
        many = server.gql(
            "{ recommendations(userId: 1, first: 11) { explanation } }", token=recommender.admin_token
        )
        assert (
            many["errors"][0]["extensions"]["code"] == "QUERY_TOO_COMPLEX"
            and "cost" in many["errors"][0]["extensions"]
        )
    finally:
        server.__exit__()
