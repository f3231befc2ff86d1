"""The state store on SQLite and on a real PostgreSQL: schema by Alembic, journal, idempotency, locks."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

from allocator.store import (
    VERSION_TABLE,
    ResourceBusyError,
    Store,
    SwitchoverConflictError,
    UnknownSwitchoverError,
    open_store,
)
from allocator.types import Resource, ResourceState, Switchover, SwitchoverKind, SwitchoverPhase

SW = Switchover("sw-1", SwitchoverKind.SWITCHOVER, "c1", "web", "a", "b")


def test_open_migrates_to_head_and_reopens(store_url: str) -> None:
    first = open_store(store_url)
    second = open_store(store_url)  # a second open finds the schema at head and changes nothing
    try:
        with first.engine.connect() as conn:
            tables = set(sa.inspect(conn).get_table_names())
            version = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
        assert {"runtime_resources", "runtime_switchovers", "runtime_journal", VERSION_TABLE} <= tables
        assert version == "0001"
    finally:
        first.close()
        second.close()


def test_resources_round_trip(store: Store) -> None:
    resource = Resource("r1", "c1", "pool", "eu", ResourceState.WARM, "http://127.0.0.1:1")
    store.put_resource(resource)
    store.put_resource(Resource("r2", "c2", "pool", "eu", ResourceState.RELEASED))
    assert store.get_resource("r1") == resource
    store.put_resource(Resource("r1", "c1", "pool", "eu", ResourceState.ACTIVE, "http://127.0.0.1:1"))
    assert store.get_resource("r1").state is ResourceState.ACTIVE
    assert [r.id for r in store.resources()] == ["r1"]
    assert [r.id for r in store.resources(include_released=True)] == ["r1", "r2"]
    assert store.get_resource("nope") is None


def test_switchover_is_journaled_in_order_and_idempotent(store: Store) -> None:
    created, fresh = store.begin_switchover(SW)
    assert fresh and created.phase is SwitchoverPhase.PLANNED
    again, fresh = store.begin_switchover(SW)
    assert not fresh and again == created
    for phase in (SwitchoverPhase.SYNCING, SwitchoverPhase.NOTIFYING, SwitchoverPhase.REDIRECTING,
                  SwitchoverPhase.COMMITTED):
        store.advance(SW.id, phase, detail=f"to {phase}")
    assert [e.phase for e in store.journal(SW.id)] == [
        SwitchoverPhase.PLANNED, SwitchoverPhase.SYNCING, SwitchoverPhase.NOTIFYING, SwitchoverPhase.REDIRECTING,
        SwitchoverPhase.COMMITTED]
    assert store.switchovers(unfinished_only=True) == []


def test_bad_requests_change_nothing(store: Store) -> None:
    store.begin_switchover(SW)
    with pytest.raises(SwitchoverConflictError, match="sw-1"):
        store.begin_switchover(Switchover("sw-1", SwitchoverKind.SWITCHOVER, "c1", "web", "a", "other"))
    with pytest.raises(ResourceBusyError, match="sw-1"):
        store.begin_switchover(Switchover("sw-2", SwitchoverKind.SWITCHOVER, "c1", "web", "b", "c"))
    with pytest.raises(UnknownSwitchoverError):
        store.advance("nope", SwitchoverPhase.SYNCING)
    store.advance(SW.id, SwitchoverPhase.ROLLED_BACK)
    with pytest.raises(SwitchoverConflictError, match="rolled-back"):
        store.advance(SW.id, SwitchoverPhase.REDIRECTING)
    assert [s.id for s in store.switchovers()] == ["sw-1"]
    assert len(store.journal(SW.id)) == 2


def test_locks_exclude_other_holders_and_die_with_their_process(store: Store, store_url: str) -> None:
    other = open_store(store_url)  # another controller on the same store
    try:
        with store.locks.acquire(("a", "b")):
            with pytest.raises(ResourceBusyError, match="'b'"):
                other.locks.acquire(("b", "c"))
            with pytest.raises(ResourceBusyError):
                store.locks.acquire(("a",))  # a second switchover in the same controller too
        other.locks.acquire(("b", "c")).release()

        # A controller SIGKILLed while holding a lock must not leave it behind.
        holder = subprocess.Popen(
            [sys.executable, "-c",
             "import sys, time\nfrom allocator.store import open_store\n"
             "lease = open_store(sys.argv[1]).locks.acquire(('a',))\nprint('held', flush=True)\ntime.sleep(60)",
             store_url], stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "held"
            with pytest.raises(ResourceBusyError):
                store.locks.acquire(("a",))
        finally:
            holder.kill()
            holder.wait(timeout=10)
        deadline = time.monotonic() + 10
        while True:  # PostgreSQL notices the dead session within moments
            try:
                store.locks.acquire(("a",)).release()
                break
            except ResourceBusyError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    finally:
        other.close()
