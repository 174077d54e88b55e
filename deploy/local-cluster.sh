#!/usr/bin/env bash
# Runs a router and two expert nodes on this machine (loopback), sends one
# request through them, and stops everything: a rehearsal of a multi-machine
# deployment with the same commands and placement file format.
#
#   bash deploy/local-cluster.sh [MODEL] [PROMPT]
#
# Needs a built tree (build/micromoe, or the binary in $MICROMOE_BIN). MODEL
# defaults to the shipped model.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${MICROMOE_BIN:-$root/build/micromoe}
model=${1:-$root/models/micromoe-tiny-8x256.gguf}
prompt=${2:-The license}
[ -x "$bin" ] || { echo "local-cluster: build first ($bin is missing)" >&2; exit 1; }
[ -f "$model" ] || { echo "local-cluster: no model at $model" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Free ports: ask the kernel for three, then release them.
read -r p1 p2 p3 < <(/usr/bin/python3 -c '
import socket
ss = [socket.socket() for _ in range(3)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')

"$bin" expert-node -m "$model" --experts '*:0-3' --listen "127.0.0.1:$p1" -t 1 2> "$work/node1.log" & pids+=($!)
"$bin" expert-node -m "$model" --experts '*:4-7' --listen "127.0.0.1:$p2" -t 1 2> "$work/node2.log" & pids+=($!)
cat > "$work/placement.json" <<JSON
{
  "deadline_ms": 2000,
  "retry_after_ms": 1000,
  "experts": [
    {"layers": "*", "experts": "0-3", "endpoints": ["127.0.0.1:$p1"]},
    {"layers": "*", "experts": "4-7", "endpoints": ["127.0.0.1:$p2"]}
  ]
}
JSON
# The router connects at start-up, so the nodes must be listening first.
for log in "$work/node1.log" "$work/node2.log"; do
  for _ in $(seq 100); do grep -q "listening on" "$log" && break; sleep 0.1; done
  grep -q "listening on" "$log" || { echo "local-cluster: an expert node did not start:" >&2; cat "$log" >&2; exit 1; }
done
"$bin" serve -m "$model" --placement "$work/placement.json" --listen "127.0.0.1:$p3" -t 1 2> "$work/router.log" & pids+=($!)
for _ in $(seq 100); do "$bin" client info --server "127.0.0.1:$p3" > /dev/null 2>&1 && break; sleep 0.1; done

grep -h "serving\|resident" "$work/node1.log" "$work/node2.log" >&2
"$bin" client generate --server "127.0.0.1:$p3" -p "$prompt" -n 32 --seed 1
