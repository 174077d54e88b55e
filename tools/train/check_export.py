#!/usr/bin/python3
"""End-to-end check of the export: micromoe must compute what model.py computes.

Takes a checkpoint (or, with --random SCALE, a fresh model whose matrices are
scaled up so that its logits are far from uniform and any layout or RoPE
mistake shows), exports it, and compares on the first --bytes of a held-out
file:
  1. token ids: SentencePiece (Python) vs `micromoe tokenize --ids`;
  2. perplexity: model.py on micromoe's token ids, scored as `micromoe
     perplexity` scores (chunks of --ctx tokens, BOS first, second half
     scored) vs `micromoe perplexity -c CTX` itself.

Usage: /usr/bin/python3 tools/train/check_export.py --bin build-train/micromoe
           [--ckpt build/train/ckpt.pt | --random 4] [--type f32] [--file ...]
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch  # noqa: E402
import sentencepiece as spm  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import Config, Transformer  # noqa: E402
from export_gguf import export  # noqa: E402
from train import eval_ppl  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="build-train/micromoe")
    ap.add_argument("--ckpt")
    ap.add_argument("--random", type=float, help="scale of a fresh model's matrices")
    ap.add_argument("--tokenizer", default="build/train/tokenizer.model")
    ap.add_argument("--type", default="f32", choices=["q8_0", "f16", "f32"])
    ap.add_argument("--file", default="build/corpus/c.heldout.txt")
    ap.add_argument("--bytes", type=int, default=60000)
    ap.add_argument("--ctx", type=int, default=128)
    args = ap.parse_args()
    torch.set_num_threads(1)
    sp = spm.SentencePieceProcessor(model_file=args.tokenizer)

    if args.ckpt:
        ck = torch.load(args.ckpt, map_location="cpu")
        cfg = Config(**ck["config"])
        model = Transformer(cfg)
        model.load_state_dict(ck["model"])
    else:
        torch.manual_seed(0)
        cfg = Config()
        model = Transformer(cfg)
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() >= 2:
                    p.mul_(args.random)
                else:
                    p.copy_(1 + 0.3 * torch.randn_like(p))
    tmp = tempfile.mkdtemp()
    gguf = os.path.join(tmp, "check.gguf")
    export(model.state_dict(), cfg.to_dict(), sp, gguf, args.type, "check")

    raw = open(args.file, "rb").read()[:args.bytes]
    text = raw.decode("utf-8", errors="ignore")
    text = text[:text.rfind("\n") + 1]
    txt = os.path.join(tmp, "text.txt")
    open(txt, "w", encoding="utf-8").write(text)

    ids = json.loads(subprocess.run([args.bin, "tokenize", "-m", gguf, "-p", text, "--ids"],
                                    check=True, capture_output=True, text=True).stdout)
    py_ids = [sp.bos_id()] + sp.encode(text)
    same = sum(a == b for a, b in zip(ids, py_ids))
    print(f"tokens: micromoe {len(ids)}, sentencepiece {len(py_ids)}, identical prefix "
          f"{next((i for i, (a, b) in enumerate(zip(ids, py_ids)) if a != b), min(len(ids), len(py_ids)))}"
          f", positions equal {same}")

    ppl_torch = eval_ppl(model, torch.tensor(ids, dtype=torch.int64), args.ctx)
    out = subprocess.run([args.bin, "perplexity", "-m", gguf, "-f", txt, "-c", str(args.ctx), "-t", "1"],
                         check=True, capture_output=True, text=True).stdout
    ppl_cpp = float(re.search(r"PPL = ([0-9.]+)", out).group(1))
    rel = abs(ppl_cpp - ppl_torch) / ppl_torch
    print(f"perplexity ({args.type}, ctx {args.ctx}): pytorch {ppl_torch:.4f}  micromoe {ppl_cpp:.4f}  "
          f"relative difference {100 * rel:.3f}%")
    sys.exit(0 if rel < 0.01 else 1)


if __name__ == "__main__":
    main()
