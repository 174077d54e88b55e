#!/usr/bin/python3
"""Exports a checkpoint of train.py to a GGUF v3 file of the `llama` architecture
with experts (the layout of Mixtral in llama.cpp), readable by micromoe and
other GGUF engines.

The GGUF writer is self-contained (numpy only): header "GGUF", version 3, tensor
count, key/value count, the key/value pairs, the tensor infos (name, dims with
ne0 = the contiguous dimension first, type, offset), then the tensor data, each
tensor aligned to 32 bytes. Norms and routers are written F32; the matrices
Q8_0 (blocks of 32 values: fp16 scale d = max|x|/127, int8 q = round(x/d)) or
F16 or F32 (--type).

Usage: /usr/bin/python3 tools/train/export_gguf.py [--ckpt build/train/ckpt.pt]
           [--tokenizer build/train/tokenizer.model] [--type q8_0] --out models/X.gguf
"""
import argparse
import os
import struct
import sys

import numpy as np

ALIGNMENT = 32

# GGUF metadata value types.
T_UINT32, T_INT32, T_FLOAT32, T_BOOL, T_STRING, T_ARRAY, T_UINT64 = 4, 5, 6, 7, 8, 9, 10
# ggml tensor types.
GGML_F32, GGML_F16, GGML_Q8_0 = 0, 1, 8
# llama_ftype values for general.file_type.
FILE_TYPE = {"f32": 0, "f16": 1, "q8_0": 7}


def quantize_q8_0(x):
    """Rows of blocks of 32: fp16 d = max|x| / 127, then 32 int8 round(x / d)
    (rounding half away from zero, as ggml's reference quantizer)."""
    x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, 32)
    amax = np.abs(x).max(axis=1, keepdims=True)
    d = amax / 127.0
    inv = np.divide(1.0, d, out=np.zeros_like(d), where=d != 0)
    v = x * inv
    q = (np.sign(v) * np.floor(np.abs(v) + 0.5)).astype(np.int8)
    out = np.empty((x.shape[0], 34), dtype=np.uint8)
    out[:, :2] = d.astype(np.float16).view(np.uint8).reshape(-1, 2)
    out[:, 2:] = q.view(np.uint8)
    return out.tobytes()


class GgufWriter:
    def __init__(self):
        self.kv = []       # encoded key/value pairs
        self.tensors = []  # (name, ne list, ggml type, bytes)

    @staticmethod
    def _str(s):
        b = s.encode("utf-8")
        return struct.pack("<Q", len(b)) + b

    def add(self, key, vtype, value):
        body = self._str(key) + struct.pack("<I", vtype)
        if vtype == T_STRING:
            body += self._str(value)
        elif vtype == T_UINT32:
            body += struct.pack("<I", value)
        elif vtype == T_INT32:
            body += struct.pack("<i", value)
        elif vtype == T_UINT64:
            body += struct.pack("<Q", value)
        elif vtype == T_FLOAT32:
            body += struct.pack("<f", value)
        elif vtype == T_BOOL:
            body += struct.pack("<B", 1 if value else 0)
        else:
            raise ValueError(vtype)
        self.kv.append(body)

    def add_array(self, key, elem_type, values):
        body = self._str(key) + struct.pack("<IIQ", T_ARRAY, elem_type, len(values))
        if elem_type == T_STRING:
            body += b"".join(self._str(v) for v in values)
        elif elem_type == T_FLOAT32:
            body += np.asarray(values, dtype="<f4").tobytes()
        elif elem_type == T_INT32:
            body += np.asarray(values, dtype="<i4").tobytes()
        else:
            raise ValueError(elem_type)
        self.kv.append(body)

    def add_tensor(self, name, array, ggml_type):
        """`array` is row-major numpy; GGUF ne is its shape reversed."""
        a = np.ascontiguousarray(array, dtype=np.float32)
        ne = list(reversed(a.shape))
        if ggml_type == GGML_F32:
            data = a.astype("<f4").tobytes()
        elif ggml_type == GGML_F16:
            data = a.astype("<f2").tobytes()
        elif ggml_type == GGML_Q8_0:
            assert ne[0] % 32 == 0, (name, ne)
            data = quantize_q8_0(a)
        else:
            raise ValueError(ggml_type)
        self.tensors.append((name, ne, ggml_type, data))

    def write(self, path):
        infos, offset = [], 0
        for name, ne, t, data in self.tensors:
            infos.append(self._str(name) + struct.pack("<I", len(ne)) +
                         struct.pack(f"<{len(ne)}Q", *ne) + struct.pack("<IQ", t, offset))
            offset += len(data)
            offset += -offset % ALIGNMENT
        head = b"GGUF" + struct.pack("<IQQ", 3, len(self.tensors), len(self.kv))
        head += b"".join(self.kv) + b"".join(infos)
        head += b"\0" * (-len(head) % ALIGNMENT)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(head)
            for _, _, _, data in self.tensors:
                f.write(data)
                f.write(b"\0" * (-len(data) % ALIGNMENT))
        os.replace(tmp, path)


def export(state, cfg, sp, out, wtype="q8_0", name="micromoe-tiny"):
    """Writes model `state` (a Transformer state_dict of tensors), config dict `cfg`
    and SentencePiece processor `sp` to `out`."""
    mat = {"q8_0": GGML_Q8_0, "f16": GGML_F16, "f32": GGML_F32}[wtype]
    g = lambda k: state[k].detach().float().cpu().numpy()  # noqa: E731
    w = GgufWriter()
    hd = cfg["n_embd"] // cfg["n_head"]
    w.add("general.architecture", T_STRING, "llama")
    w.add("general.name", T_STRING, name)
    w.add("general.file_type", T_UINT32, FILE_TYPE[wtype])
    w.add("general.alignment", T_UINT32, ALIGNMENT)
    w.add("llama.context_length", T_UINT32, cfg["n_ctx"])
    w.add("llama.embedding_length", T_UINT32, cfg["n_embd"])
    w.add("llama.block_count", T_UINT32, cfg["n_layer"])
    w.add("llama.feed_forward_length", T_UINT32, cfg["n_ff"])
    w.add("llama.attention.head_count", T_UINT32, cfg["n_head"])
    w.add("llama.attention.head_count_kv", T_UINT32, cfg["n_head_kv"])
    w.add("llama.rope.freq_base", T_FLOAT32, cfg["rope_base"])
    w.add("llama.rope.dimension_count", T_UINT32, hd)
    w.add("llama.attention.layer_norm_rms_epsilon", T_FLOAT32, cfg["norm_eps"])
    w.add("llama.expert_count", T_UINT32, cfg["n_expert"])
    w.add("llama.expert_used_count", T_UINT32, cfg["n_expert_used"])
    w.add("llama.vocab_size", T_UINT32, cfg["n_vocab"])

    n = sp.vocab_size()
    assert n == cfg["n_vocab"], (n, cfg["n_vocab"])
    types = []
    for i in range(n):
        if sp.is_unknown(i):
            types.append(2)
        elif sp.is_control(i):
            types.append(3)
        elif sp.is_byte(i):
            types.append(6)
        else:
            types.append(1)
    w.add("tokenizer.ggml.model", T_STRING, "llama")
    w.add_array("tokenizer.ggml.tokens", T_STRING, [sp.id_to_piece(i) for i in range(n)])
    w.add_array("tokenizer.ggml.scores", T_FLOAT32, [sp.get_score(i) for i in range(n)])
    w.add_array("tokenizer.ggml.token_type", T_INT32, types)
    w.add("tokenizer.ggml.bos_token_id", T_UINT32, sp.bos_id())
    w.add("tokenizer.ggml.eos_token_id", T_UINT32, sp.eos_id())
    w.add("tokenizer.ggml.unknown_token_id", T_UINT32, sp.unk_id())
    w.add("tokenizer.ggml.add_bos_token", T_BOOL, True)
    w.add("tokenizer.ggml.add_eos_token", T_BOOL, False)
    w.add("tokenizer.ggml.add_space_prefix", T_BOOL, True)

    w.add_tensor("token_embd.weight", g("tok_embd.weight"), mat)
    for L in range(cfg["n_layer"]):
        p, b = f"blocks.{L}.", f"blk.{L}."
        w.add_tensor(b + "attn_norm.weight", g(p + "attn_norm.weight"), GGML_F32)
        w.add_tensor(b + "attn_q.weight", g(p + "attn.wq.weight"), mat)
        w.add_tensor(b + "attn_k.weight", g(p + "attn.wk.weight"), mat)
        w.add_tensor(b + "attn_v.weight", g(p + "attn.wv.weight"), mat)
        w.add_tensor(b + "attn_output.weight", g(p + "attn.wo.weight"), mat)
        w.add_tensor(b + "ffn_norm.weight", g(p + "ffn_norm.weight"), GGML_F32)
        w.add_tensor(b + "ffn_gate_inp.weight", g(p + "moe.router.weight"), GGML_F32)
        w.add_tensor(b + "ffn_gate_exps.weight", g(p + "moe.w_gate"), mat)  # [E, f, d] -> ne [d, f, E]
        w.add_tensor(b + "ffn_up_exps.weight", g(p + "moe.w_up"), mat)
        w.add_tensor(b + "ffn_down_exps.weight", g(p + "moe.w_down"), mat)  # [E, d, f] -> ne [f, d, E]
    w.add_tensor("output_norm.weight", g("norm.weight"), GGML_F32)
    w.add_tensor("output.weight", g("output.weight"), mat)
    w.write(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", default="build/train/ckpt.pt")
    ap.add_argument("--tokenizer", default="build/train/tokenizer.model")
    ap.add_argument("--type", default="q8_0", choices=["q8_0", "f16", "f32"])
    ap.add_argument("--name", default="micromoe-tiny")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    import torch
    import sentencepiece as spm
    ck = torch.load(args.ckpt, map_location="cpu")
    sp = spm.SentencePieceProcessor(model_file=args.tokenizer)
    export(ck["model"], ck["config"], sp, args.out, args.type, args.name)
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes), step {ck['step']}", file=sys.stderr)


if __name__ == "__main__":
    main()
