#!/usr/bin/env python3
"""PyTorch baseline for `hymba bench train`: the same tiny Hymba, trained the same way.

Builds the model of a hymba.cpp model config (configs/tiny/hymba.yaml) from HYMBA_SPEC.md:
meta tokens prepended to every row, parallel attention + SSM heads fused by the normalised
mean ((RMSNorm(o) + RMSNorm(y)) / 2, then out_proj), sliding-window and full attention layers
(a key is visible iff j <= i and (full or i - j <= W or j < M)), KV sharing (consumers reuse
their producer's k, v after RoPE), GQA, rotate-half RoPE, SwiGLU MLP, RMSNorm everywhere,
tied or untied embeddings as the config says, next-token cross entropy over the L token
positions (meta outputs dropped). The selective scan is a plain Python loop over time, as
in mamba_ssm's `selective_scan_ref` (what a CPU user without the CUDA kernels has).
Attention is explicit matmul + masked softmax (PyTorch 1.13 has no fused CPU attention).

Each timed step is forward, backward, gradient clipping to 1.0 and AdamW (lr 3e-3, betas
0.9/0.95, eps 1e-8, weight decay 0.1 on matrices), on random tokens, like
`hymba bench train CONFIG` on a model config. Prints tokens/s.

Install (Debian 12; NOT part of scripts/setup.sh: CI does not need it):
    sudo apt-get install -y python3-torch python3-yaml
Run with Debian's interpreter (a pyenv/venv python does not see the Debian packages):
    /usr/bin/python3 bench/torch_hymba.py configs/tiny/hymba.yaml --threads 2 --batch 8 --seq 256
Compare with, at the same threads, batch and sequence length:
    HYMBA_NUM_THREADS=2 build/bin/hymba bench train configs/tiny/hymba.yaml --batch 8 --seq 256
"""
import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml


def load_config(path):
    with open(path) as f:
        c = yaml.safe_load(f)
    unsupported = [k for k in ("layers",) if k in c]
    if unsupported:
        sys.exit(f"{path}: per-layer overrides ({', '.join(unsupported)}) are not supported by this baseline")
    if c.get("block", "hybrid") != "hybrid":
        sys.exit(f"{path}: block '{c.get('block')}': this baseline builds parallel hybrid blocks only")
    if c.get("fusion", "mean") != "mean":
        sys.exit(f"{path}: fusion '{c.get('fusion')}': this baseline implements mean fusion only")
    rope = c.get("rope", {}) or {}
    if rope.get("type", "default") != "default":
        sys.exit(f"{path}: rope type '{rope.get('type')}': this baseline implements default RoPE only")
    H = c["hidden_size"]
    ssm = c.get("ssm", {}) or {}
    dt_rank = ssm.get("dt_rank", "auto")
    mlp = c.get("mlp", {})
    cfg = dict(
        vocab=c["vocab_size"], hidden=H, layers=c["num_layers"], heads=c["num_heads"],
        kv_heads=c["num_kv_heads"], head_dim=c.get("head_dim", H // c["num_heads"]),
        d_state=ssm.get("d_state", 16), d_conv=ssm.get("d_conv", 4), expand=ssm.get("expand", 2),
        dt_rank=math.ceil(H / 16) if dt_rank in (None, "auto", 0) else dt_rank,
        inner_norms=ssm.get("inner_layernorms", False), conv_bias=ssm.get("conv_bias", True),
        intermediate=None if mlp in (None, "none") else mlp["intermediate_size"],
        meta=c.get("num_meta_tokens", 0),
        window=None if c.get("sliding_window", "none") in (None, "none") else c["sliding_window"],
        full_layers=set(c.get("full_attention_layers", []) or []),
        kv_groups=c.get("kv_reuse_groups", []) or [],
        theta=float(rope.get("theta", 10000.0)), eps=float(c.get("norm_eps", 1e-6)),
        tie=c.get("tie_embeddings", True), init_std=float(c.get("init_std", 0.02)),
    )
    cfg["v_head_dim"] = c.get("v_head_dim", cfg["head_dim"])
    cfg["inner"] = cfg["expand"] * H
    producer_of = {}
    for g in cfg["kv_groups"]:
        for consumer in g[1:]:
            producer_of[consumer] = g[0]
    cfg["producer_of"] = producer_of
    return cfg


SCAN_UNBIND = False  # --scan unbind


class RMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def linear(i, o, std):
    m = nn.Linear(i, o, bias=False)
    nn.init.normal_(m.weight, 0.0, std)
    return m


def rope_tables(T, d, theta):
    inv = theta ** (-torch.arange(0, d, 2, dtype=torch.float32) / d)
    ang = torch.arange(T, dtype=torch.float32)[:, None] * inv[None, :]
    ang = torch.cat([ang, ang], -1)
    return ang.cos(), ang.sin()


def apply_rope(x, cos, sin):  # rotate-half
    h = x.shape[-1] // 2
    rot = torch.cat([-x[..., h:], x[..., :h]], -1)
    return x * cos + rot * sin


def selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, unbind=False):
    """mamba_ssm.ops.selective_scan_interface.selective_scan_ref (real, variable B and C):
    u, delta, z (b, d, l); A (d, n); B, C (b, n, l); D, delta_bias (d).

    The reference indexes deltaA[:, :, i] in the loop; PyTorch's backward of each such
    slice writes a zero tensor of the full (b, d, l, n) size, so the backward costs O(l^2).
    unbind=True takes the per-step views with one unbind instead (one backward node, O(l)):
    the same loop with that one change, a stronger baseline (--scan unbind)."""
    delta = F.softplus(delta + delta_bias[..., None])
    batch, dim, _ = u.shape
    x = A.new_zeros((batch, dim, A.shape[1]))
    deltaA = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))
    deltaB_u = torch.einsum("bdl,bnl,bdl->bdln", delta, B, u)
    ys = []
    if unbind:
        dA, dBu, Cs = deltaA.unbind(2), deltaB_u.unbind(2), C.unbind(2)
        for i in range(u.shape[2]):
            x = dA[i] * x + dBu[i]
            ys.append(torch.einsum("bdn,bn->bd", x, Cs[i]))
    else:
        for i in range(u.shape[2]):
            x = deltaA[:, :, i] * x + deltaB_u[:, :, i]
            ys.append(torch.einsum("bdn,bn->bd", x, C[:, :, i]))
    y = torch.stack(ys, dim=2)
    out = y + u * D[:, None]
    return out * F.silu(z)


class HybridLayer(nn.Module):
    def __init__(self, cfg, li):
        super().__init__()
        H, I, std = cfg["hidden"], cfg["inner"], cfg["init_std"]
        self.li = li
        self.producer = cfg["producer_of"].get(li, -1)  # >= 0: a KV consumer
        self.hq, self.hkv, self.dk, self.dv = cfg["heads"], cfg["kv_heads"], cfg["head_dim"], cfg["v_head_dim"]
        self.window = None if li in cfg["full_layers"] else cfg["window"]
        self.I, self.N, self.R, self.W = I, cfg["d_state"], cfg["dt_rank"], cfg["d_conv"]
        kv = 0 if self.producer >= 0 else self.hkv * (self.dk + self.dv)
        self.input_layernorm = RMSNorm(H, cfg["eps"])
        self.in_proj = linear(H, self.hq * self.dk + kv + 2 * I, std)
        self.conv_weight = nn.Parameter(torch.randn(I, 1, self.W) * std)
        self.conv_bias = nn.Parameter(torch.zeros(I)) if cfg["conv_bias"] else None
        self.x_proj = linear(I, self.R + 2 * self.N, std)
        self.dt_proj = linear(self.R, I, std)
        self.dt_bias = nn.Parameter(torch.zeros(I))
        self.A_log = nn.Parameter(torch.log(torch.arange(1, self.N + 1, dtype=torch.float32)).repeat(I, 1))
        self.D = nn.Parameter(torch.ones(I))
        if cfg["inner_norms"]:
            self.dt_norm, self.B_norm, self.C_norm = RMSNorm(self.R, cfg["eps"]), RMSNorm(self.N, cfg["eps"]), RMSNorm(self.N, cfg["eps"])
        else:
            self.dt_norm = self.B_norm = self.C_norm = None
        self.pre_avg_layernorm1 = RMSNorm(self.hq * self.dv, cfg["eps"])
        self.pre_avg_layernorm2 = RMSNorm(I, cfg["eps"])
        self.out_proj = linear(I, H, std)
        self.mlp = cfg["intermediate"] is not None
        if self.mlp:
            self.pre_mlp_layernorm = RMSNorm(H, cfg["eps"])
            self.gate_proj = linear(H, cfg["intermediate"], std)
            self.up_proj = linear(H, cfg["intermediate"], std)
            self.down_proj = linear(cfg["intermediate"], H, std)

    def attention(self, q, store, cos, sin, M):
        Bsz, T, _ = q.shape
        q = apply_rope(q.view(Bsz, T, self.hq, self.dk).transpose(1, 2), cos, sin)
        k, v = store[self.producer] if self.producer >= 0 else store[self.li]
        rep = self.hq // self.hkv
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(self.dk)
        i = torch.arange(T)[:, None]
        j = torch.arange(T)[None, :]
        visible = j <= i
        if self.window is not None:
            visible = visible & ((i - j <= self.window) | (j < M))
        s = s.masked_fill(~visible, float("-inf"))
        o = torch.softmax(s, -1) @ v  # (B, hq, T, dv)
        return o.transpose(1, 2).reshape(Bsz, T, self.hq * self.dv)

    def ssm(self, x, z):
        T = x.shape[1]
        xt = x.transpose(1, 2)  # (B, I, T)
        xc = F.silu(F.conv1d(xt, self.conv_weight, self.conv_bias, padding=self.W - 1, groups=self.I)[..., :T])
        dbc = self.x_proj(xc.transpose(1, 2))
        dt_r, Bm, Cm = torch.split(dbc, [self.R, self.N, self.N], -1)
        if self.dt_norm is not None:
            dt_r, Bm, Cm = self.dt_norm(dt_r), self.B_norm(Bm), self.C_norm(Cm)
        dt = self.dt_proj(dt_r)  # its bias goes into the scan
        y = selective_scan_ref(xc, dt.transpose(1, 2), -torch.exp(self.A_log), Bm.transpose(1, 2).contiguous(),
                               Cm.transpose(1, 2).contiguous(), self.D, z.transpose(1, 2), self.dt_bias,
                               unbind=SCAN_UNBIND)
        return y.transpose(1, 2)

    def forward(self, x, store, cos, sin, M):
        u = self.input_layernorm(x)
        P = self.in_proj(u)
        qw = self.hq * self.dk
        if self.producer >= 0:
            q, xs, z = torch.split(P, [qw, self.I, self.I], -1)
        else:
            q, k, v, xs, z = torch.split(P, [qw, self.hkv * self.dk, self.hkv * self.dv, self.I, self.I], -1)
            Bsz, T, _ = k.shape
            k = apply_rope(k.reshape(Bsz, T, self.hkv, self.dk).transpose(1, 2), cos, sin)
            v = v.reshape(Bsz, T, self.hkv, self.dv).transpose(1, 2)
            store[self.li] = (k, v)
        o = self.attention(q, store, cos, sin, M)
        y = self.ssm(xs, z)
        h = x + self.out_proj((self.pre_avg_layernorm1(o) + self.pre_avg_layernorm2(y)) * 0.5)
        if not self.mlp:
            return h
        m = self.pre_mlp_layernorm(h)
        return h + self.down_proj(F.silu(self.gate_proj(m)) * self.up_proj(m))


class TinyHymba(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        H = cfg["hidden"]
        self.memory_tokens = nn.Parameter(torch.randn(cfg["meta"], H)) if cfg["meta"] > 0 else None
        self.embed_tokens = nn.Embedding(cfg["vocab"], H)
        nn.init.normal_(self.embed_tokens.weight, 0.0, cfg["init_std"])
        self.layers = nn.ModuleList([HybridLayer(cfg, i) for i in range(cfg["layers"])])
        self.final_layernorm = RMSNorm(H, cfg["eps"])
        self.lm_head = None if cfg["tie"] else linear(H, cfg["vocab"], cfg["init_std"])

    def loss(self, ids, targets):
        Bsz, L = ids.shape
        M = self.cfg["meta"]
        x = self.embed_tokens(ids)
        if M > 0:
            x = torch.cat([self.memory_tokens.unsqueeze(0).expand(Bsz, -1, -1), x], 1)
        cos, sin = rope_tables(L + M, self.cfg["head_dim"], self.cfg["theta"])
        store = {}
        for layer in self.layers:
            x = layer(x, store, cos, sin, M)
        x = self.final_layernorm(x[:, M:])
        w = self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        logits = x @ w.t()
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config", help="a hymba.cpp model config, e.g. configs/tiny/hymba.yaml")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("HYMBA_NUM_THREADS", os.cpu_count())))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--scan", choices=["ref", "unbind"], default="ref",
                    help="ref: mamba_ssm's selective_scan_ref loop as written (default); unbind: the same loop "
                         "over unbind views (O(L) backward instead of O(L^2))")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    global SCAN_UNBIND
    SCAN_UNBIND = a.scan == "unbind"
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = load_config(a.config)
    model = TinyHymba(cfg)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n and "memory" not in n and "conv" not in n]
    ids_decay = {id(p) for p in decay}
    no_decay = [p for p in model.parameters() if id(p) not in ids_decay]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=3e-3, betas=(0.9, 0.95), eps=1e-8)
    nparams = sum(p.numel() for p in model.parameters())

    def step():
        tok = torch.randint(0, cfg["vocab"], (a.batch, a.seq + 1))
        loss = model.loss(tok[:, :-1], tok[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    for _ in range(a.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        loss = step()
    dt = (time.perf_counter() - t0) / a.steps
    tps = a.batch * a.seq / dt
    res = dict(config=a.config, torch=torch.__version__, threads=torch.get_num_threads(), params=nparams, scan=a.scan,
               batch=a.batch, seq_len=a.seq, steps=a.steps, seconds_per_step=dt, tokens_per_second=tps, last_loss=loss)
    if a.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"torch_hymba: {a.config}, {nparams} parameters, torch {torch.__version__}, {res['threads']} threads")
        print(f"  batch {a.batch} x seq {a.seq}, scan loop '{a.scan}', {a.warmup} warm-up + {a.steps} timed steps, "
              f"last loss {loss:.4f}")
        print(f"  {dt * 1e3:.1f} ms/step, {tps:.0f} tokens/s")


if __name__ == "__main__":
    main()
