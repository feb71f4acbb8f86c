"""The audit log's chain, line by line: what `cinerec audit verify` walks (through the real
database and CLI in tests/e2e/test_operators.py)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime

from app.services.audit import GENESIS, AuditLine, line_hash, pseudonym, verify_chain, without_secrets


def chain(n: int) -> list[AuditLine]:
    lines, previous = [], GENESIS
    for i in range(1, n + 1):
        at = datetime(2026, 12, 7, 20, i)
        arguments = json.dumps({"version": str(i)})
        digest = line_hash(previous, i, at, "account:1/user:944", "promoteModel", arguments, "10.0.0.1", "ok")
        lines.append(
            AuditLine(
                i, at, "account:1/user:944", "promoteModel", arguments, "10.0.0.1", "ok", previous, digest
            )
        )  # type: ignore[arg-type]
        previous = digest
    return lines


def test_an_intact_chain_verifies_and_names_its_head() -> None:
    lines = chain(5)
    found = verify_chain(lines)
    assert found.ok and found.lines == 5 and found.head_id == 5 and found.head_hash == lines[-1].hash
    assert verify_chain([]).ok and verify_chain([]).head_hash == GENESIS


def test_an_edited_deleted_inserted_or_rehashed_line_breaks_the_chain() -> None:
    lines = chain(5)
    edited = [*lines[:2], replace(lines[2], result="FORBIDDEN"), *lines[3:]]
    assert (verify_chain(edited).broken_at, verify_chain(edited).problem) == (3, "its fields were changed")
    deleted = [*lines[:2], *lines[3:]]
    assert (verify_chain(deleted).broken_at, verify_chain(deleted).problem) == (3, "line 3 is deleted")
    # an edit that recomputes its own hash still breaks the next line's link
    forged = replace(lines[2], result="FORBIDDEN")
    forged = replace(
        forged,
        hash=line_hash(
            forged.previous_hash,
            3,
            forged.at,
            forged.actor,
            forged.action,
            forged.arguments,
            forged.client,
            "FORBIDDEN",  # type: ignore[arg-type]
        ),
    )
    relinked = [*lines[:2], forged, *lines[3:]]
    assert (verify_chain(relinked).broken_at, verify_chain(relinked).problem) == (
        4,
        "it does not follow the line before",
    )
    swapped = [lines[0], lines[2], lines[1], *lines[3:]]
    assert verify_chain(swapped).broken_at == 2


def test_secrets_never_reach_the_log_and_an_erased_user_is_a_stable_pseudonym() -> None:
    given = {"password": "hunter2-hunter2", "input": {"newPassword": "x", "token": "t", "name": "kept"}}
    cleaned = without_secrets(given)
    assert cleaned == {
        "password": "[secret]",
        "input": {"newPassword": "[secret]", "token": "[secret]", "name": "kept"},
    }
    one, again, other = pseudonym("s", 944), pseudonym("s", 944), pseudonym("s", 945)
    assert one == again != other and "944" not in one and one.startswith("erased:")
    assert pseudonym("another secret", 944) != one
