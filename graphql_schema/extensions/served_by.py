"""What answered: the model version, the LLM's rerank, what wrote the explanations."""

from __future__ import annotations

from typing import TYPE_CHECKING

from strawberry.extensions import SchemaExtension

if TYPE_CHECKING:
    pass


class ServedBy(SchemaExtension):
    """Says in the response ``extensions`` which model answered recommendations (or that the
    popularity fallback did), whether the LLM reranked, and what wrote the explanations."""

    def get_results(self) -> dict[str, object]:
        served = getattr(self.execution_context.context, "served", None)
        out: dict[str, object] = {}
        if served is not None and served.recommender is not None:
            out["recommender"] = served.recommender.extension()
        if served is not None and served.explanations is not None:
            out["explanations"] = served.explanations.extension()
        return out
