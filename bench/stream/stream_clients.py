#!/usr/bin/env python3
"""stream_clients.py: many concurrent clients of `peregrine serve --app stream`.

    stream_clients.py PORT CONNECTIONS N SIZE MS [--hold-file PATH] [--timeout S]

Opens CONNECTIONS keep-alive connections (one epoll loop, non-blocking, a
bounded number of connects in flight), each asking `GET /?n=N&size=SIZE&ms=MS`,
and reads the answers (chunked, or framed by Content-Length). For every
chunk of SIZE payload bytes it records its lateness: arrival time minus its
schedule, the schedule being the arrival of the connection's first chunk plus
k*MS for the k-th. When every connection has its first chunk it writes
`open <seconds>` to stdout and, with --hold-file, creates that file: the
caller reads the server's RSS then (all streams open). At the end, one line:

    done conns=C complete=K chunks=X errors=E p50_ms=.. p99_ms=.. max_ms=..

Every run is bounded: --timeout seconds (default N*MS/1000 + 60) in all.
"""
import argparse, os, select, socket, sys, time


class Conn:
    __slots__ = ("sock", "buf", "state", "left", "t0", "got", "chunked", "clen", "done")

    def __init__(self, sock):
        self.sock, self.buf, self.state = sock, bytearray(), "connecting"
        self.left = 0          # bytes left of the current chunk (chunked) or of the body (Content-Length)
        self.t0 = None         # arrival of the first payload chunk
        self.got = 0           # payload bytes received
        self.chunked = False
        self.clen = -1
        self.done = False


def main():
    ap = argparse.ArgumentParser()
    for a in ("port", "conns", "n", "size", "ms"):
        ap.add_argument(a, type=int)
    ap.add_argument("--hold-file")
    ap.add_argument("--timeout", type=float)
    ap.add_argument("--connect-batch", type=int, default=200, help="connects in flight at once")
    a = ap.parse_args()
    timeout = a.timeout or a.n * a.ms / 1000 + 60
    req = b"GET /?n=%d&size=%d&ms=%d HTTP/1.1\r\nHost: bench\r\n\r\n" % (a.n, a.size, a.ms)
    ep = select.epoll()
    conns, pending = {}, a.conns
    lateness = []            # ms, every chunk after each connection's first
    errors, complete, opened, started = 0, 0, 0, time.monotonic()
    deadline = started + timeout
    inflight = 0
    reported_open = False

    def open_more():
        nonlocal pending, inflight
        while pending and inflight < a.connect_batch:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", a.port))
            except BlockingIOError:
                pass
            c = Conn(s)
            conns[s.fileno()] = c
            ep.register(s.fileno(), select.EPOLLOUT | select.EPOLLIN)
            pending -= 1
            inflight += 1

    def fail(c, why):
        nonlocal errors, inflight
        errors += 1
        if errors <= 5:
            print(f"error: {why}", file=sys.stderr)
        if c.state == "connecting":
            inflight -= 1
        finish(c)

    def finish(c):
        c.done = True
        ep.unregister(c.sock.fileno())
        del conns[c.sock.fileno()]
        c.sock.close()

    def payload(c, n, now):
        """n payload bytes arrived: record the chunks they complete."""
        nonlocal opened
        before = c.got // a.size
        c.got += n
        after = c.got // a.size
        for k in range(before, after):
            if c.t0 is None:
                c.t0 = now
                opened += 1
            else:
                lateness.append((now - c.t0 - k * a.ms / 1000) * 1000)

    def parse(c, now):
        """Consumes c.buf; returns False when the answer is complete."""
        nonlocal complete
        b = c.buf
        if c.state == "head":
            end = b.find(b"\r\n\r\n")
            if end < 0:
                return True
            head = bytes(b[:end]).lower()
            if not head.startswith(b"http/1.1 200"):
                raise ValueError(f"answer {bytes(b[:40])!r}")
            c.chunked = b"transfer-encoding: chunked" in head
            if not c.chunked:
                i = head.find(b"content-length:")
                if i < 0:
                    raise ValueError("neither chunked nor Content-Length")
                c.clen = int(head[i + 15:].split(b"\r\n")[0])
                c.left = c.clen
            del b[:end + 4]
            c.state = "body"
        while c.state == "body":
            if not c.chunked:
                n = min(len(b), c.left)
                payload(c, n, now)
                del b[:n]
                c.left -= n
                if c.left == 0:
                    complete += 1
                    return False
                return True
            if c.left > 0:
                n = min(len(b), c.left)
                if n == 0:
                    return True
                payload(c, n, now)
                del b[:n]
                c.left -= n
                if c.left == 0:
                    c.left = -2          # then its CRLF
                continue
            if c.left == -2:
                if len(b) < 2:
                    return True
                del b[:2]
                c.left = 0
                continue
            i = b.find(b"\r\n")
            if i < 0:
                return True
            size = int(bytes(b[:i]).split(b";")[0], 16)
            del b[:i + 2]
            if size == 0:
                complete += 1    # trailers, if any, are not waited for
                return False
            c.left = size
        return True

    open_more()
    while (conns or pending) and time.monotonic() < deadline:
        events = ep.poll(0.5)
        now = time.monotonic()
        for fd, ev in events:
            c = conns.get(fd)
            if c is None:
                continue
            try:
                if c.state == "connecting":
                    err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        fail(c, f"connect: {os.strerror(err)}")
                        continue
                    c.sock.send(req)            # small: fits the empty send buffer
                    c.state = "head"
                    inflight -= 1
                    ep.modify(fd, select.EPOLLIN)
                    continue
                d = c.sock.recv(65536)
                if not d:
                    fail(c, f"EOF after {c.got} payload bytes")
                    continue
                c.buf += d
                if not parse(c, now):
                    finish(c)
            except (OSError, ValueError) as e:
                fail(c, repr(e))
        open_more()
        if not reported_open and opened + errors >= a.conns:
            reported_open = True
            print(f"open {now - started:.2f}", flush=True)
            if a.hold_file:
                open(a.hold_file, "w").close()
    errors += len(conns) + pending      # still open at the deadline
    lateness.sort()
    q = lambda p: lateness[min(len(lateness) - 1, int(p * len(lateness)))] if lateness else float("nan")
    print(f"done conns={a.conns} complete={complete} chunks={len(lateness) + opened} errors={errors} "
          f"p50_ms={q(0.5):.2f} p99_ms={q(0.99):.2f} max_ms={(lateness[-1] if lateness else float('nan')):.2f}",
          flush=True)
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
