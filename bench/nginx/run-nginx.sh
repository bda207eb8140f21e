#!/bin/sh
# run-nginx.sh PORT SCRATCHDIR [TEMPLATE [ROOT]]: run the nginx contender in
# the foreground.
#
# Renders TEMPLATE (a file next to this script; default nginx.conf.in, the
# hello answer; nginx-upload.conf.in discards bodies, nginx-static.conf.in
# serves the directory ROOT with sendfile) into SCRATCHDIR/nginx.conf,
# with @PORT@ = PORT, @PREFIX@ = SCRATCHDIR (made absolute; the pid file,
# error.log and the temp directories go there) and @ROOT@ = ROOT, then execs
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

if [ $# -lt 2 ] || [ $# -gt 4 ]; then
    echo "usage: run-nginx.sh PORT SCRATCHDIR [TEMPLATE [ROOT]]" >&2
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

template=${3:-nginx.conf.in}
case $template in
    */*|'') echo "run-nginx.sh: TEMPLATE is a file name next to this script" >&2; exit 2 ;;
esac
[ -f "$here/$template" ] || { echo "run-nginx.sh: no template $here/$template" >&2; exit 2; }
root=${4:-}
case $root in
    *[\|\&\\]*) echo "run-nginx.sh: ROOT may not contain | & or \\" >&2; exit 2 ;;
esac

sed -e "s|@PREFIX@|$prefix|g" -e "s|@PORT@|$port|g" -e "s|@ROOT@|$root|g" "$here/$template" > "$prefix/nginx.conf"
exec "$nginx" -p "$prefix/" -c "$prefix/nginx.conf"
