#!/usr/bin/env python3
"""Write mla-rt's golden vectors: tests/data/<case>.safetensors.

Every case holds canonical weights (HF DeepseekV3Attention names under
model.layers.0.self_attn.), f32 inputs [T][d], f32 outputs [T][d] computed in float64
for one causal pass at positions 0..T-1, the RoPE tables the reference applied, and the
config as safetensors __metadata__. See tools/reference/README.md.

DeepSeek cases run transformers' DeepseekV3Attention; the tutorial case runs
tools/reference/tutorial_mla.py and is converted with tools/convert_tutorial.py.
Every case is also re-computed by an independent float64 implementation of docs/design.md
2.1/2.2 (canonical_mla below) over the canonical weights, which must agree.

Deterministic: fixed seeds, one CPU thread, a byte-stable safetensors writer.
Run from anywhere:  python3 tools/reference/make_golden.py [--out DIR] [--check-only]
"""

import argparse
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tools"))

import numpy  # noqa: E402  (imported for the version string; safetensors needs it)
import safetensors  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors import safe_open  # noqa: E402
from transformers import DeepseekV3Config  # noqa: E402
from transformers.models.deepseek_v3.modeling_deepseek_v3 import (  # noqa: E402
    DeepseekV3Attention,
    DeepseekV3RotaryEmbedding,
)

from convert_tutorial import convert_state_dict, tutorial_metadata, write_safetensors  # noqa: E402
from tutorial_mla import MultiheadLatentAttention, TutorialConfig  # noqa: E402

PREFIX = "model.layers.0.self_attn."
F64 = torch.float64
F32 = torch.float32


def _ver(v):
    return v.split("+")[0]  # drop local labels (+cu132, +cpu): same numbers either way


GENERATOR = (f"torch {_ver(torch.__version__)} transformers {_ver(transformers.__version__)} "
             f"safetensors {safetensors.__version__} numpy {numpy.__version__}")


# --------------------------------------------------------------------------------------
# random weights, rounded to f32 first so that the float64 reference sees exactly the
# weights that are stored
# --------------------------------------------------------------------------------------

def randomise_(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, prm in sorted(module.named_parameters()):
            shape = tuple(prm.shape)
            z = torch.randn(shape, generator=g, dtype=F64)
            if name.endswith("bias"):
                val = 0.1 * z
            elif prm.dim() == 1:  # RMSNorm weight
                val = 1.0 + 0.1 * z
            else:  # nn.Linear [out][in]
                val = z / math.sqrt(shape[1])
            prm.copy_(val.to(F32).to(prm.dtype))


def random_inputs(T, d, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((T, d), generator=g, dtype=F64).to(F32)


def causal_additive_mask(T, dtype):
    m = torch.full((T, T), float("-inf"), dtype=dtype).triu(1)
    return m.view(1, 1, T, T)


# --------------------------------------------------------------------------------------
# independent float64 implementation of docs/design.md section 2 (naive form) over canonical weights
# --------------------------------------------------------------------------------------

def _rms(x, w, eps):
    return w * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def _rope(x, cos, sin, layout):
    """x [..., T, p]; cos/sin [T, p/2] (angle i per pair)."""
    h = x.shape[-1] // 2
    if layout == "interleaved":  # pairs (x[2i], x[2i+1]); output keeps interleaved order
        a, b = x[..., 0::2], x[..., 1::2]
        out = torch.empty_like(x)
        out[..., 0::2] = a * cos - b * sin
        out[..., 1::2] = b * cos + a * sin
        return out
    a, b = x[..., :h], x[..., h:]  # half: pairs (x[i], x[i+p/2])
    return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)


def canonical_mla(w, c, x, inv_freq, attention_scaling, scale):
    """w: {canonical name (no prefix): f64 tensor}; c: metadata-like dict of ints/strs."""
    T = x.shape[0]
    H, n, p, v, r = c["num_heads"], c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"], c["kv_lora_rank"]
    eps = c["rms_norm_eps"]

    def lin(name, t):
        y = t @ w[name + ".weight"].T
        b = w.get(name + ".bias")
        return y if b is None else y + b

    if c["q_lora_rank"] > 0:
        qa = lin("q_a_proj", x)
        if c["q_norm"]:
            qa = _rms(qa, w["q_a_layernorm.weight"], eps)
        q = lin("q_b_proj", qa)
    else:
        q = lin("q_proj", x)
    q = q.view(T, H, n + p).transpose(0, 1)                         # [H, T, n+p]
    q_nope, q_pe = q[..., :n], q[..., n:]

    a = lin("kv_a_proj_with_mqa", x)
    lat = _rms(a[:, :r], w["kv_a_layernorm.weight"], eps)            # [T, r]
    if c["rope_key"] == "shared":
        k_pe = a[:, r:].view(T, 1, p).transpose(0, 1)                # [1, T, p]
    else:
        k_pe = a[:, r:].view(T, H, p).transpose(0, 1)                # [H, T, p]

    ang = torch.arange(T, dtype=F64)[:, None] * inv_freq.to(F64)[None, :]
    cos, sin = ang.cos() * attention_scaling, ang.sin() * attention_scaling
    q_pe = _rope(q_pe, cos, sin, c["rope_layout"])
    k_pe = _rope(k_pe, cos, sin, c["rope_layout"])

    kv = (lat @ w["kv_b_proj.weight"].T).view(T, H, n + v).transpose(0, 1)
    k_nope, val = kv[..., :n], kv[..., n:]
    s = (q_nope @ k_nope.transpose(-1, -2) + q_pe @ k_pe.transpose(-1, -2)) * scale
    s = s.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    o = torch.softmax(s, dim=-1) @ val                               # [H, T, v]
    return lin("o_proj", o.transpose(0, 1).reshape(T, H * v))


def rel_err(a, b):
    return float((a - b).abs().max() / b.abs().max())


def parse_meta(meta):
    ints = ("hidden_size", "num_heads", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim",
            "qk_rope_head_dim", "v_head_dim", "q_norm", "attention_bias", "original_max_position",
            "n_tokens")
    floats = ("rms_norm_eps", "rope_theta", "rope_factor", "beta_fast", "beta_slow", "mscale",
              "mscale_all_dim", "softmax_scale")
    out = dict(meta)
    for k in ints:
        out[k] = int(meta[k])
    for k in floats:
        out[k] = float(meta[k])
    return out


# --------------------------------------------------------------------------------------
# docs/design.md section 2 YaRN, own float64 rendering, to cross-check HF's inv_freq
# --------------------------------------------------------------------------------------

def design_yarn(p, theta, s, L0, beta_fast, beta_slow):
    def corr(k):
        return p * math.log(L0 / (2 * math.pi * k)) / (2 * math.log(theta))

    low = max(math.floor(corr(beta_fast)), 0)
    high = min(math.ceil(corr(beta_slow)), p - 1)
    hi = high + 0.001 if low == high else high
    i = torch.arange(p // 2, dtype=F64)
    f = theta ** (-2 * i / p)
    ramp = ((i - low) / (hi - low)).clamp(0, 1)
    return f / s * ramp + f * (1 - ramp), low, high, corr(beta_fast), corr(beta_slow)


def design_mscale(s, m):
    return 1.0 if s <= 1 else 0.1 * m * math.log(s) + 1.0


# --------------------------------------------------------------------------------------
# cases
# --------------------------------------------------------------------------------------

DS_CASES = [
    dict(name="ds_qlora_interleave", seed=101, d=64, H=4, rq=48, r=32, n=16, p=8, v=16,
         interleave=True, bias=False, yarn=None, max_pos=64, T=12),
    dict(name="ds_noqlora_half", seed=102, d=64, H=4, rq=None, r=32, n=16, p=8, v=24,
         interleave=False, bias=False, yarn=None, max_pos=64, T=12),
    dict(name="ds_yarn", seed=103, d=64, H=4, rq=48, r=32, n=16, p=16, v=16,
         interleave=True, bias=False, max_pos=64, T=40,
         yarn=dict(factor=4.0, original_max_position_embeddings=16, beta_fast=32, beta_slow=1,
                   mscale=1.0, mscale_all_dim=0.8)),
    dict(name="ds_bias", seed=104, d=64, H=4, rq=48, r=32, n=16, p=8, v=16,
         interleave=True, bias=True, yarn=None, max_pos=64, T=10),
    dict(name="ds_v3_yarn_small", seed=105, d=96, H=2, rq=64, r=64, n=32, p=16, v=32,
         interleave=True, bias=False, max_pos=40 * 32, T=48,
         yarn=dict(factor=40.0, original_max_position_embeddings=32, beta_fast=32, beta_slow=1,
                   mscale=1.0, mscale_all_dim=1.0)),
]

THETA = 10000.0
EPS = 1e-6


def make_deepseek(cs):
    T, d, H, p = cs["T"], cs["d"], cs["H"], cs["p"]
    rope = {"rope_type": "default", "rope_theta": THETA}
    if cs["yarn"]:
        rope = {"rope_type": "yarn", "rope_theta": THETA, **cs["yarn"]}
    cfg = DeepseekV3Config(
        hidden_size=d, num_attention_heads=H, num_key_value_heads=H,
        q_lora_rank=cs["rq"], kv_lora_rank=cs["r"], qk_nope_head_dim=cs["n"],
        qk_rope_head_dim=p, v_head_dim=cs["v"], rope_interleave=cs["interleave"],
        attention_bias=cs["bias"], max_position_embeddings=cs["max_pos"],
        rms_norm_eps=EPS, rope_parameters=rope, attention_dropout=0.0,
    )
    cfg._attn_implementation = "eager"
    rp = cfg.rope_parameters
    assert rp["rope_type"] == ("yarn" if cs["yarn"] else "default"), rp

    attn = DeepseekV3Attention(cfg, layer_idx=0)
    randomise_(attn, cs["seed"])
    attn = attn.double().eval()
    rotary = DeepseekV3RotaryEmbedding(cfg)

    x32 = random_inputs(T, d, cs["seed"] + 1000)
    x = x32.to(F64)[None]
    pos = torch.arange(T)[None]
    with torch.no_grad():
        cos, sin = rotary(x, pos)                # HF computes these in f32, returns x.dtype
        out, _ = attn(x, (cos, sin), causal_additive_mask(T, F64))
    out = out[0]

    inv_freq = rotary.inv_freq.detach().clone().to(F32)
    att_scaling = float(rotary.attention_scaling)
    scale = float(attn.scaling)

    # --- the YaRN path, and docs/design.md section 2 against HF -----------------------------------
    plain = 1.0 / (THETA ** (torch.arange(0, p, 2, dtype=F32) / p))
    if cs["yarn"]:
        y = cs["yarn"]
        s, L0 = y["factor"], y["original_max_position_embeddings"]
        mine, low, high, c_fast, c_slow = design_yarn(p, THETA, s, L0, y["beta_fast"], y["beta_slow"])
        want_att = design_mscale(s, y["mscale"]) / design_mscale(s, y["mscale_all_dim"])
        want_scale = (cs["n"] + p) ** -0.5 * design_mscale(s, y["mscale_all_dim"]) ** 2
        print(f"  yarn: factor {s}, L0 {L0}: corr(beta_fast)={c_fast:.4f} corr(beta_slow)={c_slow:.4f}"
              f" -> low {low}, high {high}")
        print(f"  yarn: attention_scaling {att_scaling!r} (docs/design.md {want_att!r}); "
              f"softmax scale {scale!r} (docs/design.md {want_scale!r}, plain {(cs['n'] + p) ** -0.5!r})")
        assert not torch.allclose(inv_freq, plain), "YaRN path not taken: inv_freq is plain"
        assert scale != (cs["n"] + p) ** -0.5, "YaRN mscale_all_dim not applied to the softmax scale"
        if y["mscale"] != y["mscale_all_dim"]:
            assert att_scaling != 1.0, "YaRN attention_scaling not applied"
        assert abs(att_scaling - want_att) < 1e-12, (att_scaling, want_att)
        assert abs(scale - want_scale) < 1e-12, (scale, want_scale)
        d_inv = float(((inv_freq.to(F64) - mine) / mine).abs().max())
        print(f"  yarn: inv_freq HF (f32) vs docs/design.md section 2 (f64): max rel diff {d_inv:.2e}")
        assert d_inv < 1e-6
        meta_yarn = dict(original_max_position=str(L0), rope_factor=repr(float(s)),
                         beta_fast=repr(float(y["beta_fast"])), beta_slow=repr(float(y["beta_slow"])),
                         mscale=repr(float(y["mscale"])), mscale_all_dim=repr(float(y["mscale_all_dim"])))
    else:
        assert torch.equal(inv_freq, plain) and att_scaling == 1.0
        assert scale == (cs["n"] + p) ** -0.5
        meta_yarn = dict(original_max_position=str(cs["max_pos"]), rope_factor=repr(1.0),
                         beta_fast=repr(32.0), beta_slow=repr(1.0), mscale=repr(1.0),
                         mscale_all_dim=repr(1.0))

    # --- canonical tensors ---------------------------------------------------------------
    sd = {k: t.detach().to(F32).contiguous() for k, t in attn.state_dict().items()}
    expect = {"kv_a_proj_with_mqa.weight", "kv_a_layernorm.weight", "kv_b_proj.weight", "o_proj.weight"}
    expect |= {"q_proj.weight"} if cs["rq"] is None else {"q_a_proj.weight", "q_a_layernorm.weight", "q_b_proj.weight"}
    if cs["bias"]:
        expect |= {"kv_a_proj_with_mqa.bias", "o_proj.bias"} | (set() if cs["rq"] is None else {"q_a_proj.bias"})
    assert set(sd) == expect, sorted(set(sd) ^ expect)

    meta = dict(
        variant="deepseek", hidden_size=str(d), num_heads=str(H),
        q_lora_rank=str(cs["rq"] or 0), kv_lora_rank=str(cs["r"]), qk_nope_head_dim=str(cs["n"]),
        qk_rope_head_dim=str(p), v_head_dim=str(cs["v"]),
        rope_layout="interleaved" if cs["interleave"] else "half", rope_key="shared",
        q_norm="1" if cs["rq"] else "0", attention_bias="1" if cs["bias"] else "0",
        rms_norm_eps=repr(EPS), rope_theta=repr(THETA), softmax_scale="0",
        n_tokens=str(T), generator=GENERATOR, **meta_yarn,
    )
    tensors = {PREFIX + k: t for k, t in sd.items()}
    tensors.update({
        "inputs": x32, "outputs": out.to(F32),
        "rope_inv_freq": inv_freq, "rope_attention_scaling": torch.tensor([att_scaling], dtype=F32),
        "softmax_scale": torch.tensor([scale], dtype=F32),
        "rope_cos": cos[0].to(F32).contiguous(), "rope_sin": sin[0].to(F32).contiguous(),
    })

    # --- independent check: docs/design.md section 2 in pure float64 over the stored weights --------------
    w64 = {k: t.to(F64) for k, t in sd.items()}
    ref = canonical_mla(w64, parse_meta(meta), x32.to(F64), inv_freq, att_scaling, scale)
    e = rel_err(ref, out)
    print(f"  HF (f32 softmax/RMSNorm/cos-sin inside) vs pure-f64 docs/design.md section 2: rel diff {e:.2e}")
    assert e < 2e-6, e
    return tensors, meta


def make_tutorial(seed=106, T=16):
    cfg = TutorialConfig(n_embd=256, n_head=8, kv_lora_rank=128, q_lora_rank=192, rope_dim=64,
                         bias=True, block_size=128, rope_theta=THETA, rms_norm_eps=EPS)
    m = MultiheadLatentAttention(cfg)
    randomise_(m, seed)
    m = m.double().eval()
    x32 = random_inputs(T, cfg.n_embd, seed + 1000)
    with torch.no_grad():
        out = m(x32.to(F64)[None])[0]
        cos, sin = m.rope.tables(T, F64)

    sd32 = {k: t.to(F32) for k, t in m.state_dict().items()}
    canon = convert_state_dict(sd32, cfg.n_head, cfg.rope_dim)
    hd, p = m.head_dim, cfg.rope_dim
    meta = tutorial_metadata(canon, cfg.n_head, cfg.rope_dim, rms_norm_eps=cfg.rms_norm_eps,
                             rope_theta=cfg.rope_theta, max_position=cfg.block_size,
                             extra=dict(n_tokens=T, generator=GENERATOR))
    assert meta["qk_nope_head_dim"] == str(hd) and meta["v_head_dim"] == str(hd)
    scale = m.scale
    assert scale == (hd + p) ** -0.5

    # the mapping is right iff docs/design.md section 2 with per-head rope keys reproduces the module
    w64 = {k: t.to(F64) for k, t in canon.items()}
    inv = m.rope.inv_freq.to(F64)
    ref = canonical_mla(w64, parse_meta(meta), x32.to(F64), inv, 1.0, scale)
    e = float((ref - out).abs().max())
    print(f"  tutorial module vs docs/design.md section 2 (per-head rope keys) on converted weights: max abs diff {e:.2e}")
    assert e < 1e-10, e

    tensors = {PREFIX + k: t.to(F32).contiguous() for k, t in canon.items()}
    tensors.update({
        "inputs": x32, "outputs": out.to(F32),
        "rope_inv_freq": inv.to(F32), "rope_attention_scaling": torch.tensor([1.0], dtype=F32),
        "softmax_scale": torch.tensor([scale], dtype=F32),
        "rope_cos": cos.to(F32).contiguous(), "rope_sin": sin.to(F32).contiguous(),
    })
    return tensors, meta


META_KEYS = ("variant hidden_size num_heads q_lora_rank kv_lora_rank qk_nope_head_dim qk_rope_head_dim "
             "v_head_dim rope_layout rope_key q_norm attention_bias original_max_position rms_norm_eps "
             "rope_theta rope_factor beta_fast beta_slow mscale mscale_all_dim softmax_scale n_tokens "
             "generator").split()


def self_check(out_dir, names):
    print("\nself-check (reloaded with safetensors.safe_open):")
    total = 0
    for name in names:
        path = os.path.join(out_dir, name + ".safetensors")
        with safe_open(path, framework="pt") as f:
            meta = f.metadata()
            keys = list(f.keys())
            t = {k: f.get_tensor(k) for k in keys}
        missing = [k for k in META_KEYS if k not in meta]
        assert not missing, (name, missing)
        c = parse_meta(meta)
        T, d = c["n_tokens"], c["hidden_size"]
        assert all(v.dtype == F32 for v in t.values())
        assert t["inputs"].shape == (T, d) and t["outputs"].shape == (T, d)
        assert t["rope_cos"].shape == (T, c["qk_rope_head_dim"])
        assert torch.isfinite(t["outputs"]).all()
        # the stored f32 data reproduce the stored outputs (f64 recompute, f32 rounding)
        w = {k[len(PREFIX):]: v.to(F64) for k, v in t.items() if k.startswith(PREFIX)}
        ref = canonical_mla(w, c, t["inputs"].to(F64), t["rope_inv_freq"],
                            float(t["rope_attention_scaling"][0]), float(t["softmax_scale"][0]))
        e = rel_err(ref, t["outputs"].to(F64))
        size = os.path.getsize(path)
        total += size
        shapes = ", ".join(f"{k[len(PREFIX):] if k.startswith(PREFIX) else k}{list(v.shape)}"
                           for k, v in sorted(t.items()) if k.startswith(PREFIX))
        print(f"  {name:22s} T={T:3d} d={d:3d} max|out|={float(t['outputs'].abs().max()):.4f} "
              f"recheck rel {e:.1e} size {size} B")
        print(f"      {shapes}")
        assert e < 2e-6, e
    print(f"  total {total} B ({total / 1e6:.2f} MB) in {len(names)} files")
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "data"))
    ap.add_argument("--check-only", action="store_true", help="only reload and check the files")
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    if sys.byteorder != "little":
        sys.exit("make_golden.py writes little-endian safetensors; run it on a little-endian host")
    os.makedirs(args.out, exist_ok=True)
    print(f"generator: {GENERATOR}")

    names = [cs["name"] for cs in DS_CASES] + ["tutorial"]
    if not args.check_only:
        for cs in DS_CASES:
            print(f"{cs['name']}:")
            tensors, meta = make_deepseek(cs)
            write_safetensors(os.path.join(args.out, cs["name"] + ".safetensors"), tensors, meta)
        print("tutorial:")
        tensors, meta = make_tutorial()
        write_safetensors(os.path.join(args.out, "tutorial.safetensors"), tensors, meta)
    total = self_check(args.out, names)
    assert total < 5_000_000, "tests/data must stay under 5 MB"


if __name__ == "__main__":
    main()
