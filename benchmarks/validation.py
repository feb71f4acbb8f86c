"""Pricing a document vs the depth and alias validation rules it replaced, on the fragment
chain that froze the server (F_i spreads F_(i-1) twice), in one run.

    python -m benchmarks.validation

The old rules (Strawberry's QueryDepthLimiter and MaxAliasesLimiter) are timed only up to
the level where they take over a second (they double per level); graphql-core's standard
validation and cinerec's pricing walk are timed to 39 levels.
"""

from __future__ import annotations

import time

from graphql import FragmentDefinitionNode, OperationDefinitionNode, parse, validate
from strawberry.extensions import MaxAliasesLimiter, QueryDepthLimiter

from app.infra.settings import Settings
from benchmarks.common import machine, save
from graphql_schema.analysis import price_operation
from graphql_schema.schema import build_schema


def chain(levels: int) -> str:
    frags = ["fragment F0 on Movie { title }"]
    frags += [f"fragment F{i} on Movie {{ ...F{i - 1} ...F{i - 1} }}" for i in range(1, levels + 1)]
    return f"query {{ movie(movieId: 1) {{ ...F{levels} }} }}\n" + "\n".join(frags)


def best_of(fn, repeat: int = 3) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    schema = build_schema(Settings(env="test"))._schema
    old_rules = [
        *QueryDepthLimiter(max_depth=10).validation_rules,
        *MaxAliasesLimiter(max_alias_count=64).validation_rules,
    ]
    rows = []
    old_stopped = False
    for levels in (10, 14, 16, 17, 18, 20, 25, 30, 39):
        document = parse(chain(levels))
        operation = next(d for d in document.definitions if isinstance(d, OperationDefinitionNode))
        fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
        row: dict[str, object] = {"levels": levels, "bytes": len(chain(levels))}
        row["graphql_core_validation_ms"] = round(1000 * best_of(lambda d=document: validate(schema, d)), 3)
        row["cinerec_pricing_ms"] = round(
            1000 * best_of(lambda o=operation, f=fragments: price_operation(schema, o, f, {})), 3
        )
        if not old_stopped:
            seconds = best_of(lambda d=document: validate(schema, d, old_rules), repeat=1)
            row["old_depth_and_alias_rules_ms"] = round(1000 * seconds, 1)
            old_stopped = seconds > 1.0
        rows.append(row)
        print(row)
    save("validation", {"machine": machine(), "rows": rows})


if __name__ == "__main__":
    main()
