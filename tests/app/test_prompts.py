"""Training and serving put the same question to the LLM: for one (user, movie) and the same
data, the fine-tuning example and the serving prompt are identical, down to the tokens."""

from __future__ import annotations

import asyncio
from pathlib import Path

from app.infra.database import create_engine, session_factory
from app.services.training_data import load_train_data
from app.serving.llm_inputs import preference_requests
from ml.llm.examples import build_examples, item_stats
from tests.conftest import Databases, ingest_into
from tests.movielens_fixture import write_movielens


def test_training_and_serving_build_the_identical_prompt(
    databases: Databases, tmp_path: Path, base_llm
) -> None:
    settings = databases.settings("sqlite")
    write_movielens(tmp_path / "ml")
    ingest_into(settings, tmp_path / "ml")

    async def both() -> tuple[object, object]:
        engine = create_engine(settings)
        try:
            data = await load_train_data(engine=engine)
            users = sorted(set(data.ratings["user_id"]))
            # stats over everyone, as the database keeps them for serving
            [example] = build_examples(
                data.ratings,
                data.catalog,
                users[:1],
                candidates_per_user=1,
                seed=5,
                min_profile=3,
                item_stats=item_stats(data.ratings, users),
            )
            mine = data.ratings[data.ratings.user_id == example.user_id]
            known = [
                (int(m), float(r))
                for m, r in zip(mine.movie_id, mine.rating, strict=True)
                if m not in example.movie_ids
            ]
            async with session_factory(engine)() as session:
                [served] = await preference_requests(
                    session=session,
                    users=[example.user_id],
                    candidates=[example.movie_ids],
                    rated={example.user_id: known},
                )
            return example.request, served
        finally:
            await engine.dispose()

    trained, served = asyncio.run(both())
    assert trained == served
    assert served.profile.liked and served.candidates[0].startswith("Will the user enjoy Movie ")
    from ml.llm.prompts import PromptBuilder

    _, tokenizer = base_llm
    builder = PromptBuilder(tokenizer)
    assert builder.preference(trained) == builder.preference(served)
