"""Core statements compiled once and run on the DBAPI: same rows as Core, for each paramstyle."""

from __future__ import annotations

import sqlite3

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from allocator.prepared import PreparedStatement, dbapi_transaction

metadata = sa.MetaData()
items = sa.Table("items", metadata, sa.Column("id", sa.String(16), primary_key=True), sa.Column("score", sa.Float),
                 sa.Column("tag", sa.String(16)))


@pytest.fixture
def engine(tmp_path) -> sa.engine.Engine:  # noqa: ANN001
    made = sa.create_engine(f"sqlite:///{tmp_path / 'p.db'}")
    metadata.create_all(made)
    yield made
    made.dispose()


def test_positional_parameters_follow_the_sql_and_repeat_where_it_does(engine: sa.engine.Engine) -> None:
    find = PreparedStatement(sa.select(items.c.id).where(sa.or_(items.c.id == sa.bindparam("a"),
                                                                items.c.tag.in_([sa.bindparam("a"),
                                                                                 sa.bindparam("b")]))),
                             engine.dialect)
    assert find.sql.count("?") == 3
    assert find.parameters({"b": "y", "a": "x"}) == ("x", "x", "y")
    insert = PreparedStatement(items.insert(), engine.dialect, column_keys=("id", "score", "tag"))
    with dbapi_transaction(engine) as cursor:
        insert.executemany(cursor, [{"id": "i1", "score": 1.5, "tag": "x"}, {"id": "i2", "score": 2, "tag": "y"},
                                    {"id": "i3", "score": 3.0, "tag": "z"}])
        rows = find.execute(cursor, {"a": "i3", "b": "y"}).fetchall()
    assert sorted(r[0] for r in rows) == ["i2", "i3"]
    with engine.connect() as conn:  # committed, and typed as Core reads them
        assert conn.execute(sa.select(items.c.score).where(items.c.id == "i2")).scalar() == 2.0


def test_a_failure_inside_the_transaction_leaves_nothing(engine: sa.engine.Engine) -> None:
    insert = PreparedStatement(items.insert(), engine.dialect, column_keys=("id", "score", "tag"))
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):  # the DBAPI's own error, not Core's
        with dbapi_transaction(engine) as cursor:
            insert.execute(cursor, {"id": "i1", "score": 1.0, "tag": "x"})
            insert.execute(cursor, {"id": "i1", "score": 2.0, "tag": "x"})
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(items)).scalar() == 0


def test_named_paramstyle_takes_a_mapping() -> None:
    find = PreparedStatement(sa.select(items.c.id).where(items.c.id == sa.bindparam("a")), postgresql.psycopg.dialect())
    assert "%(a)s" in find.sql and find.parameters({"a": "x"}) == {"a": "x"}


def test_an_expanding_in_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="expanding"):
        PreparedStatement(sa.select(items.c.id).where(items.c.tag.in_(["x", "y"])), sa.create_engine("sqlite://").dialect)
