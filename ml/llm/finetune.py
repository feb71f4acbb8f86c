"""LoRA fine-tuning on preference questions and explanations, with preference AUC for the base
and the tuned model.

The preference loss is the language-model loss on the one answer token (Yes or No) after each
prompt. With explanation examples (``ml.llm.explain_targets``), each step adds the
language-model loss on a batch of checked data-to-text answers after their prompts, so one
adapter serves both the rerank and the explanations.
Only the LoRA matrices on the attention projections train. A checkpoint (adapter, optimizer,
scheduler, step) is written every ``checkpoint_every`` steps; a run started again with the
same checkpoint folder continues from the last one.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ml.llm.base_model import quiet_peft
from ml.llm.examples import PreferenceExample
from ml.llm.explain_targets import ExplainExample
from ml.llm.prompts import PromptBuilder
from ml.llm.scoring import answer_logits, left_pad, positions, yes_probabilities
from ml.metrics import roc_auc

log = logging.getLogger(__name__)

TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj"]
STATE = "trainer_state.pt"
ADAPTER = "adapter"


@dataclass
class FinetuneConfig:
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    learning_rate: float = 1e-3
    batch_users: int = 4  # a step: this many users, all their candidates on one shared user part (0: none)
    max_steps: int = 150
    warmup_steps: int = 10
    candidates_per_user: int = 8
    eval_fraction: float = 0.2
    eval_users: int = 100
    eval_candidates: int = 8
    seed: int = 42
    device: str = "cpu"
    bf16: bool = False
    checkpoint_every: int = 50
    progress: bool = True
    explain_batch: int = 4  # explanation examples per step (0: preference only)


@dataclass
class FinetuneResult:
    adapter: Path
    auc_base: float
    auc_tuned: float
    steps: int
    train_tokens: int
    train_seconds: float
    losses: list[float] = field(default_factory=list)
    train_pairs: int = 0
    eval_pairs: int = 0
    resumed_from: int = 0

    @property
    def tokens_per_second(self) -> float:
        return self.train_tokens / self.train_seconds if self.train_seconds else float("nan")

    def metrics(self) -> dict[str, float]:
        return {
            "auc_base": self.auc_base,
            "auc_tuned": self.auc_tuned,
            "train_tokens_per_s": self.tokens_per_second,
            "train_seconds": self.train_seconds,
            "loss_first": self.losses[0] if self.losses else float("nan"),
            "loss_last": float(np.mean(self.losses[-10:])) if self.losses else float("nan"),
        }


def preference_auc(
    model: Any, builder: PromptBuilder, examples: Sequence[PreferenceExample], *, users_per_batch: int = 8
) -> tuple[float, np.ndarray, np.ndarray]:
    """(AUC, P(Yes) per pair, label per pair) over every candidate of ``examples`` (NaN: none)."""
    if not examples:
        return float("nan"), np.zeros(0), np.zeros(0)
    scores, labels = [], []
    pad = int(builder.tokenizer.pad_token_id)
    for start in range(0, len(examples), users_per_batch):
        chunk = examples[start : start + users_per_batch]
        prompts = [builder.preference(ex.request) for ex in chunk]
        probs = yes_probabilities(model, prompts, yes_id=builder.yes_id, no_id=builder.no_id, pad_id=pad)
        scores += [p for arr in probs for p in arr]
        labels += [y for ex in chunk for y in ex.labels]
    s, y = np.asarray(scores), np.asarray(labels)
    return roc_auc(s, y), s, y


def explanation_loss(model: Any, builder: PromptBuilder, batch: Sequence[ExplainExample]) -> tuple[Any, int]:
    """(mean language-model loss over the answers' tokens, tokens read): each prompt rendered as
    serving renders it (``PromptBuilder.explanation``), its answer and the end-of-turn token.
    Rows are left-padded so that every answer ends at the last position, and the vocabulary
    projection runs on the answer positions only (``logits_to_keep``)."""
    import torch

    tokenizer = builder.tokenizer
    eos = int(tokenizer.eos_token_id)  # where serving stops
    rows, answers = [], []
    for example in batch:
        prompt = tokenizer.encode(builder.explanation(example.request), add_special_tokens=False)
        answer = [*tokenizer.encode(example.target, add_special_tokens=False), eos]
        rows.append(prompt + answer)
        answers.append(len(answer))
    device = next(model.parameters()).device
    ids, mask = left_pad(rows, int(tokenizer.pad_token_id), device)
    longest = max(answers)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask), logits_to_keep=longest + 1)
    logits = out.logits[:, :-1, :]  # position t predicts token t + 1: the last `longest` tokens
    labels = ids[:, -longest:].clone()
    for i, n in enumerate(answers):
        labels[i, : longest - n] = -100  # prompt tokens of the shorter answers' rows
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100
    )
    return loss, sum(map(len, rows))


def _lora(model: Any, config: FinetuneConfig, checkpoint: Path | None) -> Any:
    from peft import LoraConfig, PeftModel, get_peft_model

    quiet_peft()
    if checkpoint is not None:
        return PeftModel.from_pretrained(model, checkpoint / ADAPTER, is_trainable=True)
    lora = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=TARGET_MODULES,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def finetune(
    model: Any,
    builder: PromptBuilder,
    train_examples: Sequence[PreferenceExample],
    eval_examples: Sequence[PreferenceExample],
    config: FinetuneConfig,
    workdir: Path,
    explain_examples: Sequence[ExplainExample] = (),
) -> FinetuneResult:
    """Train a LoRA adapter on ``train_examples`` (and ``explain_examples``, ``config.explain_batch``
    of them per step); AUC on ``eval_examples`` before and after.

    ``workdir`` holds the checkpoint; the finished adapter is written to ``workdir/adapter``.
    """
    import torch
    from transformers import get_cosine_schedule_with_warmup

    torch.manual_seed(config.seed)
    checkpoint = workdir / "checkpoint"
    state: dict[str, Any] = {}
    if (checkpoint / STATE).exists():
        state = torch.load(checkpoint / STATE, weights_only=False)
        log.info("resuming from step %d", state["step"])
    else:
        model.eval()
        state["auc_base"] = preference_auc(model, builder, eval_examples)[0]
        if eval_examples:  # no held-out questions (--eval-users 0): no AUC to report
            log.info("base model preference AUC: %.4f", state["auc_base"])

    peft_model = _lora(model, config, checkpoint if state.get("step") else None)
    prompts = [builder.preference(ex.request) for ex in train_examples]
    labels = [ex.labels for ex in train_examples]
    if not prompts and not explain_examples:
        raise ValueError("no training examples: too few ratings per user")
    pad = int(builder.tokenizer.pad_token_id)
    answer = {1: builder.yes_id, 0: builder.no_id}
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    scheduler = get_cosine_schedule_with_warmup(optimizer, config.warmup_steps, config.max_steps)
    step = int(state.get("step", 0))
    if step:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    losses: list[float] = list(state.get("losses", []))
    tokens = int(state.get("tokens", 0))
    seconds = float(state.get("seconds", 0.0))
    resumed_from = step
    device = torch.device(config.device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16)
    # batch_users 0, or no preference examples: explanations only
    per_epoch = max(1, math.ceil(len(prompts) / max(config.batch_users, 1)))

    peft_model.train()
    bar = tqdm(
        total=config.max_steps, initial=step, desc="LoRA fine-tune", disable=not config.progress or None
    )
    while step < config.max_steps:
        epoch, offset = divmod(step, per_epoch)
        order = np.random.default_rng(config.seed + epoch).permutation(len(prompts))
        chosen = order[offset * config.batch_users : (offset + 1) * config.batch_users]  # empty: none
        started = time.perf_counter()
        # The same two-pass forward as serving: each user part once, its candidates on its cache.
        batch = [prompts[i] for i in chosen]
        loss = torch.zeros((), device=device)
        if batch:
            targets = torch.as_tensor([answer[y] for i in chosen for y in labels[i]], device=device)
            with autocast:
                logits = answer_logits(peft_model, batch, pad)
            loss = torch.nn.functional.cross_entropy(logits.float(), targets)
        if explain_examples and config.explain_batch:
            start = (step * config.explain_batch) % len(explain_examples)
            chosen_text = [
                explain_examples[(start + k) % len(explain_examples)] for k in range(config.explain_batch)
            ]
            with autocast:
                text_loss, text_tokens = explanation_loss(peft_model, builder, chosen_text)
            loss = loss + text_loss
            tokens += text_tokens
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds += time.perf_counter() - started
        tokens += sum(len(p.user_ids) + sum(map(len, p.candidate_ids)) for p in batch)
        losses.append(float(loss.detach()))
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", tok_s=f"{tokens / seconds:.0f}")
        if step % 25 == 0:  # also where no terminal shows the bar
            log.info("step %d: loss %.3f, %.2f s/step", step, np.mean(losses[-25:]), seconds / step)
        if step % config.checkpoint_every == 0 or step == config.max_steps:
            _save_checkpoint(
                checkpoint, peft_model, optimizer, scheduler, step, losses, tokens, seconds, state
            )
    bar.close()

    peft_model.eval()
    auc_tuned = preference_auc(peft_model, builder, eval_examples)[0]
    if eval_examples:
        log.info("tuned preference AUC: %.4f (base %.4f)", auc_tuned, state["auc_base"])
    adapter = workdir / ADAPTER
    if adapter.exists():
        shutil.rmtree(adapter)
    peft_model.save_pretrained(adapter)
    result = FinetuneResult(
        adapter=adapter,
        auc_base=float(state["auc_base"]),
        auc_tuned=auc_tuned,
        steps=step,
        train_tokens=tokens,
        train_seconds=seconds,
        losses=losses,
        train_pairs=sum(map(len, labels)),
        eval_pairs=sum(len(ex.labels) for ex in eval_examples),
        resumed_from=resumed_from,
    )
    meta = {"config": asdict(config), "metrics": result.metrics(), "steps": step}
    (adapter / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
    return result


def _save_checkpoint(
    folder: Path,
    model: Any,
    optimizer: Any,
    scheduler: Any,
    step: int,
    losses: list[float],
    tokens: int,
    seconds: float,
    state: dict[str, Any],
) -> None:
    import torch

    partial = folder.with_name(folder.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    model.save_pretrained(partial / ADAPTER)
    torch.save(
        {
            "step": step,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "losses": losses,
            "tokens": tokens,
            "seconds": seconds,
            "auc_base": state["auc_base"],
        },
        partial / STATE,
    )
    if folder.exists():
        shutil.rmtree(folder)
    partial.rename(folder)  # a crash mid-save leaves the previous checkpoint whole
