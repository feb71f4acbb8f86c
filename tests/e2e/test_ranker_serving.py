"""The learned ranker as served: `cinerec train` (tuning on) fits it, measures it for users cut
to 1, 3 and 5 ratings and registers it with the version; promoted, that version orders a new
user's list with it and says so in ``extensions.recommender``; a veteran's list and a version
without a ranker are served by the blend."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from app.infra.model_registry import registry_for
from ml.hybrid import HybridRecommender, rank_unrated
from ml.registry import RECOMMENDER
from tests.e2e.conftest import Recommender, cli

ME = "{ me { recommendations(first: 10) { movie { movieId } score } } }"
# The Godfather, GoodFellas, Fargo: three ratings make a new user the ranker's
RATED = {127: 5.0, 182: 4.0, 100: 5.0}


def _promote(recommender: Recommender, version: str) -> None:
    promoted = recommender.server.gql(
        f'mutation {{ promoteModel(version: "{version}") {{ version }} }}', token=recommender.admin_token
    )
    assert promoted["data"]["promoteModel"]["version"] == version, promoted


def _offline(model: HybridRecommender, ratings: dict[int, float]) -> tuple[list[int], list[int]]:
    """The top 10 of the model's score and of its blend alone, for a user it never saw."""
    columns = model.item_index(list(ratings))
    history = sp.csr_matrix(
        (list(ratings.values()), (np.zeros(len(ratings), dtype=np.int64), columns)),
        shape=(1, model.n_items),
        dtype=np.float32,
    )
    unseen = np.array([-1])
    served = rank_unrated(model.score(history, unseen), history, 10)[0][0]
    blend = rank_unrated(model.blend(history, unseen), history, 10)[0][0]
    ids = np.asarray(model.item_ids)
    return ids[served].tolist(), ids[blend].tolist()


def test_train_fits_the_ranker_and_a_promoted_version_serves_it_to_new_users_only(
    recommender: Recommender, tmp_path: Path
) -> None:
    trained = cli(recommender.env, "train", "--epochs", "10", "--no-refit")
    assert trained.returncode == 0, trained.stderr[-3000:]
    version = re.search(rf"{RECOMMENDER} version (\d+): registered", trained.stdout)
    assert version, trained.stdout
    version_id = version.group(1)
    up_to = re.search(r"orders the lists of users with 1 to (\d) ratings", trained.stdout)
    assert up_to, trained.stdout  # on MovieLens 100K its gain for one-rating users is well above zero
    model = HybridRecommender.load(
        registry_for(recommender.settings).download(RECOMMENDER, version_id, tmp_path)
    )  # type: ignore[arg-type]
    assert model.ranker is not None and model.ranker_up_to == int(up_to.group(1)) >= 1
    served_offline, blend_offline = _offline(model, RATED)
    assert served_offline != blend_offline  # else this test could not tell the two apart

    gql = recommender.server.gql
    token = gql('mutation { register(email: "ranked@example.com", password: "three-ratings") { token } }')[
        "data"
    ]["register"]["token"]
    for movie_id, rating in RATED.items():
        assert "errors" not in gql(
            f"mutation {{ rateMovie(movieId: {movie_id}, rating: {rating}) {{ rating }} }}", token=token
        )
    _promote(recommender, version_id)
    try:
        result = gql(ME, token=token)
        assert result["extensions"]["recommender"] == {
            "model": RECOMMENDER,
            "version": version_id,
            "ranker": {"version": version_id, "upTo": model.ranker_up_to},
        }
        recs = result["data"]["me"]["recommendations"]
        assert [r["movie"]["movieId"] for r in recs] == served_offline
        assert [r["score"] for r in recs] == sorted((r["score"] for r in recs), reverse=True)
        # a user with hundreds of ratings: the blend, and no word of a ranker
        veteran = gql("{ recommendations(userId: 1, first: 5) { rank } }", token=recommender.admin_token)
        assert veteran["extensions"]["recommender"] == {"model": RECOMMENDER, "version": version_id}
    finally:
        # back to version 1, which has no ranker (and what the other tests expect): a rollback
        # leaves the promotion history as it found it
        back = gql("mutation { rollbackModel { version } }", token=recommender.admin_token)
        assert back["data"]["rollbackModel"]["version"] == "1", back
    after = gql(ME, token=token)
    assert after["extensions"]["recommender"] == {"model": RECOMMENDER, "version": "1"}
    assert len(after["data"]["me"]["recommendations"]) == 10
