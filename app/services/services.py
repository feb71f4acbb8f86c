"""What a request may use: the services, built once per app in the lifespan and handed to
each request's context. Resolvers call these and nothing else; the app's state (engine,
Redis, holders, caches) stays behind them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.infra.metrics import Metrics
    from app.infra.throttles import RateLimiter
    from app.services.accounts import AccountService
    from app.services.api_keys import ApiKeys
    from app.services.audit import AuditLog
    from app.services.catalog import CatalogService
    from app.services.catalog_changes import CatalogChanges
    from app.services.drift import DriftMonitor
    from app.services.experiments import ExperimentService
    from app.services.model_versions import ModelVersions
    from app.services.privacy import PersonalData
    from app.services.ratings import UserService
    from app.serving.explanations import ExplanationService
    from app.serving.home import HomePages
    from app.serving.movie_search import MovieSearch
    from app.serving.recommendations import RecommendationService


@dataclass(frozen=True)
class Services:
    catalog: CatalogService  # movies, pages, genres, tags, links
    catalog_changes: CatalogChanges  # movies added, updated, retired (admin)
    users: UserService  # users, their ratings, rating a movie
    accounts: AccountService  # registration, login, who a token or key names
    api_keys: ApiKeys  # services' keys (admin)
    audit: AuditLog  # who did what (admin actions, keys, erasures)
    personal: PersonalData  # a person's own data, exported and erased
    recommendations: RecommendationService  # lists of recommendations, their cursors and ids
    home: HomePages  # a home page's rows
    movie_search: MovieSearch  # similar movies, semantic search
    explanations: ExplanationService
    models: ModelVersions  # versions and aliases of both models (admin)
    experiments: ExperimentService
    drift: DriftMonitor
    limits: RateLimiter  # what an operation costs its caller
    metrics: Metrics  # what the request path counts
