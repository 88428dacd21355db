"""One harness for the tests, the benchmarks and the soak run: what starts the real server and
the programs beside it, and the inputs both sides send.

- process.py: a program in the background, its whole log kept and scanned for tracebacks;
- server.py: gunicorn serving the app (bin/serve, or another app under the same settings),
  ready once every worker is; its worker pids, memory and client sockets; free ports;
- procfs.py: what Linux's /proc says of a process (children, memory, sockets, polling);
- nginx.py: the shipped front door in front of a local server;
- slow_clients.py: slow and silent connections, and a probe that times a normal request;
- images.py, hostile.py: real image files, ordinary and hostile, built in memory.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_MODEL_DIR = ROOT / "models" / "fashion_mnist"
