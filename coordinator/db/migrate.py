"""Apply Alembic migrations programmatically (start-up and ``renderfarm db upgrade``)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from coordinator.settings import Settings

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(settings: Settings) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation would choke on a password containing '%'.
    config.set_main_option("sqlalchemy.url", settings.sync_database_url.replace("%", "%%"))
    return config


def upgrade_database(settings: Settings, revision: str = "head") -> None:
    if settings.sync_database_url.startswith("sqlite"):
        settings.renderfarm_home.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(settings), revision)
