#!/usr/bin/env python3
"""Opens N idle TCP connections to a server on loopback and holds them.

With --request, each connection first does one keep-alive GET and reads the
answer, so the server holds it as an idle keep-alive connection (the
realistic case); without, connections never send a byte. Prints "ready N"
once all are established, then waits for stdin to close (bounded by
--hold seconds) and exits.
"""
import argparse, resource, select, socket, sys, time

p = argparse.ArgumentParser()
p.add_argument("--port", type=int, required=True)
p.add_argument("--count", type=int, default=10000)
p.add_argument("--request", action="store_true")
p.add_argument("--hold", type=float, default=120.0)
a = p.parse_args()

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
if a.count + 64 > hard:
    sys.exit(f"need {a.count + 64} descriptors, hard limit is {hard}")

socks = []
for i in range(a.count):
    s = socket.create_connection(("127.0.0.1", a.port), timeout=10)
    socks.append(s)
if a.request:
    req = b"GET / HTTP/1.1\r\nHost: idle\r\n\r\n"
    for s in socks:
        s.sendall(req)
    for s in socks:
        data = b""
        while b"\r\n\r\n" not in data or not data.endswith(b"Hello, World!"):
            chunk = s.recv(4096)
            if not chunk:
                sys.exit("server closed an idle connection")
            data += chunk
print(f"ready {len(socks)}", flush=True)
deadline = time.time() + a.hold
while time.time() < deadline:
    r, _, _ = select.select([sys.stdin], [], [], 1.0)
    if r and not sys.stdin.read(1):
        break
for s in socks:
    s.close()
