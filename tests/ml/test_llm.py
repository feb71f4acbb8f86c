"""The LLM layer on the real SmolLM2-135M: prompts, shared-prefix scoring, AUC, fine-tuning,
the in-process backend's streaming and batching, and the rerank blend."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ml.interactions import Catalog
from ml.llm.backends import Decoding, ExplainRequest, Overloaded, ScoreRequest
from ml.llm.evidence import gather_evidence
from ml.llm.examples import build_examples, split_users
from ml.llm.finetune import FinetuneConfig, finetune, preference_auc
from ml.llm.local import TransformersBackend
from ml.llm.prompts import (
    GENRE_TASTE,
    PLEASED,
    RATED,
    GenreTaste,
    MovieFacts,
    Profile,
    PromptBuilder,
    candidate_text,
    explanation_opening,
    genre_taste,
    preference_request,
    word_for,
)
from ml.llm.rerank import blend, choose_weight, reranked
from ml.llm.scoring import full_sequence_batch, yes_probabilities
from ml.metrics import roc_auc


def slow_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    pos = scores[labels == 1]
    neg = scores[labels == 0]
    wins = sum((p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_auc_matches_pairwise_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.normal(size=200) + labels * 0.5, 1)  # rounded: many ties
    assert roc_auc(scores, labels) == pytest.approx(slow_auc(scores, labels), abs=1e-12)
    assert roc_auc(labels.astype(float), labels) == 1.0
    assert np.isnan(roc_auc(scores, np.ones(200)))


def small_catalog() -> tuple[pd.DataFrame, Catalog]:
    rng = np.random.default_rng(0)
    movies = pd.DataFrame(
        {
            "movie_id": range(1, 41),
            "title": [f"Film {i}" for i in range(1, 41)],
            "year": [1990 + i % 10 for i in range(40)],
        }
    )
    genres = pd.DataFrame(
        {"movie_id": range(1, 41), "name": ["Drama" if i % 2 else "Comedy" for i in range(40)]}
    )
    rows = [
        (u, m, float(rng.integers(1, 6)))
        for u in range(1, 31)
        for m in rng.choice(range(1, 41), 15, replace=False)
    ]
    return pd.DataFrame(rows, columns=["user_id", "movie_id", "rating"]), Catalog.from_frames(movies, genres)


def test_examples_hold_out_users_and_candidates() -> None:
    ratings, catalog = small_catalog()
    train, held = split_users(ratings["user_id"].to_numpy(), 0.2, seed=3)
    assert not set(train) & set(held) and len(held) == 6
    examples = build_examples(ratings, catalog, train, candidates_per_user=4, seed=3)
    assert {e.user_id for e in examples} == set(train)
    for ex in examples[:5]:
        asked = ratings[(ratings.user_id == ex.user_id) & ratings.movie_id.isin(ex.movie_ids)]
        truth = dict(zip(asked.movie_id, asked.rating > 3, strict=True))
        assert ex.labels == [int(truth[m]) for m in ex.movie_ids]
        # a question is never answered by the profile
        profile = ex.request.profile
        for m in ex.movie_ids:
            assert not any(t.startswith(f"Film {m} (") for t in [*profile.liked, *profile.disliked])


def test_profile_orders_likes_and_dislikes_the_same_in_any_order() -> None:
    ratings = [(1, 5.0), (2, 1.0), (3, 4.0), (4, 3.0), (5, 2.0), (6, 4.0)]
    names = {m: f"M{m}" for m, _ in ratings}
    genres = {1: ["Drama"], 2: ["Drama", "War"], 3: ["Comedy"], 4: ["Drama"], 5: ["Horror"], 6: ["War"]}
    candidate = MovieFacts("X (1999)", ["Drama", "War"], 3.5, 10)
    request = preference_request(ratings, [candidate], names, genres_of=genres.__getitem__)
    assert request.profile.liked == ["M1", "M3", "M6"]  # best first; ties by movie id
    assert request.profile.disliked == ["M2", "M5", "M4"]  # worst first
    assert (request.profile.liked_count, request.profile.rated_count) == (3, 6)
    assert request.profile.text().startswith("The user is choosy: they liked 50% of the 6 movies they rated.")
    assert preference_request(ratings[::-1], [candidate], names, genres_of=genres.__getitem__) == request
    # its genres: movies 1, 2, 4 (Drama) and 6 (War); liked 1 and 6
    assert request.candidates == [
        "Will the user enjoy X (1999) (Drama, War; well rated: 3.5/5 on average by 10 viewers)? "
        "The user is mixed on its genres: they liked 50% of the 4 they rated. Answer Yes or No."
    ]


@pytest.mark.parametrize(
    ("value", "scale", "word"),
    [
        (4.0, RATED, "highly rated"),
        (3.99, RATED, "well rated"),
        (2.1, RATED, "poorly rated"),
        (0.8, PLEASED, "easily pleased"),
        (0.1, PLEASED, "hard to please"),
        (0.6, GENRE_TASTE, "mostly likes"),
    ],
)
def test_the_words_beside_the_numbers_follow_their_edges(value: float, scale, word: str) -> None:
    assert word_for(value, scale) == word


def test_a_candidate_in_genres_the_user_never_rated_says_so() -> None:
    taste = genre_taste([(1, 5.0)], ["Western"], {1: ["Drama"]}.__getitem__)
    assert taste == GenreTaste(0, 0) and taste.text() == "The user rated no movie in its genres. "


def test_shared_prefix_scores_equal_whole_prompt_scores(base_llm) -> None:
    model, tokenizer = base_llm
    builder = PromptBuilder(tokenizer)
    prompts = [
        builder.preference(
            ScoreRequest(
                Profile(["Toy Story (1995)", "Babe (1995)"], ["Heat (1995)"]),
                [
                    candidate_text(MovieFacts("Aladdin (1992)", ["Animation"])),
                    candidate_text(MovieFacts("Casino (1995)", ["Crime", "Drama"])),
                ],
            )
        ),
        builder.preference(
            ScoreRequest(
                Profile(["Alien (1979)"], []), [candidate_text(MovieFacts("Aliens (1986)", ["Sci-Fi"]))]
            )
        ),
    ]
    shared = np.concatenate(
        yes_probabilities(
            model, prompts, yes_id=builder.yes_id, no_id=builder.no_id, pad_id=tokenizer.pad_token_id
        )
    )
    whole = []
    with torch.inference_mode():
        for p in prompts:
            for c in p.candidate_ids:
                logits = model(
                    **full_sequence_batch([(p.user_ids, c)], tokenizer.pad_token_id, "cpu")
                ).logits[0, -1]
                whole.append(float(torch.softmax(logits[[builder.yes_id, builder.no_id]], 0)[0]))
    assert shared == pytest.approx(whole, abs=1e-4)


def test_finetune_changes_the_adapter_and_resumes(llm_cache: Path, tmp_path: Path) -> None:
    from peft import PeftModel

    from ml.llm.base_model import DEFAULT_BASE, load_base

    # fine-tuning wraps the model in place: each run gets its own copy, not the shared one
    model, tokenizer = load_base(DEFAULT_BASE, llm_cache)
    ratings, catalog = small_catalog()
    train_users, held = split_users(ratings["user_id"].to_numpy(), 0.2, seed=1)
    train_ex = build_examples(ratings, catalog, train_users, candidates_per_user=2, seed=1)
    eval_ex = build_examples(ratings, catalog, held[:3], candidates_per_user=2, seed=2)
    config = FinetuneConfig(max_steps=2, batch_users=1, checkpoint_every=1, progress=False)
    first = finetune(model, PromptBuilder(tokenizer), train_ex, eval_ex, config, tmp_path)
    assert first.steps == 2 and first.train_tokens > 0 and not np.isnan(first.losses).any()
    tuned = PeftModel.from_pretrained(load_base(DEFAULT_BASE, llm_cache)[0], first.adapter)
    lora_b = [p for n, p in tuned.named_parameters() if "lora_B" in n]
    assert lora_b and any(float(p.abs().sum()) > 0 for p in lora_b)  # B starts at zero
    # the AUC it reports is the AUC of the adapter it saved
    assert preference_auc(tuned, PromptBuilder(tokenizer), eval_ex)[0] == pytest.approx(first.auc_tuned)
    meta = json.loads((first.adapter / "meta.json").read_text())
    assert meta["steps"] == 2
    # a longer run in the same folder starts from the checkpoint
    config.max_steps = 3
    model = load_base(DEFAULT_BASE, llm_cache)[0]
    resumed = finetune(model, PromptBuilder(tokenizer), train_ex, eval_ex, config, tmp_path)
    assert resumed.resumed_from == 2 and resumed.steps == 3 and len(resumed.losses) == 3
    assert resumed.auc_base == first.auc_base


def test_blend_and_weight_choice() -> None:
    candidates = np.array([10, 11, 12])
    scores = np.array([3.0, 2.0, 1.0])
    p_yes = np.array([0.1, 0.5, 0.99])
    assert list(reranked(candidates, scores, p_yes, 0.0)) == [10, 11, 12]
    assert list(reranked(candidates, scores, p_yes, 10.0)) == [12, 11, 10]
    assert blend(scores, p_yes, 0.0) == pytest.approx((scores - 2) / np.std(scores))
    # the LLM knows the answer here: a positive weight must win on these users
    lists = [(candidates, scores, p_yes)] * 4
    weight, results = choose_weight(lists, [np.array([12])] * 4, k=1)
    assert weight > 0 and results[weight] == 1.0 and results[0.0] == 0.0
    # and an LLM with no signal leaves the weight at 0
    weight, _ = choose_weight([(candidates, scores, np.full(3, 0.5))] * 4, [np.array([10])] * 4, k=1)
    assert weight == 0.0


def test_evidence_is_the_most_similar_liked_movies() -> None:
    vectors = {
        1: np.array([1.0, 0.0]),
        2: np.array([0.0, 1.0]),
        3: np.array([0.8, 0.6]),
        9: np.array([1.0, 0.0]),
    }
    evidence = gather_evidence(
        candidate=9,
        rated=[(1, 5.0), (2, 5.0), (3, 4.0), (4, 5.0)],  # 4 has no embedding
        embedding_of=vectors,
        titles={1: "One", 2: "Two", 3: "Three"},
        genres={1: ["Drama", "War"], 9: ["War"], 3: ["Comedy"]},
        k=2,
    )
    assert [e.movie_id for e in evidence] == [1, 3]
    assert evidence[0].reason == "you rated One 5/5 and it shares War"
    assert gather_evidence(candidate=9, rated=[(1, 2.0)], embedding_of=vectors, titles={}, genres={}) == []


class CountingObserver:
    def __init__(self) -> None:
        self.batches: list[tuple[str, int]] = []
        self.generated = 0
        self.steps: list[int] = []  # tokens written per decoding step
        self.last_running = -1

    def batch(self, kind: str, size: int) -> None:
        self.batches.append((kind, size))

    def tokens(self, count: int) -> None:
        self.generated += count
        self.steps.append(count)

    def running(self, count: int) -> None:
        self.last_running = count


REQUEST = ExplainRequest(
    "Aladdin (1992)", ["you rated Beauty and the Beast (1991) 5/5 and it shares Animation"]
)
HEAT = ExplainRequest("Heat (1995)", ["you rated Fargo (1996) 5/5 and it shares Crime, Thriller"])


async def test_streams_arriving_together_decode_as_one_batch(base_llm) -> None:
    model, tokenizer = base_llm
    observer = CountingObserver()
    backend = TransformersBackend(
        model, tokenizer, Decoding(max_new_tokens=12, max_batch=8, window_s=0.2), observer=observer
    )
    try:

        async def collect() -> str:
            return "".join([piece async for piece in backend.stream(REQUEST)])

        texts = await asyncio.gather(*(collect() for _ in range(4)))
        assert [b for b in observer.batches if b[0] == "generate"] == [("generate", 4)]
        assert len(set(texts)) == 1 and texts[0].startswith("You will enjoy Aladdin (1992) because")
        # the whole-text path gives the same words as the stream
        [whole] = await backend.explain_many([REQUEST])
        assert whole == texts[0].strip()
        scores = await backend.score([ScoreRequest(Profile(["Toy Story (1995)"], []), ["a", "b", "c"])])
        assert scores[0].shape == (3,) and ((scores[0] > 0) & (scores[0] < 1)).all()
        assert observer.batches[-1] == ("score", 3)
    finally:
        await backend.aclose()


async def test_closing_a_stream_stops_its_generation(base_llm) -> None:
    model, tokenizer = base_llm
    observer = CountingObserver()
    backend = TransformersBackend(
        model, tokenizer, Decoding(max_new_tokens=300, min_new_tokens=300), observer=observer
    )
    try:
        pieces = backend.stream(REQUEST)
        first = await anext(pieces)
        assert first.startswith("You will enjoy")
        await pieces.aclose()
        await backend.wait_idle()  # the batch has ended: nothing more can be generated
        assert observer.generated < 300  # it ended early, at the stream's close
        assert observer.last_running == 0  # and the running-calls gauge says so
        # the worker is free again at once (scoring queues behind any generation still running)
        scored = await asyncio.wait_for(backend.score([ScoreRequest(Profile(["Heat (1995)"], []), ["q"])]), 5)
        assert scored[0].shape == (1,)
    finally:
        await backend.aclose()


async def test_a_late_stream_joins_the_running_batch_and_leaves_it_at_once(base_llm) -> None:
    """Continuous batching: a stream asked for while another decodes gets its first words
    before that one ends (it joins the running batch), and once its consumer goes its row
    leaves: the remaining steps decode one row."""
    model, tokenizer = base_llm
    observer = CountingObserver()
    backend = TransformersBackend(
        model, tokenizer, Decoding(max_new_tokens=60, min_new_tokens=60, window_s=0), observer=observer
    )
    try:
        running = backend.stream(REQUEST)
        await anext(running)
        ended = asyncio.Event()

        async def drain() -> None:
            async for _ in running:
                pass
            ended.set()

        drained = asyncio.create_task(drain())
        late = backend.stream(HEAT)
        first = await anext(late)
        assert first.startswith("You will enjoy Heat (1995)")
        assert not ended.is_set(), "the late stream waited for the running batch to end"
        assert [b for b in observer.batches if b[0] == "generate"] == [("generate", 1), ("generate", 2)]
        await late.aclose()
        await drained
        together = sum(count == 2 for count in observer.steps)
        # the late row was wanted for one chunk: had it stayed, ~59 steps would write two tokens
        assert together < 20, observer.steps
        assert observer.steps[-1] == 1 and observer.generated < 2 * 60
    finally:
        await backend.aclose()


async def test_a_full_queue_refuses_with_overloaded(base_llm) -> None:
    model, tokenizer = base_llm
    backend = TransformersBackend(model, tokenizer, Decoding(max_new_tokens=40, max_batch=1, max_pending=1))
    try:
        streams = [backend.stream(REQUEST) for _ in range(4)]
        results = await asyncio.gather(*(anext(s) for s in streams), return_exceptions=True)
        assert any(isinstance(r, Overloaded) for r in results)
        assert any(isinstance(r, str) for r in results)
        for s in streams:
            await s.aclose()
    finally:
        await backend.aclose()


def test_explanation_loss_on_kept_answer_logits_equals_the_full_sequence_loss(base_llm) -> None:
    """The fine-tuning loss on the answer positions only (left-padded, ``logits_to_keep``) is
    the ordinary language-model loss over each answer's tokens, computed row by row in full."""
    import torch

    from ml.llm.explain_targets import ExplainExample
    from ml.llm.finetune import explanation_loss
    from ml.llm.prompts import PromptBuilder

    model, tokenizer = base_llm
    builder = PromptBuilder(tokenizer)
    batch = [
        ExplainExample(REQUEST, " both are animated films."),
        ExplainExample(
            HEAT,
            " it is a crime film that viewers with your taste rate highly. Expect a thriller story.",
        ),
    ]
    with torch.no_grad():
        loss, _ = explanation_loss(model, builder, batch)
        total, count = 0.0, 0
        for example in batch:
            prompt = tokenizer.encode(builder.explanation(example.request), add_special_tokens=False)
            answer = [*tokenizer.encode(example.target, add_special_tokens=False), tokenizer.eos_token_id]
            ids = torch.as_tensor([prompt + answer])
            logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1]
            total += float(torch.nn.functional.cross_entropy(logits, ids[0, len(prompt) :], reduction="sum"))
            count += len(answer)
    assert abs(float(loss) - total / count) < 1e-3


def test_finetuning_on_explanations_lowers_their_loss(llm_cache: Path, tmp_path: Path) -> None:
    """Explanation-only fine-tuning (no preference questions) learns its checked targets."""
    import torch

    from ml.llm.base_model import DEFAULT_BASE, load_base
    from ml.llm.explain_targets import ExplainExample
    from ml.llm.finetune import explanation_loss

    model, tokenizer = load_base(DEFAULT_BASE, llm_cache)
    builder = PromptBuilder(tokenizer)
    examples = [
        ExplainExample(REQUEST, " both are animated films. Expect an animated story."),
        ExplainExample(
            HEAT,
            " both are crime and thriller films.",
        ),
    ]
    with torch.no_grad():
        before = float(explanation_loss(model, builder, examples)[0])
    config = FinetuneConfig(
        max_steps=4, batch_users=0, explain_batch=2, warmup_steps=1, learning_rate=2e-3, progress=False
    )
    result = finetune(model, builder, [], [], config, tmp_path, examples)
    assert result.steps == 4 and np.isnan(result.auc_tuned)  # no preference questions, no AUC
    tuned = load_base(DEFAULT_BASE, llm_cache)[0]
    from peft import PeftModel

    tuned = PeftModel.from_pretrained(tuned, result.adapter)
    with torch.no_grad():
        after = float(explanation_loss(tuned, builder, examples)[0])
    assert after < 0.85 * before, (before, after)  # untrained, they would be equal


async def test_continuous_batching_writes_what_generate_writes(base_llm) -> None:
    """Greedy decoding with the repetition penalty, row by row in a running batch, gives
    `generate`'s text token for token, also for an answer that joins mid-run."""
    import torch

    model, tokenizer = base_llm
    builder = PromptBuilder(tokenizer)
    expected = []
    for request in (REQUEST, HEAT):
        inputs = tokenizer(builder.explanation(request), return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(
                **inputs,
                max_new_tokens=24,
                do_sample=False,
                repetition_penalty=1.15,
                pad_token_id=int(tokenizer.pad_token_id),
            )
        written = tokenizer.decode(out[0][inputs.input_ids.shape[1] :], skip_special_tokens=True)
        expected.append(f"{explanation_opening(request)} {written.strip()}")
    backend = TransformersBackend(model, tokenizer, Decoding(max_new_tokens=24, window_s=0))
    try:
        first = backend.stream(REQUEST)
        pieces = [await anext(first)]  # decoding: the second joins the running batch
        second = asyncio.create_task(backend.explain_many([HEAT]))
        pieces += [p async for p in first]
        assert ["".join(pieces).strip(), (await second)[0]] == expected
    finally:
        await backend.aclose()
