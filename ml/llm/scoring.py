"""P(Yes) for (user, candidate) pairs: the user part's key/value cache computed once and
shared by all of that user's candidates.

A batch is two forward passes whatever its size: every user part together (left-padded),
then every candidate part together on top of its user's cache. Positions count real tokens
only, so a score equals the one from the whole prompt in a single left-padded pass
(``full_sequence_batch``, the reference the tests compare with). Training runs the same
two passes, with gradients.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from ml.llm.prompts import PreferencePrompt


def left_pad(rows: Sequence[Sequence[int]], pad_id: int, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask), both (len(rows), longest), padded on the left."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row) :] = torch.as_tensor(row, dtype=torch.long)
            mask[i, width - len(row) :] = 1
    return ids.to(device), mask.to(device)


def positions(mask: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
    """Position ids that skip padding: 0, 1, ... over real tokens (plus ``offset`` per row)."""
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return pos if offset is None else pos + offset[:, None]


def full_sequence_batch(
    prompts: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int, device: Any
) -> dict[str, torch.Tensor]:
    """Model inputs for whole prompts (user part + candidate part), left-padded: the answer
    slot is the last position of every row."""
    ids, mask = left_pad([[*u, *c] for u, c in prompts], pad_id, device)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": positions(mask)}


def answer_logits(model: Any, prompts: Sequence[PreferencePrompt], pad_id: int) -> torch.Tensor:
    """(n_pairs, vocab) next-token logits at each pair's answer slot, in prompt then candidate order."""
    import torch

    device = next(model.parameters()).device
    users = [p for p in prompts if p.candidate_ids]
    if not users:
        return torch.zeros((0, model.config.vocab_size), device=device)
    user_ids, user_mask = left_pad([p.user_ids for p in users], pad_id, device)
    out = model(
        input_ids=user_ids,
        attention_mask=user_mask,
        position_ids=positions(user_mask),
        use_cache=True,
        logits_to_keep=1,
    )
    cache = out.cache
    owner = torch.as_tensor(
        [i for i, p in enumerate(users) for _ in p.candidate_ids], dtype=torch.long, device=device
    )
    cache.batch_select_indices(owner)
    cand_ids, cand_mask = left_pad([c for p in users for c in p.candidate_ids], pad_id, device)
    lengths = user_mask.sum(-1)[owner]
    out = model(
        input_ids=cand_ids,
        attention_mask=torch.cat([user_mask[owner], cand_mask], dim=1),
        position_ids=positions(cand_mask, lengths),
        cache=cache,
        use_cache=False,
        logits_to_keep=1,
    )
    return out.logits[:, -1, :]


def yes_probabilities(
    model: Any, prompts: Sequence[PreferencePrompt], *, yes_id: int, no_id: int, pad_id: int
) -> list[np.ndarray]:
    """P(Yes) against No for every candidate of every prompt: one array per prompt."""
    import torch

    with torch.inference_mode():
        logits = answer_logits(model, prompts, pad_id)
        two = torch.stack([logits[:, yes_id], logits[:, no_id]], dim=-1).float()
        p_yes = torch.softmax(two, dim=-1)[:, 0].cpu().numpy()
    out, start = [], 0
    for p in prompts:
        out.append(p_yes[start : start + len(p.candidate_ids)])
        start += len(p.candidate_ids)
    return out
