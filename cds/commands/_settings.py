"""What every command module needs: the settings the server would use, and a database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flask import Flask
from sqlalchemy.orm import sessionmaker

from cds.config import Settings


def settings() -> Settings:
    # The same instance folder the server uses (Flask's rule: ./instance beside the package).
    instance = Path(Flask("cds", instance_relative_config=True).instance_path)
    return Settings.from_env(instance_path=instance)


@contextmanager
def database(url: str) -> Iterator[tuple[sessionmaker, sessionmaker]]:
    """(write sessions, snapshot sessions) on ``url``; the engine is disposed on exit."""
    from cds.db import make_engine, make_sessionmaker, make_snapshot_sessionmaker

    engine = make_engine(url)
    try:
        yield make_sessionmaker(engine), make_snapshot_sessionmaker(engine)
    finally:
        engine.dispose()
