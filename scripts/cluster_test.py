#!/usr/bin/env python3
"""Three Peregrine hosts behind HAProxy and nginx, in network namespaces (`make cluster-test`).

Python standard library, iproute2, HAProxy, nginx and wrk from Debian. Run as root. It builds, on this
machine only, a small network of its own:

    client ns  10.91.0.2 ──veth── 10.91.0.1  balancer ns (HAProxy :80, nginx :81)
                                   10.91.N.1 ──veth── 10.91.N.2  backend ns N (N = 1, 2, 3)

Every backend host runs two `peregrine serve --app hello --log` processes: port 8080 with
`--proxy-protocol` behind HAProxy (health checks and PROXY v2 to the backends), port 8081 plain behind
nginx (upstream keep-alive; nginx's HTTP proxy cannot send the PROXY protocol). The addresses exist only
inside these namespaces; nothing leaves the machine. Then, each under a bounded wrk load from the client
namespace through both fronts:

  (a) rolling restart: on each backend in turn, a new `peregrine serve` with the same arguments on the
      same port, then SIGTERM to the old one (the same-port handoff); 0 failed requests required;
  (b) one backend killed with SIGKILL: HAProxy must mark it down; failed requests are reported and must
      not exceed the requests in flight at the kill (one per wrk connection); once restarted, the host
      must be marked up and take traffic again;
  (c) the client addresses the PROXY backends log for the load's requests are the client's (10.91.0.2).

Cleans up (processes, namespaces) on every exit. Where network namespaces are not permitted, it says so
and exits 0 without testing (the SKIPPED line says why). Exit 1 when a check failed.

usage: scripts/cluster_test.py [--seconds S] [--binary PATH]      (CLUSTER_SECONDS, default 20; make test: 6)
"""
import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKENDS = (1, 2, 3)
CLIENT_IP, BALANCER_IP = "10.91.0.2", "10.91.0.1"
PROXY_PORT, PLAIN_PORT = 8080, 8081
HAPROXY_PORT, NGINX_PORT = 80, 81
WRK_CONNECTIONS = 16


def log(*a):
    print("cluster-test:", *a, flush=True)


def sh(*cmd, check=True, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


class Cluster:
    def __init__(self, binary, scratch):
        self.binary, self.scratch = binary, scratch
        tag = f"{os.getpid() % 100000}"
        self.ns_client, self.ns_lb = f"prgc{tag}", f"prglb{tag}"
        self.ns_backend = {n: f"prgb{n}-{tag}" for n in BACKENDS}
        self.namespaces = []
        self.procs = []          # every process started, for cleanup
        self.backend = {}        # (n, port) -> Popen of the serving peregrine
        self.logs = {}           # (n, port) -> [log paths, oldest first]
        self.tag = tag

    # ---------------------------------------------------------------- network
    def netns(self, name):
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")

    def link(self, ns_a, ip_a, ns_b, ip_b, name):
        a, b = f"{name}a", f"{name}b"        # veth names: 15 characters at most
        sh("ip", "link", "add", a, "netns", ns_a, "type", "veth", "peer", "name", b, "netns", ns_b)
        sh("ip", "-n", ns_a, "addr", "add", f"{ip_a}/24", "dev", a)
        sh("ip", "-n", ns_b, "addr", "add", f"{ip_b}/24", "dev", b)
        sh("ip", "-n", ns_a, "link", "set", a, "up")
        sh("ip", "-n", ns_b, "link", "set", b, "up")

    def build_network(self):
        self.netns(self.ns_client)
        self.netns(self.ns_lb)
        self.link(self.ns_client, CLIENT_IP, self.ns_lb, BALANCER_IP, f"pc{self.tag}")
        for n in BACKENDS:
            self.netns(self.ns_backend[n])
            self.link(self.ns_lb, f"10.91.{n}.1", self.ns_backend[n], f"10.91.{n}.2", f"p{n}{self.tag}")

    def run_in(self, ns, argv, out):
        p = subprocess.Popen(["ip", "netns", "exec", ns] + argv, stdout=out, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
        self.procs.append(p)
        return p

    # --------------------------------------------------------------- backends
    def start_backend(self, n, port):
        """Starts `peregrine serve` on backend n and waits for its "serving" line."""
        key = (n, port)
        path = os.path.join(self.scratch, f"backend{n}-{port}-{len(self.logs.get(key, []))}.log")
        argv = [self.binary, "serve", "--app", "hello", "--host", "0.0.0.0", "--port", str(port), "--log",
                "--shutdown-timeout", "10"]
        if port == PROXY_PORT:
            argv.append("--proxy-protocol")
        out = open(path, "w")
        p = self.run_in(self.ns_backend[n], argv, out)
        seen = []
        for _ in range(50):   # start-up lines (the logger's, the handoff's) come before "serving"
            line = p.stderr.readline()
            seen.append(line)
            if not line or "peregrine: serving" in line:
                break
        if "peregrine: serving" not in seen[-1]:
            raise RuntimeError(f"backend {n}:{port} did not start: {''.join(seen)}{p.stderr.read()}")
        self.logs.setdefault(key, []).append(path)
        return p

    def start_backends(self):
        for n in BACKENDS:
            for port in (PROXY_PORT, PLAIN_PORT):
                self.backend[(n, port)] = self.start_backend(n, port)

    def handoff(self, n, port):
        """The same-port restart: a new process with the same arguments, then SIGTERM to the old."""
        old = self.backend[(n, port)]
        self.backend[(n, port)] = self.start_backend(n, port)
        old.send_signal(signal.SIGTERM)
        rc = old.wait(30)
        if rc != 0:
            raise RuntimeError(f"backend {n}:{port}: the old process exited with {rc} after SIGTERM")

    # ---------------------------------------------------------------- fronts
    def start_haproxy(self):
        servers = "\n".join(
            f"    server b{n} 10.91.{n}.2:{PROXY_PORT} send-proxy-v2 check check-send-proxy inter 200ms fall 2 rise 2"
            for n in BACKENDS)
        self.haproxy_sock = os.path.join(self.scratch, "haproxy.sock")
        cfg = f"""global
    stats socket {self.haproxy_sock} mode 600 level admin
    maxconn 4096
defaults
    mode http
    option http-keep-alive
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    retries 3
    option redispatch
frontend web
    bind {BALANCER_IP}:{HAPROXY_PORT}
    default_backend peregrine
backend peregrine
    balance roundrobin
    option httpchk GET /health
{servers}
"""
        path = os.path.join(self.scratch, "haproxy.cfg")
        with open(path, "w") as f:
            f.write(cfg)
        sh("haproxy", "-c", "-f", path)
        self.run_in(self.ns_lb, ["haproxy", "-db", "-f", path], open(os.path.join(self.scratch, "haproxy.log"), "w"))
        self.wait_servers_up(BACKENDS, 15)

    def start_nginx(self):
        prefix = os.path.join(self.scratch, "nginx")
        os.makedirs(prefix, mode=0o1777, exist_ok=True)
        os.chmod(prefix, 0o1777)
        upstream = "\n".join(f"        server 10.91.{n}.2:{PLAIN_PORT} max_fails=1 fail_timeout=2s;" for n in BACKENDS)
        cfg = f"""daemon off;
master_process on;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    upstream peregrine {{
{upstream}
        keepalive 32;
    }}
    server {{
        listen {BALANCER_IP}:{NGINX_PORT};
        location / {{
            proxy_pass http://peregrine;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream error timeout;
        }}
    }}
}}
"""
        path = os.path.join(prefix, "nginx.conf")
        with open(path, "w") as f:
            f.write(cfg)
        self.run_in(self.ns_lb, ["nginx", "-p", prefix + "/", "-c", path], open(os.path.join(prefix, "out.log"), "w"))
        deadline = time.time() + 15
        while time.time() < deadline:
            r = sh("ip", "netns", "exec", self.ns_client, "curl", "-s", "-m", "2",
                   f"http://{BALANCER_IP}:{NGINX_PORT}/", check=False)
            if r.stdout == "Hello, World!":
                return
            time.sleep(0.2)
        raise RuntimeError("nginx did not answer through to the backends within 15 s")

    def server_states(self):
        """HAProxy's view: {backend number: 'UP' / 'DOWN' / ...} from `show stat` on its socket."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(self.haproxy_sock)
            s.sendall(b"show stat\n")
            text = b""
            while chunk := s.recv(65536):
                text += chunk
        states = {}
        for line in text.decode().splitlines():
            cells = line.split(",")
            if len(cells) > 17 and cells[0] == "peregrine" and re.fullmatch(r"b\d", cells[1]):
                states[int(cells[1][1:])] = cells[17].split()[0]
        return states

    def wait_servers_up(self, which, seconds):
        deadline = time.time() + seconds
        while time.time() < deadline:
            try:
                states = self.server_states()
            except OSError:   # HAProxy still starting: its socket is not there yet
                states = {}
            if all(states.get(n) == "UP" for n in which):
                return time.time()
            time.sleep(0.1)
        raise RuntimeError(f"HAProxy did not mark {which} UP within {seconds} s: {states}")

    # ------------------------------------------------------------------ load
    def start_load(self, port, seconds):
        return self.run_in(self.ns_client, ["wrk", "-t1", f"-c{WRK_CONNECTIONS}", f"-d{seconds}s",
                                            f"http://{BALANCER_IP}:{port}/"], subprocess.PIPE)

    @staticmethod
    def load_result(p, label):
        out, err = p.communicate(timeout=120)
        requests = re.search(r"(\d+) requests in", out)
        errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        n = int(requests.group(1)) if requests else 0
        failed = (sum(map(int, errors.groups())) if errors else 0) + (int(non2xx.group(1)) if non2xx else 0)
        if n == 0:
            raise RuntimeError(f"{label}: wrk served nothing: {out}{err}")
        return n, failed

    def served_lines(self, n, port):
        count = 0
        for path in self.logs.get((n, port), []):
            with open(path) as f:
                count += sum(1 for line in f if " GET / " in line)
        return count

    def cleanup(self):
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
        for ns in reversed(self.namespaces):
            sh("ip", "netns", "del", ns, check=False)


def check(failures, ok, what):
    log(("ok     " if ok else "FAILED ") + what)
    if not ok:
        failures.append(what)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=int(os.environ.get("CLUSTER_SECONDS", "20")),
                    help="length of each load phase (restarts are spread over it)")
    ap.add_argument("--binary", default=os.path.join(ROOT, ".build", "release", "peregrine"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        log("SKIPPED: network namespaces need root (run as root, or through sudo)")
        return 0
    probe = sh("ip", "netns", "add", f"prgprobe{os.getpid()}", check=False)
    if probe.returncode != 0:
        log(f"SKIPPED: network namespaces are not permitted here (ip netns add: {probe.stderr.strip()})")
        return 0
    sh("ip", "netns", "del", f"prgprobe{os.getpid()}", check=False)
    for tool in ("haproxy", "nginx", "wrk", "curl"):
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            raise SystemExit(f"cluster-test: {tool} is missing (make cluster-test installs it)")

    scratch = tempfile.mkdtemp(prefix="peregrine-cluster-")
    os.chmod(scratch, 0o711)   # nginx's worker (nobody) reaches its own folder inside
    cluster = Cluster(args.binary, scratch)
    failures = []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        cluster.build_network()
        cluster.start_backends()
        cluster.start_haproxy()
        cluster.start_nginx()
        log(f"3 backends up behind HAProxy ({BALANCER_IP}:{HAPROXY_PORT}) and nginx ({BALANCER_IP}:{NGINX_PORT})")

        # (a) rolling restart under load, through both fronts
        seconds = max(args.seconds, 6)
        loads = [cluster.start_load(HAPROXY_PORT, seconds), cluster.start_load(NGINX_PORT, seconds)]
        time.sleep(1)   # the load is running before the first restart (this is the scenario, not a sync)
        step = (seconds - 2) / len(BACKENDS)
        for n in BACKENDS:
            t0 = time.time()
            cluster.handoff(n, PROXY_PORT)
            cluster.handoff(n, PLAIN_PORT)
            time.sleep(max(0.0, step - (time.time() - t0)))
        for p, label in zip(loads, ("HAProxy", "nginx")):
            n, failed = cluster.load_result(p, f"(a) {label}")
            check(failures, failed == 0, f"(a) rolling restart of 3 backends via {label}: {n} requests, {failed} failed")

        # (b) SIGKILL one backend under load
        victim = 2
        loads = [cluster.start_load(HAPROXY_PORT, seconds), cluster.start_load(NGINX_PORT, seconds)]
        time.sleep(1)
        for port in (PROXY_PORT, PLAIN_PORT):
            cluster.backend[(victim, port)].send_signal(signal.SIGKILL)
            cluster.backend[(victim, port)].wait()
        killed_at = time.time()
        down_after = None
        while time.time() - killed_at < 10:
            if cluster.server_states().get(victim) not in ("UP", None):
                down_after = time.time() - killed_at
                break
            time.sleep(0.05)
        check(failures, down_after is not None,
              f"(b) HAProxy marks the killed backend down" + (f" after {down_after:.2f} s" if down_after else ""))
        before = cluster.served_lines(victim, PROXY_PORT)
        for port in (PROXY_PORT, PLAIN_PORT):
            cluster.backend[(victim, port)] = cluster.start_backend(victim, port)
        up_at = cluster.wait_servers_up([victim], 15)
        for p, label in zip(loads, ("HAProxy", "nginx")):
            n, failed = cluster.load_result(p, f"(b) {label}")
            check(failures, failed <= WRK_CONNECTIONS,
                  f"(b) SIGKILL of one backend via {label}: {n} requests, {failed} failed "
                  f"(bound: {WRK_CONNECTIONS}, the requests in flight at the kill)")
        after = cluster.served_lines(victim, PROXY_PORT)
        check(failures, after > before,
              f"(b) restarted backend marked up {up_at - killed_at:.2f} s after the kill and took "
              f"{after - before} requests again")

        # (c) client addresses in the PROXY backends' access logs
        seen, wrong = 0, []
        for n in BACKENDS:
            for path in cluster.logs[(n, PROXY_PORT)]:
                with open(path) as f:
                    for line in f:
                        parts = line.split()
                        if len(parts) >= 3 and parts[1] == "GET" and parts[2] == "/":
                            seen += 1
                            host = parts[0].rsplit(":", 1)[0].strip("[]")
                            if host != CLIENT_IP:
                                wrong.append(line.strip())
        check(failures, seen > 0 and not wrong,
              f"(c) {seen} logged requests behind HAProxy carry the client's address {CLIENT_IP}"
              + (f"; {len(wrong)} do not, e.g. {wrong[0]!r}" if wrong else ""))
    except RuntimeError as e:
        failures.append(str(e))
        log(f"FAILED {e}")
    finally:
        cluster.cleanup()
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"cluster-test: {'all passed' if not failures else f'{len(failures)} failed'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
