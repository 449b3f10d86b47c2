"""Alembic environment: publisher's models, one connection, one migrating process at a time."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from publisher.db import make_engine, writer_lock
from publisher.models import Base

config = context.config
url = config.get_main_option("sqlalchemy.url")


def run_migrations_online() -> None:
    engine = make_engine(url)
    # several web processes may start at once on a fresh SQLite file: the writers' lock
    # file lets one create the tables while the others wait, then find them there
    with writer_lock(engine), engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            # several web processes may start at once: one migrates, the others wait
            connection.execute(text("SELECT pg_advisory_lock(7262631)"))
            connection.commit()
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_unlock(7262631)"))
            connection.commit()
    engine.dispose()


run_migrations_online()
