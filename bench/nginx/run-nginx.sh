#!/bin/sh
# run-nginx.sh PORT SCRATCHDIR: run the nginx contender in the foreground.
#
# Renders nginx.conf.in (next to this script) into SCRATCHDIR/nginx.conf,
# with @PORT@ = PORT and @PREFIX@ = SCRATCHDIR (made absolute; the pid file,
# error.log and the temp directories go there), then execs
#   nginx -p SCRATCHDIR/ -c SCRATCHDIR/nginx.conf
# so the PID of this script becomes the nginx master's. The template already
# says `daemon off;` (passing -g 'daemon off;' as well would make nginx stop
# with "daemon directive is duplicate"). NGINX=/path/to/nginx picks the binary
# (default: nginx on PATH, else /usr/sbin/nginx).
#
# For the orchestrator:
#  - Pin it with `taskset -c CPU bench/nginx/run-nginx.sh PORT DIR`: the master
#    and the worker it forks inherit the affinity.
#  - The requests are served by the worker, a child of the master. Sum
#    utime+stime over the master and its worker (the master's /proc/PID/stat
#    does not include a live child's time): the worker's PID is in
#    /proc/PID/task/*/children (or SCRATCHDIR/nginx.pid holds the master's).
#    Read the children once the port answers; the worker starts just after.
#  - Stop it with SIGTERM (or SIGINT/SIGQUIT) to the master, which stops the
#    worker and exits. SIGKILL to the master alone leaves the worker running,
#    still holding the port.
#  - Server-side errors land in SCRATCHDIR/error.log; there is no access log.
set -eu

if [ $# -ne 2 ]; then
    echo "usage: run-nginx.sh PORT SCRATCHDIR" >&2
    exit 2
fi
port=$1
case $port in
    ''|*[!0-9]*) echo "run-nginx.sh: bad PORT '$port'" >&2; exit 2 ;;
esac

here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$2"
prefix=$(cd "$2" && pwd)
case $prefix in
    *[\|\&\\]*) echo "run-nginx.sh: SCRATCHDIR may not contain | & or \\" >&2; exit 2 ;;
esac

nginx=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
if [ ! -x "$nginx" ]; then
    echo "run-nginx.sh: nginx not found (apt-get install -y nginx-light, or set NGINX=)" >&2
    exit 1
fi

sed -e "s|@PREFIX@|$prefix|g" -e "s|@PORT@|$port|g" "$here/nginx.conf.in" > "$prefix/nginx.conf"
exec "$nginx" -p "$prefix/" -c "$prefix/nginx.conf"
