"""Parsed and validated documents, cached by the SHA-256 of their text and bounded by memory.

Strawberry's ``ParserCache`` and ``ValidationCache`` bound their LRU caches by entries and key
them by the full query text. A document of 2,000 tokens takes about 775 KB once parsed (8.5 KB
of text), so 1,024 such entries could hold about 800 MB. Here one entry holds a document and
its validation errors, keyed by a digest, and the cache is bounded by an estimate of the bytes
it holds (450 bytes a token: tracemalloc measured 390 to 405) as well as by entries.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cachetools import LRUCache
from graphql import FloatValueNode, GraphQLError, ValidationRule, validate
from graphql.language.parser import parse
from strawberry.extensions import SchemaExtension
from strawberry.schema.validation_rules.maybe_null import MaybeNullValidationRule
from strawberry.schema.validation_rules.one_of import OneOfInputValidationRule

if TYPE_CHECKING:
    from graphql import DocumentNode

BYTES_PER_TOKEN = 450  # a parsed document's size per token (tracemalloc: 775 to 800 KB for 1,984 tokens)


def digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def _tokens(document: DocumentNode) -> int:
    count = 0
    token = document.loc.start_token if document.loc is not None else None
    while token is not None:
        count += 1
        token = token.next
    return count


@dataclass
class _Entry:
    document: DocumentNode
    size: int
    rules: tuple[Any, ...] | None = None  # the rules the errors were found with
    errors: list[GraphQLError] | None = None


class FiniteFloats(ValidationRule):
    """A Float literal is a finite number: ``1e400`` would reach resolvers as infinity."""

    def enter_float_value(self, node: FloatValueNode, *_: Any) -> None:
        if not math.isfinite(float(node.value)):
            self.report_error(GraphQLError("Float cannot represent a non-finite value", node))


def _the_clients(error: GraphQLError) -> GraphQLError:
    """A validation error is the client's, whatever raised it: graphql-core reads an Int
    literal of more than 4,300 digits with ``int()``, whose ValueError would otherwise be taken
    for a bug of ours (INTERNAL) and quote the literal back whole."""
    if error.original_error is None or isinstance(error.original_error, GraphQLError):
        return error
    return GraphQLError(
        "a literal in the document cannot be read as its type (Int is a 32-bit integer)", error.nodes
    )


class Documents:
    """The cache itself: one per schema, shared by every request's extension."""

    def __init__(self, *, max_bytes: int, max_entries: int = 4096, hide_suggestions: bool = False) -> None:
        self.max_entries = max_entries
        self.hide_suggestions = hide_suggestions
        self._entries: LRUCache[bytes, _Entry] = LRUCache(maxsize=max_bytes, getsizeof=lambda e: e.size)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size(self) -> int:
        """The estimated bytes held."""
        return int(self._entries.currsize)

    def parse(self, query: str, options: Any) -> tuple[bytes, DocumentNode]:
        key = digest(query)
        entry = self._entries.get(key)
        if entry is not None:
            return key, entry.document
        document = parse(query, **options)
        size = len(query) + BYTES_PER_TOKEN * _tokens(document)
        if size <= self._entries.maxsize:
            while len(self._entries) >= self.max_entries:
                self._entries.popitem()
            self._entries[key] = _Entry(document, size)
        return key, document

    def validate(
        self, key: bytes, schema: Any, document: DocumentNode, rules: tuple[Any, ...]
    ) -> list[GraphQLError]:
        entry = self._entries.get(key)
        if entry is not None and entry.document is document and entry.rules == rules:
            assert entry.errors is not None
            return entry.errors
        errors = [
            _the_clients(e)
            for e in validate(
                schema,
                document,
                (*rules, FiniteFloats, MaybeNullValidationRule, OneOfInputValidationRule),
                hide_suggestions=self.hide_suggestions,
            )
        ]
        if entry is not None and entry.document is document:
            entry.rules, entry.errors = rules, errors
        return errors


class DocumentCache(SchemaExtension):
    """Parse (at most ``max_tokens`` tokens, as Strawberry's MaxTokensLimiter would) and
    validate (with ``rules`` added, as AddValidationRules would) through :class:`Documents`;
    it replaces those two and ParserCache and ValidationCache, one extension where four each
    cost every request their hooks."""

    def __init__(self, documents: Documents, *, max_tokens: int, rules: tuple[Any, ...] = ()) -> None:
        self.documents = documents
        self.max_tokens = max_tokens
        self.rules = rules
        self._key: bytes | None = None

    def on_parse(self) -> Iterator[None]:
        ctx = self.execution_context
        ctx.parse_options["max_tokens"] = self.max_tokens
        if ctx.graphql_document is None and ctx.query:
            self._key, ctx.graphql_document = self.documents.parse(ctx.query, ctx.parse_options)
        yield

    def on_validate(self) -> Iterator[None]:
        ctx = self.execution_context
        if ctx.graphql_document is not None and self._key is not None:
            rules = (*ctx.validation_rules, *self.rules)
            ctx.pre_execution_errors = self.documents.validate(
                self._key, ctx.schema._schema, ctx.graphql_document, rules
            )
        yield
