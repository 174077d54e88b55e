#!/usr/bin/python3
"""Trains the embedded default model (a Mixtral-style MoE, see model.py) on the
corpus of tools/corpus/build_corpus.py with the tokenizer of train_tokenizer.py.

Resumable: every --ckpt-every seconds (and at the end) the model, optimiser,
step, tokens seen and training seconds go to <out>/ckpt.pt; a rerun with the
same arguments continues from there. A run stops when the schedule's --steps
are done or after --budget-min minutes of this process (whichever first), so a
run can span several sessions. The loss curve is appended to <out>/loss.csv.

Batches: each row is BOS followed by seq-1 tokens from a random offset of one
domain's train stream (domains in equal shares), the same shape as the chunks
`micromoe perplexity` scores (first token replaced by BOS).

Usage: /usr/bin/python3 tools/train/train.py [--steps N] [--budget-min M] ...
"""
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse
import csv
import math
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import Config, Transformer  # noqa: E402

DOMAINS = ("prose", "c", "python")
BOS = 1


def load_tokens(corpus, tokenizer, split):
    """Token ids (uint16) of each domain's `split` text, cached next to the tokenizer
    as <domain>.<split>.u16."""
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=tokenizer)
    out = os.path.dirname(tokenizer)
    data = {}
    for d in DOMAINS:
        cache = os.path.join(out, f"{d}.{split}.u16")
        if not os.path.exists(cache):
            text = open(os.path.join(corpus, f"{d}.{split}.txt"), encoding="utf-8").read()
            # Encode in blocks of ~64 KB cut at newlines (one dummy-prefix space per block).
            ids, pos = [], 0
            while pos < len(text):
                end = min(len(text), pos + 65536)
                nl = text.rfind("\n", pos, end)
                if end < len(text) and nl > pos:
                    end = nl + 1
                ids.extend(sp.encode(text[pos:end]))
                pos = end
            np.asarray(ids, dtype=np.uint16).tofile(cache + ".tmp")
            os.replace(cache + ".tmp", cache)
        data[d] = torch.from_numpy(np.fromfile(cache, dtype=np.uint16).astype(np.int64))
    return data


def get_batch(data, batch, seq, rng):
    rows = []
    for b in range(batch):
        toks = data[DOMAINS[b % len(DOMAINS)]]
        off = int(rng.integers(0, len(toks) - seq - 1))
        rows.append(toks[off:off + seq + 1])
    chunk = torch.stack(rows)
    x = chunk[:, :-1].clone()
    x[:, 0] = BOS
    return x, chunk[:, 1:]


@torch.no_grad()
def eval_ppl(model, toks, ctx=128, max_chunks=None, batch=16):
    """llama.cpp/micromoe perplexity: non-overlapping chunks of ctx tokens, the
    first replaced by BOS, the predictions of the second half scored."""
    n = len(toks) // ctx
    if max_chunks:
        n = min(n, max_chunks)
    first = ctx // 2
    nll, count = 0.0, 0
    model.eval()
    for s in range(0, n, batch):
        chunk = torch.stack([toks[c * ctx:(c + 1) * ctx] for c in range(s, min(n, s + batch))])
        x = chunk.clone()
        x[:, 0] = BOS
        logits, _ = model(x)
        lp = F.log_softmax(logits[:, first:ctx - 1].float(), dim=-1)
        tgt = chunk[:, first + 1:ctx]
        nll -= lp.gather(-1, tgt[..., None]).sum().item()
        count += tgt.numel()
    model.train()
    return math.exp(nll / count)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default="build/corpus")
    ap.add_argument("--out", default="build/train")
    ap.add_argument("--tokenizer", default="build/train/tokenizer.model")
    ap.add_argument("--train-min", type=float, default=72.0,
                    help="schedule length in minutes of training (summed over resumed runs); the "
                         "learning rate decays with the share of it done, training stops at its end")
    ap.add_argument("--budget-min", type=float, default=1e9, help="stop this process after this long")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--aux-coef", type=float, default=0.01)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--ckpt-every", type=float, default=240.0, help="seconds")
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-embd", type=int, default=256)
    ap.add_argument("--n-ff", type=int, default=256)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (only useful with AMX)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    data = load_tokens(args.corpus, args.tokenizer, "train")
    held = load_tokens(args.corpus, args.tokenizer, "heldout")
    print("train tokens:", {d: len(t) for d, t in data.items()}, flush=True)

    ckpt_path = os.path.join(args.out, "ckpt.pt")
    if os.path.exists(ckpt_path):
        ck = torch.load(ckpt_path)
        cfg = Config(**ck["config"])
    else:
        ck = None
        cfg = Config(n_layer=args.n_layer, n_embd=args.n_embd, n_ff=args.n_ff, n_ctx=args.seq)
    model = Transformer(cfg)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    step, tokens_seen, train_seconds = 0, 0, 0.0
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step, tokens_seen, train_seconds = ck["step"], ck["tokens"], ck["seconds"]
        print(f"resumed at step {step}, {tokens_seen} tokens, {train_seconds / 60:.1f} min", flush=True)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"config {cfg.to_dict()}  params {n_params}", flush=True)

    def save():
        tmp = ckpt_path + ".tmp"
        torch.save({"config": cfg.to_dict(), "model": model.state_dict(), "opt": opt.state_dict(),
                    "step": step, "tokens": tokens_seen, "seconds": train_seconds}, tmp)
        os.replace(tmp, ckpt_path)

    csv_path = os.path.join(args.out, "loss.csv")
    new_csv = not os.path.exists(csv_path)
    log = open(csv_path, "a", newline="")
    w = csv.writer(log)
    if new_csv:
        w.writerow(["step", "tokens", "train_minutes", "lr", "loss", "aux",
                    "ppl_prose", "ppl_c", "ppl_python"])

    def lr_at(s):
        # Time-based schedule: linear warm-up over --warmup steps, then cosine decay to
        # min-lr-frac over the --train-min minutes, so a slower machine still finishes it.
        if s < args.warmup:
            return args.lr * (s + 1) / args.warmup
        t = min(1.0, train_seconds / (args.train_min * 60))
        return args.lr * (args.min_lr_frac + (1 - args.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * t)))

    start = time.time()
    last_ckpt = time.time()
    ema = None
    while train_seconds < args.train_min * 60 and time.time() - start < args.budget_min * 60:
        t0 = time.time()
        rng = np.random.default_rng(args.seed * 1_000_003 + step)
        x, y = get_batch(data, args.batch, args.seq, rng)
        lr = lr_at(step)
        for g in opt.param_groups:
            g["lr"] = lr
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            logits, aux = model(x)
        loss = F.cross_entropy(logits.float().view(-1, cfg.n_vocab), y.reshape(-1))
        (loss + args.aux_coef * aux).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        tokens_seen += x.numel()
        train_seconds += time.time() - t0
        ema = loss.item() if ema is None else 0.9 * ema + 0.1 * loss.item()
        if step % 10 == 0:
            print(f"step {step} loss {loss.item():.4f} ema {ema:.4f} aux {aux.item():.4f} lr {lr:.2e} "
                  f"{x.numel() / (time.time() - t0):.0f} tok/s  {train_seconds / 60:.1f} min",
                  flush=True)
        ppls = ["", "", ""]
        if step % args.eval_every == 0 or train_seconds >= args.train_min * 60:
            ppls = [f"{eval_ppl(model, held[d], 128, max_chunks=64):.3f}" for d in DOMAINS]
            print(f"eval step {step}: ppl prose/c/python {ppls}", flush=True)
        if step % 10 == 0 or ppls[0]:
            w.writerow([step, tokens_seen, f"{train_seconds / 60:.2f}", f"{lr:.3e}", f"{ema:.4f}",
                        f"{aux.item():.4f}", *ppls])
            log.flush()
        if time.time() - last_ckpt > args.ckpt_every:
            save()
            last_ckpt = time.time()
    save()
    print(f"stopped at step {step}, {tokens_seen} tokens, {train_seconds / 60:.1f} min of training",
          flush=True)


if __name__ == "__main__":
    main()
