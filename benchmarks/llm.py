"""The LLM layer on 2 CPU cores: streamed explanations over a real websocket.

    python -m benchmarks.llm [--home DIR] [--rounds 10]

Serves `cinerec serve` from a home that holds ML-100K, a trained recommender and a
fine-tuned LLM champion (made here if missing, as `make demo` makes it: ingest, `cinerec
train`, 40 steps of explanation-only `cinerec llm finetune`). Measures, over graphql-transport-ws:
- time to the first chunk of one explanation stream (p50, p90 over ``rounds`` streams),
- tokens/s of one stream (generated tokens from the server's own counter / stream time),
- aggregate tokens/s of 8 concurrent streams, against one stream's rate in the same run,
- time to the first chunk (and to the model's first clause) of a stream that starts while 7
  others are decoding: with continuous batching it joins their batch at the next step.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import websockets
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.common import SHARED, free_port, machine, save, start

STREAM = "subscription($u: Int!, $m: Int!) { explanation(userId: $u, movieId: $m) { text done source } }"
EMAIL, PASSWORD = "bench@cinerec.local", "bench-password"


def cinerec(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "app", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"cinerec {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def prepare(home: Path, steps: int) -> dict[str, str]:
    env = {"CINEREC_HOME": str(home), "CINEREC_ENV": "development", "HF_HUB_OFFLINE": "1"}
    if not (home / "cinerec.db").exists():
        data = home / "data" / "ml-100k"
        subprocess.run([sys.executable, str(SHARED / "ml100k.py"), str(data)], check=True)
        cinerec(env, "db", "upgrade")
        cinerec(env, "data", "ingest", str(data))
    print(cinerec(env, "train", "--if-missing", "--epochs", "10", "--no-tune").strip().splitlines()[-1])
    print(
        cinerec(
            env,
            "llm",
            "finetune",
            "--if-missing",
            "--max-steps",
            str(steps),
            "--batch-users",
            "0",
            "--eval-users",
            "0",
        ).strip()
    )
    # an admin login: it may stream any user's explanations (here MovieLens user 1's)
    subprocess.run(
        [sys.executable, "-m", "app", "users", "create-admin", "--email", EMAIL, "--password", PASSWORD],
        env={**os.environ, **env},
        capture_output=True,
        check=False,
    )
    return env


def generated_tokens(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    return next(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "cinerec_llm_generated_tokens_total"
    )


async def one_stream(
    ws_url: str, token: str, movie: int, started_event: asyncio.Event | None = None
) -> tuple[float, float, float | None]:
    """(seconds to the first chunk, seconds to the last, seconds to the first chunk the model
    wrote: None when the checker let none of its clauses through), from the subscribe message.
    The first chunk is the server's opening (the closest evidence, source TEMPLATE)."""
    async with websockets.connect(ws_url, subprotocols=["graphql-transport-ws"]) as ws:
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}})
        )
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        started = time.perf_counter()
        message = {
            "id": "1",
            "type": "subscribe",
            "payload": {"query": STREAM, "variables": {"u": 1, "m": movie}},
        }
        await ws.send(json.dumps(message))
        first = first_llm = None
        while True:
            reply = json.loads(await ws.recv())
            if reply["type"] != "next":
                raise RuntimeError(reply)
            chunk = reply["payload"]["data"]["explanation"]
            if first is None:
                first = time.perf_counter() - started
            if first_llm is None and chunk["source"] == "LLM" and chunk["text"]:
                first_llm = time.perf_counter() - started
            if started_event is not None and (first_llm is not None or chunk["done"]):
                started_event.set()  # the model is decoding this stream (or it has ended)
            if chunk["done"]:
                return first, time.perf_counter() - started, first_llm


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", type=Path, default=Path("/tmp/cinerec-bench-llm"))
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--finetune-steps", type=int, default=40)  # as `make demo` trains it
    args = parser.parse_args()
    env = prepare(args.home.resolve(), args.finetune_steps)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start(
        [sys.executable, "-m", "app", "serve", "--port", str(port), "--no-access-log"],
        {**env, "CINEREC_CACHE_WARM_MOVIES": "0"},
        f"{url}/healthz",
        timeout=180,
    )
    try:
        login = "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }"
        body = {"query": login, "variables": {"e": EMAIL, "p": PASSWORD}}
        token = httpx.post(f"{url}/graphql", json=body).json()["data"]["login"]["token"]
        recs = httpx.post(
            f"{url}/graphql",
            json={"query": "{ recommendations(userId: 1, first: 8) { movie { movieId } } }"},
            headers={"authorization": f"Bearer {token}"},
        ).json()["data"]["recommendations"]
        movies = [r["movie"]["movieId"] for r in recs]
        ws_url = url.replace("http", "ws") + "/graphql"

        async def run() -> dict[str, object]:
            await one_stream(ws_url, token, movies[0])  # warm-up
            firsts, rates, decode_rates, lengths, model_firsts = [], [], [], [], []
            for i in range(args.rounds):
                before = generated_tokens(url)
                first, total, first_llm = await one_stream(ws_url, token, movies[i % len(movies)])
                model_firsts.append(first_llm)
                tokens = generated_tokens(url) - before
                firsts.append(first)
                rates.append(tokens / total)  # from the subscribe message to the last chunk
                decode_rates.append((tokens - 1) / (total - first))  # after the first chunk
                lengths.append(tokens)
            aggregates = []
            for _ in range(3):
                before = generated_tokens(url)
                started = time.perf_counter()
                results = await asyncio.gather(*(one_stream(ws_url, token, m) for m in movies[:8]))
                wall = time.perf_counter() - started
                aggregates.append(
                    (
                        (generated_tokens(url) - before) / wall,
                        [round(r[0], 2) for r in results],
                        [None if r[2] is None else round(r[2], 2) for r in results],
                    )
                )
            joining = []
            for _ in range(3):
                events = [asyncio.Event() for _ in range(7)]
                running = [
                    asyncio.create_task(one_stream(ws_url, token, m, e))
                    for m, e in zip(movies[:7], events, strict=True)
                ]
                for event in events:  # all seven are decoding
                    await event.wait()
                late = await one_stream(ws_url, token, movies[7])
                joining.append((round(late[0], 3), None if late[2] is None else round(late[2], 2)))
                await asyncio.gather(*running)
            single = statistics.median(rates)
            aggregate = statistics.median(a for a, _, _ in aggregates)
            written = [t for t in model_firsts if t is not None]
            return {
                "ttft_p50_s": round(statistics.median(firsts), 3),
                "ttft_p90_s": round(sorted(firsts)[int(0.9 * (len(firsts) - 1))], 3),
                "one_stream_tokens_per_s_p50": round(single, 1),
                "one_stream_decode_tokens_per_s_p50": round(statistics.median(decode_rates), 1),
                "tokens_per_explanation_mean": round(statistics.mean(lengths), 1),
                "eight_streams_aggregate_tokens_per_s_p50": round(aggregate, 1),
                "aggregate_over_single": round(aggregate / single, 2),
                "eight_streams_ttft_s": [t for _, t, _ in aggregates],
                "first_model_chunk_p50_s": round(statistics.median(written), 3) if written else None,
                "streams_with_model_text": f"{len(written)}/{len(model_firsts)}",
                "eight_streams_first_model_chunk_s": [m for _, _, m in aggregates],
                "joining_seven_ttft_s": [j[0] for j in joining],
                "joining_seven_first_model_chunk_s": [j[1] for j in joining],
                "rounds": args.rounds,
            }

        result = asyncio.run(run())
        result["machine"] = machine()
        save("llm_stream", result)
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
