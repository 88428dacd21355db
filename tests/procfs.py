"""What Linux's /proc says of a process's connections (tests and benchmarks/load.py)."""

from __future__ import annotations

import os
from pathlib import Path

ESTABLISHED = "01"  # a TCP state in /proc/net/tcp


def client_sockets(pid: int) -> int:
    """How many connected TCP sockets a process holds (listening sockets left out)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    established = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes and fields[3] == ESTABLISHED:
                established += 1
    return established
