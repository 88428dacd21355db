"""What Linux's /proc says of a process: its children, memory, CPU time and sockets."""

from __future__ import annotations

import os
from pathlib import Path

ESTABLISHED, LISTEN = "01", "0A"  # TCP states in /proc/net/tcp
TCP_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")


def children(pid: int) -> list[int]:
    """The process ids of a process's children (gunicorn's master: its workers), sorted."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return sorted(int(child) for child in path.read_text().split())
    except OSError:  # the process has exited
        return []


def rss_bytes(pid: int) -> int:
    """Resident memory of a process, from /proc/<pid>/status (VmRSS, in kB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"no VmRSS for {pid}")


def cpu_ticks(pid: int) -> int:
    """User and system clock ticks a process has used so far (0 once it has exited)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def socket_inodes(pid: int) -> set[str]:
    """The inodes of the sockets a process holds open."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def tcp_sockets(state: str, port: int | None = None) -> set[str]:
    """The inodes of the machine's TCP sockets in `state` (on local `port`, when given)."""
    found = set()
    for table in TCP_TABLES:
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rpartition(":")[2], 16)
            if fields[3] == state and (port is None or local_port == port):
                found.add(fields[9])
    return found


def client_sockets(pid: int) -> int:
    """How many connected TCP sockets a process holds (listening sockets left out)."""
    return len(socket_inodes(pid) & tcp_sockets(ESTABLISHED))


def polls_listener(pid: int, port: int) -> bool:
    """Whether a process waits for connections on `port` in an epoll set of its own.

    gunicorn's gthread worker (and the service's, built on it) adds its listening socket to its
    poller only once its app has loaded and post_worker_init has returned: before that, a
    connection waits in the socket's backlog. /proc/<pid>/fdinfo of an epoll descriptor lists
    each watched descriptor with its inode (hexadecimal).
    """
    listening = {int(inode) for inode in tcp_sockets(LISTEN, port)}
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd) != "anon_inode:[eventpoll]":
                continue
            info = Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text()
        except OSError:
            continue
        for line in info.splitlines():
            if line.startswith("tfd:") and " ino:" in line:
                inode = int(line.split(" ino:")[1].split()[0], 16)
                if inode in listening:
                    return True
    return False
