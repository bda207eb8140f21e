#!/usr/bin/env python3
"""Black-box checks of the libev engine on each of libev's backends.

Runs the release binary (`swift build -c release` first) on loopback and
checks, per backend (epoll, poll, select):

  keepalive    two requests on one connection
  pipeline     16 requests in one send, 16 answers in order
  urgent       an out-of-band byte in the middle of a request head: the
               request is answered, the byte does not leak into the stream,
               the loop does not spin, and the connection keeps serving
  date         the Date header moves on after 2 s without traffic (1 s tick)
  echo         4 MiB through --app echo to a slow reader, bytes intact,
               server RSS growth bounded
  idle         1500 idle connections (descriptors above 1024, past select's
               FD_SETSIZE), then a request on the newest one and on a new one
  threads      --threads 2: 32 connections, all answered
  stop         SIGINT with 50 live connections: exits 0 within 2 s

usage: scripts/check-libev.py [--backend epoll|poll|select ...] [--binary PATH]
Exit 0 when every check passed.
"""
import argparse, os, re, resource, signal, socket, subprocess, sys, threading, time

import procstat  # scripts/procstat.py, beside this file: CPU, RSS, descriptors from /proc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELLO = b"Hello, World!"


class Server:
    def __init__(self, binary, args):
        self.p = subprocess.Popen([binary, "serve", "--host", "127.0.0.1", "--port", "0"] + args,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        # Start-up lines come first (the logger's); the "serving" line carries the real port.
        line, seen = "", []
        for _ in range(50):
            line = self.p.stderr.readline()
            seen.append(line)
            if not line or "peregrine: serving" in line:
                break
        m = re.search(r"serving .* on 127\.0\.0\.1:(\d+)", line)
        if not m:
            raise RuntimeError("server did not start: " + "".join(seen) + self.p.stderr.read())
        self.port = int(m.group(1))

    def cpu_s(self):
        return procstat.cpu_seconds(self.p.pid)

    def rss_kib(self):
        return procstat.rss_kib(self.p.pid)

    def fds(self):
        return procstat.fds(self.p.pid)

    def stop(self, timeout=2.0):
        self.p.send_signal(signal.SIGINT)
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            return None


def read_response(s, buf=b""):
    """One HTTP response (Content-Length framed). Returns (status, headers, body, rest)."""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            raise EOFError("closed before a response head")
        buf += d
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
    n = int(headers.get("content-length", "0"))
    while len(rest) < n:
        d = s.recv(65536)
        if not d:
            raise EOFError("closed inside a body")
        rest += d
    return status, headers, rest[:n], rest[n:]


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def get(s, path="/"):
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
    status, headers, body, rest = read_response(s)
    assert not rest, rest
    return status, headers, body


def check_keepalive(srv):
    s = connect(srv.port)
    for i in range(2):
        st, _, body = get(s, f"/{i}")
        assert st == 200 and body == HELLO, (st, body)
    s.close()


def check_pipeline(srv):
    s = connect(srv.port)
    s.sendall(b"".join(f"GET /{i} HTTP/1.1\r\nHost: h\r\n\r\n".encode() for i in range(16)))
    rest = b""
    for _ in range(16):
        st, _, body, rest = read_response(s, rest)
        assert st == 200 and body == HELLO, (st, body)
    assert rest == b""
    s.close()


def check_urgent(srv):
    s = connect(srv.port)
    assert get(s)[0] == 200
    s.sendall(b"GET /u HT")   # a leaked byte would make it "HT!TP/1.1": 400
    time.sleep(0.05)
    s.send(b"!", socket.MSG_OOB)
    time.sleep(0.05)
    cpu0 = srv.cpu_s()
    time.sleep(0.5)
    spent = srv.cpu_s() - cpu0
    assert spent < 0.1, f"{spent} s CPU in 0.5 s after an urgent byte: spinning"
    s.sendall(b"TP/1.1\r\nHost: h\r\n\r\n")
    st, _, body, rest = read_response(s)
    assert st == 200 and body == HELLO and not rest, (st, body, rest)
    # A lone urgent byte at the end, then more requests.
    s.send(b"!", socket.MSG_OOB)
    time.sleep(0.3)
    for i in range(3):
        st, _, body = get(s, f"/after{i}")
        assert st == 200 and body == HELLO, (st, body)
    s.close()


def check_date(srv):
    s = connect(srv.port)
    d1 = get(s)[1]["date"]
    time.sleep(2.1)
    d2 = get(s)[1]["date"]
    assert d1 != d2, (d1, d2)
    s.close()


def check_echo(srv):
    total = 4 << 20
    payload = bytes((i * 131 ^ (i >> 12)) & 0xFF for i in range(total))
    s = connect(srv.port)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    rss0 = srv.rss_kib()
    err = []

    def send():
        try:
            s.sendall(payload)
        except OSError as e:
            err.append(e)

    t = threading.Thread(target=send)
    t.start()
    got = bytearray()
    peak = rss0
    while len(got) < total:
        d = s.recv(16384)
        if not d:
            break
        got += d
        if len(got) % (256 * 1024) < 16384:
            peak = max(peak, srv.rss_kib())
            time.sleep(0.02)   # slow reader
    t.join()
    assert not err, err
    assert len(got) == total, (len(got), total)
    assert got == payload, "echo corrupted the stream"
    growth = peak - rss0
    assert growth < 8 * 1024, f"RSS grew {growth} KiB for a 4 MiB echo"
    s.close()
    return f"rss +{growth} KiB"


def check_idle(srv, n=1500):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    socks = [socket.create_connection(("127.0.0.1", srv.port), timeout=5) for _ in range(n)]
    # Accepting is asynchronous: wait until the server holds them all.
    deadline = time.time() + 5
    while time.time() < deadline and len(srv.fds()) < n:
        time.sleep(0.05)
    high = max(srv.fds())
    assert high > 1024, f"highest server descriptor {high}: not past FD_SETSIZE"
    cpu0 = srv.cpu_s()
    time.sleep(0.5)
    idle_cpu = srv.cpu_s() - cpu0
    for s in (socks[-1], socks[0], socks[n // 2]):
        s.settimeout(5)
        st, _, body = get(s)
        assert st == 200 and body == HELLO, (st, body)
    extra = connect(srv.port)
    assert get(extra)[0] == 200
    extra.close()
    for s in socks:
        s.close()
    return f"highest fd {high}, idle CPU {idle_cpu:.2f} s in 0.5 s"


def check_stop(binary, backend):
    srv = Server(binary, ["--engine", "libev", "--libev-backend", backend])
    socks = [connect(srv.port) for _ in range(50)]
    for s in socks[:25]:
        assert get(s)[0] == 200
    t0 = time.time()
    rc = srv.stop()
    assert rc == 0, f"exit {rc}"
    took = time.time() - t0
    for s in socks:
        s.close()
    return f"exit 0 in {took * 1000:.0f} ms"


def check_threads(binary, backend):
    srv = Server(binary, ["--engine", "libev", "--libev-backend", backend, "--threads", "2"])
    try:
        socks = [connect(srv.port) for _ in range(32)]
        for s in socks:
            st, _, body = get(s)
            assert st == 200 and body == HELLO
        for s in socks:
            s.close()
    finally:
        assert srv.stop() == 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", action="append", choices=["epoll", "poll", "select"])
    ap.add_argument("--binary", default=os.path.join(ROOT, ".build", "release", "peregrine"))
    a = ap.parse_args()
    failures = 0
    for backend in a.backend or ["epoll", "poll", "select"]:
        base = ["--engine", "libev", "--libev-backend", backend]
        checks = [
            ("keepalive", base, check_keepalive),
            ("pipeline", base, check_pipeline),
            ("urgent", base, check_urgent),
            ("date", base, check_date),
            ("echo", base + ["--app", "echo"], check_echo),
            ("idle", base, check_idle),
        ]
        for name, args, fn in checks:
            srv = Server(a.binary, args)
            try:
                note = fn(srv)
                rc = srv.stop()
                assert rc == 0, f"server exit {rc}"
                print(f"ok   {backend:6} {name}" + (f"  ({note})" if note else ""), flush=True)
            except Exception as e:   # report and go on
                failures += 1
                srv.stop()
                print(f"FAIL {backend:6} {name}: {type(e).__name__}: {e}", flush=True)
        for name, fn in (("threads", check_threads), ("stop", check_stop)):
            try:
                note = fn(a.binary, backend)
                print(f"ok   {backend:6} {name}" + (f"  ({note})" if note else ""), flush=True)
            except Exception as e:
                failures += 1
                print(f"FAIL {backend:6} {name}: {type(e).__name__}: {e}", flush=True)
    print("check-libev: " + ("all passed" if failures == 0 else f"{failures} failed"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
