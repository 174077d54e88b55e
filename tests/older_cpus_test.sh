#!/usr/bin/env bash
# The binary picks its kernels from cpuid at start-up; this runs it on CPUs
# it was not built on, emulated by qemu-user: a Haswell (AVX2, no AVX-512)
# and qemu64 (x86-64 baseline: scalar kernels). Nothing compiled for AVX-512
# may run there (a table initializer once did, and faulted on every such CPU).
#   older_cpus_test.sh MICROMOE KERNELS_TEST MODEL
set -euo pipefail
micromoe=$1 kernels_test=$2 model=$3
command -v qemu-x86_64 >/dev/null || { echo "qemu-x86_64 missing: run tools/install-deps.sh" >&2; exit 1; }
for cpu_kernels in Haswell:avx2 qemu64:scalar; do
  cpu=${cpu_kernels%%:*} want=${cpu_kernels##*:}
  run() { qemu-x86_64 -cpu "$cpu" "$@" 2> >(grep -v 'TCG doesn.t support' >&2); }
  got=$(run "$micromoe" inspect --cpu | sed -n 's/^kernels: //p')
  [ "$got" = "$want" ] || { echo "$cpu: kernels '$got', expected '$want'" >&2; exit 1; }
  run "$kernels_test" --gtest_brief=1 >/dev/null || { echo "$cpu: kernels_test failed" >&2; exit 1; }
  text=$(run "$micromoe" generate -m "$model" -p "The license" -n 8 --temp 0 2>/dev/null)
  [ -n "$text" ] || { echo "$cpu: generate printed nothing" >&2; exit 1; }
  echo "$cpu: kernels $got, kernels_test passed, generated: ${text//$'\n'/ }"
done
