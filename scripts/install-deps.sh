#!/bin/sh
# Installs what building and testing Peregrine needs, only what is missing.
# Debian/Ubuntu: apt-get; runs as root or through sudo.
set -eu
need=""
[ -f /usr/include/ev.h ] || need="$need libev-dev"
command -v curl >/dev/null 2>&1 || need="$need curl"
command -v python3 >/dev/null 2>&1 || need="$need python3"
command -v taskset >/dev/null 2>&1 || need="$need util-linux"
for tool in "$@"; do
    case "$tool" in
        wrk) command -v wrk >/dev/null 2>&1 || need="$need wrk" ;;
        ab) command -v ab >/dev/null 2>&1 || need="$need apache2-utils" ;;
        nginx) [ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || need="$need nginx-light" ;;
        gnuplot) command -v gnuplot >/dev/null 2>&1 || need="$need gnuplot-nox" ;;
        haproxy) [ -x /usr/sbin/haproxy ] || command -v haproxy >/dev/null 2>&1 || need="$need haproxy" ;;
        ip) [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || command -v ip >/dev/null 2>&1 || need="$need iproute2" ;;
        *) command -v "$tool" >/dev/null 2>&1 || need="$need $tool" ;;
    esac
done
if [ -n "$need" ]; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    echo "installing:$need"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $need
fi
if ! command -v swift >/dev/null 2>&1; then
    echo "swift is not on PATH: install Swift 6 from swift.org (Debian has no package)" >&2
    exit 1
fi
