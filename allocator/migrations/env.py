"""Alembic environment: always driven programmatically by `allocator.store`, which hands over an
open connection (so the store's lock around the upgrade covers it) in `config.attributes`."""

from alembic import context

from allocator.store import VERSION_TABLE

connection = context.config.attributes["connection"]
# render_as_batch: SQLite cannot ALTER most things in place; batch mode copies the table instead.
context.configure(connection=connection, target_metadata=None, version_table=VERSION_TABLE,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
