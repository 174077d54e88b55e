#!/usr/bin/python3
"""Which experts each domain's tokens go to, per layer, as Markdown tables.

For every domain, the held-out text (build/corpus/<domain>.heldout.txt) is
tokenized with the model's SentencePiece tokenizer (token for token what
micromoe's tokenizer gives) and cut into chunks of --ctx tokens, the first of
each replaced by BOS, exactly as `micromoe perplexity -c CTX` feeds them. The
checkpoint's router (softmax over the 8 experts, top 2) is recorded at every
position but the BOS one. Reported per layer and expert: the share of tokens
whose top-1 expert it is, and the share of all top-2 assignments it receives
(sums to 100% per layer), plus the routing entropy of the top-2 shares in bits
(3.0 = uniform over 8 experts).

Usage: /usr/bin/python3 tools/train/route_table.py [--ckpt build/train/ckpt.pt]
"""
import argparse
import math
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch  # noqa: E402
import sentencepiece as spm  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import Config, Transformer  # noqa: E402

DOMAINS = ("prose", "c", "python")


@torch.no_grad()
def routing_counts(model, ids, ctx, bos):
    cfg = model.cfg
    n = len(ids) // ctx
    top1 = torch.zeros(cfg.n_layer, cfg.n_expert)
    top2 = torch.zeros(cfg.n_layer, cfg.n_expert)
    toks = torch.tensor(ids[:n * ctx], dtype=torch.int64).view(n, ctx)
    toks[:, 0] = bos
    for s in range(0, n, 16):
        x = toks[s:s + 16]
        _, _, routing = model(x, return_routing=True)
        for L, topi in enumerate(routing):
            topi = topi.view(x.shape[0], ctx, -1)[:, 1:]  # drop the BOS position
            top1[L] += torch.bincount(topi[..., 0].reshape(-1), minlength=cfg.n_expert).float()
            top2[L] += torch.bincount(topi.reshape(-1), minlength=cfg.n_expert).float()
    return top1 / top1.sum(1, keepdim=True), top2 / top2.sum(1, keepdim=True)


def entropy_bits(p):
    return -sum(float(v) * math.log2(float(v)) for v in p if v > 0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", default="build/train/ckpt.pt")
    ap.add_argument("--tokenizer", default="build/train/tokenizer.model")
    ap.add_argument("--corpus", default="build/corpus")
    ap.add_argument("--ctx", type=int, default=128)
    args = ap.parse_args()
    torch.set_num_threads(1)
    ck = torch.load(args.ckpt, map_location="cpu")
    cfg = Config(**ck["config"])
    model = Transformer(cfg)
    model.load_state_dict(ck["model"])
    model.eval()
    sp = spm.SentencePieceProcessor(model_file=args.tokenizer)
    res = {}
    for d in DOMAINS:
        text = open(os.path.join(args.corpus, f"{d}.heldout.txt"), encoding="utf-8").read()
        res[d] = routing_counts(model, [sp.bos_id()] + sp.encode(text), args.ctx, sp.bos_id())
    experts = " | ".join(f"e{e}" for e in range(cfg.n_expert))
    for kind, k in (("top-2 assignments (share of all 2 x tokens)", 1),
                    ("top-1 expert (share of tokens)", 0)):
        print(f"\n#### {kind}, per layer, in %\n")
        print(f"| layer | domain | {experts} | entropy (bits) |")
        print("|---|---|" + "---|" * cfg.n_expert + "---|")
        for L in range(cfg.n_layer):
            for d in DOMAINS:
                p = res[d][k][L]
                cells = " | ".join(f"{100 * float(v):.1f}" for v in p)
                print(f"| {L} | {d} | {cells} | {entropy_bits(p):.2f} |")
    # How different the domains' routing is: total-variation distance of the top-2 shares.
    print("\n#### Total-variation distance between domains' top-2 shares, per layer\n")
    print("| layer | prose vs c | prose vs python | c vs python |")
    print("|---|---|---|---|")
    for L in range(cfg.n_layer):
        tv = lambda a, b: 0.5 * float((res[a][1][L] - res[b][1][L]).abs().sum())  # noqa: E731
        print(f"| {L} | {tv('prose', 'c'):.3f} | {tv('prose', 'python'):.3f} | {tv('c', 'python'):.3f} |")


if __name__ == "__main__":
    main()
