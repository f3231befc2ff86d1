"""Alembic migrations of the runtime state store; `allocator.store.open_store` runs them to head."""
