"""Real resources on one machine: each unit is a worker process (`allocator.worker`), traffic flows
through one HAProxy whose pre-declared server slots are bound to workers with the runtime API.

Everything a restarted controller needs lives in `runtime_dir`: the inventory (resources, slot
bindings, HAProxy ports), each worker's announce file (pid, port) and HAProxy's pid file. Workers
and HAProxy run in their own sessions, so they keep serving while a controller is down; a new
`LocalDriver` on the same directory adopts them and kills any worker it does not know (orphans).

A switch (`redirect`) is a handoff then a rebind:
  1. the source worker, under its state lock, pushes what changed since the last sync to the target
     and from then on forwards every request it still receives there (no write lost or split);
  2. one admin-socket line makes the target's slot ready and puts the source's in maintenance.
Requests already inside the source finish through its forwarding, so no request fails.
"""

from __future__ import annotations

import fcntl
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import urlsplit

import allocator
from allocator.drivers.base import (
    SERVABLE,
    ConflictError,
    DriverError,
    ResourceNotReadyError,
    ResourceUnreachableError,
    RouteStateError,
    UnknownResourceError,
    UnknownRouteError,
    check_transition,
)
from allocator.drivers.haproxy import (
    ROUTE_NAME,
    HAProxy,
    HAProxyError,
    _alive,
    admin_socket_for,
    find_haproxy,
    free_port,
)
from allocator.types import Health, PoolSpec, Resource, ResourceState

_PROJECT_ROOT = str(Path(allocator.__file__).resolve().parent.parent)


def http_json(method: str, url: str, path: str, body: dict | None = None, timeout: float = 5.0) -> tuple[int, dict]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body).encode(),
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        raw = response.read()
        try:
            return response.status, json.loads(raw) if raw else {}
        except ValueError:  # e.g. HAProxy's own HTML error pages
            return response.status, {"raw": raw.decode(errors="replace")[:500]}
    finally:
        conn.close()


_PREFETCH_FRESH_S = 5.0  # a snapshot prepare_sync read is used by a sync that follows within this
_PREFETCH_TIMEOUT_S = 1.0
_TRANSPORT_ERRORS = (OSError, http.client.HTTPException, ValueError)  # ValueError: an answer that is not JSON


class LocalDriver:
    def __init__(self, runtime_dir: Path | str, routes: tuple[str, ...] = ("default",), *, slots_per_route: int = 8,
                 haproxy_bin: str | None = None, python: str = sys.executable, ready_timeout_s: float = 15.0) -> None:
        for route in routes:
            if not ROUTE_NAME.match(route):
                raise ValueError(f"route name {route!r} must match {ROUTE_NAME.pattern}")
        binary = haproxy_bin or find_haproxy()
        if binary is None:
            raise DriverError("haproxy not found on PATH or at /usr/sbin/haproxy (apt-get install haproxy)")
        self.runtime_dir = Path(runtime_dir)
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
        (self.runtime_dir / "workers").mkdir(exist_ok=True)
        (self.runtime_dir / "logs").mkdir(exist_ok=True)
        self._python, self._ready_timeout = python, ready_timeout_s
        self._lock = threading.RLock()
        self._procs: dict[str, subprocess.Popen] = {}  # workers this process spawned (reaped here)
        self._cursors: dict[tuple[str, str], int] = {}  # (source, target) -> source seq last copied
        self._conns: dict[str, http.client.HTTPConnection] = {}  # admin connections, used under _lock
        # (source, target) -> (cursor, monotonic time, snapshot) read by prepare_sync for the next sync
        self._prefetched: dict[tuple[str, str], tuple[int, float, dict]] = {}
        self.catch_up_below = 256  # sessions: a delta this small is left to the handoff
        self._depth = 0  # nesting of _locked() in this process
        self._stamp: object = object()  # matches no stamp: the first _locked() reads the inventory
        self._dir_lock = open(self.runtime_dir / "driver.lock", "a+")
        self._routes_wanted, self._slots_wanted = routes, slots_per_route
        with self._locked():
            self.haproxy = HAProxy(binary, self.runtime_dir, self._inventory["socket"], self._inventory["ports"],
                                   self._inventory["slots_per_route"])
            self._ensure_haproxy()
            self._kill_orphans()
            self._save()

    # --- start-up and adoption ---------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """The driver's critical section, across threads *and* processes: several controllers (or a
        controller and a monitor) may share one runtime dir. The inventory is re-read on entry, so
        each process acts on what the others last wrote."""
        with self._lock:
            if self._dir_lock.closed:
                raise DriverError(f"this driver of {self.runtime_dir} was closed; open a new one")
            self._depth += 1
            try:
                if self._depth == 1:
                    fcntl.flock(self._dir_lock, fcntl.LOCK_EX)
                    if self._inventory_stamp() != self._stamp:  # another process wrote it
                        self._inventory = self._load_inventory(self._routes_wanted, self._slots_wanted)
                        self._stamp = self._inventory_stamp()
                        if hasattr(self, "haproxy"):
                            self.haproxy.ports = dict(self._inventory["ports"])
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    fcntl.flock(self._dir_lock, fcntl.LOCK_UN)

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """For calls that only read: the inventory as last saved, without the cross-process lock.
        Saves replace the file atomically, so a read never sees half of one; a caller that acts on
        what it read does so under `_locked`, which checks again."""
        with self._lock:
            if self._dir_lock.closed:
                raise DriverError(f"this driver of {self.runtime_dir} was closed; open a new one")
            stamp = self._inventory_stamp() if self._depth == 0 else self._stamp
            if stamp is not None and stamp != self._stamp:
                # The stamp first: a save landing during the read shows as a change next time.
                self._inventory = self._load_inventory(self._routes_wanted, self._slots_wanted)
                self._stamp = stamp
                self.haproxy.ports = dict(self._inventory["ports"])
            yield

    def _load_inventory(self, routes: tuple[str, ...], slots: int) -> dict:
        path = self.runtime_dir / "inventory.json"
        if path.exists():
            inventory = json.loads(path.read_text())
            missing = set(routes) - set(inventory["ports"])
            if missing:
                raise DriverError(f"runtime dir {self.runtime_dir} was created without routes {sorted(missing)}")
            return inventory
        return {"socket": admin_socket_for(self.runtime_dir, uuid.uuid4().hex[:16]), "ports": {r: free_port() for r in routes},
                "slots_per_route": slots, "slots": {r: {} for r in routes}, "resources": {}}

    def _save(self) -> None:
        """Write the inventory atomically (a new inode every time, so the stamp always changes)."""
        self._publish(self._stage(self._inventory))

    def _stage(self, inventory: dict) -> os.stat_result:
        """Write `inventory` next to the live file; `_publish` swaps it in. Raw descriptors: a
        redirect saves before it returns, so this sits on the switchover's path."""
        data = memoryview(json.dumps(inventory).encode())
        fd = os.open(self.runtime_dir / "inventory.tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            while data:
                data = data[os.write(fd, data):]
            return os.fstat(fd)
        finally:
            os.close(fd)

    def _publish(self, staged: os.stat_result) -> None:
        os.replace(self.runtime_dir / "inventory.tmp", self.runtime_dir / "inventory.json")
        self._stamp = (staged.st_ino, staged.st_mtime_ns, staged.st_size)

    def _inventory_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.runtime_dir / "inventory.json")
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def _ensure_haproxy(self) -> None:
        if self.haproxy.answers():
            return
        for attempt in range(3):
            try:
                self.haproxy.start()
                break
            except HAProxyError:
                if attempt == 2:
                    raise
                # most likely a port taken since it was picked: pick again
                self._inventory["ports"] = {r: free_port() for r in self._inventory["ports"]}
                self.haproxy.ports = dict(self._inventory["ports"])
        self._save()
        # A fresh HAProxy knows no bindings: re-apply the ones the inventory records.
        commands = []
        for route, slots in self._inventory["slots"].items():
            for slot, rid in slots.items():
                record = self._inventory["resources"].get(rid)
                if record and record.get("port"):
                    commands += self.haproxy.bind(route, slot, record["port"])
        if commands:
            self.haproxy.apply(commands)

    def _kill_orphans(self) -> None:
        """Workers announced in the directory that the inventory does not hold (or holds as released)."""
        known = {rid for rid, rec in self._inventory["resources"].items() if rec["state"] != ResourceState.RELEASED}
        for announce in (self.runtime_dir / "workers").glob("*.json"):
            rid = announce.stem
            if rid in known:
                record = self._inventory["resources"][rid]
                if not record.get("port"):  # it announced after the controller that spawned it died
                    info = json.loads(announce.read_text())
                    record.update(pid=info["pid"], port=info["port"])
                    self._save()
                continue
            info = json.loads(announce.read_text())
            _terminate(info["pid"], rid)
            announce.unlink(missing_ok=True)

    # --- the protocol ------------------------------------------------------------------------------

    def provision(self, spec: PoolSpec, *, warm: bool, cluster_id: str = "default", region: str | None = None,
                  resource_id: str | None = None) -> Resource:
        if region is not None and region not in spec.regions:
            raise ValueError(f"region {region!r} is not in pool {spec.name!r}'s regions {spec.regions}")
        with self._locked():
            if resource_id is not None and resource_id in self._inventory["resources"]:
                record = self._inventory["resources"][resource_id]
                if (record["pool"], record["cluster_id"]) != (spec.name, cluster_id):
                    raise ConflictError(f"resource {resource_id!r} exists with pool {record['pool']!r} "
                                        f"and cluster {record['cluster_id']!r}")
                if warm and record["state"] == ResourceState.COLD:
                    return self.set_state(self._resource(record), ResourceState.WARM)
                return self._resource(record)
            rid = resource_id or f"w-{uuid.uuid4().hex[:10]}"
            record = {"id": rid, "cluster_id": cluster_id, "pool": spec.name, "region": region or spec.regions[0],
                      "state": ResourceState.COLD.value, "pid": None, "port": None}
            # Recorded before the process exists: a crash right after the spawn leaves no unknown worker.
            self._inventory["resources"][rid] = record
            self._save()
            self._spawn(rid)
            if not warm:
                return self._resource(record)
            try:
                return self.set_state(self._resource(record), ResourceState.WARM)
            except DriverError:
                self.release(self._resource(record))
                raise

    def sync(self, source: Resource, target: Resource) -> int:
        if source.id == target.id:
            raise ValueError("sync needs two different resources")
        with self._locked():
            src, dst = self._servable(source.id), self._servable(target.id)
            cursor = self._cursors.get((source.id, target.id), 0)
            prefetched = self._prefetched.pop((source.id, target.id), None)
            copied = 0
            # Snapshot, then catch up on what changed during a large copy. Small deltas are left to
            # the redirect's handoff, which copies the rest under the source's lock anyway.
            for attempt in range(3):
                if (attempt == 0 and prefetched is not None and prefetched[0] == cursor
                        and time.monotonic() - prefetched[1] < _PREFETCH_FRESH_S):
                    status, snap = 200, prefetched[2]  # taken by prepare_sync; whatever came after is caught up below
                else:
                    status, snap = self._call(src, "GET", f"/admin/snapshot?since={cursor}")
                if status != 200:
                    raise ResourceUnreachableError(f"snapshot from {source.id!r} failed: {status} {snap}")
                if snap.get("forwarding"):
                    raise ResourceNotReadyError(f"resource {source.id!r} handed its sessions to {snap['forwarding']}; "
                                                f"it is not a sync source")
                if snap["sessions"]:
                    status, reply = self._call(dst, "POST", "/admin/load", {"sessions": snap["sessions"]})
                    if status != 200:
                        raise ResourceUnreachableError(f"load into {target.id!r} failed: {status} {reply}")
                copied += len(snap["sessions"])
                cursor = snap["seq"]
                if len(snap["sessions"]) <= self.catch_up_below:
                    break
            if copied == 0 and not self._process_alive(dst):  # nothing to load: the target was never asked
                raise ResourceUnreachableError(f"resource {target.id!r} does not answer: its process is gone")
            self._cursors[(source.id, target.id)] = cursor
            return copied

    def redirect(self, route: str, source: Resource | None, target: Resource) -> None:
        with self._locked():
            slots = self._route_slots(route)
            dst = self._servable(target.id)
            src = self._record(source.id) if source is not None else None
            members = set(slots.values())
            if target.id in members and (src is None or src["id"] not in members):
                return  # done already (a retry after a crash lands here)
            if src is not None and src["id"] not in members:
                raise RouteStateError(f"resource {src['id']!r} does not serve route {route!r}")
            free = [s for s in self._slot_names() if s not in slots]
            if not free:
                raise DriverError(f"route {route!r} has no free server slot (all {len(slots)} bound)")
            if not self._process_alive(dst):
                raise ResourceUnreachableError(f"target {target.id!r} has no running process")
            bound = {slot: rid for slot, rid in slots.items() if src is None or rid != src["id"]}
            bound[free[0]] = dst["id"]
            pending = self._begin_handoff(src, dst) if src is not None else None
            # While the handoff's answer is on its way (a process wake-up or two), write the
            # inventory as it will be; it replaces the current one only once HAProxy moved traffic.
            staged = self._stage({**self._inventory, "slots": {**self._inventory["slots"], route: bound}})
            handed_off = src is not None and self._finish_handoff(src, dst, pending)
            if not handed_off:  # a handoff proved the target takes state; without one, check it
                status, health = self._health(dst)
                if status != 200:
                    raise ResourceUnreachableError(f"target {target.id!r} is not healthy: {health}")
            commands = self.haproxy.bind(route, free[0], dst["port"])
            if src is not None:
                commands += self.haproxy.unbind(route, next(s for s, rid in slots.items() if rid == src["id"]))
            try:
                self.haproxy.apply(commands)
            except (OSError, HAProxyError):
                # HAProxy runs a batch's commands in order and stops at none: put back what it did.
                restore = self.haproxy.unbind(route, free[0])
                for slot, rid in slots.items():
                    restore += self.haproxy.bind(route, slot, self._inventory["resources"][rid]["port"])
                try:
                    self.haproxy.apply(restore)
                finally:
                    if handed_off:  # traffic still reaches the source: give it its state back
                        self._call(dst, "POST", "/admin/handoff", {"to": self._url(src), "since": 0})
                raise
            slots.clear()
            slots.update(bound)
            self._publish(staged)

    def detach(self, route: str, resource: Resource) -> None:
        with self._locked():
            slots = self._route_slots(route)
            self._record(resource.id)
            for slot, rid in list(slots.items()):
                if rid == resource.id:
                    self.haproxy.apply(self.haproxy.unbind(route, slot))
                    del slots[slot]
            self._save()

    def set_state(self, resource: Resource, state: ResourceState) -> Resource:
        with self._locked():
            record = self._record(resource.id)
            current = ResourceState(record["state"])
            check_transition(resource.id, current, state)
            if state == current:
                return self._resource(record)
            if state is ResourceState.RELEASED:
                self.release(resource)
                return self._resource(record)
            if current is ResourceState.COLD and state is ResourceState.WARM:
                self._wait_ready(record)
            elif state in SERVABLE and not self._process_alive(record):
                raise ResourceUnreachableError(f"resource {resource.id!r} cannot be {state}: its process is gone")
            if state is ResourceState.FAILED:
                self._drop_from_routes(resource.id)
            record["state"] = state.value
            self._save()
            return self._resource(record)

    def probe(self, resource: Resource) -> Health:
        with self._locked():
            record = dict(self._record(resource.id))
        down = self._not_running(record)
        if down is not None:
            return down
        if self._lock.acquire(blocking=False):  # reuse the kept-alive admin connection when free
            try:
                return self._check_health(record)
            finally:
                self._lock.release()
        return self._check_health(record, own_connection=True)  # a long call (sync, redirect) holds the driver

    def prepare_sync(self, source: Resource, target: Resource) -> Health:
        """Probe the target with the source's snapshot request in flight at the same time: each
        answer costs a process wake-up, and the two overlap. The snapshot (read-only) is kept for
        the `sync` of this pair that follows; if it cannot be had, that sync takes its own."""
        if source.id == target.id:
            raise ValueError("prepare_sync needs two different resources")
        with self._locked():
            src, dst = self._record(source.id), self._record(target.id)
            down = self._not_running(dst)
            if down is not None:
                return down
            cursor = self._cursors.get((src["id"], dst["id"]), 0)
            pending = None
            if src["state"] in SERVABLE and src.get("port") and self._process_alive(src):
                with suppress(*_TRANSPORT_ERRORS):  # best-effort: the sync asks again without it
                    pending = self._send(src, "GET", f"/admin/snapshot?since={cursor}", timeout=_PREFETCH_TIMEOUT_S)
            health = self._check_health(dst)
            if pending is not None:
                with suppress(*_TRANSPORT_ERRORS):
                    status, snap = self._receive(src, pending)
                    if status == 200 and not snap.get("forwarding"):
                        self._prefetched[(src["id"], dst["id"])] = (cursor, time.monotonic(), snap)
            return health

    def _not_running(self, record: dict) -> Health | None:
        """The probe's answer when there is no process to ask; None when there is one."""
        if record["state"] == ResourceState.RELEASED:
            return Health(record["id"], ok=False, latency_ms=0.0, detail="released")
        if not record.get("port"):
            return Health(record["id"], ok=False, latency_ms=0.0, detail="not started yet")
        if not self._process_alive(record):
            return Health(record["id"], ok=False, latency_ms=0.0, detail="process exited")
        return None

    def _check_health(self, record: dict, *, own_connection: bool = False) -> Health:
        started = time.perf_counter()
        try:
            if own_connection:
                status, body = http_json("GET", self._url(record), "/healthz", timeout=1.0)
            else:
                status, body = self._call(record, "GET", "/healthz", timeout=1.0)
        except (OSError, DriverError) as exc:
            return Health(record["id"], ok=False, latency_ms=(time.perf_counter() - started) * 1e3, detail=str(exc))
        latency = (time.perf_counter() - started) * 1e3
        ok = status == 200 and body.get("ok") is True and body.get("id") == record["id"]
        return Health(record["id"], ok=ok, latency_ms=latency, detail="" if ok else f"healthz {status}: {body}")

    def release(self, resource: Resource) -> None:
        with self._locked():
            record = self._record(resource.id)
            if record["state"] == ResourceState.RELEASED:
                return
            self._drop_from_routes(resource.id)
            stale = self._conns.pop(resource.id, None)
            if stale is not None:
                stale.close()
            if record.get("pid"):
                _terminate(record["pid"], resource.id, self._procs.pop(resource.id, None))
            (self.runtime_dir / "workers" / f"{resource.id}.json").unlink(missing_ok=True)
            record["state"] = ResourceState.RELEASED.value
            self._save()

    def get(self, resource_id: str) -> Resource:
        with self._reading():
            return self._resource(self._record(resource_id))

    def list(self, cluster_id: str | None = None) -> list[Resource]:
        with self._reading():
            return [self._resource(r) for r in self._inventory["resources"].values()
                    if r["state"] != ResourceState.RELEASED and (cluster_id is None or r["cluster_id"] == cluster_id)]

    def route_members(self, route: str) -> tuple[str, ...]:
        with self._reading():
            return tuple(self._route_slots(route).values())

    def routes(self) -> tuple[str, ...]:
        with self._reading():
            return tuple(self._inventory["ports"])

    # --- local extras ------------------------------------------------------------------------------

    def route_url(self, route: str) -> str:
        with self._locked():
            self._route_slots(route)
            return f"http://127.0.0.1:{self._inventory['ports'][route]}"

    def pid(self, resource_id: str) -> int | None:
        with self._locked():
            return self._record(resource_id).get("pid")

    def haproxy_members(self, route: str) -> dict[str, int]:
        """What HAProxy itself routes to (slot -> port), for checks against `route_members`."""
        return {s.name: s.port for s in self.haproxy.servers(route).values() if s.operational and not s.maintenance}

    def close(self) -> None:
        """Let go; workers and HAProxy keep running for this or another driver to adopt."""
        with self._lock:
            for proc in self._procs.values():
                proc.poll()
            for conn in self._conns.values():
                conn.close()
            self._conns.clear()
            self._dir_lock.close()

    def shutdown(self) -> None:
        """Stop every worker and HAProxy, then let go of the directory."""
        with self._locked():
            if not self.haproxy.answers():  # nothing to unbind from: forget the bindings
                for slots in self._inventory["slots"].values():
                    slots.clear()
            for rid in list(self._inventory["resources"]):
                self.release(self.get(rid))
            self.haproxy.stop()
        self.close()

    # --- helpers -----------------------------------------------------------------------------------

    def _spawn(self, rid: str) -> None:
        announce = self.runtime_dir / "workers" / f"{rid}.json"
        announce.unlink(missing_ok=True)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [_PROJECT_ROOT, os.environ.get("PYTHONPATH")])))
        with open(self.runtime_dir / "logs" / f"{rid}.log", "ab") as log:
            proc = subprocess.Popen(
                [self._python, "-m", "allocator.worker", "--id", rid, "--announce", str(announce)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                start_new_session=True,  # outlives the controller; a Ctrl-C to it does not reach workers
            )
        self._procs[rid] = proc
        # Recorded at once, not when it announces: a unit released while still starting is stopped too.
        record = self._inventory["resources"][rid]
        record.update(pid=proc.pid, port=None)
        self._save()

    def _wait_ready(self, record: dict) -> None:
        """Until the worker has announced its port and answers its health check."""
        announce = self.runtime_dir / "workers" / f"{record['id']}.json"
        deadline = time.monotonic() + self._ready_timeout
        respawn_after = time.monotonic() + 2.0  # a worker a crashed controller spawned may announce late
        while time.monotonic() < deadline:
            if not record.get("port") and announce.exists():
                info = json.loads(announce.read_text())
                record.update(pid=info["pid"], port=info["port"])
                self._save()
            if record.get("port"):
                try:
                    status, _ = http_json("GET", self._url(record), "/healthz", timeout=1.0)
                    if status == 200:
                        return
                except OSError:
                    pass
            proc = self._procs.get(record["id"])
            if proc is not None and proc.poll() is not None:
                raise ResourceUnreachableError(f"worker {record['id']!r} exited with {proc.returncode} while "
                                               f"starting; see {self.runtime_dir / 'logs' / (record['id'] + '.log')}")
            if proc is None and not self._process_alive(record) and time.monotonic() > respawn_after:
                self._spawn(record["id"])  # adopted as cold and nothing runs (nor announced itself): start it
            time.sleep(0.002)
        raise ResourceUnreachableError(f"worker {record['id']!r} not ready after {self._ready_timeout}s")

    def _begin_handoff(self, src: dict, dst: dict) -> http.client.HTTPConnection | None:
        """Send the source its handoff (final catch-up, then forwarding) without waiting; None when
        it is gone or the request could not be sent (`_finish_handoff` then asks once more)."""
        if not self._process_alive(src):
            return None
        try:
            return self._send(src, "POST", "/admin/handoff", self._handoff_body(src, dst))
        except _TRANSPORT_ERRORS:
            return None

    def _finish_handoff(self, src: dict, dst: dict, pending: http.client.HTTPConnection | None) -> bool:
        """The handoff's answer; False when the source is gone (its traffic must move anyway)."""
        answer = None
        if pending is not None:
            with suppress(*_TRANSPORT_ERRORS):
                answer = self._receive(src, pending)
        if answer is None:  # not sent, or the answer was lost: every handoff may be repeated
            if not self._process_alive(src):
                return False
            try:
                answer = self._call(src, "POST", "/admin/handoff", self._handoff_body(src, dst))
            except ResourceUnreachableError:
                return False
        status, reply = answer
        if status != 200:
            raise DriverError(f"handoff {src['id']!r} -> {dst['id']!r} refused: {status} {reply}")
        return True

    def _handoff_body(self, src: dict, dst: dict) -> dict:
        """Forward to `dst`, after copying what changed since the pair's last sync."""
        return {"to": self._url(dst), "since": self._cursors.get((src["id"], dst["id"]), 0)}

    def _send(self, record: dict, method: str, path: str, body: dict | None = None, timeout: float = 5.0
              ) -> http.client.HTTPConnection:
        """Send an admin request on the resource's kept-alive connection (or a new one) without
        waiting for the answer: `_receive` reads it. Raises OSError/HTTPException, the connection closed."""
        conn = self._conns.pop(record["id"], None) or http.client.HTTPConnection("127.0.0.1", record["port"])
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        try:
            conn.request(method, path, body=None if body is None else json.dumps(body).encode(),
                         headers={"Content-Type": "application/json"})
        except BaseException:
            conn.close()
            raise
        return conn

    def _receive(self, record: dict, conn: http.client.HTTPConnection) -> tuple[int, dict]:
        """The answer to `_send`; the connection goes back to the keep-alive pool."""
        try:
            response = conn.getresponse()
            raw = response.read()
            answer = response.status, json.loads(raw) if raw else {}
        except BaseException:
            conn.close()
            raise
        self._conns.setdefault(record["id"], conn)
        return answer

    def _call(self, record: dict, method: str, path: str, body: dict | None = None, timeout: float = 5.0
              ) -> tuple[int, dict]:
        """An admin call over a kept-alive connection (every admin call is idempotent, so one retry on
        a fresh connection is safe when the kept one went stale)."""
        for attempt in (0, 1):
            try:
                return self._receive(record, self._send(record, method, path, body, timeout))
            except _TRANSPORT_ERRORS as exc:
                if attempt == 1 or not self._process_alive(record):
                    raise ResourceUnreachableError(f"resource {record['id']!r} does not answer: {exc}") from exc
        raise AssertionError("unreachable")

    def _health(self, record: dict) -> tuple[int, dict]:
        try:
            return http_json("GET", self._url(record), "/healthz", timeout=1.0)
        except OSError as exc:
            return 0, {"error": str(exc)}

    def _process_alive(self, record: dict) -> bool:
        proc = self._procs.get(record["id"])
        if proc is not None:
            return proc.poll() is None
        return bool(record.get("pid")) and _is_worker(record["pid"], record["id"])

    def _drop_from_routes(self, rid: str) -> None:
        for route, slots in self._inventory["slots"].items():
            for slot, member in list(slots.items()):
                if member == rid:
                    try:
                        self.haproxy.apply(self.haproxy.unbind(route, slot))
                    finally:
                        del slots[slot]
        self._save()

    def _record(self, resource_id: str) -> dict:
        try:
            return self._inventory["resources"][resource_id]
        except KeyError:
            raise UnknownResourceError(resource_id) from None

    def _servable(self, resource_id: str) -> dict:
        record = self._record(resource_id)
        if record["state"] not in SERVABLE:
            raise ResourceNotReadyError(f"resource {resource_id!r} is {record['state']}; it cannot hold or serve "
                                        f"state until it is warm")
        return record

    def _route_slots(self, route: str) -> dict[str, str]:
        try:
            return self._inventory["slots"][route]
        except KeyError:
            raise UnknownRouteError(route, tuple(self._inventory["slots"])) from None

    def _slot_names(self) -> list[str]:
        return [f"s{i}" for i in range(self._inventory["slots_per_route"])]

    @staticmethod
    def _url(record: dict) -> str:
        return f"http://127.0.0.1:{record['port']}"

    def _resource(self, record: dict) -> Resource:
        return Resource(id=record["id"], cluster_id=record["cluster_id"], pool=record["pool"], region=record["region"],
                        state=ResourceState(record["state"]),
                        endpoint=self._url(record) if record.get("port") else "")


def _is_worker(pid: int, rid: str) -> bool:
    """Alive, not a zombie, and still our worker (pids are reused)."""
    if not _alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"allocator.worker" in cmdline and rid.encode() in cmdline


def _terminate(pid: int, rid: str, proc: subprocess.Popen | None = None) -> None:
    """SIGTERM, a short grace period, then SIGKILL; reaps it when it is our child."""
    if proc is None and not _is_worker(pid, rid):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return
        if proc is None and not _alive(pid):
            return
        time.sleep(0.01)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    if proc is not None:
        proc.wait(timeout=5)


def kill_runtime(runtime_dir: Path | str) -> list[int]:
    """SIGKILL every worker and the HAProxy a runtime dir records, without a driver (test clean-up,
    or after a controller died for good). Returns the pids it killed."""
    runtime_dir = Path(runtime_dir)
    workers: dict[int, str] = {}  # pid -> resource id, from the announce files and the inventory
    for announce in (runtime_dir / "workers").glob("*.json"):
        try:
            info = json.loads(announce.read_text())
            workers[info["pid"]] = info["id"]
        except (OSError, ValueError, KeyError):
            continue
    try:
        for rid, record in json.loads((runtime_dir / "inventory.json").read_text())["resources"].items():
            if record.get("pid"):
                workers[record["pid"]] = rid
    except (OSError, ValueError, KeyError):
        pass
    killed = []
    for pid, rid in workers.items():
        if _is_worker(pid, rid):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    try:
        pid = int((runtime_dir / "haproxy.pid").read_text().split()[0])
        if _alive(pid) and b"haproxy" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    except (OSError, ValueError, IndexError):
        pass
    return killed

