"""HAProxy as the local driver's traffic switch: a generated config with pre-declared server slots,
and the runtime API (admin socket) to bind workers to slots and move traffic without a reload.

One frontend per route on its own loopback port; its backend has `slots` servers, all declared
`disabled` (maintenance) at 127.0.0.1:1. Binding a worker = `set server addr/port` + `state ready`.
The admin socket is a unix socket in the runtime dir, mode 600, so only its owner can steer traffic.
A unix socket path holds at most 107 bytes; for a deeper runtime dir the socket goes to the abstract
namespace instead (no path limit, but any local user may connect: keep runtime dirs short in use).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from allocator.drivers.base import DriverError

# srv_admin_state bits that keep a server out of rotation: forced, inherited, resolution maintenance.
# (0x04, "configured disabled", stays set after `state ready` and means nothing then.)
_MAINT_BITS = 0x01 | 0x02 | 0x20
ROUTE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,48}$")


class HAProxyError(DriverError):
    pass


@dataclass(frozen=True)
class ServerSlot:
    backend: str
    name: str
    addr: str
    port: int
    operational: bool  # srv_op_state == 2 (running)
    maintenance: bool  # any admin maintenance bit set


def find_haproxy() -> str | None:
    return shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if os.access("/usr/sbin/haproxy", os.X_OK) else None)


def free_port() -> int:
    """A port the kernel just handed out; the tiny race with other processes is caught at bind time."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def backend_of(route: str) -> str:
    return f"bk_{route}"


def admin_socket_for(workdir: Path, unique: str) -> str:
    """`unix:<path>` when the path fits a sockaddr_un, else `abns:<name>`."""
    path = str(workdir.resolve() / "haproxy.sock")
    return f"unix:{path}" if len(path.encode()) <= 100 else f"abns:shadowcast-{unique}"


def render_config(socket: str, ports: dict[str, int], slots: int) -> str:
    kind, _, where = socket.partition(":")
    bind = f"{where} mode 600" if kind == "unix" else f"abns@{where}"
    # retries + redispatch: a request whose connection a dying server refuses goes to another one.
    # http-reuse safe: the first request of a client connection never rides a reused server
    # connection, so a server closing an idle connection cannot fail it.
    lines = [
        "global",
        f"    stats socket {bind} level admin",
        "    maxconn 4096",
        "    hard-stop-after 5s",
        "defaults",
        "    mode http",
        "    timeout connect 1s",
        "    timeout client 30s",
        "    timeout server 30s",
        "    timeout queue 5s",
        "    timeout http-keep-alive 30s",
        "    retries 3",
        "    option redispatch 1",
        "    http-reuse safe",
    ]
    for route, port in ports.items():
        lines += [
            f"frontend fe_{route}",
            f"    bind 127.0.0.1:{port}",
            "    http-request deny deny_status 403 if { path_beg /admin }",
            f"    default_backend {backend_of(route)}",
            f"backend {backend_of(route)}",
            "    balance roundrobin",
        ]
        lines += [f"    server s{i} 127.0.0.1:1 disabled" for i in range(slots)]
    return "\n".join(lines) + "\n"


class HAProxy:
    """A running HAProxy (started here or adopted from a previous controller) and its admin socket."""

    def __init__(self, binary: str, workdir: Path, socket: str, ports: dict[str, int], slots: int) -> None:
        self.binary, self.workdir, self.socket = binary, workdir, socket
        self.ports, self.slots = dict(ports), slots
        self.config_path = workdir / "haproxy.cfg"
        self.pid_path = workdir / "haproxy.pid"

    # --- process -----------------------------------------------------------------------------------

    def start(self) -> None:
        self.config_path.write_text(render_config(self.socket, self.ports, self.slots))
        # -D: daemonise, so HAProxy outlives a controller that crashes; -p: where to find it again.
        result = subprocess.run([self.binary, "-f", str(self.config_path), "-p", str(self.pid_path), "-D"],
                                capture_output=True, text=True, timeout=15)
        if result.returncode != 0:
            raise HAProxyError(f"haproxy failed to start (exit {result.returncode}): {result.stderr.strip()}")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self.answers():
                return
            time.sleep(0.01)
        raise HAProxyError("haproxy started but its admin socket does not answer")

    def pid(self) -> int | None:
        try:
            return int(self.pid_path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def answers(self) -> bool:
        try:
            self.command("show info")
            return True
        except (OSError, HAProxyError):
            return False

    def stop(self) -> None:
        pid = self.pid()
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.02)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)

    # --- runtime API -------------------------------------------------------------------------------

    def command(self, line: str) -> str:
        kind, _, where = self.socket.partition(":")
        if kind == "unix":
            address: str | bytes = where
        else:  # HAProxy binds an abstract name padded with NULs to the full sun_path: match it exactly
            name = b"\0" + where.encode()
            address = name + b"\0" * (108 - len(name))
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(address)
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def servers(self, route: str) -> dict[str, ServerSlot]:
        out = self.command(f"show servers state {backend_of(route)}")
        slots = {}
        for row in out.splitlines():
            fields = row.split()
            if len(fields) < 19 or fields[0].startswith("#") or not fields[0].isdigit():
                continue
            slots[fields[3]] = ServerSlot(backend=fields[1], name=fields[3], addr=fields[4], port=int(fields[18]),
                                          operational=fields[5] == "2",
                                          maintenance=bool(int(fields[6]) & _MAINT_BITS))
        if not slots:
            raise HAProxyError(f"haproxy knows no servers for route {route!r}: {out.strip()[:200]}")
        return slots

    def apply(self, commands: list[str]) -> None:
        """Run several commands in one round trip (HAProxy runs them in order); fail on any error."""
        out = self.command("; ".join(commands))
        for reply in out.split("\n\n"):
            text = reply.strip()
            if not text:
                continue
            lowered = text.lower()
            # Informational replies ("no need to change the addr", "... changed from ...") are fine.
            if any(word in lowered for word in ("unknown", "no such", "require", "error", "invalid", "not found")):
                raise HAProxyError(f"haproxy refused {commands!r}: {text}")

    def bind(self, route: str, slot: str, port: int) -> list[str]:
        backend = backend_of(route)
        return [f"set server {backend}/{slot} addr 127.0.0.1 port {port}", f"set server {backend}/{slot} state ready"]

    def unbind(self, route: str, slot: str) -> list[str]:
        return [f"set server {backend_of(route)}/{slot} state maint"]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
