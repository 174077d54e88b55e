"""The Mixtral-style MoE of the embedded default model, computed exactly as
micromoe (and llama.cpp) compute GGUF `llama` models with experts.

Per layer: x += Wo * Attn(RoPE(Wq*n), RoPE(Wk*n), Wv*n) with n = RMSNorm(x);
x += sum_{e in top2} w_e * Down_e(silu(Gate_e(n)) * Up_e(n)) with n = RMSNorm(x),
w = softmax(Router(n)) restricted to the top 2 and renormalised to sum 1.
RoPE is GGUF's "normal" llama style: adjacent pairs (x[2i], x[2i+1]) of each
head are rotated by pos * base^(-2i/head_dim). Query head h reads KV head
h // (n_head // n_head_kv). No biases; the output head is untied.
"""
import math
from dataclasses import dataclass, asdict

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class Config:
    n_vocab: int = 4096
    n_embd: int = 256
    n_layer: int = 4
    n_head: int = 4
    n_head_kv: int = 2
    n_ff: int = 256          # per-expert FFN width
    n_expert: int = 8
    n_expert_used: int = 2
    n_ctx: int = 256
    rope_base: float = 10000.0
    norm_eps: float = 1e-5

    @property
    def head_dim(self):
        return self.n_embd // self.n_head

    def to_dict(self):
        return asdict(self)


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(n_ctx, head_dim, base):
    i = torch.arange(head_dim // 2, dtype=torch.float64)
    inv = base ** (-2.0 * i / head_dim)
    theta = torch.arange(n_ctx, dtype=torch.float64)[:, None] * inv[None, :]
    return torch.cos(theta).float(), torch.sin(theta).float()


def apply_rope(x, cos, sin):
    """x: [..., T, hd]; rotates adjacent pairs (2i, 2i+1) by theta[t, i]."""
    T = x.shape[-2]
    xr = x.reshape(*x.shape[:-1], -1, 2)
    x0, x1 = xr[..., 0], xr[..., 1]
    c, s = cos[:T], sin[:T]
    out = torch.stack((x0 * c - x1 * s, x0 * s + x1 * c), dim=-1)
    return out.reshape(x.shape)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        hd = cfg.head_dim
        self.wq = nn.Linear(cfg.n_embd, cfg.n_head * hd, bias=False)
        self.wk = nn.Linear(cfg.n_embd, cfg.n_head_kv * hd, bias=False)
        self.wv = nn.Linear(cfg.n_embd, cfg.n_head_kv * hd, bias=False)
        self.wo = nn.Linear(cfg.n_head * hd, cfg.n_embd, bias=False)

    def forward(self, x, cos, sin, mask_bias):
        B, T, _ = x.shape
        c = self.cfg
        hd, g = c.head_dim, c.n_head // c.n_head_kv
        # Query head h = kv * g + j reads KV head kv = h // g: group the g query heads
        # of each KV head along the time axis, so K and V need no copies.
        q = self.wq(x).view(B, T, c.n_head_kv, g, hd).permute(0, 2, 3, 1, 4)
        k = self.wk(x).view(B, T, c.n_head_kv, hd).transpose(1, 2)
        v = self.wv(x).view(B, T, c.n_head_kv, hd).transpose(1, 2)
        q = apply_rope(q, cos, sin).reshape(B * c.n_head_kv, g * T, hd)
        k = apply_rope(k, cos, sin).reshape(B * c.n_head_kv, T, hd)
        bias = mask_bias[:T, :T].repeat(g, 1)  # [g*T, T]: 0 or -inf
        att = torch.baddbmm(bias, q, k.transpose(1, 2), alpha=1.0 / math.sqrt(hd))
        att = torch.softmax(att, dim=-1)
        y = torch.bmm(att, v.reshape(B * c.n_head_kv, T, hd))  # [B*kv, g*T, hd]
        y = y.view(B, c.n_head_kv, g, T, hd).permute(0, 3, 1, 2, 4).reshape(B, T, c.n_head * hd)
        return self.wo(y)


class MoE(nn.Module):
    """Top-k softmax-gated SwiGLU experts, computed grouped: the tokens routed to
    an expert are gathered and go through one matmul per weight per expert."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        E, d, f = cfg.n_expert, cfg.n_embd, cfg.n_ff
        self.router = nn.Linear(d, E, bias=False)
        self.w_gate = nn.Parameter(torch.empty(E, f, d))
        self.w_up = nn.Parameter(torch.empty(E, f, d))
        self.w_down = nn.Parameter(torch.empty(E, d, f))

    def forward(self, x):
        """x: [N, d]. Returns (out [N, d], aux loss, router probs [N, E], top-k ids [N, k])."""
        c = self.cfg
        N = x.shape[0]
        logits = self.router(x)
        probs = torch.softmax(logits.float(), dim=-1)
        topw, topi = probs.topk(c.n_expert_used, dim=-1)
        topw = topw / topw.sum(-1, keepdim=True)
        flat_e = topi.reshape(-1)
        flat_w = topw.reshape(-1)
        flat_tok = torch.arange(N, device=x.device).repeat_interleave(c.n_expert_used)
        order = torch.argsort(flat_e)
        counts = torch.bincount(flat_e, minlength=c.n_expert).tolist()
        tok_sorted = flat_tok[order]
        w_sorted = flat_w[order]
        out = torch.zeros_like(x)
        start = 0
        for e, n_e in enumerate(counts):
            if n_e == 0:
                continue
            idx = tok_sorted[start:start + n_e]
            xe = x.index_select(0, idx)
            h = F.silu(xe @ self.w_gate[e].t()) * (xe @ self.w_up[e].t())
            ye = (h @ self.w_down[e].t()) * w_sorted[start:start + n_e, None].to(x.dtype)
            out.index_add_(0, idx, ye)
            start += n_e
        # Switch/Mixtral load-balancing loss: E * sum_e f_e * P_e, where f_e is the
        # share of the N*k assignments that go to expert e and P_e its mean probability.
        f = torch.bincount(flat_e, minlength=c.n_expert).float() / flat_e.numel()
        P = probs.mean(0)
        aux = c.n_expert * torch.sum(f * P)
        return out, aux, probs, topi


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.moe = MoE(cfg)

    def forward(self, x, cos, sin, mask):
        x = x + self.attn(self.attn_norm(x), cos, sin, mask)
        B, T, d = x.shape
        y, aux, probs, topi = self.moe(self.ffn_norm(x).reshape(B * T, d))
        return x + y.view(B, T, d), aux, probs, topi


class Transformer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.tok_embd = nn.Embedding(cfg.n_vocab, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.output = nn.Linear(cfg.n_embd, cfg.n_vocab, bias=False)
        cos, sin = rope_tables(cfg.n_ctx, cfg.head_dim, cfg.rope_base)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        mask = torch.triu(torch.ones(cfg.n_ctx, cfg.n_ctx, dtype=torch.bool), diagonal=1)
        bias = torch.zeros(cfg.n_ctx, cfg.n_ctx).masked_fill(mask, float("-inf"))
        self.register_buffer("mask_bias", bias, persistent=False)
        self.reset_parameters()

    def reset_parameters(self):
        std = 0.02
        resid_std = std / math.sqrt(2 * self.cfg.n_layer)
        for name, p in self.named_parameters():
            if p.dim() < 2:
                continue
            if name.endswith("wo.weight") or name.endswith("w_down"):
                nn.init.normal_(p, std=resid_std)
            else:
                nn.init.normal_(p, std=std)

    def forward(self, idx, return_routing=False):
        x = self.tok_embd(idx)
        aux_total = 0.0
        routing = []
        for blk in self.blocks:
            x, aux, probs, topi = blk(x, self.cos, self.sin, self.mask_bias)
            aux_total = aux_total + aux
            if return_routing:
                routing.append(topi)
        logits = self.output(self.norm(x))
        if return_routing:
            return logits, aux_total / len(self.blocks), routing
        return logits, aux_total / len(self.blocks)
