#!/usr/bin/env python3
"""mla-rt beside the usual peer: Hugging Face transformers' DeepseekV3Attention.

One attention layer at DeepSeek-V2-Lite attention dims (d 2048, 16 heads, no query
LoRA, kv_lora_rank 512, nope 128, rope 64, v 128, YaRN factor 40), f32, on the CPU,
with the same thread count for both:

- the peer: DeepseekV3Attention (eager attention, explicit causal mask for the
  prefill) with a transformers DynamicCache. The cache holds the compressed latent
  and the rotated rope key; every decode step re-expands the whole cache through
  kv_b_proj (transformers' expand_kv), as the model does;
- mla-rt: examples/bench.rs (`cargo run --release --example bench`) for the same
  points, run from here, its JSON lines read back.

Decode: ms per step at each context length (the peer's cache filled with random
latents and rope keys of the right shapes, then a few steps timed, the cache
cropped back after each; mla-rt's cache filled the same way through
Engine::append_cache_rows). Prefill: tokens/s for a prompt of --prefill tokens.
Prints both side by side with the ratio, in one run.

    pip install -r tools/reference/requirements.txt
    python3 tools/bench/hf_peer.py [--threads 1] [--ctx 1,256,1024,4096,16384]
        [--prefill 512] [--steps 5] [--json bench-out/peer.jsonl]
"""

import argparse
import json
import os
import subprocess
import sys
import time

import torch
from transformers import DeepseekV3Config
from transformers.cache_utils import DynamicCache
from transformers.models.deepseek_v3.modeling_deepseek_v3 import (
    DeepseekV3Attention,
    DeepseekV3RotaryEmbedding,
)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def v2_lite_config():
    rope = {
        "rope_type": "yarn", "rope_theta": 10000.0, "factor": 40.0,
        "original_max_position_embeddings": 4096, "beta_fast": 32, "beta_slow": 1,
        "mscale": 0.707, "mscale_all_dim": 0.707,
    }
    cfg = DeepseekV3Config(
        hidden_size=2048, num_attention_heads=16, num_key_value_heads=16,
        q_lora_rank=None, kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64,
        v_head_dim=128, rope_interleave=True, attention_bias=False,
        max_position_embeddings=163840, rms_norm_eps=1e-6, rope_parameters=rope,
        attention_dropout=0.0,
    )
    cfg._attn_implementation = "eager"
    return cfg


def median(v):
    v = sorted(v)
    return v[len(v) // 2]


def peer_decode(attn, rotary, cfg, ctx, steps):
    """ms per decode step at context `ctx` (median of `steps`)."""
    d = cfg.hidden_size
    g = torch.Generator().manual_seed(ctx)
    cache = DynamicCache()
    if ctx > 0:
        kv = torch.randn(1, 1, ctx, cfg.kv_lora_rank, generator=g)
        kr = torch.randn(1, 1, ctx, cfg.qk_rope_head_dim, generator=g)
        cache.update(kv, kr, 0)
    x = torch.randn(1, 1, d, generator=g) * 0.5
    pos = torch.tensor([[ctx]])
    times = []
    with torch.no_grad():
        cos, sin = rotary(x, pos)
        for i in range(steps + 1):
            t = time.perf_counter()
            attn(x, (cos, sin), None, cache=cache)
            dt = time.perf_counter() - t
            cache.crop(-1)  # drop the new token: the context stays `ctx`
            if i > 0:  # the first step is a warm-up
                times.append(dt)
    return median(times) * 1e3


def peer_prefill(attn, rotary, cfg, n, reps):
    d = cfg.hidden_size
    g = torch.Generator().manual_seed(7)
    x = torch.randn(1, n, d, generator=g) * 0.5
    pos = torch.arange(n)[None]
    mask = torch.full((n, n), float("-inf")).triu(1)[None, None]
    times = []
    with torch.no_grad():
        cos, sin = rotary(x, pos)
        for i in range(reps + 1):
            t = time.perf_counter()
            attn(x, (cos, sin), mask, cache=DynamicCache())
            dt = time.perf_counter() - t
            if i > 0:
                times.append(dt)
    return median(times) * 1e3


def run_ours(threads, ctx, prefill, path):
    cmd = ["cargo", "run", "--release", "--quiet", "--example", "bench", "--",
           "--config", "v2lite", "--weights", "f32", "--cache", "f32", "--layers", "hot",
           "--threads", str(threads), "--ctx", ",".join(map(str, ctx)),
           "--prefill", str(prefill), "--no-probe", "--json", path]
    print("running:", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    rows = [json.loads(line) for line in open(path)]
    dec = {r["ctx"]: r["ms"] for r in rows if r.get("kind") == "decode"}
    pre = [r for r in rows if r.get("kind") == "prefill"]
    return dec, (pre[0]["ms"] if pre else None)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ctx", default="1,256,1024,4096,16384")
    ap.add_argument("--prefill", type=int, default=512)
    ap.add_argument("--steps", type=int, default=5, help="timed decode steps per context (fewer above 4096)")
    ap.add_argument("--json", default=os.path.join(ROOT, "bench-out", "peer.jsonl"))
    args = ap.parse_args()
    ctx = [int(c) for c in args.ctx.split(",") if c]

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = v2_lite_config()
    attn = DeepseekV3Attention(cfg, layer_idx=0).eval()
    with torch.no_grad():
        for name, p in attn.named_parameters():
            if p.dim() == 1:
                p.fill_(1.0)
            else:
                p.uniform_(-1.0, 1.0).mul_((3.0 / p.shape[1]) ** 0.5)
    rotary = DeepseekV3RotaryEmbedding(cfg)

    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    ours_path = os.path.join(os.path.dirname(args.json), "ours-for-peer.jsonl")
    ours_dec, ours_pre = run_ours(args.threads, ctx, args.prefill, ours_path)

    print(f"\nDeepSeek-V2-Lite attention dims, f32, CPU, {args.threads} thread(s); "
          f"torch {torch.__version__.split('+')[0]}, transformers "
          f"{__import__('transformers').__version__}")
    print(f"{'':>8} {'HF ms/step':>12} {'mla-rt ms':>12} {'speed-up':>10}")
    out = open(args.json, "w")
    for c in ctx:
        steps = args.steps if c <= 4096 else max(2, args.steps // 2)
        hf = peer_decode(attn, rotary, cfg, c, steps)
        ours = ours_dec.get(c)
        ratio = hf / ours if ours else float("nan")
        print(f"ctx {c:>4} {hf:>12.3f} {ours if ours else float('nan'):>12.3f} {ratio:>9.1f}x", flush=True)
        out.write(json.dumps({"kind": "decode", "ctx": c, "threads": args.threads,
                              "hf_ms": hf, "ours_ms": ours, "speedup": ratio}) + "\n")
    if args.prefill > 0:
        hf = peer_prefill(attn, rotary, cfg, args.prefill, 3)
        n = args.prefill
        hf_tps = n / (hf / 1e3)
        ours_tps = n / (ours_pre / 1e3) if ours_pre else float("nan")
        print(f"\nprefill {n} tokens: HF {hf:.1f} ms ({hf_tps:.0f} tokens/s), "
              f"mla-rt {ours_pre:.1f} ms ({ours_tps:.0f} tokens/s): {ours_tps / hf_tps:.2f}x")
        out.write(json.dumps({"kind": "prefill", "tokens": n, "threads": args.threads,
                              "hf_ms": hf, "ours_ms": ours_pre, "speedup": hf / ours_pre}) + "\n")
    out.close()
    print(f"\nJSON lines: {args.json}")


if __name__ == "__main__":
    sys.exit(main())
