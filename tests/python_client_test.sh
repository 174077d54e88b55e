#!/usr/bin/env bash
# The example Python client (examples/python/micromoe_client.py) against a
# `micromoe serve` on loopback: same text as local `micromoe generate` for the
# same seed. Usage: python_client_test.sh MICROMOE_BINARY MAKE_DEMO_MODEL
set -euo pipefail
bin=$1
make_model=$2
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
server_pid=
cleanup() { [ -n "$server_pid" ] && kill -9 "$server_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

"$make_model" "$work/model.gguf" demo f32 2>/dev/null
"$bin" serve -m "$work/model.gguf" --listen 127.0.0.1:0 -t 2 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 200); do
  grep -q "listening on" "$work/server.log" && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log"; exit 1; }
  sleep 0.05
done
address=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$work/server.log" | head -1)
[ -n "$address" ] || { echo "server did not start"; cat "$work/server.log"; exit 1; }

args=(-p "The license of the program" --seed 5 --temp 0.7)
want=$("$bin" generate -m "$work/model.gguf" "${args[@]}" -n 20 2>/dev/null)
got=$(timeout 60 /usr/bin/python3 "$root/examples/python/micromoe_client.py" --server "$address" \
      --stub-cache "$work/stubs" "${args[@]}" -n 20 2>"$work/client.log") || { cat "$work/client.log"; exit 1; }
if [ "$got" != "$want" ]; then
  printf 'python client printed:\n%s\nlocal generate printed:\n%s\n' "$got" "$want"
  exit 1
fi
grep -q "finish:" "$work/client.log"
# A bad request comes back as a clear error and a non-zero exit.
if timeout 60 /usr/bin/python3 "$root/examples/python/micromoe_client.py" --server "$address" \
     --stub-cache "$work/stubs" -p "x" -n 0 2>"$work/bad.log"; then
  echo "a request with max_tokens 0 should fail"; exit 1
fi
grep -q "INVALID_ARGUMENT" "$work/bad.log"
echo "1 passed, 0 failed"
