"""A GPT in PyTorch with nanoGPT's layout and parameter names, so its state dict and kiln's
(models/zoo/gpt.h) load into each other: the reference of tests/interop/gpt_torch.py and of
tools/gpt_vs_torch.py. Config keys: layers, heads, embd, block, vocab, bias. Written for
Debian's PyTorch 1.13 (no scaled_dot_product_attention: attention is spelled out, as
nanoGPT's fallback path does). Also here: kiln's Philox4x32-10 random integers
(core/philox.h), so that PyTorch can draw exactly the training windows kiln draws, and a
reader of kiln's token files (models/data/text.h)."""
import math
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def layer_norm(c):
    """LayerNorm with or without its bias (torch 1.13's LayerNorm has no bias flag)."""
    ln = nn.LayerNorm(c["embd"])
    if not c["bias"]:
        ln.bias = None
    return ln


class CausalSelfAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.n_head = c["heads"]
        self.sdpa = bool(c.get("sdpa", False))  # F.scaled_dot_product_attention (flash on CUDA)
        self.c_attn = nn.Linear(c["embd"], 3 * c["embd"], bias=c["bias"])
        self.c_proj = nn.Linear(c["embd"], c["embd"], bias=c["bias"])

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if self.sdpa:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))
            att = att.masked_fill(torch.ones(T, T, dtype=torch.bool, device=x.device).tril().logical_not(),
                                  float("-inf"))
            y = F.softmax(att, dim=-1) @ v
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c_fc = nn.Linear(c["embd"], 4 * c["embd"], bias=c["bias"])
        self.c_proj = nn.Linear(4 * c["embd"], c["embd"], bias=c["bias"])

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.ln_1 = layer_norm(c)
        self.attn = CausalSelfAttention(c)
        self.ln_2 = layer_norm(c)
        self.mlp = MLP(c)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(c["vocab"], c["embd"]),
            wpe=nn.Embedding(c["block"], c["embd"]),
            h=nn.ModuleList([Block(c) for _ in range(c["layers"])]),
            ln_f=layer_norm(c),
        ))
        self.lm_head = nn.Linear(c["embd"], c["vocab"], bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # tied, as nanoGPT

    def forward(self, idx):
        T = idx.size(1)
        x = self.transformer.wte(idx) + self.transformer.wpe(torch.arange(T, device=idx.device))
        for block in self.transformer.h:
            x = block(x)
        return self.lm_head(self.transformer.ln_f(x))


def gpt2_init(model, n_layer, gen=None):
    """GPT-2's initialisation, as nanoGPT and kiln apply it: Linear and Embedding weights
    N(0, 0.02), biases 0, LayerNorms 1/0, residual projections N(0, 0.02/sqrt(2 n_layer))."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("c_proj.weight"):
                p.normal_(0.0, 0.02 / math.sqrt(2 * n_layer), generator=gen)
            elif p.dim() >= 2:
                p.normal_(0.0, 0.02, generator=gen)
            elif ".ln_" in name or "ln_f." in name:
                p.fill_(1.0 if name.endswith("weight") else 0.0)
            else:
                p.zero_()


# ---- kiln's random numbers (core/philox.h) -------------------------------------------------

_M0, _M1, _W0, _W1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57), np.uint32(0x9E3779B9), np.uint32(0xBB67AE85)


def philox4x32(seed, counters):
    """Philox4x32-10 of kiln: the four 32-bit words for each counter (a uint64 array)."""
    counters = np.asarray(counters, dtype=np.uint64)
    c0 = (counters & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    c1 = (counters >> np.uint64(32)).astype(np.uint32)
    c2 = np.zeros_like(c0)
    c3 = np.zeros_like(c0)
    k0 = np.uint32(seed & 0xFFFFFFFF)
    k1 = np.uint32((seed >> 32) & 0xFFFFFFFF)
    for _ in range(10):
        p0 = c0.astype(np.uint64) * _M0
        p1 = c2.astype(np.uint64) * _M1
        hi0, lo0 = (p0 >> np.uint64(32)).astype(np.uint32), (p0 & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        hi1, lo1 = (p1 >> np.uint64(32)).astype(np.uint32), (p1 & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0 = np.uint32((int(k0) + int(_W0)) & 0xFFFFFFFF)
        k1 = np.uint32((int(k1) + int(_W1)) & 0xFFFFFFFF)
    return c0, c1, c2, c3


class PhiloxGenerator:
    """kiln's Generator: a seed and an offset; randint(low, high, n) draws what kiln's
    randint draws (element i uses counter offset + i: 64 bits modulo the range)."""

    def __init__(self, seed, offset=0):
        self.seed, self.offset = seed & 0xFFFFFFFFFFFFFFFF, offset

    def randint(self, low, high, n):
        x0, x1, _, _ = philox4x32(self.seed, np.arange(self.offset, self.offset + n, dtype=np.uint64))
        self.offset += n
        v = x0.astype(np.uint64) | (x1.astype(np.uint64) << np.uint64(32))
        return (low + (v % np.uint64(high - low)).astype(np.int64)).astype(np.int64)


# ---- token files (models/data/text.h) ------------------------------------------------------

def read_token_file(path):
    """The tokens of a kiln token file (KILNTOK1) as an int64 numpy array, and its vocabulary size."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"KILNTOK1", f"{path}: not a kiln token file"
    width, count, vocab, dlen = struct.unpack("<QQQQ", data[8:40])
    body = np.frombuffer(data, dtype=np.uint16 if width == 2 else np.uint32, count=count, offset=64 + dlen)
    return body.astype(np.int64), vocab


def split(tokens, val_fraction=0.1):
    """kiln's TextWindows::split: the training span and the last val_fraction."""
    cut = len(tokens) - int(len(tokens) * val_fraction)
    return (0, cut), (cut, len(tokens))


def windows(tokens, span, B, T, gen):
    """kiln's TextWindows::batch: B windows of T tokens and their targets."""
    begin, end = span
    starts = gen.randint(begin, end - T, B)
    idx = starts[:, None] + np.arange(T)[None, :]
    return torch.from_numpy(tokens[idx]), torch.from_numpy(tokens[idx + 1])
