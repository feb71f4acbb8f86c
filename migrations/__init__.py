"""Alembic environment and versions: the only way cinerec's tables are created."""
