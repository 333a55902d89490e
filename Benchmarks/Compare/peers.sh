#!/usr/bin/env bash
# Tocsin beside its peers, on this machine, driven by one load generator (pubsub_bench.c):
# the same fan-out workloads against Tocsin (durable, and with --no-fsync), redis pub/sub,
# nats-server (core) and mosquitto (MQTT QoS 0), each server started here and stopped after
# its run. A server that is not installed is left out. Prints one table: the server's CPU per
# delivered message, publish → receive p50/p99, its resident memory per subscriber, and how much
# of the machine's CPU time the hypervisor stole during the run (a noisy run is not comparable).
# Two rows are no server: the floor of any server here (write_floor.c: one write per subscriber
# per message and nothing else; "floor-durable" syncs each message to a file first), its CPU
# per delivery and its latency from taking a message up to the reader having it.
#
#   Benchmarks/Compare/peers.sh [SECONDS] [ORDER]     (default 10; ORDER "forward" or "reverse")
#
# Needs gcc and a release build of tocsin (swift build -c release, or TOCSIN=path); for the
# peers: apt-get install redis-server nats-server mosquitto. Workloads: 100 subscribers × 500
# messages/s and 50 × 4,000, 250-byte payloads. The load generator shares the machine's cores
# with the server, as in `tocsin bench latency`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tocsin=${TOCSIN:-$here/../../.build/release/tocsin}
seconds=${1:-10} order=${2:-forward}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
cc -O2 -pthread -o "$work/pubsub_bench" "$here/pubsub_bench.c"
cc -O2 -o "$work/write_floor" "$here/write_floor.c"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

# name kind command… (PORT and DIR are filled in)
servers=("floor-durable|floor|sync" "floor|floor|")
[ -x "$tocsin" ] && servers+=("tocsin-durable|tocsin|$tocsin serve --insecure-no-auth --host 127.0.0.1 --port PORT --data-dir DIR --log-level error")
[ -x "$tocsin" ] && servers+=("tocsin-no-fsync|tocsin|$tocsin serve --insecure-no-auth --host 127.0.0.1 --port PORT --data-dir DIR --log-level error --no-fsync")
command -v redis-server > /dev/null && servers+=("redis|redis|redis-server --bind 127.0.0.1 --port PORT --save '' --appendonly no")
command -v nats-server > /dev/null && servers+=("nats|nats|nats-server -a 127.0.0.1 -p PORT")
command -v mosquitto > /dev/null && servers+=("mosquitto|mqtt|mosquitto -c DIR/mosquitto.conf")
if [ "$order" = reverse ]; then
    reversed=(); for ((i = ${#servers[@]} - 1; i >= 0; i--)); do reversed+=("${servers[i]}"); done; servers=("${reversed[@]}")
fi

results="$work/results"
: > "$results"
for workload in "100 500" "50 4000"; do
    read -r subscribers rate <<< "$workload"
    for entry in "${servers[@]}"; do
        IFS='|' read -r name kind command <<< "$entry"
        port=$(free_port)
        dir="$work/$name-$subscribers"
        mkdir -p "$dir"
        if [ "$kind" = floor ]; then
            echo "== $name: $subscribers subscribers × $rate/s" >&2
            DURATION=$seconds LABEL=$name "$work/write_floor" "$subscribers" "$rate" 250 ${command:+1 "$dir/sync.bin"} 2> /dev/null | tee -a "$results" >&2
            continue
        fi
        printf 'listener %s 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n' "$port" > "$dir/mosquitto.conf"
        command=${command//PORT/$port}
        command=${command//DIR/$dir}
        # exec: $! must be the server itself (its CPU and memory are read from /proc).
        eval "exec $command" > "$dir/server.log" 2>&1 &
        pid=$!
        wait_port "$port"
        echo "== $name: $subscribers subscribers × $rate/s" >&2
        "$work/pubsub_bench" "$kind" 127.0.0.1 "$port" "$pid" "$subscribers" "$rate" "$seconds" 250 "$name" | tee -a "$results" >&2
        kill "$pid"; wait "$pid" 2>/dev/null || true
    done
done

echo
echo "peers: $seconds s per run, $(nproc) cores, $(date -u +%FT%TZ), order $order"
printf '%-16s %-12s %12s %10s %10s %12s %-16s %s\n' server workload "µs CPU/msg" "p50 ms" "p99 ms" "KiB/sub" delivered "stolen"
grep '^RESULT' "$results" | while read -r _ name subs rate cpu p50 p99 kb got expected stolen; do
    printf '%-16s %-12s %12s %10s %10s %12s %-16s %s\n' "$name" "${subs}×${rate}" "$cpu" "$p50" "$p99" "$kb" "$got/$expected" "$stolen%"
done
