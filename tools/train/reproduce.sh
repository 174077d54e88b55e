#!/usr/bin/env bash
# Rebuilds models/micromoe-tiny-8x256.gguf and the figures of models/README.md from
# scratch, offline, on a Debian 12 machine. Rerunning after an interruption resumes
# training from build/train/ckpt.pt. Run from anywhere; works in the repository root.
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
PY=/usr/bin/python3
MODEL=models/micromoe-tiny-8x256.gguf

tools/train/install-train-deps.sh
$PY tools/corpus/build_corpus.py                       # build/corpus/*.{train,heldout}.txt
[ -f build/train/tokenizer.model ] || $PY tools/train/train_tokenizer.py
cmake -S . -B build-train -DMICROMOE_BUILD_TESTS=OFF -DMICROMOE_BUILD_BENCH=OFF -DCMAKE_BUILD_TYPE=Release
cmake --build build-train -j1 --target micromoe
$PY tools/train/check_export.py --bin build-train/micromoe --random 4 --type f32   # export == model.py
$PY tools/train/train.py --train-min 72 --batch 16 --seq 256 --lr 2e-3 2>&1 | tee -a build/train/train.log
$PY tools/train/export_gguf.py --type q8_0 --name micromoe-tiny-8x256 --out "$MODEL"
cp build/train/loss.csv models/micromoe-tiny-8x256.loss.csv
$PY tools/train/check_export.py --bin build-train/micromoe --ckpt build/train/ckpt.pt --type q8_0
for d in prose c python; do
  build-train/micromoe perplexity -m "$MODEL" -f build/corpus/$d.heldout.txt -c 128 -t 1
done
$PY tools/train/route_table.py --ckpt build/train/ckpt.pt
build-train/micromoe generate -m "$MODEL" -p "int main(" --temp 0 -n 48
build-train/micromoe generate -m "$MODEL" -p "The purpose of this license is" --temp 0 -n 48
build-train/micromoe generate -m "$MODEL" -p "def main():" --temp 0 -n 48
