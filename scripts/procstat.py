"""A process's CPU time, resident memory and descriptors, read from /proc.

The one place the benchmarks (bench/bench.py) and the soak (scripts/soak.py)
read them from. `tree=True` adds up a process and all its descendants (nginx:
master and workers). Python standard library only.
"""
import os

HZ = os.sysconf("SC_CLK_TCK")


def descendants(pid):
    """pid and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        task_dir = f"/proc/{p}/task"
        for task in os.listdir(task_dir) if os.path.isdir(task_dir) else []:
            try:
                with open(f"{task_dir}/{task}/children") as f:
                    todo += [int(x) for x in f.read().split()]
            except OSError:
                pass   # the thread ended meanwhile
    return out


def _total(pid, name, read, tree):
    """Adds read(text of /proc/P/<name>) over pid (and its descendants)."""
    total = 0
    for p in descendants(pid) if tree else [pid]:
        try:
            with open(f"/proc/{p}/{name}") as f:
                total += read(f.read())
        except OSError:
            if not tree:
                raise
            # a descendant ended meanwhile
    return total


def _stat_ticks(text):
    # utime + stime: fields 14 and 15 of stat, counted after the command name
    # (which may hold spaces and parentheses, hence the last ")").
    fields = text.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _status_rss_kib(text):
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0   # a zombie has no VmRSS line


def cpu_ticks(pid, tree=False):
    """User + system CPU time in clock ticks (1/HZ s)."""
    return _total(pid, "stat", _stat_ticks, tree)


def cpu_seconds(pid, tree=False):
    """User + system CPU time in seconds."""
    return cpu_ticks(pid, tree) / HZ


def rss_kib(pid, tree=False):
    """Resident set size in KiB."""
    return _total(pid, "status", _status_rss_kib, tree)


def fds(pid):
    """The process's open descriptor numbers, sorted."""
    return sorted(int(n) for n in os.listdir(f"/proc/{pid}/fd"))


def fd_targets(pid):
    """'N->target' for each open descriptor (for a leak report)."""
    out = []
    for n in fds(pid):
        try:
            out.append(f"{n}->{os.readlink(f'/proc/{pid}/fd/{n}')}")
        except OSError:
            pass   # closed meanwhile
    return out
