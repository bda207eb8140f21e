#!/usr/bin/env python3
"""Restarts under load (issue 13): per event engine, `peregrine serve` under
`wrk -t1 -c50`, restarted RESTARTS times the way a deploy does it: a new
`peregrine serve` with the same arguments on the same port (it takes the
running one's listening sockets through the handoff socket), then SIGTERM to
the old one (it drains). Prints wrk's socket errors and non-2xx/3xx answers
per engine; exits 1 unless every count is 0 and every old server exited 0.

Environment: PEREGRINE (the binary, default .build/release/peregrine),
RESTART_ENGINES (default "epoll,libev,swift"; a mode is ENGINE or
ENGINE/TRIGGER, e.g. epoll/edge), RESTARTS (default 10), RESTART_ARGS (more
serve flags, e.g. "--threads 2"), RESTART_PAUSE (seconds of load between
restarts, default 0.5).
"""
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

BINARY = os.environ.get("PEREGRINE", ".build/release/peregrine")
ENGINES = [e for e in os.environ.get("RESTART_ENGINES", "epoll,libev,swift").split(",") if e]
RESTARTS = int(os.environ.get("RESTARTS", "10"))
EXTRA = os.environ.get("RESTART_ARGS", "").split()
PAUSE = float(os.environ.get("RESTART_PAUSE", "0.5"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Serve:
    """One `peregrine serve`; waits (bounded) for its "serving" line."""

    def __init__(self, args):
        self.proc = subprocess.Popen([BINARY] + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines = []
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            if line.startswith("peregrine: serving"):
                self.ready.set()
        self.ready.set()   # exited: wait_ready says which

    def wait_ready(self, timeout=60):
        if not self.ready.wait(timeout) or self.proc.poll() is not None:
            raise SystemExit(f"server did not start: {self.proc.args}\n" + "\n".join(self.lines))

    def terminate_and_wait(self, timeout=30):
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return "killed after %ds" % timeout


def measure(mode):
    engine, _, trigger = mode.partition("/")
    port = free_port()
    args = ["serve", "--host", "127.0.0.1", "--port", str(port), "--engine", engine] + \
        (["--trigger", trigger] if trigger else []) + EXTRA
    server = Serve(args)
    server.wait_ready()
    # wrk prints its summary when interrupted (SIGINT): the run is as long as the restarts.
    wrk = subprocess.Popen(["wrk", "-t1", "-c50", "-d600s", f"http://127.0.0.1:{port}/"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(PAUSE)
    bad_exits = []
    start = time.monotonic()
    for i in range(RESTARTS):
        new = Serve(args)
        new.wait_ready()          # it serves the same sockets now
        rc = server.terminate_and_wait()
        if rc != 0:
            bad_exits.append(f"restart {i + 1}: old server exit {rc}: " + " | ".join(server.lines))
        server = new
        time.sleep(PAUSE)
    elapsed = time.monotonic() - start
    wrk.send_signal(signal.SIGINT)
    out, _ = wrk.communicate(timeout=30)
    rc = server.terminate_and_wait()
    if rc != 0:
        bad_exits.append(f"last server exit {rc}")
    requests = re.search(r"(\d+) requests in", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if not requests:
        raise SystemExit(f"{mode}: no wrk summary:\n{out}")
    conn, read, write, timeout = (int(x) for x in errors.groups()) if errors else (0, 0, 0, 0)
    non = int(non2xx.group(1)) if non2xx else 0
    print(f"{mode:12} {RESTARTS} restarts in {elapsed:.1f} s under wrk -t1 -c50: {int(requests.group(1))} requests, "
          f"socket errors connect {conn} read {read} write {write} timeout {timeout}, non-2xx/3xx {non}", flush=True)
    for line in bad_exits:
        print("  " + line)
    return conn + read + write + timeout + non == 0 and not bad_exits


def main():
    if not os.access(BINARY, os.X_OK):
        raise SystemExit(f"{BINARY}: not built (make build, or PEREGRINE=path)")
    print(f"restart-test: {BINARY}, net.ipv4.tcp_migrate_req="
          + open("/proc/sys/net/ipv4/tcp_migrate_req").read().strip(), flush=True)
    ok = all([measure(mode) for mode in ENGINES])
    print("restart-test: " + ("0 socket errors, 0 non-2xx/3xx on every engine" if ok else "FAILED"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
