"""SQLAlchemy Core statements compiled once for an engine's dialect and run on its DBAPI cursor.

For the switchover journal only: its writes sit between a controller's decision and the traffic
moving, a few per switchover, on a machine whose caches are cold by then (switchovers are minutes
apart). Measured on the switchover benchmark, SQLAlchemy's per-execution machinery (execution
context, result objects, pool reset) cost about as much as the SQL itself there. Core still writes
the SQL, so it stays right for every dialect (SQLite's `?`, psycopg's `%(name)s`); everything else
in the store keeps using Core as usual.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.sql import ClauseElement


class PreparedStatement:
    """One statement's SQL text for one dialect, and how to order its parameters."""

    def __init__(self, statement: ClauseElement, dialect: Dialect, *, column_keys: Sequence[str] | None = None
                 ) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=list(column_keys) if column_keys else None)
        if compiled.literal_execute_params or compiled.post_compile_params:
            raise ValueError("expanding (IN) parameters cannot be prepared once; give each value its own bindparam")
        # The type conversions Core would apply to each value (e.g. Float's on SQLite).
        self._processors: dict[str, Callable[[Any], Any]] = {}
        for name, bind in compiled.binds.items():
            processor = bind.type.bind_processor(dialect)
            if processor is not None:
                self._processors[name] = processor
        self.sql: str = compiled.string
        self._order: tuple[str, ...] | None = tuple(compiled.positiontup) if compiled.positional else None

    def parameters(self, values: Mapping[str, Any]) -> tuple | dict:
        if self._processors:
            values = {name: self._processors[name](value) if name in self._processors else value
                      for name, value in values.items()}
        if self._order is None:
            return dict(values)
        return tuple(values[name] for name in self._order)

    def execute(self, cursor: Any, values: Mapping[str, Any]) -> Any:
        cursor.execute(self.sql, self.parameters(values))
        return cursor

    def executemany(self, cursor: Any, rows: Sequence[Mapping[str, Any]]) -> None:
        cursor.executemany(self.sql, [self.parameters(row) for row in rows])


@contextmanager
def dbapi_transaction(engine: Engine) -> Iterator[Any]:
    """A pooled DBAPI connection's cursor in one transaction: committed on leaving, rolled back on
    an exception. (pysqlite and psycopg both open the transaction at the first write.)"""
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        try:
            yield cursor
            connection.commit()
        except BaseException:
            connection.rollback()
            raise
        finally:
            cursor.close()
    finally:
        connection.close()  # back to the pool
