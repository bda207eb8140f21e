#!/usr/bin/env bash
# Turns a report written by measure-core.sh into a PNG bar chart:
# server CPU-µs per request (lower is better) with requests/s on top.
#   scripts/plot-core.sh REPORT.md OUT.png
set -euo pipefail
report=$1
out=$2
command -v gnuplot >/dev/null || { echo "gnuplot missing: apt-get install gnuplot-nox" >&2; exit 1; }
data=$(mktemp)
trap 'rm -f "$data"' EXIT
# Rows of the keep-alive table: name, requests/s, CPU-us/req, ratio.
awk '/^server +requests/ {t = 1; next} t && NF == 0 {t = 0} t && $1 !~ /^#/ {r = $5; sub(/x$/, "", r); print $1, $2, $3, r}' "$report" > "$data"
[ -s "$data" ] || { echo "no table found in $report" >&2; exit 1; }
ymax=$(awk '$3 > m {m = $3} END {print m * 1.45}' "$data")
title=$(sed -n 's/^# Peregrine core figures — //p' "$report" | head -1)
gnuplot <<GP
set terminal pngcairo size 900,480 font "DejaVu Sans,11"
set output "$out"
set title "Hello, keep-alive (wrk -t1 -c100), server pinned to core 0\n$title" font ",12"
set ylabel "server CPU-µs per request (lower is better)"
set style data histograms
set style fill solid 0.85 border -1
set boxwidth 0.6
set style histogram gap 1
set yrange [0:$ymax]
set grid ytics
unset key
set xtics nomirror
plot "$data" using 3:xtic(1) lc rgb "#3b6ea8", \
     "" using 0:(\$3):(sprintf("%.2f µs\n%.0fk req/s\n%.2fx floor", \$3, \$2/1000, \$4)) with labels offset 0,2.6 notitle
GP
echo "wrote $out"
