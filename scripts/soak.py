#!/usr/bin/env python3
"""Soak test of the Peregrine server: many requests, many connections, no leak.

Python standard library only. Per engine it starts the release binary
(`swift build -c release` first) on loopback and runs two checks:

  load    SOAK_REQUESTS (default 1,000,000) HTTP requests against `--app hello`,
          in rounds; each round sends on every connection, then reads every
          answer, so the server has all kinds in hand at once:
            keep-alive   16 connections, one request each per round, 1,000 per connection
            pipelined    2 connections, 16 requests in one send, 250 batches per connection
            close        2 new connections, one request each: HTTP/1.0 or `Connection: close`
            malformed    1 new connection with one of a rotating set (bare CR, obs-fold,
                         CL+TE, bad chunk size, oversized line 414, too many headers 431,
                         unknown TE 501, HTTP/2.0 505, 413, 417, space before colon,
                         duplicate Content-Length, missing Host, bare LF), every third one
                         after 1-15 pipelined good requests and followed by a request that
                         must not be answered: the good ones answered in order, then
                         exactly the error status, then EOF
          (about 30% keep-alive, 60% pipelined, 4% close, 2% malformed). Requests
          vary (GET, HEAD, POST with a Content-Length or a chunked body, a body
          that looks like a request, 40 header fields, HTTP/1.0 keep-alive), so an
          answer out of order or a mis-framed body shows. Every answer is checked:
          status, body (`Hello, World!`, none for HEAD), `Connection: close` where
          the connection must end, and the count per connection (a retired
          keep-alive connection half-closes and must then read EOF, no stray byte).
  cycles  SOAK_CYCLES (default 10,000) connections opened and closed in 12 ways
          against `--app hello` (clean close after a request, close or reset
          mid-head, close mid-body, reset with 2,000 answers outstanding,
          half-close with the answer read to EOF, half-close then close, close
          during a pipelined batch, close with an answer unread, a malformed
          request, connect-and-close, reset mid-pipeline after a malformed request)
          and as many in 8 ways against `--app echo` (clean echo, close with the
          echo unread, SO_LINGER 0 reset in the middle of a 256 KiB-1 MiB echo,
          half-close with the echo read to EOF, connect-and-close, reset right
          after sending, close after reading part, half-close then close). Every
          other run of the ways closes a few cycles later, so the server holds the
          partial request, the queued answers or the paused output when the close
          arrives. The server runs with --header-timeout 1 --idle-timeout 1, and 20
          hello connections per run (partial head, idle after an answer, malformed
          then more input, stalled body, nothing sent) and 4 echo ones (a reader
          that stops, the server's queue full) are left open by the client: the
          server's timers must close them (408 first where due), checked after
          the descriptor count. Answers that are read are checked too.
  transfers SOAK_TRANSFER_CYCLES (default: the cycles' count) connections
          against `--app upload` in 12 ways (close, or reset every other round:
          inside the head; after a Content-Length head and after a chunked head,
          no body byte; mid-body, Content-Length (200 KiB of 1 MiB) and chunked
          (inside a chunk, inside a size line); the whole 256 KiB body sent, the
          answer unread, both framings; after the answer `received N bytes`, both
          framings; `Expect: 100-continue` left after the 100 (or after part of
          the body), and the whole 100-continue exchange) and as many against
          `--app static --root` a temp directory in 8 ways (mid-head; the 32 MiB
          file asked for, nothing read; mid-body with 64 KiB or 1 MiB of it read,
          the rest in the kernel's sendfile; after a 206 Range answer, its bytes
          and Content-Range checked; after a HEAD (Content-Length checked); after
          a whole small file with a Range request left unread; a suffix range
          half-closed). Same rule as the cycles: descriptors exactly and RSS
          within 5% back, alive and answering; no connections are held.

Each check warms up first (a tenth of its count; echo, upload and static
cycles repeat it, up to 5 times, until RSS holds within 1%), closes every
client, waits until the server's descriptor count settles (lingering closes
last up to 2 s), and records its VmRSS and descriptor count (/proc/PID/status, /proc/PID/fd).
After the run and after the clients closed it reads them again: descriptors
must be back to the post-warm-up count exactly (waiting up to SOAK_SETTLE
seconds, default 4; 8 in the cycles, for 408 then lingering), RSS may not
exceed the post-warm-up value by more than 5%, and the process must be alive
and still answer. Any wrong or missing answer fails the engine.

Engines: SOAK_ENGINES / --engines, comma separated, each `engine[/mode]`:
epoll/level epoll/edge epoll/oneshot libev/epoll libev/poll libev/select
swift/level swift/edge threaded blocking, or `all` (the eight event-engine
modes). Default: epoll/level,epoll/edge,libev/epoll,swift/level. `blocking`
answers one request per connection, one client at a time: its load is the
close and malformed kinds only, its cycles close at once and hold nothing
open. SOAK_ARGS adds server flags (e.g. "--threads 2"); SOAK_ONLY=load|cycles|transfers
(cycles: hello, echo, upload and static; transfers: upload and static only);
SOAK_TIMEOUT (default 600) bounds each phase in seconds.

usage: scripts/soak.py [--engines LIST] [--requests N] [--cycles N] [--transfer-cycles N]
                       [--only load|cycles|transfers] [--binary PATH] [--server-args ARGS]
Exit 0 when every check passed on every engine; the report goes to stdout.
"""
import argparse, collections, os, re, shlex, signal, socket, struct, subprocess, sys, threading, time

import procstat  # scripts/procstat.py, beside this file: CPU, RSS, descriptors from /proc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_ENGINES = "epoll/level,epoll/edge,libev/epoll,swift/level"
# SOAK_ENGINES=all: every mode of the event engines.
ALL_ENGINES = "epoll/level,epoll/edge,epoll/oneshot,libev/epoll,libev/poll,libev/select,swift/level,swift/edge"
HELLO = b"Hello, World!"
IO_TIMEOUT = 5.0          # a response that takes longer is counted missing
MAX_FAILED_CONNS = 25     # stop the load early after this many failing connections
LINGER0 = struct.pack("ii", 1, 0)


def env_int(name, default):
    v = os.environ.get(name, "")
    return int(v.replace("_", "")) if v.strip() else default


# ----------------------------------------------------------------- server

def engine_args(spec):
    name, _, mode = spec.partition("/")
    if name in ("epoll", "swift"):
        return ["--engine", name] + (["--trigger", mode] if mode else [])
    if name == "libev":
        return ["--engine", name] + (["--libev-backend", mode] if mode else [])
    if name in ("threaded", "blocking"):
        if mode:
            raise SystemExit(f"soak: {spec}: the {name} engine has no mode")
        return ["--engine", name]
    raise SystemExit(f"soak: unknown engine {spec!r} (epoll/level, libev/poll, swift/edge, threaded, ...)")


class Server:
    def __init__(self, binary, app, args):
        cmd = [binary, "serve", "--app", app, "--host", "127.0.0.1", "--port", "0"] + args
        self.cmd = " ".join(cmd)
        self.p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        # Start-up lines come first (the logger's); the "serving" line carries the real port.
        line, seen = "", []
        for _ in range(50):
            line = self.p.stderr.readline()
            seen.append(line)
            if not line or "peregrine: serving" in line:
                break
        m = re.search(r"serving .* on 127\.0\.0\.1:(\d+)", line)
        if not m:
            self.p.kill()
            raise RuntimeError(f"server did not start: {self.cmd}\n{''.join(seen)}{self.p.stderr.read()}")
        self.port = int(m.group(1))
        self.pid = self.p.pid
        # Drain stderr so a chatty server never blocks on a full pipe.
        self.err = collections.deque(maxlen=50)
        threading.Thread(target=lambda: self.err.extend(self.p.stderr), daemon=True).start()

    def alive(self):
        return self.p.poll() is None

    def rss_kib(self):
        return procstat.rss_kib(self.pid)

    def fd_count(self):
        return len(procstat.fds(self.pid))

    def fd_list(self):
        return " ".join(procstat.fd_targets(self.pid))

    def cpu_s(self):
        return procstat.cpu_seconds(self.pid)

    def settle(self, target=None, limit=4.0):
        """Waits for lingering closes: until the descriptor count equals
        `target`, or (no target) has not changed for 0.5 s; at most `limit`
        seconds. Returns (fds, rss_kib)."""
        t0 = time.monotonic()
        last, since = self.fd_count(), time.monotonic()
        while time.monotonic() - t0 < limit:
            if target is not None and last == target:
                break
            if target is None and time.monotonic() - since >= 0.5:
                break
            time.sleep(0.05)
            n = self.fd_count()
            if n != last:
                last, since = n, time.monotonic()
        time.sleep(0.1)   # let the loop finish the batch the last close was in
        return self.fd_count(), self.rss_kib()

    def stop(self):
        """Stops the server; returns the last lines it wrote on stderr."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)
            try:
                self.p.wait(3)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        time.sleep(0.05)
        return "".join(self.err)


def connect(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # Blocking socket with kernel timeouts: a timed-out recv raises
    # BlockingIOError, and no poll() is spent before every call.
    tv = struct.pack("ll", int(IO_TIMEOUT), int((IO_TIMEOUT % 1) * 1e6))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
    s.connect(("127.0.0.1", port))
    return s


# --------------------------------------------------------- requests and answers

# An expectation is an int: 0 = 200 with the hello body, 1 = 200 to a HEAD
# (Content-Length 13, no body), any other value = that error status.
OK, HEAD = 0, 1


def _good_requests():
    """Keep-alive requests of several shapes, each with what it must get."""
    reqs = []
    for i in range(8):
        reqs.append((f"GET /soak/{i}?q={i * 7} HTTP/1.1\r\nHost: soak\r\n\r\n".encode(), OK))
    reqs.append((b"HEAD / HTTP/1.1\r\nHost: soak\r\nAccept: */*\r\n\r\n", HEAD))
    reqs.append((b"HEAD /h HTTP/1.1\r\nHost: soak:80\r\n\r\n", HEAD))
    for n in (1, 17, 300):
        body = bytes((65 + j % 26) for j in range(n))
        reqs.append((b"POST /p HTTP/1.1\r\nHost: soak\r\nContent-Type: text/plain\r\nContent-Length: "
                     + str(n).encode() + b"\r\n\r\n" + body, OK))
    # A body that looks like a request: mis-framing would answer it.
    fake = b"GET /smuggled HTTP/1.1\r\nHost: soak\r\n\r\n"
    reqs.append((b"POST /f HTTP/1.1\r\nHost: soak\r\nContent-Length: " + str(len(fake)).encode()
                 + b"\r\n\r\n" + fake, OK))
    reqs.append((b"POST /c HTTP/1.1\r\nHost: soak\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: t\r\n\r\n", OK))
    reqs.append((b"GET /many HTTP/1.1\r\nHost: soak\r\n"
                 + b"".join(b"X-Header-%d: value-%d\r\n" % (j, j) for j in range(40)) + b"\r\n", OK))
    reqs.append((b"GET /ka10 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", OK))
    reqs.append((b"OPTIONS * HTTP/1.1\r\nHost: soak\r\n\r\n", OK))
    return reqs


GOOD = _good_requests()

CLOSE_REQUESTS = [
    b"GET /close10 HTTP/1.0\r\n\r\n",
    b"GET /close11 HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n",
    b"POST /close HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello",
    b"GET /close11b HTTP/1.1\r\nHost: soak\r\nConnection: keep-alive, close\r\n\r\n",
]

MALFORMED = [
    ("bare CR", b"GET / HTTP/1.1\r\nHost: soak\rX-A: b\r\n\r\n", 400),
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: soak\r\nX-A: a\r\n  folded\r\n\r\n", 400),
    ("CL+TE", b"POST / HTTP/1.1\r\nHost: soak\r\nContent-Length: 5\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("bad chunk size", b"POST / HTTP/1.1\r\nHost: soak\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"zz\r\nhello\r\n0\r\n\r\n", 400),
    ("oversized line", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: soak\r\n\r\n", 414),
    ("too many headers", b"GET / HTTP/1.1\r\nHost: soak\r\n"
                         + b"".join(b"X-%d: v\r\n" % j for j in range(120)) + b"\r\n", 431),
    ("unknown TE", b"POST / HTTP/1.1\r\nHost: soak\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    ("HTTP/2.0", b"GET / HTTP/2.0\r\nHost: soak\r\n\r\n", 505),
    ("body too large", b"POST / HTTP/1.1\r\nHost: soak\r\nContent-Length: 2000000\r\n\r\n", 413),
    ("bad Expect", b"POST / HTTP/1.1\r\nHost: soak\r\nExpect: magic\r\nContent-Length: 1\r\n\r\nx", 417),
    ("space before colon", b"GET / HTTP/1.1\r\nHost : soak\r\n\r\n", 400),
    ("duplicate CL", b"POST / HTTP/1.1\r\nHost: soak\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", 400),
    ("missing Host", b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", 400),
    ("bare LF", b"GET / HTTP/1.1\nHost: soak\n\n", 400),
]
# Sent after a malformed request: must never be answered.
AFTER_BAD = b"GET /after-bad HTTP/1.1\r\nHost: soak\r\n\r\n"


class Wrong(Exception):
    pass


def parse_one(buf, pos, exp, must_close):
    """Checks the response at buf[pos:]. Returns the position after it, or
    -1 when it is not complete yet. Raises Wrong."""
    end = buf.find(b"\r\n\r\n", pos)
    if end < 0:
        if len(buf) - pos > 16384:
            raise Wrong("no end of head in 16 KiB")
        return -1
    head = bytes(buf[pos:end])
    if head[:9] != b"HTTP/1.1 ":
        raise Wrong(f"bad status line {head[:40]!r}")
    status = int(head[9:12])
    i = head.find(b"\r\nContent-Length: ")
    if i < 0:
        raise Wrong(f"no Content-Length in {head!r}")
    j = head.find(b"\r", i + 18)
    cl = int(head[i + 18:] if j < 0 else head[i + 18:j])
    want_status = 200 if exp <= HEAD else exp
    if status != want_status:
        raise Wrong(f"status {status}, expected {want_status}")
    if must_close and b"\r\nConnection: close" not in head:
        raise Wrong(f"no Connection: close on a closing answer: {head!r}")
    start = end + 4
    if exp == HEAD:
        if cl != len(HELLO):
            raise Wrong(f"HEAD Content-Length {cl}")
        return start
    if len(buf) - start < cl:
        return -1
    if exp == OK and buf[start:start + cl] != HELLO:
        raise Wrong(f"body {bytes(buf[start:start + cl])[:40]!r}")
    return start + cl


class Stats:
    def __init__(self):
        self.sent = 0          # requests sent that must be answered
        self.ok = 0
        self.wrong = 0
        self.missing = 0
        self.conns = 0
        self.failed_conns = 0
        self.examples = []
        self.kinds = collections.Counter()
        self.statuses = collections.Counter()
        self.stopped = False
        self.held = 0          # connections left for the server's timers

    def stop_note(self, why):
        if not self.stopped:
            self.stopped = True
            self.failed_conns += 1
            self.examples.append(why)

    def fail(self, what, wrong, missing):
        self.wrong += wrong
        self.missing += missing
        self.failed_conns += 1
        if len(self.examples) < 10:
            self.examples.append(what)


def read_answers(sock, buf, exps, eof, stats, label, says_close=None):
    """Reads and checks one answer per entry of `exps`, in order; with `eof`
    the last must be followed by EOF and nothing else, and (unless
    `says_close` is False: a half-closed keep-alive request) must say
    Connection: close. Returns True when all were right (buf keeps any bytes
    after them)."""
    if says_close is None:
        says_close = eof
    pos, k, n = 0, 0, len(exps)
    try:
        while k < n:
            r = parse_one(buf, pos, exps[k], says_close and k == n - 1)
            if r >= 0:
                pos = r
                k += 1
                continue
            d = sock.recv(65536)
            if not d:
                stats.fail(f"{label}: EOF after {k} of {n} answers", 0, n - k)
                return False
            buf += d
        del buf[:pos]
        if eof:
            while True:
                d = sock.recv(65536)
                if not d:
                    break
                buf += d
            if buf:
                stats.fail(f"{label}: {len(buf)} bytes after the last answer: {bytes(buf[:60])!r}", 1, 0)
                return False
    except Wrong as e:
        stats.fail(f"{label}: answer {k + 1} of {n}: {e}", 1, n - k - 1)
        return False
    except BlockingIOError:
        what = "EOF" if k == n else f"answer {k + 1} of {n}"
        stats.fail(f"{label}: timed out ({IO_TIMEOUT:.0f} s) waiting for {what}", 0, n - k)
        return False
    except OSError as e:
        stats.fail(f"{label}: {e!r} after {k} of {n} answers", 0, n - k)
        return False
    stats.ok += n
    return True


# ------------------------------------------------------------------- load

class KeepAlive:
    __slots__ = ("sock", "buf", "left", "depth", "label", "broken")

    def __init__(self, port, left, depth, label):
        self.sock = connect(port)
        self.buf = bytearray()
        self.left = left      # rounds before it is retired
        self.depth = depth    # requests per round (1: keep-alive, 16: pipelined)
        self.label = label
        self.broken = False   # went wrong (already counted): closed, not retired


def retire(c, stats):
    """Half-closes a keep-alive connection: the server must close it with
    nothing more to say (no answer beyond those expected)."""
    if c.broken:
        c.sock.close()
        return
    try:
        c.sock.shutdown(socket.SHUT_WR)
        extra = bytearray(c.buf)
        while True:
            d = c.sock.recv(65536)
            if not d:
                break
            extra += d
        if extra:
            stats.fail(f"{c.label}: {len(extra)} stray bytes at retirement: {bytes(extra[:60])!r}", 1, 0)
    except BlockingIOError:
        stats.fail(f"{c.label}: no EOF within {IO_TIMEOUT:.0f} s after a half-close", 0, 0)
    except OSError as e:
        stats.fail(f"{c.label}: {e!r} at retirement", 0, 0)
    c.sock.close()


def run_load(port, total, stats, deadline, close_only=False):
    """Sends `total` requests in rounds of the mix. Returns when done, when
    the deadline passed or too many connections failed. Each round sends on
    every connection first, then reads every connection's answers in order,
    so the server sees all kinds at once."""
    KA_CONNS, KA_ROUNDS = (0, 0) if close_only else (16, 1000)
    PIPE_CONNS, PIPE_ROUNDS, DEPTH = (0, 0, 16) if close_only else (2, 250, 16)
    ngood, nclose, nbad = len(GOOD), len(CLOSE_REQUESTS), len(MALFORMED)
    rot = 0
    serial = 0

    def new_conn(rounds, depth, kind):
        nonlocal serial
        serial += 1
        stats.conns += 1
        return KeepAlive(port, rounds, depth, f"{kind} connection #{serial}")

    def next_good(n):
        nonlocal rot
        picked = [GOOD[(rot + j) % ngood] for j in range(n)]
        rot += n
        return b"".join(g[0] for g in picked), [g[1] for g in picked]

    def send(sock, data, exps, kind, label):
        """Sends; on failure counts the answers as missing. Returns success."""
        stats.sent += len(exps)
        if kind:
            stats.kinds[kind] += len(exps)
        try:
            sock.sendall(data)
            return True
        except OSError as e:
            stats.fail(f"{label}: send failed: {e!r}", 0, len(exps))
            return False

    pool = [new_conn(KA_ROUNDS, 1, "keep-alive") for _ in range(KA_CONNS)]
    pool += [new_conn(PIPE_ROUNDS, DEPTH, "pipelined") for _ in range(PIPE_CONNS)]
    # Stagger retirements so connections do not all turn over in one round.
    for i, c in enumerate(pool):
        c.left -= (i * 37) % max(1, c.left // 2)
    rnd = 0
    try:
        while stats.sent < total:
            if stats.failed_conns >= MAX_FAILED_CONNS:
                stats.stop_note(f"stopped after {stats.failed_conns} failing connections")
                break
            if rnd % 64 == 0 and time.monotonic() > deadline:
                stats.stop_note("stopped at the time limit (SOAK_TIMEOUT)")
                break
            rnd += 1
            batch = []   # (socket, buffer, expected answers, then EOF, label, pool entry)
            # keep-alive (one request) and pipelined (16 in one send)
            for c in pool:
                data, exps = next_good(c.depth)
                if send(c.sock, data, exps, "keep-alive" if c.depth == 1 else "pipelined", c.label):
                    batch.append((c.sock, c.buf, exps, False, c.label, c))
                else:
                    c.broken = True
            # one connection per request, two per round
            closers = []
            for j in range(2):
                req = CLOSE_REQUESTS[(2 * rnd + j) % nclose]
                s = connect(port)
                stats.conns += 1
                closers.append(s)
                label = f"close connection ({req.split(b' H')[0].decode()} {req.split(b' ')[2][:8].decode()})"
                if send(s, req, [OK], "close", label):
                    batch.append((s, bytearray(), [OK], True, label, None))
            # one malformed request per round: alone, or after a pipelined batch
            name, bad, status = MALFORMED[rnd % nbad]
            s = connect(port)
            stats.conns += 1
            closers.append(s)
            if rnd % 3 == 2 and not close_only:
                k = 1 + rnd % 15
                data, exps = next_good(k)
                stats.kinds["before malformed"] += k
                data += bad + AFTER_BAD        # AFTER_BAD must never be answered
                label = f"{k} pipelined + malformed ({name})"
            else:
                data, exps, label = bad, [], f"malformed ({name})"
            stats.kinds["malformed"] += 1
            stats.statuses[status] += 1
            if send(s, data, exps + [status], None, label):
                batch.append((s, bytearray(), exps + [status], True, label, None))
            for sock, buf, exps, eof, label, c in batch:
                if not read_answers(sock, buf, exps, eof, stats, label) and c is not None:
                    c.broken = True           # replaced below
            for s in closers:
                s.close()
            for i, c in enumerate(pool):
                c.left -= 1
                if c.left <= 0 or c.broken:
                    retire(c, stats)
                    pool[i] = new_conn(KA_ROUNDS if c.depth == 1 else PIPE_ROUNDS, c.depth, c.label.split()[0])
    finally:
        for c in pool:
            retire(c, stats)


# ----------------------------------------------------------------- cycles

def recv_some(s, n):
    """Reads until n bytes or EOF; returns what came."""
    got = bytearray()
    while len(got) < n:
        d = s.recv(min(65536, n - len(got)))
        if not d:
            break
        got += d
    return bytes(got)


def recv_all(s):
    got = bytearray()
    while True:
        d = s.recv(65536)
        if not d:
            return bytes(got)
        got += d


PIPE16 = b"".join(GOOD[j % len(GOOD)][0] for j in range(16))
PIPE16_EXP = [GOOD[j % len(GOOD)][1] for j in range(16)]
BIG_PIPE = b"GET /big HTTP/1.1\r\nHost: soak\r\n\r\n" * 2000


def hello_cycle(port, i, stats, end, single=False):
    """One connection to --app hello, opened and ended in way i % 12; `end`
    closes it (now or a few cycles later)."""
    way = i % 12
    s = connect(port)
    label = f"hello cycle {i} (way {way})"
    if way == 0:      # clean close after a request
        s.sendall(GOOD[i % len(GOOD)][0])
        read_answers(s, bytearray(), [GOOD[i % len(GOOD)][1]], False, stats, label)
        end(s)
    elif way == 1:    # close mid-request (inside the head)
        s.sendall(b"GET /partial HTTP/1.1\r\nHost: so")
        end(s)
    elif way == 2:    # reset mid-request
        s.sendall(b"GET /partial HTTP/1.1\r\n")
        end(s, reset=True)
    elif way == 3:    # close mid-body
        s.sendall(b"POST /b HTTP/1.1\r\nHost: soak\r\nContent-Length: 100000\r\n\r\n" + b"x" * 5000)
        end(s)
    elif way == 4:    # reset with 2,000 answers outstanding (about 300 KB), none read
        s.sendall(BIG_PIPE)
        s.recv(1000)
        end(s, reset=True)
    elif way == 5:    # half-close after a request: the answer, then EOF
        s.sendall(GOOD[i % len(GOOD)][0])
        s.shutdown(socket.SHUT_WR)
        read_answers(s, bytearray(), [GOOD[i % len(GOOD)][1]], True, stats, label, says_close=False)
        end(s)
    elif way == 6:    # half-close then close at once, answer unread
        s.sendall(PIPE16)
        s.shutdown(socket.SHUT_WR)
        end(s)
    elif way == 7:    # close during a pipelined batch: 16 sent, 3 read, a partial 17th
        s.sendall(PIPE16 + b"GET /half HTTP/1.1\r\nHo")
        read_answers(s, bytearray(), PIPE16_EXP[:1 if single else 3], False, stats, label)
        end(s)
    elif way == 8:    # close with an answer unread in the receive queue (a reset)
        s.sendall(GOOD[0][0])
        time.sleep(0)
        end(s)
    elif way == 9:    # malformed: its status, then EOF
        name, bad, status = MALFORMED[(i // 12) % len(MALFORMED)]
        s.sendall(bad)
        read_answers(s, bytearray(), [status], True, stats, label + f" {name}")
        end(s)
    elif way == 10:   # connect, nothing sent, close
        end(s)
    else:             # malformed mid-pipeline, client resets instead of reading
        s.sendall(PIPE16 + MALFORMED[i % len(MALFORMED)][1] + b"x" * 3000)
        end(s, reset=True)


def echo_payload(n, seed):
    base = bytes(((j * 131 + seed) ^ (j >> 8)) & 0xFF for j in range(4096))
    return (base * (n // 4096 + 1))[:n]


ECHO_SMALL = echo_payload(100, 1)
ECHO_MID = echo_payload(10000, 2)
ECHO_BIG = echo_payload(1 << 20, 3)


def echo_cycle(port, i, stats, end, single=False):
    """One connection to --app echo, opened and ended in way i % 8."""
    way = i % 8
    s = connect(port)
    label = f"echo cycle {i} (way {way})"

    def expect_echo(data, got):
        if got != data:
            stats.fail(f"{label}: echoed {len(got)} bytes, not the {len(data)} sent", 1, 0)
        else:
            stats.ok += 1
        stats.sent += 1

    try:
        if way == 0:      # clean: echo, read it back, close
            s.sendall(ECHO_SMALL)
            expect_echo(ECHO_SMALL, recv_some(s, len(ECHO_SMALL)))
            end(s)
        elif way == 1:    # close mid-stream with the echo unread
            s.sendall(ECHO_MID)
            end(s)
        elif way == 2:    # SO_LINGER 0 reset in the middle of a large echo
            n = (256 << 10) * (1 + (i // 8) % 4)
            s.setblocking(False)
            view, sent = memoryview(ECHO_BIG)[:n], 0
            t0 = time.monotonic()
            while sent < n and time.monotonic() - t0 < IO_TIMEOUT:
                try:
                    sent += s.send(view[sent:sent + 65536])
                except BlockingIOError:
                    break
            s.setblocking(True)
            got = recv_some(s, min(sent, 32768))
            if got != ECHO_BIG[:len(got)]:
                stats.fail(f"{label}: echo prefix differs", 1, 0)
            end(s, reset=True)
        elif way == 3:    # half-close: everything echoed, then EOF
            s.sendall(ECHO_MID)
            s.shutdown(socket.SHUT_WR)
            expect_echo(ECHO_MID, recv_all(s))
            end(s)
        elif way == 4:    # connect, close
            end(s)
        elif way == 5:    # reset right after sending
            s.sendall(ECHO_SMALL)
            end(s, reset=True)
        elif way == 6:    # read part of the echo, then close
            s.sendall(ECHO_MID)
            got = recv_some(s, 1000)
            if got != ECHO_MID[:len(got)]:
                stats.fail(f"{label}: echo prefix differs", 1, 0)
            end(s)
        else:             # half-close then close at once
            s.sendall(ECHO_SMALL)
            s.shutdown(socket.SHUT_WR)
            end(s)
    except BlockingIOError:
        stats.fail(f"{label}: timed out ({IO_TIMEOUT:.0f} s)", 0, 1)
        s.close()
    except OSError as e:
        stats.fail(f"{label}: {e!r}", 0, 1)
        s.close()


# ------------------------------------------------- uploads and downloads

def read_response(s, buf, head_only=False):
    """Reads one answer framed by Content-Length from s (buf: bytes already
    read, kept past the answer). Returns (status, headers with lower-case
    names, body); body is b"" with head_only (HEAD, 100 Continue). Raises
    Wrong on EOF or a bad head."""
    while b"\r\n\r\n" not in buf:
        if len(buf) > 16384:
            raise Wrong("no end of head in 16 KiB")
        d = s.recv(65536)
        if not d:
            raise Wrong(f"EOF before the end of a head ({len(buf)} bytes)")
        buf += d
    end = buf.find(b"\r\n\r\n")
    lines = bytes(buf[:end]).split(b"\r\n")
    if lines[0][:9] != b"HTTP/1.1 ":
        raise Wrong(f"bad status line {lines[0][:40]!r}")
    status = int(lines[0][9:12])
    headers = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(b":")
        headers[k.strip().lower().decode()] = v.strip().decode()
    del buf[:end + 4]
    if head_only or status == 100:
        return status, headers, b""
    cl = int(headers.get("content-length", "-1"))
    if cl < 0:
        raise Wrong(f"no Content-Length in a {status} answer")
    while len(buf) < cl:
        d = s.recv(min(1 << 20, cl - len(buf)))
        if not d:
            raise Wrong(f"EOF after {len(buf)} of {cl} body bytes")
        buf += d
    body = bytes(buf[:cl])
    del buf[:cl]
    return status, headers, body


def expect_response(s, stats, label, status, body=None, head_only=False, headers=None):
    """One answer with `status` (and `body`, and `headers` where given);
    counts it right or wrong. Returns the answer's headers, or None."""
    stats.sent += 1
    try:
        st, hd, b = read_response(s, bytearray(), head_only)
    except Wrong as e:
        stats.fail(f"{label}: {e}", 1, 0)
        return None
    wrong = []
    if st != status:
        wrong.append(f"status {st}, expected {status}")
    if body is not None and b != body:
        wrong.append(f"body {b[:40]!r} ({len(b)} bytes), expected {body[:40]!r} ({len(body)} bytes)")
    for k, v in (headers or {}).items():
        if hd.get(k) != v:
            wrong.append(f"{k}: {hd.get(k)!r}, expected {v!r}")
    if wrong:
        stats.fail(f"{label}: " + "; ".join(wrong), 1, 0)
        return None
    stats.ok += 1
    return hd


UPLOAD_CL = 1 << 20        # the Content-Length uploads announce
UPLOAD_PART = 200 << 10    # what a mid-body abort sends of it
UPLOAD_BODY = echo_payload(256 << 10, 4)


def chunked(data, size=16384):
    """data as chunks of `size`, with the last chunk."""
    out = bytearray()
    for k in range(0, len(data), size):
        part = data[k:k + size]
        out += b"%x\r\n" % len(part) + part + b"\r\n"
    return bytes(out + b"0\r\n\r\n")


UPLOAD_CHUNKED = chunked(UPLOAD_BODY)
CL_HEAD = b"POST /up HTTP/1.1\r\nHost: soak\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n"
TE_HEAD = b"POST /up HTTP/1.1\r\nHost: soak\r\nTransfer-Encoding: chunked\r\n"


def upload_cycle(port, i, stats, end, single=False):
    """One connection to --app upload, ended in way i % 12: close or reset
    inside the head, after the head, mid-body (Content-Length and chunked),
    after the body with the answer unread, after the answer, and with
    `Expect: 100-continue` (after the 100, or the whole exchange)."""
    way = i % 12
    reset = (i // 12) % 2 == 1     # every other round resets where the way allows both
    s = connect(port)
    label = f"upload cycle {i} (way {way})"
    if way == 0:      # inside the head
        s.sendall(b"POST /up HTTP/1.1\r\nHost: soak\r\nContent-Le")
        end(s, reset)
    elif way == 1:    # after a Content-Length head, no body byte
        s.sendall(CL_HEAD % UPLOAD_CL + b"\r\n")
        end(s, reset)
    elif way == 2:    # after a chunked head, no body byte
        s.sendall(TE_HEAD + b"\r\n")
        end(s, reset)
    elif way == 3:    # mid-body, Content-Length
        s.sendall(CL_HEAD % UPLOAD_CL + b"\r\n" + ECHO_BIG[:UPLOAD_PART])
        end(s, reset)
    elif way == 4:    # mid-body, chunked, inside a chunk
        s.sendall(TE_HEAD + b"\r\n" + UPLOAD_CHUNKED[:UPLOAD_PART // 2 + 7])
        end(s, reset)
    elif way == 5:    # mid-body, chunked, between chunks (inside a size line)
        s.sendall(TE_HEAD + b"\r\n" + chunked(UPLOAD_BODY[:65536])[:-5] + b"4")
        end(s, reset)
    elif way == 6:    # the whole body sent (Content-Length), the answer unread
        s.sendall(CL_HEAD % len(UPLOAD_BODY) + b"\r\n" + UPLOAD_BODY)
        end(s, reset)
    elif way == 7:    # the whole body sent (chunked), the answer unread
        s.sendall(TE_HEAD + b"\r\n" + UPLOAD_CHUNKED)
        end(s, reset)
    elif way == 8:    # after the answer, Content-Length
        s.sendall(CL_HEAD % len(UPLOAD_BODY) + b"\r\n" + UPLOAD_BODY)
        expect_response(s, stats, label, 200, b"received %d bytes\n" % len(UPLOAD_BODY))
        end(s, reset)
    elif way == 9:    # after the answer, chunked
        s.sendall(TE_HEAD + b"\r\n" + UPLOAD_CHUNKED)
        expect_response(s, stats, label, 200, b"received %d bytes\n" % len(UPLOAD_BODY))
        end(s, reset)
    elif way == 10:   # Expect: 100-continue, the client leaves after the 100
        s.sendall(CL_HEAD % UPLOAD_CL + b"Expect: 100-continue\r\n\r\n")
        expect_response(s, stats, label + " (100 Continue)", 100)
        if reset:     # ... or part of the body after it
            s.sendall(ECHO_BIG[:UPLOAD_PART])
        end(s, reset)
    else:             # Expect: 100-continue, the whole exchange (chunked every other round)
        s.sendall((TE_HEAD if reset else CL_HEAD % len(UPLOAD_BODY)) + b"Expect: 100-continue\r\n\r\n")
        if expect_response(s, stats, label + " (100 Continue)", 100) is not None:
            s.sendall(UPLOAD_CHUNKED if reset else UPLOAD_BODY)
            expect_response(s, stats, label, 200, b"received %d bytes\n" % len(UPLOAD_BODY))
        end(s)


# The files `--app static` serves in the cycles (made by make_static_root).
STATIC_BIG = "big.bin"         # large: a download is still in the kernel's sendfile when the client leaves
STATIC_BIG_SIZE = 32 << 20
STATIC_SMALL = "small.txt"
STATIC_SMALL_BODY = b"a small static file\n" * 10


def static_pattern(off, n):
    """Bytes off..off+n of big.bin (the 1 MiB echo payload, repeated)."""
    k = off % len(ECHO_BIG)
    out = bytearray()
    while len(out) < n:
        out += ECHO_BIG[k:k + n - len(out)]
        k = 0
    return bytes(out)


def make_static_root():
    import tempfile
    root = tempfile.mkdtemp(prefix="soak-static-")
    with open(os.path.join(root, STATIC_BIG), "wb") as f:
        for _ in range(STATIC_BIG_SIZE // len(ECHO_BIG)):
            f.write(ECHO_BIG)
    with open(os.path.join(root, STATIC_SMALL), "wb") as f:
        f.write(STATIC_SMALL_BODY)
    return root


def static_cycle(port, i, stats, end, single=False):
    """One connection to --app static, ended in way i % 8: close or reset
    mid-head, mid-body of the large file (part read, the rest in flight),
    after a Range answer, after a HEAD, after a whole small file, and
    before reading anything of the large file."""
    way = i % 8
    reset = (i // 8) % 2 == 1
    s = connect(port)
    label = f"static cycle {i} (way {way})"
    get = b"GET /%s HTTP/1.1\r\nHost: soak\r\n" % STATIC_BIG.encode()
    if way == 0:      # mid-head
        s.sendall(b"GET /big.bin HTTP/1.1\r\nHo")
        end(s, reset)
    elif way == 1:    # the large file asked for, nothing read
        s.sendall(get + b"\r\n")
        end(s, reset)
    elif way in (2, 3):   # mid-body: the head and up to 64 KiB (2) or 1 MiB (3) read
        want = 65536 if way == 2 else 1 << 20
        s.sendall(get + b"\r\n")
        buf = bytearray()
        stats.sent += 1
        try:
            st, hd, _ = read_response(s, buf, head_only=True)
            if st != 200 or hd.get("content-length") != str(STATIC_BIG_SIZE):
                raise Wrong(f"status {st}, Content-Length {hd.get('content-length')}")
            while len(buf) < want:
                d = s.recv(want - len(buf))
                if not d:
                    raise Wrong(f"EOF after {len(buf)} body bytes")
                buf += d
            if bytes(buf[:want]) != static_pattern(0, want):
                raise Wrong("the body differs from the file")
            stats.ok += 1
        except Wrong as e:
            stats.fail(f"{label}: {e}", 1, 0)
        end(s, reset)
    elif way == 4:    # after a Range answer
        off = (i * 7919) % (STATIC_BIG_SIZE - 5000)
        s.sendall(get + b"Range: bytes=%d-%d\r\n\r\n" % (off, off + 4999))
        expect_response(s, stats, label, 206, static_pattern(off, 5000),
                        headers={"content-range": f"bytes {off}-{off + 4999}/{STATIC_BIG_SIZE}"})
        end(s, reset)
    elif way == 5:    # after a HEAD of the large file
        s.sendall(b"HEAD /%s HTTP/1.1\r\nHost: soak\r\n\r\n" % STATIC_BIG.encode())
        expect_response(s, stats, label, 200, head_only=True,
                        headers={"content-length": str(STATIC_BIG_SIZE)})
        end(s, reset)
    elif way == 6:    # a whole small file, then a Range request of the large one left unread
        s.sendall(b"GET /%s HTTP/1.1\r\nHost: soak\r\n\r\n" % STATIC_SMALL.encode())
        expect_response(s, stats, label, 200, STATIC_SMALL_BODY)
        s.sendall(get + b"Range: bytes=%d-\r\n\r\n" % (i % 1000))
        end(s, reset)
    else:             # a suffix range of the large file, half-closed: the answer, then EOF
        s.sendall(get + b"Range: bytes=-3000\r\n\r\n")
        s.shutdown(socket.SHUT_WR)
        expect_response(s, stats, label, 206, static_pattern(STATIC_BIG_SIZE - 3000, 3000))
        end(s)


def still_answers(app, port):
    try:
        s = connect(port)
        if app == "hello":
            s.sendall(b"GET /last HTTP/1.1\r\nHost: soak\r\n\r\n")
            st = Stats()
            ok = read_answers(s, bytearray(), [OK], False, st, "final request")
        elif app == "upload":
            s.sendall(TE_HEAD + b"\r\n" + UPLOAD_CHUNKED)
            ok = expect_response(s, Stats(), "final upload", 200,
                                 b"received %d bytes\n" % len(UPLOAD_BODY)) is not None
        elif app == "static":
            s.sendall(b"GET /%s HTTP/1.1\r\nHost: soak\r\n\r\n" % STATIC_SMALL.encode())
            ok = expect_response(s, Stats(), "final download", 200, STATIC_SMALL_BODY) is not None
        else:
            s.sendall(ECHO_MID)
            ok = recv_some(s, len(ECHO_MID)) == ECHO_MID
        s.close()
        return ok
    except OSError:
        return False


# Connections the client leaves open: the server's timers must close them
# (it runs the cycles with --header-timeout 1 --idle-timeout 1; lingering is
# 2 s). (what, bytes to send, the status it must answer with; None: EOF only).
HELD_HELLO = [
    ("partial head", b"GET /held HTTP/1.1\r\nHost: so", 408),
    ("idle after an answer", b"GET /held HTTP/1.1\r\nHost: soak\r\n\r\n", OK),
    ("malformed, then more input", b"GET /held HTTP/2.0\r\nHost: soak\r\n\r\n" + b"junk" * 500, 505),
    ("stalled body", b"POST /held HTTP/1.1\r\nHost: soak\r\nContent-Length: 100\r\n\r\nabc", 408),
    ("idle, nothing sent", b"", None),
]


HELD_PER_RUN = {"hello": 20, "echo": 4}


def open_held(port, app, n, held, stats):
    """Opens the n-th held connection. Hello: one of HELD_HELLO. Echo: a
    client that sends until the server stops reading (its output queue full)
    and never reads: only output the client does not read is timed in raw
    mode."""
    s = connect(port)
    stats.conns += 1
    stats.held += 1
    if app == "hello":
        what, data, status = HELD_HELLO[n % len(HELD_HELLO)]
        s.sendall(data)
        if status == OK:   # the answer now; then the connection sits idle
            ok = read_answers(s, bytearray(), [OK], False, stats, f"held ({what})")
            status = None if ok else -1
        held.append((s, what, status))
    else:
        # Send until a send blocks for 0.1 s: the server has then stopped
        # reading, its output queue over the limit. (Stopping at the first
        # EAGAIN is not enough: the kernel buffers can hold all of it, the
        # server's queue is then empty, and an idle raw connection is never
        # timed, by design.)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 0, 100000))
        chunk = ECHO_BIG[:65536]
        try:
            for _ in range(1024):         # at most 64 MiB; the kernel buffers take ~10
                s.sendall(chunk)
        except BlockingIOError:
            pass
        held.append((s, "stalled reader", "reset"))


def check_held(held, stats):
    """After the descriptor check: every held connection must have been
    closed by the server, hello ones after their status."""
    late = 0
    for s, what, status in held:
        label = f"held connection ({what})"
        if status == -1:
            continue                       # already counted
        if late >= 3:                      # do not wait 5 s on each of many
            stats.fail(f"{label}: not checked, earlier held connections were left open", 0, 1)
            continue
        if status == "reset":
            try:
                while s.recv(1 << 20):
                    pass
            except BlockingIOError:
                late += 1
                stats.fail(f"{label}: still open {IO_TIMEOUT:.0f} s after the check", 0, 1)
            except OSError:
                pass                       # ECONNRESET: closed with our input unread
            continue
        exps = [] if status is None else [status]
        if not read_answers(s, bytearray(), exps, True, stats, label):
            late += 1


def close_held(held):
    for s, _, _ in held:
        s.close()
    held.clear()


def run_cycles(port, app, start, end, stats, deadline, single=False, held=None):
    """Cycles start..end-1. In every other run of the ways the close is
    deferred by up to 32 cycles, so the server has taken in the partial
    request, queued the answers or paused on a full socket before the close
    or reset reaches it, with other connections coming and going meanwhile.
    With `held` (a list), HELD_PER_RUN connections spread over the cycles
    are left open for the server's timers to close (as many in the warm-up
    as after it: they set the peak of buffers and connection records).
    `single` (the blocking engine, one client at a time): no deferral, and
    one answer per connection."""
    fn, nways = CYCLES[app]
    nheld = HELD_PER_RUN.get(app, 0) if held is not None else 0
    at = {start + (2 * j + 1) * (end - start) // (2 * nheld): j for j in range(nheld)}
    deferred = collections.deque()

    def finish(s, reset):
        try:
            if reset:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)
        except OSError:
            pass
        s.close()

    try:
        for i in range(start, end):
            if stats.failed_conns >= MAX_FAILED_CONNS:
                stats.stop_note(f"stopped after {stats.failed_conns} failing connections")
                return
            if i % 256 == 0 and time.monotonic() > deadline:
                stats.stop_note("stopped at the time limit (SOAK_TIMEOUT)")
                return
            later = (i // nways) % 2 == 1 and not single

            def end_conn(s, reset=False):
                if later:
                    deferred.append((s, reset))
                else:
                    finish(s, reset)

            try:
                fn(port, i, stats, end_conn, single)
            except BlockingIOError:
                stats.fail(f"{app} cycle {i}: timed out", 0, 1)
            except OSError as e:
                stats.fail(f"{app} cycle {i}: {e!r}", 0, 1)
            stats.conns += 1
            if held is not None and i in at:
                try:
                    open_held(port, app, at[i], held, stats)
                except OSError as e:
                    stats.fail(f"{app} held connection at cycle {i}: {e!r}", 0, 1)
            while len(deferred) > 32:
                finish(*deferred.popleft())
    finally:
        while deferred:
            finish(*deferred.popleft())


# app -> (one cycle, its number of ways)
CYCLES = {"hello": (hello_cycle, 12), "echo": (echo_cycle, 8),
          "upload": (upload_cycle, 12), "static": (static_cycle, 8)}
# Set by main() when the plan has static cycles: the directory --app static serves.
STATIC_ROOT = None


# ----------------------------------------------------------------- driver

def fmt_kib(k):
    return f"{k / 1024:.1f} MiB"


def phase(binary, spec, extra, app, what, count, settle_limit, timeout):
    """Starts a server, warms up (a tenth of `count`), measures, runs the
    rest, measures again. Returns (passed, report lines)."""
    single = spec == "blocking"   # one request per connection, one client at a time
    hold = what == "cycles" and not single and app in HELD_PER_RUN
    if app == "static":
        extra = ["--root", STATIC_ROOT] + extra
    if hold:
        # Short timeouts, so that held connections are closed by the server
        # within seconds; settle long enough for 408, then lingering.
        extra = ["--header-timeout", "1", "--idle-timeout", "1"] + extra
        settle_limit = max(settle_limit, 8.0)
    held = [] if hold else None
    try:
        srv = Server(binary, app, engine_args(spec) + extra)
    except RuntimeError as e:
        return False, [f"  {what} {app}: " + str(e).strip().replace("\n", "\n         ")]
    lines = []
    passed = True
    try:
        fd_idle, _ = srv.settle()
        warm = max(1, count // 10)
        stats = Stats()
        deadline = time.monotonic() + timeout
        if what == "load":   # run_load counts requests from the start of `stats`
            run = lambda a, b, h=None: run_load(srv.port, b, stats, deadline, single)
        else:
            run = lambda a, b, h=None: run_cycles(srv.port, app, a, b, stats, deadline, single, h)
        # Echo cycles: the warm-up repeats (up to 5 times) until RSS holds
        # within 1%: with --threads N the kernel spreads the few megabyte-
        # sized stalled readers over N loops, and each loop keeps the buffers
        # of its own peak, so one round need not reach the plateau (measured:
        # +1 MiB steps for a few rounds, then flat over 30).
        rounds, rss_prev = 0, None
        while True:
            rounds += 1
            run(0, warm, held)
            if held:
                # Held in the warm-up too, for the same peak of buffers and
                # records, but closed by the client: no waiting for timers.
                close_held(held)
                fd_warm, rss_warm = srv.settle(target=fd_idle, limit=settle_limit)
            else:
                fd_warm, rss_warm = srv.settle()
            if app == "hello" or rounds >= 5 or (rss_prev is not None and rss_warm <= rss_prev * 1.01):
                break
            rss_prev = rss_warm
        cpu0, t0, sent0, conns0 = srv.cpu_s(), time.monotonic(), stats.sent, stats.conns
        stats.held = 0   # count those the server's timers must close
        if what == "load":
            run(warm, count)
        else:
            run(warm, count, held)
        elapsed = time.monotonic() - t0
        if not srv.alive():
            raise RuntimeError(f"the server exited (status {srv.p.returncode}) during the run; "
                               f"{stats.wrong} wrong, {stats.missing} missing answers so far")
        cpu = srv.cpu_s() - cpu0
        fd_end, rss_end = srv.settle(target=fd_warm, limit=settle_limit)
        fd_list = "" if fd_end == fd_warm else srv.fd_list()
        if held:
            check_held(held, stats)
            close_held(held)
        alive = srv.alive()
        answers = alive and still_answers(app, srv.port)
        nreq, nconn = stats.sent - sent0, stats.conns - conns0
        rss_ok = rss_end <= rss_warm * 1.05
        fd_ok = fd_end == fd_warm
        bad = stats.wrong + stats.missing
        ok = bad == 0 and stats.failed_conns == 0 and rss_ok and fd_ok and alive and answers
        passed = ok
        if what == "load":
            lines.append(f"  load   {app}: {stats.sent:,} requests ({stats.sent - sent0:,} after warm-up) on "
                         f"{stats.conns:,} connections; wrong {stats.wrong}, missing {stats.missing}; "
                         f"{nreq / elapsed:,.0f} req/s, {nconn / elapsed:,.0f} conn/s, "
                         f"server CPU {cpu / max(1, nreq) * 1e6:.1f} µs/req, {elapsed:.1f} s")
            k = stats.kinds
            lines.append(f"         mix: keep-alive {k['keep-alive']:,}, pipelined {k['pipelined']:,}, "
                         f"close {k['close']:,}, malformed {k['malformed']:,} ("
                         + " ".join(f"{st}×{n:,}" for st, n in sorted(stats.statuses.items()))
                         + f"; {k['before malformed']:,} good requests pipelined ahead of them)")
        else:
            lines.append(f"  cycles {app}: {stats.conns:,} connections opened and closed "
                         f"({stats.held} of them, after warm-up, left for the server's timers to close; "
                         f"{stats.ok:,} answers checked); wrong {stats.wrong}, missing {stats.missing}; "
                         f"{nconn / elapsed:,.0f} conn/s, {elapsed:.1f} s")
        if rounds > 1:
            lines[-1] += f"; warm-up {rounds} rounds"
        d_rss = (rss_end - rss_warm) / rss_warm * 100
        lines.append(f"         RSS {fmt_kib(rss_warm)} -> {fmt_kib(rss_end)} ({d_rss:+.1f}%, limit +5%) "
                     f"{'ok' if rss_ok else 'FAIL'}; fds {fd_warm} -> {fd_end} (idle {fd_idle}) "
                     f"{'ok' if fd_ok else 'FAIL'}; {'alive and answering' if answers else 'NOT ANSWERING' if alive else 'DEAD'}"
                     f" -> {'PASS' if ok else 'FAIL'}")
        for e in stats.examples:
            lines.append(f"         ! {e}")
        if not fd_ok:
            lines.append(f"         ! descriptors at the end: {fd_list}")
    except Exception as e:   # a client-side crash fails the engine, with the cause
        passed = False
        lines.append(f"  {what} {app}: ERROR {e!r}"
                     + ("" if srv.alive() else f"; the server exited (status {srv.p.returncode})"))
    finally:
        close_held(held or [])
        err = srv.stop()
        if not passed and err.strip():
            lines.append("         server stderr: " + err.strip()[:600].replace("\n", "\n         "))
    return passed, lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engines", default=os.environ.get("SOAK_ENGINES") or DEFAULT_ENGINES)
    ap.add_argument("--requests", type=int, default=env_int("SOAK_REQUESTS", 1_000_000))
    ap.add_argument("--cycles", type=int, default=env_int("SOAK_CYCLES", 10_000))
    ap.add_argument("--transfer-cycles", type=int, default=None,
                    help="upload and static cycles each (SOAK_TRANSFER_CYCLES; default: --cycles)")
    ap.add_argument("--only", choices=["load", "cycles", "transfers"], default=os.environ.get("SOAK_ONLY") or None)
    ap.add_argument("--binary", default=os.path.join(ROOT, ".build/release/peregrine"))
    ap.add_argument("--server-args", default=os.environ.get("SOAK_ARGS", ""))
    ap.add_argument("--settle", type=float, default=float(os.environ.get("SOAK_SETTLE") or 4.0))
    ap.add_argument("--timeout", type=float, default=float(os.environ.get("SOAK_TIMEOUT") or 600),
                    help="seconds per phase before it stops and fails")
    a = ap.parse_args()
    if not os.access(a.binary, os.X_OK):
        raise SystemExit(f"soak: {a.binary} missing: run `swift build -c release` first")
    if a.transfer_cycles is None:
        a.transfer_cycles = env_int("SOAK_TRANSFER_CYCLES", a.cycles)
    if a.engines.strip() == "all":
        a.engines = ALL_ENGINES
    engines = [e.strip() for e in a.engines.split(",") if e.strip()]
    for e in engines:
        engine_args(e)
    extra = shlex.split(a.server_args)
    plan = []
    if a.only in (None, "load") and a.requests > 0:
        plan.append(("hello", "load", a.requests))
    if a.only in (None, "cycles") and a.cycles > 0:
        plan += [("hello", "cycles", a.cycles), ("echo", "cycles", a.cycles)]
    if a.only in (None, "cycles", "transfers") and a.transfer_cycles > 0:
        plan += [("upload", "cycles", a.transfer_cycles), ("static", "cycles", a.transfer_cycles)]
    what = [f"{a.requests:,} requests"] if a.only in (None, "load") else []
    what += [f"{a.cycles:,} hello + {a.cycles:,} echo open/close cycles"] if a.only in (None, "cycles") else []
    what += [f"{a.transfer_cycles:,} upload + {a.transfer_cycles:,} static open/close cycles"] \
        if a.only != "load" else []
    print(f"soak: {' and '.join(what)} per engine; engines {', '.join(engines)}"
          f"{'; server args ' + a.server_args if extra else ''}", flush=True)
    global STATIC_ROOT
    if any(app == "static" for app, _, _ in plan):
        STATIC_ROOT = make_static_root()
    t_all = time.monotonic()
    failed = []
    for spec in engines:
        t0 = time.monotonic()
        print(f"{spec}:", flush=True)
        ok = True
        for app, what, count in plan:
            passed, lines = phase(a.binary, spec, extra, app, what, count, a.settle, a.timeout)
            print("\n".join(lines), flush=True)
            ok &= passed
        print(f"  {spec}: {'PASS' if ok else 'FAIL'} in {time.monotonic() - t0:.0f} s", flush=True)
        if not ok:
            failed.append(spec)
    if STATIC_ROOT:
        import shutil
        shutil.rmtree(STATIC_ROOT, ignore_errors=True)
    print(f"soak: {len(engines) - len(failed)} of {len(engines)} engines passed in "
          f"{time.monotonic() - t_all:.0f} s" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
