#!/usr/bin/env python3
# Idle-connection RSS as bench.py's scenario_idle measures it, for one binary and engine:
#   idle_measure.py BINARY COUNT PORT [serve flags...]
import os, socket, subprocess, sys, time
binary, count, port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
flags = sys.argv[4:]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
def rss_kb(pid):
    total = 0
    pids = [pid]
    try:
        kids = open(f"/proc/{pid}/task/{pid}/children").read().split()
        pids += [int(k) for k in kids]
    except OSError: pass
    for p in pids:
        for line in open(f"/proc/{p}/status"):
            if line.startswith("VmRSS:"): total += int(line.split()[1])
    return total
srv = subprocess.Popen([binary, "serve", "--host", "127.0.0.1", "--port", str(port)] + flags,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    for _ in range(100):
        try: socket.create_connection(("127.0.0.1", port), timeout=1).close(); break
        except OSError: time.sleep(0.1)
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", port)); s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        while s.recv(65536): pass
        s.close()
    time.sleep(0.3)
    before = rss_kb(srv.pid)
    h = subprocess.Popen([sys.executable, os.path.join(ROOT, "scripts", "idle_clients.py"), "--port", str(port),
                          "--count", str(count), "--request", "--hold", "120"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    ready = h.stdout.readline(); time.sleep(0.5)
    after = rss_kb(srv.pid)
    h.stdin.close(); h.wait(60)
    print(f"{' '.join(flags) or 'level'}: {ready.strip()} before {before} KiB after {after} KiB per conn {(after-before)*1024/count:.0f} B")
finally:
    srv.terminate(); srv.wait(10)
