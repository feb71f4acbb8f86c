"""Which mutations the audit log records: every admin mutation (whatever is added later), and
the erasure of one's own account; a person's own ratings and clicks are not the log's."""

from __future__ import annotations

from app.infra.settings import Settings
from graphql_schema.extensions.audit_trail import audited_mutations
from graphql_schema.schema import build_schema


def test_every_admin_mutation_and_every_erasure_is_audited() -> None:
    schema = build_schema(Settings(env="test"))
    found = audited_mutations(schema._schema.mutation_type)
    assert {
        "promoteModel",
        "rollbackModel",
        "startExperiment",
        "stopExperiment",
        "addMovie",
        "updateMovie",
        "retireMovie",
        "createApiKey",
        "revokeApiKey",
        "deleteAccount",
        "deleteMyAccount",
    } == found
    assert not found & {"rateMovie", "dismissMovie", "recordClick", "login", "register", "logout"}
