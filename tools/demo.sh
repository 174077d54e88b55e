#!/usr/bin/env bash
# Sets everything up (Debian packages, release build, the demo model) and
# generates a continuation of a prompt with the default model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target micromoe make_demo_model
model=models/demo-8x256-q8_0.gguf
[ -f "$model" ] || { mkdir -p models && build/make_demo_model "$model"; }
build/micromoe generate -m "$model" -p "${1:-The license}" -n "${2:-64}"
