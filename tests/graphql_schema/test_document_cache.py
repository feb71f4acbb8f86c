"""The document cache holds parsed documents by the digest of their text, bounded by an
estimate of their memory, and keeps their validation errors with the rules that found them."""

from __future__ import annotations

import subprocess
import sys

from graphql import GraphQLSchema, specified_rules
from graphql.validation import NoSchemaIntrospectionCustomRule

from app.infra.settings import Settings
from graphql_schema.document_cache import BYTES_PER_TOKEN, Documents
from graphql_schema.schema import build_schema


def _dense(i: int) -> str:
    """A query of about 2,000 tokens (the token limit): the largest document a request parses."""
    return "{ " + " ".join(f"a{i}x{j}: genres" for j in range(660)) + " }"


_MEASURE = """
import sys, tracemalloc
from graphql import parse
text = "{ " + " ".join(f"a0x{j}: genres" for j in range(660)) + " }"
tracemalloc.start()
before = tracemalloc.get_traced_memory()[0]
document = parse(text, max_tokens=2000)
print(tracemalloc.get_traced_memory()[0] - before)
"""


def test_the_estimate_is_not_below_what_a_document_takes() -> None:
    # Measured in a fresh interpreter: in the suite's process, threads left by other tests
    # (servers, pools) allocate while tracemalloc counts, and CI once read 451 bytes a token.
    measured = subprocess.run(
        [sys.executable, "-c", _MEASURE], capture_output=True, text=True, check=True, timeout=60
    )
    taken = int(measured.stdout.strip())
    tokens = 4 + 3 * 660  # {, }, <EOF> and <SOF>, then three per alias
    assert 300 * tokens <= taken <= BYTES_PER_TOKEN * tokens


def test_the_cache_holds_at_most_its_byte_budget() -> None:
    documents = Documents(max_bytes=4_000_000)
    for i in range(40):  # 40 documents of ~800 KB each: 32 MB if kept by entries
        documents.parse(_dense(i), {"max_tokens": 2000})
    assert documents.size <= 4_000_000 and len(documents) <= 5
    _, again = documents.parse(_dense(39), {})
    _, same = documents.parse(_dense(39), {})
    assert again is same  # the newest is kept and handed back


def test_validation_errors_are_kept_with_their_rules() -> None:
    schema: GraphQLSchema = build_schema(Settings(env="test"))._schema
    documents = Documents(max_bytes=1_000_000, hide_suggestions=True)
    rules = tuple(specified_rules)
    key, document = documents.parse("{ modelVersion { version } }", {})
    errors = documents.validate(key, schema, document, rules)
    assert errors and "Did you mean" not in errors[0].message
    assert documents.validate(key, schema, document, rules) is errors  # from the cache
    introspection = "{ __schema { queryType { name } } }"
    key, document = documents.parse(introspection, {})
    assert documents.validate(key, schema, document, rules) == []
    closed = (*rules, NoSchemaIntrospectionCustomRule)
    assert documents.validate(key, schema, document, closed)  # other rules: validated again
