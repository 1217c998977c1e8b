#!/usr/bin/env bash
# Make a Docker engine answer on this machine: install docker.io if dockerd is missing, start
# dockerd in the background if `docker info` does not answer, then wait until it does.
# Idempotent: a second call with a running engine returns at once.
#   DOCKERD_LOG   where dockerd logs (default /tmp/dockerd.log)
#   DOCKERD_WAIT  seconds to wait for the engine (default 60)
set -euo pipefail

log="${DOCKERD_LOG:-/tmp/dockerd.log}"
wait_s="${DOCKERD_WAIT:-60}"

answers() { docker info >/dev/null 2>&1; }

if command -v docker >/dev/null 2>&1 && answers; then
    echo "start_dockerd: engine already answers ($(docker version --format '{{.Server.Version}}'))"
    exit 0
fi

sudo_cmd=()
if [ "$(id -u)" != 0 ]; then sudo_cmd=(sudo); fi

if ! command -v dockerd >/dev/null 2>&1; then
    echo "start_dockerd: installing docker.io"
    "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi

if ! pgrep -x dockerd >/dev/null 2>&1; then
    echo "start_dockerd: starting dockerd (log: $log)"
    # setsid: dockerd outlives this script and the shell that called it.
    "${sudo_cmd[@]}" setsid dockerd >"$log" 2>&1 < /dev/null &
fi

for _ in $(seq 1 "$wait_s"); do
    if answers; then
        echo "start_dockerd: engine answers ($(docker version --format '{{.Server.Version}}'))"
        exit 0
    fi
    sleep 1
done
echo "start_dockerd: dockerd did not answer within ${wait_s}s; last lines of $log:" >&2
tail -n 30 "$log" >&2 || true
exit 1
