#!/usr/bin/env bash
# Figures for the core: for each trigger mode, hello under `wrk -t1 -c100`
# keep-alive with the server pinned to core 0 and wrk to core 1: requests/s
# and server CPU-µs per request (utime+stime from /proc/PID/stat, before and
# after, divided by the requests wrk completed); median of REPEAT runs,
# taken round-robin across contenders.
# Then malloc calls per request of the release binary in steady state
# (LD_PRELOAD counter, whole process), and RSS per idle connection with
# IDLE idle connections. Loopback only; every run is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.build/release/peregrine
PORT=${PORT:-18480}
DURATION=${DURATION:-10}
REPEAT=${REPEAT:-3}
IDLE=${IDLE:-10000}
TRIGGERS=${TRIGGERS:-"level edge oneshot"}
HZ=$(getconf CLK_TCK)
SCRATCH=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$SCRATCH"' EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
wait_port() { for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/" && return 0; sleep 0.05; done; echo "server did not start" >&2; return 1; }
start_server() { # $@: extra flags; sets SERVER_PID
    taskset -c 0 env ${PRELOAD:+LD_PRELOAD=$PRELOAD} "$BIN" serve --host 127.0.0.1 --port "$PORT" "$@" 2>"$SCRATCH/server.err" &
    SERVER_PID=$!
    wait_port
}
start_floor() {
    cc -O2 -o "$SCRATCH/floor" bench/floor/floor.c
    taskset -c 0 "$SCRATCH/floor" "$PORT" 2>"$SCRATCH/server.err" &
    SERVER_PID=$!
    wait_port
}
stop_server() { kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; }

echo "# Peregrine core figures — $(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -sr), $(nproc) cores"
echo "# server: taskset -c 0 (floor: bench/floor/floor.c; epoll-T: $BIN serve --trigger T); load: taskset -c 1 wrk -t1 -c100 -d${DURATION}s; median of $REPEAT"
# Every contender runs at once (each on its own port, all pinned to core 0,
# idle while not measured) and the repetitions go round-robin, so the drift
# of a shared machine hits every contender alike.
CONTENDERS="floor $TRIGGERS"
declare -A PID_OF PORT_OF
i=0
for contender in $CONTENDERS; do
    PORT_OF[$contender]=$((PORT + 10 + i)); i=$((i + 1))
    if [ "$contender" = floor ]; then
        PORT=${PORT_OF[$contender]} start_floor
    else
        PORT=${PORT_OF[$contender]} start_server --trigger "$contender"
    fi
    PID_OF[$contender]=$SERVER_PID
    taskset -c 1 wrk -t1 -c100 -d2s "http://127.0.0.1:${PORT_OF[$contender]}/" >/dev/null   # warm-up
    : > "$SCRATCH/rps.$contender"; : > "$SCRATCH/us.$contender"; : > "$SCRATCH/p99.$contender"
done
for _ in $(seq "$REPEAT"); do
    for contender in $CONTENDERS; do
        pid=${PID_OF[$contender]}
        c0=$(cpu_ticks "$pid")
        taskset -c 1 wrk -t1 -c100 -d"${DURATION}s" --latency "http://127.0.0.1:${PORT_OF[$contender]}/" > "$SCRATCH/wrk.out"
        c1=$(cpu_ticks "$pid")
        requests=$(awk '/requests in/ {print $1}' "$SCRATCH/wrk.out")
        awk '/Requests\/sec/ {print $2}' "$SCRATCH/wrk.out" >> "$SCRATCH/rps.$contender"
        awk '$1 == "99%" {v = $2; m = 1; if (v ~ /ms$/) m = 1000; else if (v ~ /us$/) m = 1; else if (v ~ /s$/) m = 1e6;
                          sub(/[a-z]+$/, "", v); printf "%.0f\n", v * m}' "$SCRATCH/wrk.out" >> "$SCRATCH/p99.$contender"
        awk -v c="$((c1 - c0))" -v hz="$HZ" -v n="$requests" 'BEGIN {printf "%.3f\n", c / hz * 1e6 / n}' >> "$SCRATCH/us.$contender"
        if grep -q "Non-2xx\|Socket errors" "$SCRATCH/wrk.out"; then echo "$contender:"; grep "Non-2xx\|Socket errors" "$SCRATCH/wrk.out"; fi
    done
done
printf '%-13s %12s %12s %10s %9s\n' server "requests/s" "CPU-us/req" "p99-us" "vs floor"
FLOOR_US=$(median < "$SCRATCH/us.floor")
for contender in $CONTENDERS; do
    us=$(median < "$SCRATCH/us.$contender")
    label=$contender; [ "$contender" = floor ] || label="epoll-$contender"
    printf '%-13s %12s %12s %10s %8sx   (CPU-us runs: %s)\n' "$label" "$(median < "$SCRATCH/rps.$contender")" "$us" \
        "$(median < "$SCRATCH/p99.$contender")" \
        "$(awk -v a="$us" -v f="$FLOOR_US" 'BEGIN {printf "%.2f", a / f}')" "$(paste -sd' ' "$SCRATCH/us.$contender")"
done
for contender in $CONTENDERS; do kill "${PID_OF[$contender]}"; wait "${PID_OF[$contender]}" 2>/dev/null || true; done

echo
echo "# malloc calls per request, release binary, whole process, steady state (LD_PRELOAD counter)"
cc -O2 -shared -fPIC -DALLOC_COUNTER_WHOLE_PROCESS -ITests/CTestSupport/include Tests/CTestSupport/alloc_counter.c -o "$SCRATCH/alloccount.so"
for trigger in $TRIGGERS; do
    PRELOAD="$SCRATCH/alloccount.so" start_server --trigger "$trigger"
    taskset -c 1 wrk -t1 -c100 -d2s "http://127.0.0.1:$PORT/" >/dev/null
    kill -USR1 "$SERVER_PID"; sleep 0.2
    taskset -c 1 wrk -t1 -c100 -d5s "http://127.0.0.1:$PORT/" > "$SCRATCH/wrk.out"
    kill -USR1 "$SERVER_PID"; sleep 0.2
    requests=$(awk '/requests in/ {print $1}' "$SCRATCH/wrk.out")
    read -r a0 a1 < <(awk '/^alloccount/ {printf "%s ", $2} END {print ""}' "$SCRATCH/server.err")
    echo "$trigger: $((a1 - a0)) malloc calls in $requests requests ($(awk -v a=$((a1 - a0)) -v n="$requests" 'BEGIN {printf "%.6f", a / n}') per request)"
    stop_server
done

echo
echo "# RSS per idle connection ($IDLE connections, level trigger)"
for variant in "" "--request"; do
    start_server
    sleep 0.2
    r0=$(rss_kb "$SERVER_PID")
    mkfifo "$SCRATCH/hold"
    python3 scripts/idle_clients.py --port "$PORT" --count "$IDLE" $variant --hold 60 < "$SCRATCH/hold" > "$SCRATCH/idle.out" &
    CLIENT_PID=$!
    exec 3> "$SCRATCH/hold"
    for _ in $(seq 600); do grep -q ready "$SCRATCH/idle.out" && break; sleep 0.1; done
    sleep 0.5
    fds=$(ls "/proc/$SERVER_PID/fd" | wc -l)
    r1=$(rss_kb "$SERVER_PID")
    exec 3>&-
    wait "$CLIENT_PID" || true
    rm -f "$SCRATCH/hold"
    label=${variant:-"--no-request"}
    echo "idle $label: server descriptors $fds, RSS ${r0} kB -> ${r1} kB: $(awk -v a="$r0" -v b="$r1" -v n="$IDLE" 'BEGIN {printf "%.0f", (b - a) * 1024 / n}') bytes per connection"
    stop_server
done
