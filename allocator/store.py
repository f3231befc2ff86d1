"""Persistent runtime state: resources, switchovers and the journal of every switchover transition.

SQLAlchemy 2 Core. A SQLite file by default (WAL, so a monitor reads while a controller writes);
PostgreSQL by URL (`postgresql+psycopg://...`). The schema is Alembic's (`allocator/migrations`),
upgraded to head on every open under a lock, so concurrent opens never race the DDL.

Resource locks keep two controllers from acting on one resource. They die with their holder (a
SIGKILLed controller never leaves a lock behind): `flock` on a file per resource next to a SQLite
database, a session-level advisory lock on PostgreSQL.
"""

from __future__ import annotations

import fcntl
import hashlib
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from allocator.prepared import PreparedStatement, dbapi_transaction
from allocator.types import Resource, ResourceState, Switchover, SwitchoverKind, SwitchoverPhase

VERSION_TABLE = "shadowcast_runtime_version"  # not `alembic_version`: the DB may be shared (MLflow, Optuna)
_MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_MIGRATION_LOCK_KEY = 0x5AD0CA57  # advisory-lock key that serialises schema upgrades on PostgreSQL

metadata = sa.MetaData()
resources_t = sa.Table(
    "runtime_resources", metadata,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("cluster_id", sa.String(128)), sa.Column("pool", sa.String(128)), sa.Column("region", sa.String(128)),
    sa.Column("state", sa.String(16)), sa.Column("endpoint", sa.String(512)), sa.Column("updated_at", sa.Float),
)
switchovers_t = sa.Table(
    "runtime_switchovers", metadata,
    sa.Column("id", sa.String(256), primary_key=True),
    sa.Column("kind", sa.String(16)), sa.Column("cluster_id", sa.String(128)), sa.Column("route", sa.String(128)),
    sa.Column("source_id", sa.String(128)), sa.Column("target_id", sa.String(128)), sa.Column("phase", sa.String(16)),
    sa.Column("error", sa.Text), sa.Column("created_at", sa.Float), sa.Column("updated_at", sa.Float),
)
journal_t = sa.Table(
    "runtime_journal", metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("switchover_id", sa.String(256)), sa.Column("phase", sa.String(16)), sa.Column("detail", sa.Text),
    sa.Column("at", sa.Float),
)

_FINISHED = (SwitchoverPhase.COMMITTED.value, SwitchoverPhase.ROLLED_BACK.value)
# The finished phases as SQL literals (known constants): an IN over bound values would expand per
# call, which the prepared hot path cannot take.
_UNFINISHED = switchovers_t.c.phase.not_in([sa.literal_column(f"'{phase}'") for phase in _FINISHED])

# Statements built once: building one (and its cache key) on every call cost more than running it.
_SWITCHOVER_BY_ID = switchovers_t.select().where(switchovers_t.c.id == sa.bindparam("sid"))
_UNFINISHED_ON = switchovers_t.select().where(
    _UNFINISHED,
    sa.or_(switchovers_t.c.source_id.in_(sa.bindparam("ids", expanding=True)),
           switchovers_t.c.target_id.in_(sa.bindparam("ids", expanding=True))))
_UPDATE_RESOURCE = resources_t.update().where(resources_t.c.id == sa.bindparam("rid"))
_INSERT_RESOURCE = resources_t.insert()

# The switchover hot path (journal writes before traffic moves) runs on the DBAPI: see prepared.py.
_SWITCHOVER_COLUMNS = ("id", "kind", "cluster_id", "route", "source_id", "target_id", "phase", "error")
_SWITCHOVER_ROW = [switchovers_t.c[name] for name in _SWITCHOVER_COLUMNS]
# This id, or an unfinished switchover on either resource: the idempotency and busy checks at once.
_ID_OR_BUSY = sa.select(*_SWITCHOVER_ROW).where(sa.or_(
    switchovers_t.c.id == sa.bindparam("sid"),
    sa.and_(_UNFINISHED,
            sa.or_(switchovers_t.c.source_id.in_([sa.bindparam("first"), sa.bindparam("second")]),
                   switchovers_t.c.target_id.in_([sa.bindparam("first"), sa.bindparam("second")])))))
# Advance unless finished (a finished switchover may only be re-stated as what it is) and hand back
# the updated row: one statement instead of a read and a write. error=NULL keeps the stored error.
_ADVANCE = (switchovers_t.update()
            .where(switchovers_t.c.id == sa.bindparam("sid"),
                   sa.or_(_UNFINISHED, switchovers_t.c.phase == sa.bindparam("phase")))
            .values(phase=sa.bindparam("phase"), updated_at=sa.bindparam("now"),
                    error=sa.func.coalesce(sa.bindparam("error", type_=sa.Text), switchovers_t.c.error))
            .returning(*_SWITCHOVER_ROW))
_PHASE_OF = sa.select(switchovers_t.c.phase).where(switchovers_t.c.id == sa.bindparam("sid"))
_SWITCHOVER_KEYS = _SWITCHOVER_COLUMNS + ("created_at", "updated_at")
_JOURNAL_KEYS = ("switchover_id", "phase", "detail", "at")


class _HotPath:
    """The journal's statements compiled for one engine."""

    def __init__(self, dialect: sa.engine.Dialect) -> None:
        self.id_or_busy = PreparedStatement(_ID_OR_BUSY, dialect)
        self.insert_switchover = PreparedStatement(switchovers_t.insert(), dialect, column_keys=_SWITCHOVER_KEYS)
        self.insert_journal = PreparedStatement(journal_t.insert(), dialect, column_keys=_JOURNAL_KEYS)
        self.advance = PreparedStatement(_ADVANCE, dialect)
        self.phase_of = PreparedStatement(_PHASE_OF, dialect)


class StoreError(Exception):
    pass


class UnknownSwitchoverError(StoreError, KeyError):
    def __str__(self) -> str:
        return f"unknown switchover {self.args[0]!r}"


class SwitchoverConflictError(StoreError):
    """A switchover id reused for a different move, or a transition out of a finished switchover."""


class ResourceBusyError(StoreError):
    """Another switchover, here or in another controller, holds the resource."""


@dataclass(frozen=True)
class JournalEntry:
    seq: int
    switchover_id: str
    phase: SwitchoverPhase
    detail: str
    at: float


class Store:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.locks = _make_locks(engine)
        self._hot = _HotPath(engine.dialect)

    # --- resources ---------------------------------------------------------------------------------

    def put_resource(self, resource: Resource) -> None:
        row = {"cluster_id": resource.cluster_id, "pool": resource.pool, "region": resource.region,
               "state": resource.state.value, "endpoint": resource.endpoint, "updated_at": time.time()}
        with self.engine.begin() as conn:
            updated = conn.execute(_UPDATE_RESOURCE, {"rid": resource.id, **row})
            if updated.rowcount == 0:
                conn.execute(_INSERT_RESOURCE, {"id": resource.id, **row})

    def get_resource(self, resource_id: str) -> Resource | None:
        with self.engine.connect() as conn:
            row = conn.execute(resources_t.select().where(resources_t.c.id == resource_id)).first()
        return None if row is None else _resource(row)

    def resources(self, cluster_id: str | None = None, *, include_released: bool = False) -> list[Resource]:
        query = resources_t.select().order_by(resources_t.c.id)
        if cluster_id is not None:
            query = query.where(resources_t.c.cluster_id == cluster_id)
        if not include_released:
            query = query.where(resources_t.c.state != ResourceState.RELEASED.value)
        with self.engine.connect() as conn:
            return [_resource(row) for row in conn.execute(query)]

    # --- switchovers and their journal -------------------------------------------------------------

    def begin_switchover(self, switchover: Switchover, detail: str = "", then: SwitchoverPhase | None = None
                         ) -> tuple[Switchover, bool]:
        """Record a new switchover in PLANNED (journaled); returns (record, created).

        `then`: journal that next phase in the same transaction (one commit fewer on the hot path).

        The same id with the same move returns the stored record (idempotent retry); with another
        move it raises. Callers hold the resource locks, so the busy check cannot race.
        """
        hot = self._hot
        with dbapi_transaction(self.engine) as cursor:
            found = [_switchover_from(row) for row in hot.id_or_busy.execute(cursor, {
                "sid": switchover.id, "first": switchover.source_id, "second": switchover.target_id}).fetchall()]
            stored = next((s for s in found if s.id == switchover.id), None)
            if stored is not None:
                same = (stored.kind, stored.route, stored.source_id, stored.target_id) == (
                    switchover.kind, switchover.route, switchover.source_id, switchover.target_id)
                if not same:
                    raise SwitchoverConflictError(
                        f"switchover id {switchover.id!r} was used for {stored.kind} {stored.source_id} -> "
                        f"{stored.target_id} on route {stored.route!r}")
                return stored, False
            if found:
                raise ResourceBusyError(f"resources {switchover.source_id!r}/{switchover.target_id!r} are in "
                                        f"unfinished switchover(s) {', '.join(s.id for s in found)}")
            now = time.time()
            phase = then if then is not None else SwitchoverPhase.PLANNED
            hot.insert_switchover.execute(cursor, {
                "id": switchover.id, "kind": switchover.kind.value, "cluster_id": switchover.cluster_id,
                "route": switchover.route, "source_id": switchover.source_id, "target_id": switchover.target_id,
                "phase": phase.value, "error": "", "created_at": now, "updated_at": now})
            entries = [{"switchover_id": switchover.id, "phase": SwitchoverPhase.PLANNED.value, "detail": detail,
                        "at": now}]
            if then is not None:
                entries.append({"switchover_id": switchover.id, "phase": then.value, "detail": "", "at": now})
            hot.insert_journal.executemany(cursor, entries)
        return replace(switchover, phase=phase, error=""), True

    def advance(self, switchover_id: str, phase: SwitchoverPhase, detail: str = "", error: str | None = None
                ) -> Switchover:
        """Journal a transition and make it the switchover's phase, in one transaction."""
        now = time.time()
        hot = self._hot
        with dbapi_transaction(self.engine) as cursor:
            row = hot.advance.execute(cursor, {"sid": switchover_id, "phase": phase.value, "now": now,
                                               "error": error}).fetchone()
            if row is None:
                current = hot.phase_of.execute(cursor, {"sid": switchover_id}).fetchone()
                if current is None:
                    raise UnknownSwitchoverError(switchover_id)
                raise SwitchoverConflictError(f"switchover {switchover_id!r} is {current[0]}; it cannot "
                                              f"become {phase}")
            hot.insert_journal.execute(cursor, {"switchover_id": switchover_id, "phase": phase.value,
                                                "detail": detail, "at": now})
        return _switchover_from(row)

    def get_switchover(self, switchover_id: str) -> Switchover:
        with self.engine.connect() as conn:
            row = conn.execute(_SWITCHOVER_BY_ID, {"sid": switchover_id}).first()
        if row is None:
            raise UnknownSwitchoverError(switchover_id)
        return _switchover(row)

    def switchovers(self, *, unfinished_only: bool = False) -> list[Switchover]:
        query = switchovers_t.select().order_by(switchovers_t.c.created_at, switchovers_t.c.id)
        if unfinished_only:
            query = query.where(_UNFINISHED)
        with self.engine.connect() as conn:
            return [_switchover(row) for row in conn.execute(query)]

    def unfinished_on(self, resource_ids: tuple[str, ...]) -> list[Switchover]:
        with self.engine.connect() as conn:
            return self._unfinished_on(conn, resource_ids)

    def journal(self, switchover_id: str | None = None) -> list[JournalEntry]:
        query = journal_t.select().order_by(journal_t.c.seq)
        if switchover_id is not None:
            query = query.where(journal_t.c.switchover_id == switchover_id)
        with self.engine.connect() as conn:
            return [JournalEntry(r.seq, r.switchover_id, SwitchoverPhase(r.phase), r.detail, r.at)
                    for r in conn.execute(query)]

    def close(self) -> None:
        self.engine.dispose()

    @staticmethod
    def _unfinished_on(conn: Connection, resource_ids: tuple[str, ...]) -> list[Switchover]:
        return [_switchover(row) for row in conn.execute(_UNFINISHED_ON, {"ids": list(resource_ids)})]


# --- opening and migrating ---------------------------------------------------------------------------


def default_url(directory: Path | str = ".") -> str:
    return f"sqlite:///{Path(directory).resolve() / 'shadowcast-runtime.db'}"


def open_store(url: str) -> Store:
    """Connect, upgrade the schema to head, and return the store."""
    engine = _engine(url)
    with _migration_lock(engine):
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK_KEY)))
            _upgrade(conn)
    return Store(engine)


def _upgrade(conn: Connection) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["connection"] = conn
    command.upgrade(config, "head")


def _engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record) -> None:  # noqa: ANN001 - DBAPI types
            cursor = dbapi_connection.cursor()
            # WAL: readers never block the controller's writes; NORMAL: durable at checkpoints,
            # and a journal write costs no fsync of its own (it matters for switchover latency).
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return sa.create_engine(url, pool_pre_ping=True)


def _sqlite_path(engine: Engine) -> Path | None:
    database = engine.url.database
    return None if database in (None, "", ":memory:") else Path(database)


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    path = _sqlite_path(engine) if engine.dialect.name == "sqlite" else None
    if path is None:  # PostgreSQL locks inside the transaction; in-memory SQLite has one process
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".migrate.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


# --- resource locks ------------------------------------------------------------------------------------


class Lease:
    """Held locks on some resources; `release` is idempotent."""

    def __init__(self, resource_ids: tuple[str, ...], release) -> None:  # noqa: ANN001 - a closure
        self.resource_ids, self._release, self.held = resource_ids, release, True

    def release(self) -> None:
        if self.held:
            self.held = False
            self._release()

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class FileLocks:
    """`flock` per resource: dies with the process holding it, works across processes on one host."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def acquire(self, resource_ids: tuple[str, ...]) -> Lease:
        handles = []
        try:
            for rid in sorted(set(resource_ids)):  # a fixed order: two acquirers cannot deadlock
                handle = open(self.directory / f"{_lock_name(rid)}.lock", "a")
                handles.append(handle)
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise ResourceBusyError(f"resource {rid!r} is locked by another switchover or controller") \
                        from None
        except BaseException:
            for handle in handles:
                handle.close()
            raise

        def release() -> None:
            for handle in handles:
                handle.close()  # closing the last descriptor drops the flock

        return Lease(tuple(resource_ids), release)


class AdvisoryLocks:
    """PostgreSQL session-level advisory locks, one connection per lease (dies with the session)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def acquire(self, resource_ids: tuple[str, ...]) -> Lease:
        conn = self.engine.connect()
        keys = [_lock_key(rid) for rid in sorted(set(resource_ids))]
        taken: list[int] = []
        try:
            for rid, key in zip(sorted(set(resource_ids)), keys):
                if not conn.execute(sa.select(sa.func.pg_try_advisory_lock(key))).scalar():
                    raise ResourceBusyError(f"resource {rid!r} is locked by another switchover or controller")
                taken.append(key)
            conn.commit()
        except BaseException:
            _unlock(conn, taken)
            raise

        def release() -> None:
            _unlock(conn, taken)

        return Lease(tuple(resource_ids), release)


class ThreadLocks:
    """For an in-memory SQLite store: one process, so a set guarded by a mutex is enough."""

    def __init__(self) -> None:
        self._mutex, self._held = threading.Lock(), set()

    def acquire(self, resource_ids: tuple[str, ...]) -> Lease:
        ids = set(resource_ids)
        with self._mutex:
            busy = ids & self._held
            if busy:
                raise ResourceBusyError(f"resource {sorted(busy)[0]!r} is locked by another switchover")
            self._held |= ids

        def release() -> None:
            with self._mutex:
                self._held -= ids

        return Lease(tuple(resource_ids), release)


def _unlock(conn: Connection, keys: list[int]) -> None:
    try:
        for key in keys:
            conn.execute(sa.select(sa.func.pg_advisory_unlock(key)))
        conn.commit()
    finally:
        conn.close()


def _make_locks(engine: Engine) -> FileLocks | AdvisoryLocks | ThreadLocks:
    if engine.dialect.name == "postgresql":
        return AdvisoryLocks(engine)
    path = _sqlite_path(engine)
    if path is None:
        return ThreadLocks()
    return FileLocks(path.with_name(path.name + ".locks"))


def _lock_name(resource_id: str) -> str:
    return hashlib.sha1(resource_id.encode()).hexdigest()[:20]


def _lock_key(resource_id: str) -> int:
    """A stable signed 64-bit key (what pg_advisory_lock takes) for a resource id."""
    return int.from_bytes(hashlib.sha1(b"shadowcast:" + resource_id.encode()).digest()[:8], "big", signed=True)


def _resource(row) -> Resource:  # noqa: ANN001 - a SQLAlchemy Row
    return Resource(id=row.id, cluster_id=row.cluster_id, pool=row.pool, region=row.region,
                    state=ResourceState(row.state), endpoint=row.endpoint)


def _switchover_from(row: tuple) -> Switchover:
    """From a DBAPI row in `_SWITCHOVER_COLUMNS` order."""
    sid, kind, cluster_id, route, source_id, target_id, phase, error = row
    return Switchover(id=sid, kind=SwitchoverKind(kind), cluster_id=cluster_id, route=route, source_id=source_id,
                      target_id=target_id, phase=SwitchoverPhase(phase), error=error)


def _switchover(row) -> Switchover:  # noqa: ANN001
    return Switchover(id=row.id, kind=SwitchoverKind(row.kind), cluster_id=row.cluster_id, route=row.route,
                      source_id=row.source_id, target_id=row.target_id, phase=SwitchoverPhase(row.phase),
                      error=row.error)
