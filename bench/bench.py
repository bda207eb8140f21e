#!/usr/bin/env python3
"""Peregrine's benchmark suite: every contender side by side in one run.

Method (DESIGN.md, "How to measure"): servers pinned to core 0, load generators to core 1; the
server's CPU time (user+system of its whole process tree, from /proc) before
and after each load gives CPU-µs per request, reported as a ratio to the floor
server measured in the same run. Contenders run at once on separate ports and
repetitions go round-robin (each starting one contender later), so the drift
of a shared machine hits all alike;
the median of the repetitions is reported. Loopback only; every load is
bounded in time or count.

    python3 bench/bench.py [--quick] [--only SCENARIO,...] [--out bench/results]

Writes bench/results/run-<stamp>.md, run-<stamp>-*.png and latest.md.
"""
import argparse
import datetime
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import procstat  # noqa: E402  (scripts/procstat.py: CPU, RSS, descriptors from /proc)

HZ = procstat.HZ
BENCH = os.path.join(ROOT, "bench")
PEREGRINE = os.path.join(ROOT, ".build", "release", "peregrine")
NIO_HELLO = os.path.join(BENCH, "swift", ".build", "release", "nio-hello")
# Hummingbird's hello router on its own NIO server and on Peregrine (integrations/hummingbird/peregrine-hummingbird).
HB_PKG = os.path.join(ROOT, "integrations", "hummingbird", "peregrine-hummingbird")
HB_NIO_HELLO = os.path.join(HB_PKG, ".build", "release", "hb-nio-hello")
HB_PEREGRINE_HELLO = os.path.join(HB_PKG, ".build", "release", "hb-peregrine-hello")
# The allocation counter, shared with the XCTest suite (built here as an LD_PRELOAD library).
ALLOC_COUNTER_C = os.path.join(ROOT, "Tests", "CTestSupport", "alloc_counter.c")
SERVER_CORE, LOAD_CORE = "0", "1"

# ---------------------------------------------------------------- helpers


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def run(cmd, timeout=None, check=True):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr[-2000:]}")
    return r


def load(cmd, timeout):
    """A load generator, pinned to the load core."""
    return run(["taskset", "-c", LOAD_CORE] + cmd, timeout=timeout, check=False)


def cpu_ticks(pid):
    """utime + stime of pid's whole process tree (nginx: master and worker)."""
    return procstat.cpu_ticks(pid, tree=True)


def rss_kb(pid):
    return procstat.rss_kib(pid, tree=True)


def netstat_tcpext():
    with open("/proc/net/netstat") as f:
        lines = f.read().splitlines()
    for i in range(0, len(lines) - 1, 2):
        if lines[i].startswith("TcpExt:"):
            return dict(zip(lines[i].split()[1:], map(int, lines[i + 1].split()[1:])))
    return {}


def wait_port(port, proc, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def spread(xs, fmt):
    """min–max of the repetitions, so a reader sees how far the median can be trusted."""
    xs = [x for x in xs if x == x]
    if not xs:
        return "–"
    return fmt.format(min(xs)) + "–" + fmt.format(max(xs)) + f" (n={len(xs)})"


def duration_us(text):
    """wrk latency '1.27ms' / '850.00us' / '1.02s' -> µs."""
    m = re.match(r"([\d.]+)(us|ms|s)$", text)
    if not m:
        return float("nan")
    return float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)]


# ------------------------------------------------------------- contenders


class Server:
    """A contender: started pinned to the server core, in its own session."""

    def __init__(self, name, argv, port, scratch, start_timeout=20.0):
        self.name, self.argv, self.port = name, argv, port
        self.log = open(os.path.join(scratch, f"{name}.log"), "w")
        self.proc = subprocess.Popen(["taskset", "-c", SERVER_CORE] + argv, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        wait_port(port, self.proc, start_timeout)

    @property
    def pid(self):
        return self.proc.pid

    def stop(self, timeout=5):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log.close()


class Suite:
    def __init__(self, args):
        self.args = args
        self.quick = args.quick
        self.scratch = tempfile.mkdtemp(prefix="peregrine-bench-")
        self.next_port = 19100
        self.duration = 1 if self.quick else args.duration
        self.repeat = 1 if self.quick else args.repeat
        self.sections = []      # (title, markdown)
        self.verdicts = []      # (target, measured, met: True/False/None)
        self.data = {}          # scenario -> rows for plots
        self.build()

    def port(self):
        self.next_port += 1
        return self.next_port

    # -- build everything the contenders need (once)
    def build(self):
        log("bench: building contenders")
        run(["swift", "build", "-c", "release", "--package-path", ROOT], timeout=1800)
        for src, out, libs in [("floor/floor.c", "floor", []), ("floor/echo_floor.c", "echo_floor", []),
                               ("echo/echo_load.c", "echo_load", []), ("readiness/readiness.c", "readiness", ["-lev"])]:
            run(["cc", "-std=c11", "-O2", "-o", os.path.join(self.scratch, out), os.path.join(BENCH, src)] + libs)
        run(["cc", "-O2", "-shared", "-fPIC", "-o", os.path.join(self.scratch, "alloccount.so"),
             "-DALLOC_COUNTER_WHOLE_PROCESS", "-I", os.path.join(os.path.dirname(ALLOC_COUNTER_C), "include"),
             ALLOC_COUNTER_C])
        self.have_nio = False
        if not self.args.no_nio:
            r = run(["swift", "build", "-c", "release", "--package-path", os.path.join(BENCH, "swift"),
                     "--product", "nio-hello"], timeout=2400, check=False)
            self.have_nio = r.returncode == 0 and os.path.exists(NIO_HELLO)
            if not self.have_nio:
                log("bench: nio-hello did not build:\n" + r.stderr[-3000:])
        self.have_hb = False
        if not self.args.no_hummingbird:
            for product in ("hb-nio-hello", "hb-peregrine-hello"):
                r = run(["swift", "build", "-c", "release", "--package-path", HB_PKG, "--product", product],
                        timeout=3600, check=False)
                if r.returncode != 0:
                    break
            self.have_hb = r.returncode == 0 and os.path.exists(HB_NIO_HELLO) and os.path.exists(HB_PEREGRINE_HELLO)
            if not self.have_hb:
                log("bench: the Hummingbird contenders (hummingbird, hb-peregrine) are skipped: "
                    f"integrations/hummingbird/peregrine-hummingbird did not build:\n{r.stderr[-3000:]}")
        self.have_nginx = shutil.which("nginx") is not None or os.path.exists("/usr/sbin/nginx")

    # -- contender tables
    def floor_contender(self):
        return ("floor", lambda p: [os.path.join(self.scratch, "floor"), str(p)])

    def anchor_contenders(self, nio_binary=None):
        """nginx and SwiftNIO's hello, where they are available (nio_binary: another copy of it)."""
        c = []
        if self.have_nginx:
            c.append(("nginx", lambda p: [os.path.join(BENCH, "nginx", "run-nginx.sh"), str(p),
                                          tempfile.mkdtemp(prefix="nginx-", dir=self.scratch)]))
        if self.have_nio:
            nio = nio_binary or NIO_HELLO
            c.append(("swiftnio", lambda p: [nio, "--host", "127.0.0.1", "--port", str(p)]))
        return c

    def http_contenders(self, extra_peregrine=()):
        c = [self.floor_contender()]
        for t in ("level", "edge", "oneshot"):
            c.append((f"peregrine-{t}", lambda p, t=t: [PEREGRINE, "serve", "--host", "127.0.0.1", "--port", str(p), "--trigger", t]))
        for name, flags in extra_peregrine:
            c.append((name, lambda p, f=flags: [PEREGRINE, "serve", "--host", "127.0.0.1", "--port", str(p)] + f))
        c += self.anchor_contenders()
        c += self.hummingbird_contenders()
        c.append(("python-epoll", lambda p: [sys.executable, os.path.join(BENCH, "python", "epoll_server.py"),
                                             "--host", "127.0.0.1", "--port", str(p)]))
        return c

    # Every Peregrine engine and mode, as `peregrine serve` flags. The epoll
    # engine's rows keep their historical names (peregrine-level, ...).
    ENGINE_MODES = [
        ("peregrine-level", ["--trigger", "level"]),
        ("peregrine-edge", ["--trigger", "edge"]),
        ("peregrine-oneshot", ["--trigger", "oneshot"]),
        ("peregrine-libev-epoll", ["--engine", "libev", "--libev-backend", "epoll"]),
        ("peregrine-libev-poll", ["--engine", "libev", "--libev-backend", "poll"]),
        ("peregrine-libev-select", ["--engine", "libev", "--libev-backend", "select"]),
        ("peregrine-swift-level", ["--engine", "swift", "--trigger", "level"]),
        ("peregrine-swift-edge", ["--engine", "swift", "--trigger", "edge"]),
        ("peregrine-threaded", ["--engine", "threaded"]),
        ("peregrine-blocking", ["--engine", "blocking"]),
    ]

    def engine_contenders(self, app="hello", skip=()):
        c = []
        for name, flags in self.ENGINE_MODES:
            if name not in skip:
                c.append((name, lambda p, f=flags: [PEREGRINE, "serve", "--app", app, "--host", "127.0.0.1",
                                                    "--port", str(p)] + f))
        return c

    def echo_contenders(self):
        # The blocking engine serves one connection at a time: echo_load's
        # concurrent connections would wait on each other, so it sits this out.
        c = [("echo-floor", lambda p: [os.path.join(self.scratch, "echo_floor"), str(p)])]
        c += self.engine_contenders("echo", skip=("peregrine-blocking",))
        c.append(("python-epoll", lambda p: [sys.executable, os.path.join(BENCH, "python", "epoll_server.py"),
                                             "--host", "127.0.0.1", "--port", str(p), "--echo"]))
        return c

    def wanted(self, name):
        """--contenders narrows every scenario; the floors always run (ratios need them)."""
        if not self.args.contenders or name in ("floor", "echo-floor"):
            return True
        return any(name.startswith(p) for p in self.args.contenders.split(","))

    def start_all(self, contenders):
        servers = []
        for name, argv in contenders:
            if not self.wanted(name):
                continue
            p = self.port()
            servers.append(Server(name, argv(p), p, self.scratch))
        return servers

    # -- the round-robin measurement loop
    def measure(self, contenders, one_run, warm=None):
        """one_run(server) -> (units, metrics dict). Returns name -> {metric: [values]}."""
        servers = self.start_all(contenders)
        results = {s.name: {} for s in servers}
        try:
            for s in servers:
                if warm:
                    warm(s)
            for rep in range(self.repeat):
                # Each repetition starts one contender later, so no contender always runs
                # right after the same neighbour (whose connections, in TIME_WAIT or still
                # closing, the kernel is still handling).
                shift = rep % len(servers) if servers else 0
                for s in servers[shift:] + servers[:shift]:
                    c0 = cpu_ticks(s.pid)
                    units, metrics = one_run(s)
                    c1 = cpu_ticks(s.pid)
                    if units > 0:
                        metrics["cpu_us"] = (c1 - c0) / HZ * 1e6 / units
                    for k, v in metrics.items():
                        results[s.name].setdefault(k, []).append(v)
        finally:
            for s in servers:
                s.stop()
        return results

    def table(self, results, columns, floor, vs="floor", cpu_unit="CPU-µs"):
        """Markdown table of medians; columns: [(metric, header, format)]; the ratio column is CPU
        relative to the contender named `floor` (headed `vs <vs>`)."""
        head = "| server | " + " | ".join(h for _, h, _ in columns) + f" | {cpu_unit} spread | vs {vs} |"
        rows = [head, "|" + "---|" * (len(columns) + 3)]
        floor_cpu = median(results.get(floor, {}).get("cpu_us", []))
        out = []
        for name, metrics in results.items():
            cells = []
            for key, _, fmt in columns:
                v = median(metrics.get(key, []))
                cells.append(fmt.format(v) if v == v else "–")
            cpu = median(metrics.get("cpu_us", []))
            cells.append(spread(metrics.get("cpu_us", []), "{:.2f}"))
            ratio = cpu / floor_cpu if floor_cpu and cpu == cpu else float("nan")
            rows.append(f"| {name} | " + " | ".join(cells) + (f" | {ratio:.2f}× |" if ratio == ratio else " | – |"))
            out.append((name, cpu, ratio, median(metrics.get("rps", []))))
        return "\n".join(rows), out

    # ------------------------------------------------------------ scenarios

    def wrk(self, port, connections, script=None, seconds=None):
        cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds or self.duration}s", "--latency"]
        if script:
            cmd += ["-s", script]
        r = load(cmd + [f"http://127.0.0.1:{port}/"], timeout=(seconds or self.duration) + 60)
        text = r.stdout
        n = re.search(r"(\d+) requests in", text)
        rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
        p50 = re.search(r"\n\s+50%\s+(\S+)", text)
        p99 = re.search(r"\n\s+99%\s+(\S+)", text)
        errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
        err = (sum(map(int, errors.groups())) if errors else 0) + (int(non2xx.group(1)) if non2xx else 0)
        return (int(n.group(1)) if n else 0,
                {"rps": float(rps.group(1)) if rps else 0.0,
                 "p50_us": duration_us(p50.group(1)) if p50 else float("nan"),
                 "p99_us": (duration_us(p99.group(1)) or float("nan")) if p99 else float("nan"),
                 "errors": err})

    WRK_COLUMNS = [("rps", "requests/s", "{:,.0f}"), ("cpu_us", "CPU-µs/req", "{:.2f}"),
                   ("p50_us", "p50 µs", "{:,.0f}"), ("p99_us", "p99 µs", "{:,.0f}"), ("errors", "errors", "{:.0f}")]

    def scenario_keepalive(self):
        for conns in (100, 1000):
            res = self.measure(self.http_contenders(),
                               lambda s, c=conns: self.wrk(s.port, c),
                               warm=lambda s, c=conns: self.wrk(s.port, c, seconds=1))
            md, rows = self.table(res, self.WRK_COLUMNS, "floor")
            self.sections.append((f"1. Keep-alive hello, `wrk -t1 -c{conns} -d{self.duration}s`", md))
            self.data[f"keepalive-c{conns}"] = rows
            if conns == 100:
                for name, _, ratio, _ in rows:
                    if name.startswith("peregrine-"):
                        self.verdicts.append((f"keep-alive, Swift hello handler ({name}) ≤ 1.10× floor",
                                              f"{ratio:.2f}×", ratio <= 1.10))
                    # The C engine at the floor: the tighter target, on level and edge.
                    if name in ("peregrine-level", "peregrine-edge"):
                        self.verdicts.append((f"keep-alive, C engine at the floor ({name}) ≤ 1.05× floor",
                                              f"{ratio:.2f}×", ratio <= 1.05))

    def scenario_engines(self):
        """Every engine, same app, same load: the issue-4 comparison."""
        c = [self.floor_contender()] + self.engine_contenders()
        res = self.measure(c, lambda s: self.wrk(s.port, 100), warm=lambda s: self.wrk(s.port, 100, seconds=1))
        md, rows = self.table(res, self.WRK_COLUMNS, "floor")
        note = ("The blocking engine answers one request per connection (`Connection: close`) and serves one "
                "client at a time, so wrk reconnects after every answer and most of its 100 connections wait in "
                "the backlog; `errors` counts wrk's socket errors and timeouts.")
        self.sections.append((f"1b. Every engine, keep-alive hello, `wrk -t1 -c100 -d{self.duration}s`", md + "\n\n" + note))
        self.data["engines"] = rows
        for name, _, ratio, rps in rows:
            if name.startswith("peregrine-swift"):
                self.verdicts.append((f"pure-Swift engine ({name}) ≤ 1.25× floor", f"{ratio:.2f}×", ratio <= 1.25))
            if name == "peregrine-blocking":
                runs = res[name].get("rps", [])
                done = len(runs) == self.repeat and all(r > 0 for r in runs)
                self.verdicts.append(("blocking engine completes `wrk -t1 -c100` keep-alive",
                                      f"{rps:,.0f} req/s, errors {median(res[name].get('errors', [])):.0f}", done))

    # -- user-space instructions per request (callgrind): the figure that does not move with the machine's load.
    # callgrind_control cannot be used: it reaches a process blocked in epoll_wait only through ptrace, which
    # this machine refuses, so each contender runs twice instead and the difference is taken.
    INSTR_SECONDS = 3        # load window under callgrind (about 50 times slower than native)

    def callgrind_run(self, name, argv, load_seconds):
        """Runs a contender under callgrind to its exit: warm-up, optional load. Returns
        (instructions of its whole process tree over its life, requests served)."""
        prefix = f"cg-{name}-{load_seconds}-{self.port()}"
        # nginx's worker runs as nobody when started as root: it must be able to write its counts too.
        out_dir = os.path.join(self.scratch, "callgrind")
        os.makedirs(out_dir, exist_ok=True)
        os.chmod(self.scratch, 0o711)
        os.chmod(out_dir, 0o1777)
        vg = ["valgrind", "--tool=callgrind", "--trace-children=yes",
              "--callgrind-out-file=" + os.path.join(out_dir, prefix + ".%p"), "--dump-instr=no"]
        p = self.port()
        s = Server(name, vg + argv(p), p, self.scratch, start_timeout=120)
        try:
            served, _ = self.wrk(p, 10, seconds=1)              # warm-up: caches, pools, lazy set-up
            if load_seconds:
                n, _ = self.wrk(p, 10, seconds=load_seconds)
                served += n
        finally:
            s.stop(timeout=60)                               # callgrind writes its counts at exit
        total = 0
        for f in os.listdir(out_dir):
            if f.startswith(prefix + "."):
                with open(os.path.join(out_dir, f)) as fh:
                    m = re.search(r"^summary:\s+(\d+)", fh.read(), re.M)
                total += int(m.group(1)) if m else 0
        return total, served

    def instructions_per_request(self, name, argv):
        """(instructions per request, requests in the difference): a loaded run minus an idle one, so
        start-up, warm-up and exit cancel out."""
        idle, idle_served = self.callgrind_run(name, argv, 0)
        loaded, loaded_served = self.callgrind_run(name, argv, self.INSTR_SECONDS)
        n = loaded_served - idle_served
        return ((loaded - idle) / n if n > 0 else float("nan")), n

    def scenario_instructions(self):
        """User-space instructions per keep-alive hello request: floor, every engine, nginx, SwiftNIO."""
        if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
            self.sections.append(("1c. User-space instructions per request (callgrind)",
                                  "not measured: valgrind is not installed (`apt-get install valgrind`)"))
            self.verdicts.append(("user-space instructions per keep-alive request measured", "valgrind missing", None))
            return
        # valgrind cannot read a Swift release binary's debug info; a stripped copy runs fine.
        stripped = os.path.join(self.scratch, "peregrine-stripped")
        run(["strip", "-o", stripped, PEREGRINE])
        contenders = [self.floor_contender()]
        for name, flags in self.ENGINE_MODES:
            contenders.append((name, lambda p, f=flags: [stripped, "serve", "--host", "127.0.0.1", "--port", str(p)] + f))
        nio_stripped = None
        if self.have_nio:
            nio_stripped = os.path.join(self.scratch, "nio-hello-stripped")
            run(["strip", "-o", nio_stripped, NIO_HELLO])
        contenders += self.anchor_contenders(nio_stripped)
        repeats = 1 if self.quick else min(self.repeat, 3)
        results = {}
        for _ in range(repeats):                      # interleaved, like the CPU-time scenarios
            for name, argv in contenders:
                if not self.wanted(name):
                    continue
                per_req, n = self.instructions_per_request(name, argv)
                r = results.setdefault(name, {"instr": [], "requests": []})
                r["instr"].append(per_req)
                r["requests"].append(n)
        floor = median(results.get("floor", {}).get("instr", []))
        lines = ["| server | instructions / request | spread | requests counted | vs floor |",
                 "|---|---:|---:|---:|---:|"]
        rows = []
        for name, r in results.items():
            v = median(r["instr"])
            ratio = v / floor if floor and v == v else float("nan")
            lines.append(f"| {name} | {v:,.0f} | {spread(r['instr'], '{:,.0f}')} | {median(r['requests']):,.0f} | "
                         f"{ratio:.2f}× |")
            rows.append((name, v, ratio))
        note = (f"`valgrind --tool=callgrind` counts the instructions the server executes in user space (the kernel's "
                f"TCP path, the same for every contender, is not in it), so this figure does not move with the "
                f"machine's load. Per contender, two runs under callgrind from start to exit: one with a 1 s "
                f"`wrk -t1 -c10` warm-up only, one with the warm-up and `wrk -t1 -c10 -d{self.INSTR_SECONDS}s`; the "
                f"difference of their instructions (whole process tree) over the difference of the requests served, "
                f"so start-up, warm-up and exit cancel out. Swift binaries run stripped (valgrind cannot read their debug info). "
                f"{repeats} repetition(s), interleaved; median and min–max.")
        self.sections.append(("1c. User-space instructions per keep-alive hello request (callgrind)",
                              "\n".join(lines) + "\n\n" + note))
        self.data["instructions"] = rows
        by_name = {name: v for name, v, _ in rows}
        for name in ("peregrine-level", "peregrine-edge", "peregrine-swift-level", "peregrine-swift-edge"):
            if name in by_name:
                v = by_name[name]
                self.verdicts.append((f"user-space instructions per keep-alive hello ({name}) ≤ 1,500",
                                      f"{v:,.0f}", v <= 1500))
        for trigger in ("level", "edge"):
            c, sw = by_name.get(f"peregrine-{trigger}"), by_name.get(f"peregrine-swift-{trigger}")
            if c is not None and sw is not None:
                self.verdicts.append((f"C engine's instructions per request no more than the Swift engine's ({trigger})",
                                      f"{c:,.0f} vs {sw:,.0f}", c <= sw))

    # -- Hummingbird 2's hello router (integrations/hummingbird/peregrine-hummingbird/Sources/HelloShared), the same
    # router on its own SwiftNIO server (one event loop) and on Peregrine through the adapter (one loop).
    def hummingbird_contenders(self, binary=lambda path: path):
        if not self.have_hb:
            return []
        nio, prg = binary(HB_NIO_HELLO), binary(HB_PEREGRINE_HELLO)
        return [("hummingbird", lambda p: [nio, str(p), "--host", "127.0.0.1", "--threads", "1"]),
                ("hb-peregrine", lambda p: [prg, str(p), "--host", "127.0.0.1", "--threads", "1"]),
                ("hb-peregrine-swift", lambda p: [prg, str(p), "--host", "127.0.0.1", "--threads", "1",
                                                  "--engine", "swift"])]

    def scenario_hummingbird(self):
        """Hummingbird on NIO vs on Peregrine: CPU, instructions and allocations per keep-alive hello request."""
        title = "1d. Hummingbird 2's hello router: on its own SwiftNIO server and on Peregrine"
        if not self.have_hb:
            self.sections.append((title, "not measured: integrations/hummingbird/peregrine-hummingbird did not build "
                                         "(or `--no-hummingbird`); see the log"))
            self.verdicts.append(("Hummingbird on Peregrine ≤ 0.5× Hummingbird on NIO, CPU per request",
                                  "not built", None))
            return
        c = [self.floor_contender()] + self.hummingbird_contenders()
        res = self.measure(c, lambda s: self.wrk(s.port, 100), warm=lambda s: self.wrk(s.port, 100, seconds=1))
        md, rows = self.table(res, self.WRK_COLUMNS, "floor")
        cpu = {name: v for name, v, _, _ in rows}
        nio = cpu.get("hummingbird", float("nan"))
        lines = [md, "", "| on Peregrine | CPU per request vs Hummingbird on NIO |", "|---|---:|"]
        for name in ("hb-peregrine", "hb-peregrine-swift"):
            if name in cpu and nio == nio and nio > 0:
                ratio = cpu[name] / nio
                lines.append(f"| {name} | {ratio:.2f}× |")
                self.verdicts.append((f"Hummingbird on Peregrine ({name}) ≤ 0.5× Hummingbird on NIO, CPU per request",
                                      f"{ratio:.2f}×", ratio <= 0.5))
        # Allocations per request, whole process (the LD_PRELOAD counter).
        lines += ["", "| server | malloc calls | requests | per request |", "|---|---:|---:|---:|"]
        for name, argv in self.hummingbird_contenders():
            if not self.wanted(name):
                continue
            got = self.allocations_per_request(name, [], argv=argv)
            if not got:
                lines.append(f"| {name} | – | – | – |")
                continue
            calls, n = got
            lines.append(f"| {name} | {calls:,} | {n:,} | **{calls / n:.2f}** |")
        # User-space instructions (callgrind), which do not move with the machine's load.
        if shutil.which("valgrind"):
            stripped = {}
            for path in (HB_NIO_HELLO, HB_PEREGRINE_HELLO):
                stripped[path] = os.path.join(self.scratch, os.path.basename(path) + "-stripped")
                run(["strip", "-o", stripped[path], path])
            lines += ["", "| server | instructions / request | requests counted |", "|---|---:|---:|"]
            instr = {}
            for name, argv in self.hummingbird_contenders(binary=lambda path: stripped[path]):
                if not self.wanted(name):
                    continue
                try:
                    per_req, n = self.instructions_per_request(name, argv)
                except RuntimeError as e:
                    # valgrind 3.19 stops with an internal SIGSEGV on these binaries here (seen 2026-12-02).
                    log(f"bench: {name} under callgrind: {e}")
                    lines.append(f"| {name} | not measured: the server did not run under callgrind ({e}) | – |")
                    continue
                instr[name] = per_req
                lines.append(f"| {name} | {per_req:,.0f} | {n:,} |")
            if instr.get("hummingbird"):
                for name in ("hb-peregrine", "hb-peregrine-swift"):
                    if name in instr:
                        self.verdicts.append((f"Hummingbird on Peregrine ({name}): user-space instructions per request "
                                              "vs Hummingbird on NIO", f"{instr[name] / instr['hummingbird']:.2f}×", None))
        note = ("The same router (`makeHelloRouter`, `GET /` and `GET /**`: `Hello, World!`) and the same Hummingbird "
                "2.28.1 build: `hb-nio-hello` runs it on Hummingbird's own server (SwiftNIO, one event loop), "
                "`hb-peregrine-hello` on Peregrine through `PeregrineHummingbird` (C epoll engine, or the Swift engine, "
                "one loop). Allocations: malloc-family calls per request over a `wrk -t1 -c100` window, whole process. "
                "Instructions: callgrind as in 1c, one run each. The machine is shared with other builds while this runs: "
                "the CPU figures move with its load, the instruction counts do not.")
        self.sections.append((title, "\n".join(lines) + "\n\n" + note))
        self.data["hummingbird"] = rows

    def scenario_pipelined(self):
        script = os.path.join(BENCH, "wrk", "pipeline.lua")
        extra = [("peregrine-level-cork", ["--cork", "--no-nodelay"]), ("peregrine-edge-cork", ["--trigger", "edge", "--cork", "--no-nodelay"])]
        res = self.measure(self.http_contenders(extra), lambda s: self.wrk(s.port, 100, script),
                           warm=lambda s: self.wrk(s.port, 100, script, seconds=1))
        md, rows = self.table(res, self.WRK_COLUMNS, "floor")
        self.sections.append((f"2. Pipelined 16 deep (`wrk -t1 -c100 -s bench/wrk/pipeline.lua`), "
                              "level vs edge vs oneshot, TCP_NODELAY vs TCP_CORK", md))
        self.data["pipelined"] = rows
        for name, _, ratio, _ in rows:
            if name in ("peregrine-level", "peregrine-edge", "peregrine-oneshot"):
                self.verdicts.append((f"pipelined ({name}) ≤ 2× floor", f"{ratio:.2f}×", ratio <= 2.0))

    def ab(self, port, concurrency, requests, gnuplot_file=None):
        cmd = ["ab", "-q", "-r", "-s", "10", "-c", str(concurrency), "-n", str(requests)]
        if gnuplot_file:
            cmd += ["-g", gnuplot_file]
        r = load(cmd + [f"http://127.0.0.1:{port}/"], timeout=300)
        t = r.stdout
        done = re.search(r"Complete requests:\s+(\d+)", t)
        failed = re.search(r"Failed requests:\s+(\d+)", t)
        rps = re.search(r"Requests per second:\s+([\d.]+)", t)
        p50 = re.search(r"\n\s+50%\s+(\d+)", t)
        p99 = re.search(r"\n\s+99%\s+(\d+)", t)
        longest = re.search(r"\n\s+100%\s+(\d+)", t)
        return (int(done.group(1)) if done else 0,
                {"rps": float(rps.group(1)) if rps else 0.0, "errors": int(failed.group(1)) if failed else 0,
                 "p50_us": int(p50.group(1)) * 1000 if p50 else float("nan"),
                 "p99_us": int(p99.group(1)) * 1000 if p99 else float("nan"),
                 "max_ms": int(longest.group(1)) if longest else float("nan")})

    # The event engines whose cost per connection (accept, watch, close) and per
    # idle connection (its record) the connection scenarios compare with nginx.
    CONNECTION_ENGINES = ("peregrine-libev-epoll", "peregrine-swift-level", "peregrine-swift-edge")

    def connection_contenders(self):
        return self.http_contenders([m for m in self.ENGINE_MODES if m[0] in self.CONNECTION_ENGINES])

    def scenario_connection_per_request(self):
        n = 2000 if self.quick else 20000
        res = self.measure(self.connection_contenders(), lambda s: self.ab(s.port, 100, n),
                           warm=lambda s: self.ab(s.port, 100, 1000))
        md, rows = self.table(res, [("rps", "requests/s", "{:,.0f}"), ("cpu_us", "CPU-µs/req", "{:.2f}"),
                                    ("p50_us", "p50 µs", "{:,.0f}"), ("p99_us", "p99 µs", "{:,.0f}"),
                                    ("errors", "failed", "{:.0f}")], "floor")
        self.sections.append((f"3. One connection per request, HTTP/1.0 (`ab -c100 -n{n}`)", md))
        self.data["ab"] = rows
        # CPU per connection against nginx's in the same run (the machine may be shared: ratios, not µs).
        nginx = median(res.get("nginx", {}).get("cpu_us", []))
        for name, cpu, _, _ in rows:
            if name.startswith("peregrine-") and nginx == nginx and nginx > 0 and cpu == cpu:
                ratio = cpu / nginx
                self.verdicts.append((f"≤ 0.85× nginx CPU per connection ({name})", f"{ratio:.2f}×", ratio <= 0.85))

    def echo_run(self, port, size):
        r = load([os.path.join(self.scratch, "echo_load"), "127.0.0.1", str(port), "10", str(size), str(self.duration)],
                 timeout=self.duration + 60)
        m = re.search(r"messages=(\d+).*msgs_per_s=([\d.]+) MiB_per_s=([\d.]+) errors=(\d+) mismatches=(\d+)", r.stdout)
        if not m:
            return 0, {"errors": 1}
        return int(m.group(1)), {"rps": float(m.group(2)), "mib_s": float(m.group(3)),
                                 "errors": int(m.group(4)) + int(m.group(5))}

    def scenario_echo(self):
        for size in (64, 16384):
            res = self.measure(self.echo_contenders(), lambda s, z=size: self.echo_run(s.port, z))
            md, rows = self.table(res, [("rps", "messages/s", "{:,.0f}"), ("mib_s", "MiB/s", "{:,.1f}"),
                                        ("cpu_us", "CPU-µs/message", "{:.2f}"), ("errors", "errors", "{:.0f}")],
                                  "echo-floor")
            self.sections.append((f"4. Raw TCP echo, {size}-byte messages, 10 connections, one message in flight each "
                                  "(`bench/echo/echo_load.c`)", md))
            self.data[f"echo-{size}"] = rows

    def scenario_idle(self):
        # 19,000: close to the 20,000 descriptors a process may hold here
        # (scripts/idle_clients.py raises its own limit to the hard one).
        count = 1000 if self.quick else 19000
        lines = ["| server | RSS before (KiB) | RSS with idle connections (KiB) | bytes per connection | "
                 "projected RSS at 100,000 |", "|---|---:|---:|---:|---:|"]
        for name, argv in self.connection_contenders():
            if not self.wanted(name):
                continue
            p = self.port()
            s = Server(name, argv(p), p, self.scratch)
            try:
                # A few requests first: what the first ones set up once (buffer
                # pool, lazily initialised runtime state) is not per connection.
                for _ in range(3):
                    self.ab(p, 1, 1)
                time.sleep(0.3)
                before = rss_kb(s.pid)
                holder = subprocess.Popen([sys.executable, os.path.join(ROOT, "scripts", "idle_clients.py"),
                                           "--port", str(p), "--count", str(count), "--request", "--hold", "120"],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                ready = holder.stdout.readline()
                time.sleep(0.5)
                after = rss_kb(s.pid)
                holder.stdin.close()
                holder.wait(60)
                if not ready.startswith("ready"):
                    lines.append(f"| {name} | {before} | – | failed: {ready.strip()} | – |")
                    continue
                per = (after - before) * 1024 / count
                lines.append(f"| {name} | {before:,} | {after:,} | {per:,.0f} | {(before * 1024 + per * 100000) / 2**20:,.1f} MiB |")
                if name.startswith("peregrine-"):
                    self.verdicts.append((f"≤ 256 B per idle connection ({name})", f"{per:.0f} B", per <= 256))
            finally:
                s.stop()
        self.sections.append((f"5. Idle keep-alive connections: RSS of the server's process tree with {count:,} "
                              "idle connections (each served one request first). Descriptors are capped at 20,000 "
                              "per process here, so 100,000 is projected from the slope, not measured.",
                              "\n".join(lines)))

    def scenario_backlog(self):
        n = 1000 if self.quick else 5000
        lines = ["| backlog | ab -c | requests/s | failed | p99 ms | longest ms | stalled ≥1 s | "
                 "ListenOverflows | ListenDrops |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        rows = []
        for backlog in (1, 8, 50, 128, 1024):
            for conc in (100, 500):
                p = self.port()
                s = Server(f"peregrine-backlog-{backlog}",
                           [PEREGRINE, "serve", "--host", "127.0.0.1", "--port", str(p), "--backlog", str(backlog)],
                           p, self.scratch)
                try:
                    gp = os.path.join(self.scratch, f"ab-{backlog}-{conc}.tsv")
                    before = netstat_tcpext()
                    _, m = self.ab(p, conc, n, gnuplot_file=gp)
                    after = netstat_tcpext()
                    stalls = 0
                    if os.path.exists(gp):
                        with open(gp) as f:
                            next(f, None)
                            stalls = sum(1 for line in f if len(line.split("\t")) > 4 and int(line.split("\t")[4]) >= 1000)
                    over = after.get("ListenOverflows", 0) - before.get("ListenOverflows", 0)
                    drops = after.get("ListenDrops", 0) - before.get("ListenDrops", 0)
                    lines.append(f"| {backlog} | {conc} | {m['rps']:,.0f} | {m['errors']} | {m['p99_us'] / 1000:,.0f} | "
                                 f"{m['max_ms']:,.0f} | {stalls} | {over} | {drops} |")
                    rows.append((backlog, conc, m["rps"], m["p99_us"] / 1000, stalls, over))
                finally:
                    s.stop()
        self.sections.append((f"6. Backlog sweep: `peregrine serve --backlog B`, `ab -cC -n{n}` one connection per "
                              "request; ListenOverflows/ListenDrops are the /proc/net/netstat deltas over the run "
                              "(system-wide, loopback only here). A dropped SYN is retried after 1 s: the stalls.",
                              "\n".join(lines)))
        self.data["backlog"] = rows

    def scenario_readiness(self):
        exe = os.path.join(self.scratch, "readiness")
        counts = [100, 1000] if self.quick else [100, 300, 1000, 3000, 10000, 19000]
        mechanisms = ["select", "poll", "epoll-lt", "epoll-et", "libev-select", "libev-poll", "libev-epoll"]
        results = {}
        for n in counts:
            for mech in mechanisms:
                # About a second of CPU per run: select and poll cost ~150 ns per
                # watched descriptor per wakeup, epoll a constant ~1.5 µs.
                estimate_ns = 1500 + (140 * n if mech.endswith(("select", "poll")) else 0)
                iterations = max(500, min(200000, int((1e8 if self.quick else 1e9) / estimate_ns)))
                if mech == "select" and n > 1000:
                    continue   # descriptors past FD_SETSIZE (1024): glibc's fd_set cannot hold them
                    # (libev's select backend sizes its own bit sets, so libev-select goes on)
                values = []
                for _ in range(self.repeat):
                    r = run(["taskset", "-c", SERVER_CORE, exe, mech, str(n), str(iterations)], timeout=600, check=False)
                    m = re.search(r"cpu_ns_per_event=([\d.]+)", r.stdout)
                    if m:
                        values.append(float(m.group(1)))
                if values:
                    results[(n, mech)] = median(values)
        lines = ["| idle descriptors | " + " | ".join(mechanisms) + " |", "|---:|" + "---:|" * len(mechanisms)]
        for n in counts:
            cells = [f"{results[(n, m)]:,.0f}" if (n, m) in results else "–" for m in mechanisms]
            lines.append(f"| {n:,} | " + " | ".join(cells) + " |")
        self.sections.append(("7. Readiness scaling: CPU-ns per wakeup for one active descriptor among N idle ones "
                              "(`bench/readiness/readiness.c`: write a byte, wait, find it, read it). The libev rows run one "
                              "ev_loop restricted to that backend with an ev_io per descriptor and `ev_run(EVRUN_ONCE)` per "
                              "wakeup. Plain select stops at FD_SETSIZE (1024); libev's select backend sizes its own bit "
                              "sets and goes on. Descriptors are capped at 20,000 per process here, so the sweep ends at "
                              "19,000, not 50,000.", "\n".join(lines)))
        self.data["readiness"] = [(n, m, results[(n, m)]) for n in counts for m in mechanisms if (n, m) in results]

    def allocations_per_request(self, name, flags, argv=None):
        """malloc-family calls per keep-alive request, whole process (LD_PRELOAD counter). `argv(port)`
        runs another server than `peregrine serve` + flags."""
        p = self.port()
        cmd = argv(p) if argv else [PEREGRINE, "serve", "--host", "127.0.0.1", "--port", str(p)] + flags
        env_argv = ["env", f"LD_PRELOAD={os.path.join(self.scratch, 'alloccount.so')}"] + cmd
        log_name = f"alloccount-{name}"
        s = Server(log_name, env_argv, p, self.scratch)
        try:
            self.wrk(p, 100, seconds=1)
            os.kill(s.pid, signal.SIGUSR1)   # env execs peregrine: same pid
            time.sleep(0.2)
            n, _ = self.wrk(p, 100)
            os.kill(s.pid, signal.SIGUSR1)
            time.sleep(0.2)
        finally:
            s.stop()
        with open(os.path.join(self.scratch, f"{log_name}.log")) as f:
            counts = [int(x) for x in re.findall(r"alloccount (\d+)", f.read())]
        if len(counts) >= 2 and n:
            return counts[1] - counts[0], n
        return None

    def scenario_allocations(self):
        # Blocking answers one request per connection: its per-connection
        # setup is the point of that engine, not a hot-path allocation.
        lines = ["| engine | malloc calls | requests | per request |", "|---|---:|---:|---:|"]
        for name, flags in self.ENGINE_MODES:
            if name in ("peregrine-blocking",) or name.endswith(("-poll", "-select", "-oneshot")) or not self.wanted(name):
                continue
            got = self.allocations_per_request(name, flags)
            if not got:
                lines.append(f"| {name} | – | – | – |")
                continue
            calls, n = got
            per = calls / n
            lines.append(f"| {name} | {calls:,} | {n:,} | **{per:.6f}** |")
            if name == "peregrine-level":
                self.verdicts.append(("0 allocations per request, hello on the C engine", f"{per:.6f}", per == 0))
            elif name.startswith("peregrine-swift"):
                self.verdicts.append((f"0 allocations per request, hello on the pure-Swift engine ({name})",
                                      f"{per:.6f}", per == 0))
        self.sections.append(("Allocations: malloc-family calls per request, release binary, whole process "
                              "(LD_PRELOAD counter, `Tests/CTestSupport/alloc_counter.c`), keep-alive hello, `wrk -t1 -c100`",
                              "\n".join(lines)))

    def scenario_micro(self):
        pkg = os.path.join(BENCH, "swift")
        r = run(["swift", "package", "--package-path", pkg, "benchmark", "--target", "ParserBenchmarks",
                 "--no-progress"], timeout=1800, check=False)
        if r.returncode != 0:
            self.sections.append(("9. Micro: HTTP parser", "did not run:\n\n```\n" + (r.stderr or r.stdout)[-1500:] + "\n```"))
            return
        rows = parse_benchmark_tables(r.stdout)
        if not rows:
            self.sections.append(("9. Micro: HTTP parser", "no results parsed:\n\n```\n" + r.stdout[-3000:] + "\n```"))
            return
        lines = ["| benchmark | p50 ns | p99 ns | mallocs (p50) | samples |", "|---|---:|---:|---:|---:|"]
        for name, m in rows:
            lines.append(f"| {name} | {m.get('p50_ns', '–')} | {m.get('p99_ns', '–')} | {m.get('mallocs', '–')} | {m.get('samples', '–')} |")
        self.sections.append(("9. Micro: HTTP parser, per parse (ordo-one/benchmark, "
                              "`cd bench/swift && swift package benchmark --target ParserBenchmarks`): the C parser "
                              "(csrc/http1.c) and the pure-Swift engine's parser on the same inputs.", "\n".join(lines)))
        allocs = [int(m["mallocs"]) for _, m in rows if str(m.get("mallocs", "")).isdigit()]
        if allocs:
            self.verdicts.append(("0 allocations per parse, C and Swift parsers (micro)", str(max(allocs)), max(allocs) == 0))

    # -- issue 11: the Swift API's ways to answer, against the floor

    API_MODES = [
        ("closure-level", ["--trigger", "level"]),
        ("closure-swift-level", ["--engine", "swift", "--trigger", "level"]),
        ("async-level", ["--app", "hello-async", "--trigger", "level"]),
        ("async-swift-level", ["--app", "hello-async", "--engine", "swift", "--trigger", "level"]),
        ("offloaded-level", ["--app", "sleep", "--sleep-ms", "0", "--trigger", "level"]),
        ("offloaded-swift-level", ["--app", "sleep", "--sleep-ms", "0", "--engine", "swift", "--trigger", "level"]),
    ]

    def scenario_api(self):
        """Keep-alive hello through each way the Swift API answers: a closure on the loop, an async
        handler (`--app hello-async`), an offloaded handler (`--app sleep --sleep-ms 0`), on the C
        epoll engine and the Swift engine, beside the floor, nginx and SwiftNIO; then the async
        handler's instructions and allocations per request."""
        c = [self.floor_contender()]
        for name, flags in self.API_MODES:
            c.append((name, lambda p, f=flags: [PEREGRINE, "serve", "--host", "127.0.0.1", "--port", str(p)] + f))
        c += self.anchor_contenders() + self.hummingbird_contenders()
        res = self.measure(c, lambda s: self.wrk(s.port, 100), warm=lambda s: self.wrk(s.port, 100, seconds=1))
        md, rows = self.table(res, self.WRK_COLUMNS, "floor")
        self.sections.append((f"11. The Swift API's answers, keep-alive hello, `wrk -t1 -c100 -d{self.duration}s`", md))
        self.data["api"] = rows
        targets = {"closure": 1.10, "async": 1.30, "offloaded": 2.0}
        for name, _, ratio, _ in rows:
            kind = name.split("-")[0]
            if kind in targets:
                self.verdicts.append((f"{name}: CPU per request ≤ {targets[kind]:.2f}× floor", f"{ratio:.2f}×",
                                      ratio <= targets[kind]))
        # Instructions (callgrind) for every answer, both engines (offloaded: the loop and the pool
        # together, the whole process).
        if shutil.which("valgrind"):
            stripped = os.path.join(self.scratch, "peregrine-stripped")
            run(["strip", "-o", stripped, PEREGRINE])
            lines = ["| server | instructions / request | requests counted |", "|---|---:|---:|"]
            for name, flags in self.API_MODES:
                if not self.wanted(name):
                    continue
                v, n = self.instructions_per_request(
                    "api-" + name, lambda p, f=flags: [stripped, "serve", "--host", "127.0.0.1", "--port", str(p)] + f)
                lines.append(f"| {name} | {v:,.0f} | {n:,} |")
            self.sections.append(("11b. User-space instructions per request, closure, async and offloaded hello (callgrind, "
                                  "loaded run minus idle run, one repetition)", "\n".join(lines)))
        # Allocations per request, every answer (targets: closure and async).
        lines = ["| server | malloc calls | requests | per request |", "|---|---:|---:|---:|"]
        for name, flags in self.API_MODES:
            if not self.wanted(name):
                continue
            got = self.allocations_per_request("api-" + name, flags)
            if not got:
                lines.append(f"| {name} | – | – | – |")
                continue
            calls, n = got
            per = calls / n
            lines.append(f"| {name} | {calls:,} | {n:,} | **{per:.3f}** |")
            if name.startswith("async"):
                self.verdicts.append((f"allocations per async request ({name}) ≤ 2", f"{per:.3f}", per <= 2))
            elif name.startswith("closure"):
                self.verdicts.append((f"0 allocations per closure request ({name})", f"{per:.6f}", per == 0))
        self.sections.append(("11c. Allocations per request, closure, async and offloaded hello (LD_PRELOAD counter, whole process)",
                              "\n".join(lines)))

    # -- issue 10: streamed uploads, sendfile downloads, many slow response streams

    def transfer_contenders(self, app, nginx_template, root=None):
        """nginx with `nginx_template` (it discards bodies, or serves `root` with sendfile) and the
        Peregrine engines of issue 10's figures, all running `--app app`."""
        c = []
        if self.have_nginx:
            c.append(("nginx", lambda p: [os.path.join(BENCH, "nginx", "run-nginx.sh"), str(p),
                                          tempfile.mkdtemp(prefix="nginx-", dir=self.scratch), nginx_template]
                      + ([root] if root else [])))
        extra = ["--root", root] if root else []
        for name, flags in self.ENGINE_MODES:
            if name in self.TRANSFER_ENGINES:
                c.append((name, lambda p, f=flags: [PEREGRINE, "serve", "--app", app, "--host", "127.0.0.1",
                                                    "--port", str(p)] + f + extra))
        return c

    TRANSFER_ENGINES = ("peregrine-level", "peregrine-edge", "peregrine-swift-level", "peregrine-swift-edge")
    TRANSFER_COLUMNS = [("gib_s", "GiB/s", "{:.2f}"), ("cpu_us", "CPU-ms/GiB", "{:,.0f}"),
                        ("rss_over_idle_mib", "peak RSS over idle (MiB)", "{:.1f}"), ("errors", "errors", "{:.0f}")]

    def make_file(self, name, mib):
        """A file of `mib` MiB of non-repeating-looking bytes (a 1 MiB random block, repeated)."""
        path = os.path.join(self.scratch, name)
        if not os.path.exists(path):
            block = os.urandom(1 << 20)
            with open(path, "wb") as f:
                for _ in range(mib):
                    f.write(block)
        return path

    def curls(self, s, cmds, expect_status, expect_bytes, timeout, framed=False):
        """Runs the curl commands ((argv, stdin file or None), one per client) at once on the load core,
        sampling the server's RSS every 20 ms. Returns (units, metrics) for measure(): units are
        GiB × 1000, so its `cpu_us` is CPU-ms per GiB. Each curl must print `STATUS BYTES` (-w);
        `framed`: BYTES includes chunked framing (curl's size_upload), so it is at least expect_bytes."""
        import threading
        peak = [rss_kb(s.pid)]
        stop = threading.Event()

        def sample():
            while not stop.wait(0.02):
                try:
                    peak[0] = max(peak[0], rss_kb(s.pid))
                except OSError:
                    return

        t = threading.Thread(target=sample, daemon=True)
        t.start()
        t0 = time.monotonic()
        procs = []
        try:
            for argv, stdin in cmds:
                procs.append(subprocess.Popen(["taskset", "-c", LOAD_CORE] + argv, stdout=subprocess.PIPE,
                                              stderr=subprocess.DEVNULL, text=True,
                                              stdin=open(stdin, "rb") if stdin else subprocess.DEVNULL))
            outs = []
            for p in procs:
                try:
                    outs.append(p.communicate(timeout=max(1, timeout - (time.monotonic() - t0)))[0])
                except subprocess.TimeoutExpired:
                    p.kill()
                    outs.append(p.communicate()[0])
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
                if p.stdin:
                    p.stdin.close()
            stop.set()
            t.join()
        elapsed = time.monotonic() - t0
        errors, moved = 0, 0
        for out in outs:
            f = out.split()
            n = int(f[1].split(".")[0]) if len(f) == 2 and f[1].split(".")[0].isdigit() else -1
            ok = len(f) == 2 and f[0] == str(expect_status) and (n == expect_bytes or (framed and n > expect_bytes))
            errors += 0 if ok else 1
            moved += expect_bytes if ok else 0
        gib = moved / 2**30
        idle = self.idle_rss.get(s.name, peak[0])
        # CPU per GiB in ms: measure() divides µs by `units`, so units = GiB * 1000.
        return gib * 1000, {"gib_s": gib / elapsed, "errors": errors,
                            "rss_over_idle_mib": (peak[0] - idle) / 1024}

    def transfer_table(self, key, title, res, note):
        md, rows = self.table(res, self.TRANSFER_COLUMNS, "nginx", vs="nginx", cpu_unit="CPU-ms")
        self.sections.append((title, md + "\n\n" + note))
        self.data[key] = rows
        return {name: ratio for name, _, ratio, _ in rows}

    def scenario_upload(self):
        """16 clients each POST a body (Content-Length, then chunked) to `--app upload`; nginx discards
        the same bodies (`return 200`). CPU per GiB vs nginx, and the server's RSS over its idle value."""
        clients = 16
        mib = 16 if self.quick else self.args.upload_mib
        body = self.make_file(f"upload-{mib}.bin", mib)
        self.idle_rss = {}
        timeout = 600
        for framing in ("content-length", "chunked"):
            def one_run(s, framing=framing):
                url = f"http://127.0.0.1:{s.port}/upload"
                base = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_upload}", "--max-time",
                        str(timeout), "-X", "POST"]
                if framing == "chunked":   # from stdin: curl frames it chunked
                    cmds = [(base + ["-T", "-", url], body) for _ in range(clients)]
                else:
                    # -T FILE streams the file with its Content-Length (--data-binary @FILE would first
                    # read all of it into each curl's memory: 16 × 256 MiB on a small machine).
                    cmds = [(base + ["-T", body, url], None) for _ in range(clients)]
                return self.curls(s, cmds, 200, mib << 20, timeout, framed=framing == "chunked")

            res = self.measure(self.transfer_contenders("upload", "nginx-upload.conf.in"), one_run,
                               warm=lambda s: self.idle_rss.setdefault(s.name, rss_kb(s.pid)))
            ratios = self.transfer_table(
                f"upload-{framing}",
                f"10a. Upload, {framing}: {clients} curl clients each POST {mib} MiB to `--app upload` "
                f"(nginx: `return 200`, the body discarded)", res,
                f"`curl -X POST {'-T - < file` (stdin: chunked)' if framing == 'chunked' else '-T file` (Content-Length)'}, "
                f"{clients} at once, pinned to core {LOAD_CORE}. CPU-ms per GiB of body received; `peak RSS over "
                f"idle`: the server's largest RSS (sampled every 20 ms during the run) minus its RSS at start. "
                f"An upload that got no 200, or a different byte count, counts as an error and its bytes do not count.")
            for name, ratio in ratios.items():
                if name.startswith("peregrine-"):
                    self.verdicts.append((f"upload {framing}: CPU per GiB ({name}) ≤ 1.10× nginx",
                                          f"{ratio:.2f}×" if ratio == ratio else "–", ratio <= 1.10 if ratio == ratio else None))
                    over = max(res[name].get("rss_over_idle_mib", [float("nan")]))
                    errs = sum(res[name].get("errors", []))
                    self.verdicts.append((f"upload {framing}: RSS within 32 MiB of idle ({name})",
                                          f"{over:+.1f} MiB, {errs:.0f} errors", over <= 32 and errs == 0))

    def scenario_download(self):
        """4 clients each GET a 1 GiB file from `--app static`; nginx serves it with `sendfile on`."""
        clients = 4
        mib = 64 if self.quick else self.args.download_mib
        root = os.path.join(self.scratch, "static")
        os.makedirs(root, exist_ok=True)
        # nginx's worker runs as nobody when started as root: it must reach and read the file.
        os.chmod(self.scratch, 0o711)
        os.chmod(root, 0o755)
        path = self.make_file(os.path.join("static", "download.bin"), mib)
        os.chmod(path, 0o644)
        self.idle_rss = {}
        timeout = 600

        def one_run(s):
            cmd = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", "--max-time", str(timeout),
                   f"http://127.0.0.1:{s.port}/{os.path.basename(path)}"]
            return self.curls(s, [(cmd, None)] * clients, 200, mib << 20, timeout)

        res = self.measure(self.transfer_contenders("static", "nginx-static.conf.in", root), one_run,
                           warm=lambda s: self.idle_rss.setdefault(s.name, rss_kb(s.pid)))
        ratios = self.transfer_table(
            "download", f"10b. Download: {clients} curl clients each GET a {mib} MiB file from `--app static` "
                        f"(nginx: `sendfile on`)", res,
            f"`curl -o /dev/null`, {clients} at once, pinned to core {LOAD_CORE}; the file is in the page cache. "
            f"CPU-ms per GiB sent.")
        for name, ratio in ratios.items():
            if name.startswith("peregrine-"):
                self.verdicts.append((f"download: CPU per GiB ({name}) ≤ 1.10× nginx (sendfile)",
                                      f"{ratio:.2f}×" if ratio == ratio else "–", ratio <= 1.10 if ratio == ratio else None))

    def stream_app_missing(self):
        """`peregrine serve --app stream` refused (an older build): the reason, or None when it runs."""
        p = self.port()
        try:
            s = Server("stream-probe", [PEREGRINE, "serve", "--app", "stream", "--host", "127.0.0.1",
                                        "--port", str(p)], p, self.scratch, start_timeout=10)
        except RuntimeError as e:
            with open(os.path.join(self.scratch, "stream-probe.log")) as f:
                return f"{e}: {f.read().strip()[-300:]}"
        s.stop()
        return None

    def scenario_streams(self):
        """10,000 concurrent `--app stream` clients, one small chunk a second: RSS per open stream over an
        idle connection's, and how late the chunks arrive."""
        count = 1000 if self.quick else 10000
        chunks, size, ms = (5 if self.quick else 20), 64, 1000
        title = (f"10c. Streams: {count:,} concurrent `--app stream` clients, `/?n={chunks}&size={size}&ms={ms}` "
                 "(bench/stream/stream_clients.py, one epoll loop)")
        missing = self.stream_app_missing()
        if missing:
            self.sections.append((title, f"not measured: --app stream missing (`peregrine serve --app stream`: {missing})"))
            self.verdicts.append(("RSS per open stream ≤ 1 KiB above an idle connection", "not measured: --app stream missing", None))
            self.verdicts.append(("chunk lateness p99 reported", "not measured: --app stream missing", None))
            return
        notes = []
        lines = ["| server | idle RSS (KiB) | per idle connection (B) | per open stream (B) | stream − idle (B) | "
                 "chunks | errors | lateness p50 ms | p99 ms | max ms |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for name, argv in self.transfer_contenders("stream", None):
            if name == "nginx" or not self.wanted(name):
                continue
            p = self.port()
            s = Server(name, argv(p), p, self.scratch)
            try:
                time.sleep(0.3)
                base, fd0 = rss_kb(s.pid), len(procstat.fds(s.pid))
                # Idle connections (nothing sent) for the baseline, then closed.
                holder = subprocess.Popen(["taskset", "-c", LOAD_CORE, sys.executable,
                                           os.path.join(ROOT, "scripts", "idle_clients.py"), "--port", str(p),
                                           "--count", str(count), "--hold", "60"],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                ready = holder.stdout.readline()
                time.sleep(0.5)
                with_idle = rss_kb(s.pid)
                holder.stdin.close()
                holder.wait(60)
                if not ready.startswith("ready"):
                    lines.append(f"| {name} | {base:,} | idle clients failed: {ready.strip()} | | | | | | | |")
                    continue
                # Wait until the server closed them all, so the streams start from the same state.
                deadline = time.monotonic() + 20
                while len(procstat.fds(s.pid)) > fd0 and time.monotonic() < deadline:
                    time.sleep(0.1)
                base2 = rss_kb(s.pid)
                hold = os.path.join(self.scratch, f"{name}-streams-open")
                cl = subprocess.Popen(["taskset", "-c", LOAD_CORE, sys.executable,
                                       os.path.join(BENCH, "stream", "stream_clients.py"), str(p), str(count),
                                       str(chunks), str(size), str(ms), "--hold-file", hold,
                                       "--timeout", str(chunks * ms / 1000 + 90)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                with_streams = None
                deadline = time.monotonic() + chunks * ms / 1000 + 90
                while cl.poll() is None and time.monotonic() < deadline:
                    if with_streams is None and os.path.exists(hold):
                        with_streams = rss_kb(s.pid)    # every stream open, mid-way
                    time.sleep(0.05)
                if cl.poll() is None:
                    cl.kill()
                out, err = cl.communicate()
                m = re.search(r"done conns=(\d+) complete=(\d+) chunks=(\d+) errors=(\d+) p50_ms=(\S+) "
                              r"p99_ms=(\S+) max_ms=(\S+)", out)
                per_idle = (with_idle - base) * 1024 / count
                if not m or with_streams is None:
                    lines.append(f"| {name} | {base:,} | {per_idle:,.0f} | failed: {(out + err).strip()[-200:]} | | | | | | |")
                    self.verdicts.append((f"RSS per open stream ≤ 1 KiB above an idle connection ({name})",
                                          "the stream clients failed", False))
                    continue
                per_stream = (with_streams - base2) * 1024 / count
                errors, p99 = int(m.group(4)), float(m.group(6))
                # The client names its first errors on stderr: keep them with the figures.
                why = [l for l in err.splitlines() if l.startswith("error:")]
                if errors and why:
                    notes.append(f"{name}: " + "; ".join(sorted(set(why))[:3]))
                lines.append(f"| {name} | {base:,} | {per_idle:,.0f} | {per_stream:,.0f} | {per_stream - per_idle:,.0f} | "
                             f"{int(m.group(3)):,} | {errors} | {m.group(5)} | {m.group(6)} | {m.group(7)} |")
                self.verdicts.append((f"RSS per open stream ≤ 1 KiB above an idle connection ({name})",
                                      f"{per_stream - per_idle:+,.0f} B, {errors} errors",
                                      per_stream - per_idle <= 1024 and errors == 0))
                self.verdicts.append((f"chunk lateness p99 reported ({name}, {count:,} streams)", f"{p99:.1f} ms", errors == 0))
            finally:
                s.stop()
        self.sections.append((title, "\n".join(lines) + "\n\n" +
                              f"Per server: its RSS at start; with {count:,} idle connections (nothing sent: "
                              "scripts/idle_clients.py) -> bytes per idle connection; those closed, then "
                              f"{count:,} streams, RSS read once every stream has its first chunk -> bytes per open "
                              "stream. Lateness: each chunk's arrival minus its schedule (the connection's first "
                              f"chunk + k × {ms} ms), measured by a single-threaded Python client on core {LOAD_CORE}, "
                              "so it includes the client's own delay. nginx has no equivalent app and is not in this table." +
                              ("\n\nClient errors (first of each kind): " + " — ".join(notes) if notes else "")))

    # ------------------------------------------------------------- output

    def plots(self, stamp, outdir):
        if not shutil.which("gnuplot"):
            log("bench: gnuplot missing, no plots")
            return []
        made = []
        for key, title, ylabel in [("keepalive-c100", "Keep-alive hello, wrk -c100", "server CPU-µs per request"),
                                   ("engines", "Every Peregrine engine, keep-alive hello, wrk -c100", "server CPU-µs per request"),
                                   ("keepalive-c1000", "Keep-alive hello, wrk -c1000", "server CPU-µs per request"),
                                   ("pipelined", "Pipelined 16 deep, wrk -c100", "server CPU-µs per request"),
                                   ("ab", "One connection per request, ab -c100", "server CPU-µs per request"),
                                   ("echo-64", "Echo, 64-byte messages", "server CPU-µs per message"),
                                   ("echo-16384", "Echo, 16 KiB messages", "server CPU-µs per message"),
                                   ("upload-content-length", "Upload, 16 clients, Content-Length (ratio to nginx)", "server CPU-ms per GiB"),
                                   ("upload-chunked", "Upload, 16 clients, chunked (ratio to nginx)", "server CPU-ms per GiB"),
                                   ("download", "Download, 4 clients, one large file (ratio to nginx, sendfile on)", "server CPU-ms per GiB")]:
            rows = [r for r in self.data.get(key, []) if r[1] == r[1]]
            if not rows:
                continue
            dat = os.path.join(self.scratch, f"{key}.dat")
            with open(dat, "w") as f:
                for name, cpu, ratio, rps in rows:
                    f.write(f'"{name}" {cpu:.3f} {ratio if ratio == ratio else 0:.2f} {rps:.0f}\n')
            png = os.path.join(outdir, f"run-{stamp}-{key}.png")
            ymax = max(r[1] for r in rows) * 1.4
            script = f'''
set terminal pngcairo size 1000,480 font "DejaVu Sans,10"
set output "{png}"
set title "{title} — server pinned to core 0, load on core 1\\n{stamp}, {platform.system()} {platform.release()}"
set ylabel "{ylabel} (lower is better)"
set style data histograms
set style fill solid 0.85 border -1
set boxwidth 0.6
set yrange [0:{ymax}]
set grid ytics
set xtics rotate by -20 nomirror
unset key
plot "{dat}" using 2:xtic(1) lc rgb "#3b6ea8", "" using 0:2:(sprintf("%.2f\\n%.2fx", $2, $3)) with labels offset 0,1.6 notitle
'''
            subprocess.run(["gnuplot"], input=script, text=True)
            made.append(png)
        rows = self.data.get("readiness", [])
        if rows:
            dat = os.path.join(self.scratch, "readiness.dat")
            mechs = ["select", "poll", "epoll-lt", "epoll-et", "libev-select", "libev-poll", "libev-epoll"]
            with open(dat, "w") as f:
                for mech in mechs:
                    for n, m, ns in rows:
                        if m == mech:
                            f.write(f"{n} {ns:.1f}\n")
                    f.write("\n\n")
            png = os.path.join(outdir, f"run-{stamp}-readiness.png")
            plot = ", \\\n".join(f'"{dat}" index {i} using 1:2 with linespoints lw 2 title "{m}"' for i, m in enumerate(mechs))
            script = f'''
set terminal pngcairo size 1000,480 font "DejaVu Sans,10"
set output "{png}"
set title "Readiness scaling: CPU per wakeup of one active descriptor among N idle ones"
set logscale xy
set xlabel "idle descriptors"
set ylabel "CPU-ns per event (log)"
set grid
set key top left
plot {plot}
'''
            subprocess.run(["gnuplot"], input=script, text=True)
            made.append(png)
        rows = self.data.get("backlog", [])
        if rows:
            dat = os.path.join(self.scratch, "backlog.dat")
            with open(dat, "w") as f:
                for conc in (100, 500):
                    for b, c, rps, p99, stalls, over in rows:
                        if c == conc:
                            f.write(f"{b} {rps:.0f} {p99:.1f} {stalls}\n")
                    f.write("\n\n")
            png = os.path.join(outdir, f"run-{stamp}-backlog.png")
            script = f'''
set terminal pngcairo size 1000,480 font "DejaVu Sans,10"
set output "{png}"
set title "Backlog sweep: ab one connection per request — stalls are SYNs dropped from a full accept queue"
set logscale x 2
set xlabel "listen() backlog"
set ylabel "requests stalled ≥ 1 s"
set y2label "requests/s"
set ytics nomirror
set y2tics
set grid
set key top right
plot "{dat}" index 0 using 1:4 with linespoints lw 2 title "stalls, ab -c100", \\
     "{dat}" index 1 using 1:4 with linespoints lw 2 title "stalls, ab -c500", \\
     "{dat}" index 0 using 1:2 axes x1y2 with linespoints dt 2 title "req/s, ab -c100", \\
     "{dat}" index 1 using 1:2 axes x1y2 with linespoints dt 2 title "req/s, ab -c500"
'''
            subprocess.run(["gnuplot"], input=script, text=True)
            made.append(png)
        return made

    def report(self):
        now = datetime.datetime.now(datetime.timezone.utc)
        stamp = now.strftime("%Y-%m-%d-%H%M")
        outdir = os.path.abspath(self.args.out)
        os.makedirs(outdir, exist_ok=True)
        pngs = self.plots(stamp, outdir)
        cpu = ""
        try:
            with open("/proc/cpuinfo") as f:
                cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
        except OSError:
            pass
        md = [f"# Peregrine benchmark run {stamp}", "",
              f"- date: {now:%Y-%m-%d %H:%M} UTC{' (QUICK: 1 repetition of 1 s — a smoke run, not figures to quote)' if self.quick else ''}",
              f"- machine: {os.cpu_count()} cores, {cpu}; kernel {platform.release()}",
              f"- method: servers `taskset -c {SERVER_CORE}`, load `taskset -c {LOAD_CORE}`; server CPU = utime+stime "
              f"of its process tree from /proc; {self.repeat} repetition(s) of {self.duration} s, round-robin across "
              "contenders (each repetition starting one contender later), median; ratios to the floor server of the same run.",
              f"- command: `python3 bench/bench.py {' '.join(sys.argv[1:])}` (`make bench`)", "",
              "## Verdicts", "", "| target | measured | verdict |", "|---|---:|---|"]
        for target, measured, met in self.verdicts:
            md.append(f"| {target} | {measured} | {'met' if met else 'MISSED' if met is not None else 'not measured'} |")
        for title, body in self.sections:
            md += ["", f"## {title}", "", body]
        if pngs:
            md += ["", "## Plots", ""] + [f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in pngs]
        text = "\n".join(md) + "\n"
        path = os.path.join(outdir, f"run-{stamp}.md")
        with open(path, "w") as f:
            f.write(text)
        with open(os.path.join(outdir, "latest.md"), "w") as f:
            f.write(text)
        print(text)
        print("\nVERDICTS")
        for target, measured, met in self.verdicts:
            print(f"  {'MET   ' if met else 'MISSED'} {target}: {measured}")
        log(f"bench: wrote {path}")


def parse_benchmark_tables(text):
    """package-benchmark's text tables -> [(name, {p50_ns, p99_ns, mallocs, samples})]."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    rows, name = [], None
    for line in text.splitlines():
        if re.match(r"^(C|Swift)/\S+$", line.strip()):
            name = line.strip()
            rows.append((name, {}))
            continue
        if not name or not line.startswith("│"):
            continue
        cells = [c.strip() for c in line.strip("│").split("│")]
        if len(cells) < 9:
            continue
        # Metric, p0, p25, p50, p75, p90, p99, p100, samples
        if cells[0].startswith("Time (wall clock)"):
            rows[-1][1].update(p50_ns=cells[3], p99_ns=cells[6], samples=cells[8])
        elif cells[0].startswith("Malloc (total)"):
            rows[-1][1]["mallocs"] = cells[3]
    return rows


SCENARIOS = ["keepalive", "engines", "instructions", "hummingbird", "pipelined", "connection_per_request", "echo", "idle",
             "backlog", "readiness", "allocations", "micro", "upload", "download", "streams", "api"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one repetition of 1 s: a smoke run")
    ap.add_argument("--duration", type=int, default=5, help="seconds per load run")
    ap.add_argument("--repeat", type=int, default=5, help="repetitions, interleaved across contenders (median and spread reported)")
    ap.add_argument("--only", default="", help="comma-separated scenarios: " + ",".join(SCENARIOS))
    ap.add_argument("--out", default=os.path.join(BENCH, "results"))
    ap.add_argument("--no-nio", action="store_true", help="skip building the SwiftNIO contender")
    ap.add_argument("--no-hummingbird", action="store_true",
                    help="skip building the Hummingbird contenders (integrations/hummingbird/peregrine-hummingbird)")
    ap.add_argument("--upload-mib", type=int, default=256, help="upload scenario: MiB each of the 16 clients sends")
    ap.add_argument("--download-mib", type=int, default=1024, help="download scenario: size of the file in MiB")
    ap.add_argument("--contenders", default="", help="comma-separated name prefixes (e.g. peregrine-swift,nginx); "
                                                    "the floor servers always run")
    args = ap.parse_args()
    chosen = [s for s in (args.only.split(",") if args.only else SCENARIOS) if s]
    for s in chosen:
        if s not in SCENARIOS:
            sys.exit(f"unknown scenario {s}; choose from {','.join(SCENARIOS)}")
    # SIGTERM/SIGINT unwind through the finally blocks, which stop the servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    suite = Suite(args)
    try:
        for s in chosen:
            log(f"bench: scenario {s}")
            getattr(suite, "scenario_" + s)()
        suite.report()   # only a completed run writes a report
    finally:
        shutil.rmtree(suite.scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
