#!/usr/bin/env bash
# Sets everything up (Debian packages, release build) and continues a prompt
# with the default model, models/micromoe-tiny-8x256.gguf (see models/README.md).
#   bash tools/demo.sh [PROMPT] [TOKENS]
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target micromoe
build/micromoe generate -p "${1:-int main(int argc, char **argv) {}" -n "${2:-64}" --temp 0.3 --seed 1
