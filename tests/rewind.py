"""Takes a state database back to an older schema revision through the migrations'
own ``downgrade`` steps, as an older crmsync left it, so that a test can upgrade it
again without naming every table and column that later revisions added."""

from __future__ import annotations

from alembic import command
from sqlalchemy.engine import Engine

from state.migrate import alembic_config


def rewind(engine: Engine, revision: str) -> None:
    with engine.begin() as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, revision)
