#!/usr/bin/env bash
# Runs the latency benchmark's workload against redis pub/sub and nats-server on this machine,
# so `tocsin bench latency` can be compared with them measured here, not from memory.
# Needs: gcc, redis-server and nats-server (Debian: apt-get install redis-server nats-server).
#
#   Benchmarks/Compare/run.sh [SUBSCRIBERS RATE SECONDS PAYLOAD_BYTES]   (default: 100 500 10 250)
set -euo pipefail
cd "$(dirname "$0")"
subscribers=${1:-100} rate=${2:-500} seconds=${3:-10} payload=${4:-250}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
cc -O2 -pthread -o "$work/pubsub_bench" pubsub_bench.c
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

port=$(free_port)
redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no > "$work/redis.log" 2>&1 &
redis=$!
wait_port "$port"
"$work/pubsub_bench" redis 127.0.0.1 "$port" "$redis" "$subscribers" "$rate" "$seconds" "$payload"
kill $redis; wait $redis 2>/dev/null || true

port=$(free_port)
nats-server -a 127.0.0.1 -p "$port" > "$work/nats.log" 2>&1 &
nats=$!
wait_port "$port"
"$work/pubsub_bench" nats 127.0.0.1 "$port" "$nats" "$subscribers" "$rate" "$seconds" "$payload"
kill $nats; wait $nats 2>/dev/null || true
