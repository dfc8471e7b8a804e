"""Alembic environment: uses the connection handed over by citybrain.db.migrate, or the configured URL."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from citybrain.db.base import import_all_models
from citybrain.db.migrate import include_name, include_object

target_metadata = import_all_models()
config = context.config


def run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_name=include_name,
        include_object=include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run(connection)
else:
    engine = sa.create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.begin() as conn:
        run(conn)
