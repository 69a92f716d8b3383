"""Versioned schemas for the tables in store.db, with numbered migrations run at open.

Each component that keeps tables in the store's database (the store itself, images,
containers) declares a Schema: its name, the tables and indexes it makes, and its migrations,
in order. Migration N takes the component from version N-1 to N; version 1 creates the
tables as they first were. The versions live in the table ``schema_versions``; a store made
before versions existed has none recorded and its tables are already those of version 1.

Every migration is idempotent (``CREATE ... IF NOT EXISTS``, or a function that checks before
it alters), so a store that lost part of its schema (a dropped index) is healed by running
the migrations again. A store whose version is newer than this storagekit knows is refused in
one line: it was written by a newer release, and writing to it could lose what that release
keeps.
"""

from __future__ import annotations

import sqlite3

from .errors import StoreError

TYPE_CHECKING = False  # the boot path's rule: see storagekit/bootpath.py
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    Migration = str | Callable[[sqlite3.Connection], None]

VERSIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_versions (
    component TEXT PRIMARY KEY,
    version   INTEGER NOT NULL
)
"""


class Schema:
    """The tables of one component and the migrations that make them."""

    def __init__(self, component: str, names: set[str], migrations: Sequence[Migration]) -> None:
        self.component = component
        self.names = frozenset(names)  # every table and index the latest version has
        self.migrations = tuple(migrations)

    @property
    def version(self) -> int:
        return len(self.migrations)

    def __repr__(self) -> str:
        return f"Schema({self.component!r}, version {self.version})"


def read_versions(db: sqlite3.Connection) -> dict[str, int]:
    """The recorded version of every component ({} for a store older than versions)."""
    try:
        return dict(db.execute("SELECT component, version FROM schema_versions").fetchall())
    except sqlite3.OperationalError:  # no such table
        return {}


def existing_names(db: sqlite3.Connection) -> set[str]:
    return {row[0] for row in db.execute(
        "SELECT name FROM sqlite_master WHERE type IN ('table', 'index')")}


def check_not_newer(schema: Schema, have: int, where: str) -> None:
    if have > schema.version:
        raise StoreError(
            f"the store at {where} has schema version {have} of {schema.component!r}, newer "
            f"than this storagekit knows ({schema.version}): use a newer storagekit")


def is_current(schema: Schema, versions: dict[str, int], names: set[str]) -> bool:
    """Does the database have this schema as it is now (nothing to write)?"""
    return versions.get(schema.component, 0) == schema.version and schema.names <= names


def migrate(db: sqlite3.Connection, schema: Schema, where: str) -> int:
    """Bring schema up to date inside the caller's transaction; returns the version it had.
    A complete schema at the latest version is left alone."""
    db.execute(VERSIONS_TABLE)
    have = read_versions(db).get(schema.component, 0)
    check_not_newer(schema, have, where)
    # A schema missing tables or indexes at its own version is healed by running every
    # migration again (they are idempotent); otherwise only the ones it has not had.
    start = 0 if not schema.names <= existing_names(db) else have
    for migration in schema.migrations[start:]:
        if callable(migration):
            migration(db)
        else:
            for statement in migration.split(";"):
                if statement.strip():
                    db.execute(statement)
    if have != schema.version:
        db.execute(
            "INSERT INTO schema_versions(component, version) VALUES (?, ?) "
            "ON CONFLICT(component) DO UPDATE SET version = excluded.version",
            (schema.component, schema.version))
    return have


def add_column(table: str, column: str, definition: str) -> Callable[[sqlite3.Connection], None]:
    """A migration that adds a column unless the table has it already."""

    def run(db: sqlite3.Connection) -> None:
        columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if column not in columns:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")

    run.__doc__ = f"ALTER TABLE {table} ADD COLUMN {column} {definition}"
    return run
