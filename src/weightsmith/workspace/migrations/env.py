"""Alembic environment: uses the engine the workspace hands over (or the URL in the config)."""

from alembic import context
from sqlalchemy import create_engine

from weightsmith.workspace.models import Base

config = context.config
engine = config.attributes.get("engine") or create_engine(config.get_main_option("sqlalchemy.url"))

with engine.connect() as connection:
    if connection.dialect.name == "sqlite":
        # Processes that open a workspace needing a migration at the same moment (two `init`s, a
        # worker and a command after an upgrade) would each create the tables: the write lock
        # first, so each reads the revision only once the one before it has committed. Inside
        # this transaction the whole upgrade is also atomic (SQLite's DDL is transactional).
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
