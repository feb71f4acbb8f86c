"""How faithful the LLM's explanations are: ``cinerec llm evaluate-explanations``.

N (user, candidate) pairs of users the fine-tuning left out (``HeldOut``), each
user's top recommendation from the serving recommender; the
prompts built by the serving path (``explanation_inputs``), the text written by the base
model and by each registered adapter, judged by the checker every served explanation passes
(``ml.llm.faithfulness``). Reported per model: the share of raw LLM texts with an unsupported
claim, by kind; what serving would send (the supported clauses, or the template): the LLM's
share, evidence use, mean length; generation tokens/s. Logged to MLflow.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from app.infra.model_registry import registry_for
from ml.llm.faithfulness import KINDS, TitleIndex, check, fix_articles, vet
from ml.registry import CHAMPION, LLM, RECOMMENDER

if TYPE_CHECKING:
    from app.infra.settings import Settings
    from ml.llm.prompts import ExplainRequest

EXPERIMENT = "cinerec-explanations"


@dataclass
class ExplanationReport:
    model: str  # "base" or "cinerec-llm v<N>"
    pairs: int
    unsupported: float  # raw LLM texts with any unsupported claim
    by_kind: dict[str, float]  # raw LLM texts with a claim of each kind
    llm_share: float  # served explanations written by the LLM (after the checker)
    evidence_use: float  # served explanations naming at least one evidence movie
    evidence_use_raw: float
    served_unsupported: float  # served explanations the checker refuses (0 unless the template errs)
    mean_words: float  # served LLM explanations
    tokens_per_second: float
    seconds: float
    examples: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)  # every pair: facts, raw, served

    def metrics(self) -> dict[str, float]:
        out = {
            "unsupported_rate": self.unsupported,
            "llm_share": self.llm_share,
            "evidence_use": self.evidence_use,
            "evidence_use_raw": self.evidence_use_raw,
            "served_unsupported_rate": self.served_unsupported,
            "mean_words": self.mean_words,
            "tokens_per_second": self.tokens_per_second,
        }
        out.update({f"unsupported_{k}": v for k, v in self.by_kind.items()})
        return out


class _Tokens:
    def __init__(self) -> None:
        self.count = 0

    def batch(self, kind: str, size: int) -> None:
        pass

    def tokens(self, count: int) -> None:
        self.count += count

    def running(self, count: int) -> None:
        pass


@dataclass(frozen=True)
class HeldOut:
    """``count`` users the LLM's fine-tuning leaves out (``split_users`` over every rating user
    with ``fraction`` and ``seed``), drawn in an order seeded by ``draw``."""

    count: int
    draw: int = 7
    fraction: float = 0.2
    seed: int = 42

    def pick(self, rating_users: np.ndarray) -> list[int]:
        from ml.llm.examples import split_users

        _, held_out = split_users(rating_users, self.fraction, self.seed)
        ordered = np.random.default_rng(self.seed).permutation(held_out)
        return [int(u) for u in ordered[np.random.default_rng(self.draw).permutation(len(ordered))]][
            : self.count
        ]


async def explain_requests(
    settings: Settings,
    users: Sequence[int] | HeldOut,
    *,
    top: int = 1,
    rated_share: float = 0.0,
    seed: int = 7,
) -> tuple[list[ExplainRequest], TitleIndex]:
    """(ExplainRequests, title index) as serving builds them: for each user (or each of the
    ``HeldOut`` users), one of the serving recommender's ``top`` recommendations (drawn at
    random), or with probability ``rated_share`` one of the movies they rated (serving explains
    those too). Users the recommender does not know are left out."""
    from sqlalchemy import select

    from app.infra.database import create_engine, session_factory
    from app.infra.tables import ratings
    from app.services import catalog
    from app.serving.llm_inputs import explanation_inputs, rated_by
    from ml.hybrid import HybridRecommender

    registry = registry_for(settings)
    version = registry.alias_version(RECOMMENDER, CHAMPION)
    if version is None:
        from app.infra.errors import NotFound

        raise NotFound("no recommender champion: run `cinerec train` first")
    model = HybridRecommender.load(registry.download(RECOMMENDER, version, settings.home / "models"))
    known = set(map(int, model.history_user_ids if model.history_user_ids is not None else []))
    rng = np.random.default_rng(seed)
    engine = create_engine(settings)
    try:
        sessions = session_factory(engine)
        async with sessions() as session:
            if isinstance(users, HeldOut):
                everyone = await session.execute(select(ratings.c.user_id).distinct())
                users = users.pick(np.asarray([int(u) for (u,) in everyone.all()]))
            users = [int(u) for u in users if int(u) in known]
            rated = await rated_by(session=session, user_ids=users)
            ranked, _ = model.recommend(model.trained_rows(users), model.user_index(users), top)
            chosen = []
            for user, row in zip(users, ranked, strict=True):
                own = rated[user]
                if own and rng.random() < rated_share:
                    chosen.append((user, int(own[int(rng.integers(len(own)))][0])))
                else:
                    chosen.append((user, int(model.item_ids[row[int(rng.integers(min(top, len(row))))]])))
            found = await explanation_inputs(session=session, model=model, pairs=chosen, rated=rated)
            titles = TitleIndex(await catalog.all_titles(session=session))
    finally:
        await engine.dispose()
    return [r for r, _ in found], titles


def _judge(
    name: str, requests: list[Any], texts: list[str], titles: TitleIndex, seconds: float, tokens: int
) -> ExplanationReport:
    from ml.llm.prompts import explanation_opening, opening_sentence
    from ml.llm.template import template_explanation

    n = len(requests)
    verdicts, served, written = [], [], []
    for text, request in zip(texts, requests, strict=True):
        kept, verdict = vet(text, request.facts, titles, explanation_opening(request))
        verdicts.append(verdict)
        # as serving answers: the model's words that hold, else the opening's sentence (which a
        # stream sends first), else the template
        served.append(
            fix_articles(kept) if kept else opening_sentence(request) or template_explanation(request)
        )
        written.append(bool(kept))
    served_verdicts = [check(t, r.facts, titles) for t, r in zip(served, requests, strict=True)]
    llm_words = [len(t.split()) for t, w in zip(served, written, strict=True) if w]
    outputs = [
        {
            "model": name,
            "title": r.title,
            "evidence": list(r.evidence),
            "facts": r.facts.to_json(),
            "opening": explanation_opening(r),
            "raw": t,
            "served": s,
            "source": "llm" if w else "template",
            "claims": [str(c) for c in v.claims],
        }
        for r, t, s, w, v in zip(requests, texts, served, written, verdicts, strict=True)
    ]
    return ExplanationReport(
        model=name,
        pairs=n,
        unsupported=sum(not v.supported for v in verdicts) / n,
        by_kind={k: sum(any(c.kind == k for c in v.claims) for v in verdicts) / n for k in KINDS},
        llm_share=sum(written) / n,
        evidence_use=sum(v.uses_evidence for v in served_verdicts) / n,
        evidence_use_raw=sum(v.uses_evidence for v in verdicts) / n,
        served_unsupported=sum(not v.supported for v in served_verdicts) / n,
        mean_words=float(np.mean(llm_words)) if llm_words else 0.0,
        tokens_per_second=tokens / seconds if seconds else 0.0,
        seconds=seconds,
        examples=outputs[:12],
        outputs=outputs,
    )


def written_by(
    settings: Settings, version: str | None, requests: list[Any], titles: TitleIndex, *, name: str
) -> ExplanationReport:
    """The texts an LLM version (None: the base model) writes for ``requests``, loaded and run as
    serving runs it (the adapter merged, the serving precision, one batched backend), judged
    as served: the checker's cut, the opening's sentence or the template where nothing holds."""
    from app.serving.llm_holder import decoding
    from ml.llm.base_model import for_serving, load_base, with_adapter
    from ml.llm.local import TransformersBackend

    model, tokenizer = load_base(settings.llm_base, settings.llm_cache_dir or settings.home / "llm")
    if version is not None:
        registry = registry_for(settings)
        model = with_adapter(model, registry.download(LLM, version, settings.home / "models"), merge=True)
        model.eval()
    model = for_serving(model, settings.llm_quantize)
    counter = _Tokens()
    backend = TransformersBackend(
        model,
        tokenizer,
        decoding(settings, max_pending=max(settings.llm_max_pending, len(requests))),
        observer=counter,
    )

    async def run() -> list[str]:
        try:
            return await backend.explain_many(requests)
        finally:
            await backend.aclose()

    started = time.perf_counter()
    texts = asyncio.run(run())
    return _judge(name, requests, texts, titles, time.perf_counter() - started, counter.count)


def evaluate_explanations(
    settings: Settings,
    *,
    pairs: int = 100,
    seed: int = 7,
    versions: list[str] | None = None,
    top: int = 1,
    base: bool = True,
) -> list[ExplanationReport]:
    """The base model (unless not ``base``) and each LLM version (all registered ones unless
    ``versions``); each user's explained movie is drawn from their ``top`` recommendations."""
    from ml.llm.base_model import init_torch

    # users never seen by an adapter's explanation training
    requests, titles = asyncio.run(explain_requests(settings, HeldOut(pairs, draw=seed), top=top, seed=seed))
    if not requests:
        from app.infra.errors import BadUserInput

        raise BadUserInput("no users to explain for: the recommender knows none")
    registry = registry_for(settings)
    if versions is None:
        versions = [v.version for v in registry.versions(LLM)]
    init_torch(settings.llm_threads)
    reports = []
    for version in [None, *versions] if base else versions:
        name = "base" if version is None else f"{LLM} v{version}"
        report = written_by(settings, version, requests, titles, name=name)
        registry.log_run(
            experiment=EXPERIMENT,
            params={
                "model": name,
                "pairs": len(requests),
                "seed": seed,
                "max_new_tokens": settings.llm_max_new_tokens,
            },
            metrics=report.metrics(),
        )
        reports.append(report)
    return reports


def explanations_page(report: ExplanationReport, settings: Settings, *, seed: int, top: int) -> str:
    """docs/explanations.md: each served explanation with its movie, evidence and source."""
    outputs = report.outputs
    llm = sum(o["source"] == "llm" for o in outputs)
    lines = [
        "# What users read: served explanations",
        "",
        f"Generated by `cinerec llm explanations-doc --users {report.pairs} --seed {seed} --top {top}` "
        f"on a home trained as `make demo` trains it ({settings.llm_base}, {report.model}; genre-constrained "
        f"decoding {'on' if settings.llm_constrain_genres else 'off'}). Users are held out of the LLM's "
        f"fine-tuning; each gets one of their top {top} recommendations, explained as the server explains "
        "it: the model's text cut to the sentences the checker supports, or the template's sentence when "
        "none is left. Nothing here is edited by hand.",
        "",
        f"Written by the LLM: {llm} of {len(outputs)}; by the template: {len(outputs) - llm}.",
        "",
        *_checker_lines(),
    ]
    for i, o in enumerate(outputs, 1):
        facts = o["facts"]
        candidate = facts["candidate"]
        stats = (
            f"viewers' mean {facts['mean_rating']:.1f}/5 over {facts['ratings_count']} ratings"
            if facts.get("mean_rating") is not None
            else "no ratings yet"
        )
        lines += [
            f"## {i}. {o['title']}",
            "",
            f"*{', '.join(candidate['genres']) or 'no genre'}; {stats}*",
            "",
            "Evidence the model was given:",
            "",
            *(f"- {e}" for e in o["evidence"] or ["(none: viewers with similar taste rated it highly)"]),
            "",
            f"**Served ({'LLM' if o['source'] == 'llm' else 'template'}):** {o['served']}",
            "",
        ]
        if o["source"] == "llm" and o["served"].rstrip(".") != fix_articles(o["raw"]).rstrip("."):
            lines += [f"<sub>The model wrote, before the checker's cut: {o['raw']}</sub>", ""]
    return "\n".join(lines)


def to_label(report: ExplanationReport, *, seed: int) -> list[dict[str, Any]]:
    """The served texts of a report as ``ml.llm.fluency`` items, every sentence marked
    grammatical and supported until a reader says otherwise."""
    from ml.llm.faithfulness import Facts
    from ml.llm.fluency import sentences

    out = []
    for i, o in enumerate(report.outputs, 1):
        facts = Facts.from_json(o["facts"])
        said = sentences(o["served"], [m.title for m in facts.movies()])
        out.append(
            {
                "key": f"s{seed}-{i:03d}",
                "model": report.model,
                "facts": o["facts"],
                "source": o["source"],
                "served": o["served"],
                "sentences": [{"text": t, "grammatical": True, "supported": True, "note": ""} for t in said],
            }
        )
    return out


def _checker_lines() -> list[str]:
    """How far the checker that cut these texts can be trusted: its score on the hand labels."""
    from ml.llm.labelled import LABELLED, catalog_index, load, score

    items = load()
    result = score(items, catalog_index())
    sets = sorted({item.key.split("-")[0] for item in items})
    return [
        f"The checker, against {result.outputs} raw outputs labelled clause by clause by hand "
        f"(`{LABELLED.name}`, sets {', '.join(sets)}; `cinerec llm evaluate-explanations --pairs 0`): "
        f"precision {result.precision:.1%}, recall {result.recall:.1%} over {result.clauses} clauses "
        f"({result.unsupported_clauses} unsupported by the labels). Served texts holding a clause the "
        f"labels refuse: {result.served_unsupported:.1%}.",
        "",
    ]
