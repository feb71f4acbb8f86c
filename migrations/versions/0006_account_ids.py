"""account ids are never given again (SQLite AUTOINCREMENT; PostgreSQL's sequence never reuses)

A token names its account by id. Without AUTOINCREMENT, SQLite gives a new row the highest
id in use plus one, so deleting the newest account and creating another handed the deleted
account's tokens to the newcomer.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return  # a SERIAL's sequence moves forward only
    # the table is rebuilt with AUTOINCREMENT; copying its rows in records their highest id
    with op.batch_alter_table(
        "accounts", recreate="always", table_kwargs={"sqlite_autoincrement": True}
    ) as batch_op:
        batch_op.alter_column("account_id", autoincrement=True)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table("accounts", recreate="always", table_kwargs={"sqlite_autoincrement": False}):
        pass
