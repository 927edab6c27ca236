#!/usr/bin/env python3
"""Convert a tutorial-MLA checkpoint to mla-rt's canonical (Hugging Face DeepSeek) layout.

The tutorial module (tools/reference/tutorial_mla.py, docs/design.md section 2) has the tensors
  q_proj [r_q, d], q_decompress [H*hd, r_q], q_rope_proj [H*p, r_q],
  kv_proj [r, d], kv_norm.weight [r], k_rope_proj [H*p, d],
  k_decompress [H*hd, r], v_decompress [H*hd, r], o_proj [d, H*hd] (+ o_proj.bias [d]).
The canonical layout (HF DeepseekV3Attention names) gets
  q_a_proj.weight            = q_proj                              [r_q, d]
  q_b_proj.weight            = per head h: [q_decompress rows h*hd..(h+1)*hd
                                             | q_rope_proj rows h*p..(h+1)*p]   [H*(hd+p), r_q]
  kv_a_proj_with_mqa.weight  = [kv_proj ; k_rope_proj]              [r + H*p, d]
  kv_a_layernorm.weight      = kv_norm.weight                       [r]
  kv_b_proj.weight           = per head h: [k_decompress head rows | v_decompress head rows]
                                                                    [H*2*hd, r]
  o_proj.weight (+ o_proj.bias)
No q_a_layernorm (q_norm = 0); rope_key = per_head; rope_layout = half.

Library use:   convert_state_dict(sd, n_head, rope_dim) -> {canonical name: tensor}
CLI:           python3 tools/convert_tutorial.py in.pt out.safetensors --n-head 8 --rope-dim 64
"""

import argparse
import sys

import torch

DEFAULT_PREFIX = "model.layers.0.self_attn."

_REQUIRED = (
    "q_proj.weight", "q_decompress.weight", "q_rope_proj.weight",
    "kv_proj.weight", "kv_norm.weight", "k_rope_proj.weight",
    "k_decompress.weight", "v_decompress.weight", "o_proj.weight",
)


def _strip_prefix(sd, src_prefix):
    """Keep only tensors under src_prefix (auto-detected when None) and drop it."""
    if src_prefix is None:
        anchors = [k[: -len("kv_proj.weight")] for k in sd if k.endswith("kv_proj.weight")]
        if len(anchors) != 1:
            raise ValueError(
                "cannot find exactly one tutorial attention block (kv_proj.weight) in the "
                f"state_dict; found {len(anchors)}; pass src_prefix")
        src_prefix = anchors[0]
    return {k[len(src_prefix):]: v for k, v in sd.items() if k.startswith(src_prefix)}


def convert_state_dict(sd, n_head, rope_dim, prefix="", src_prefix=None):
    """Map a tutorial MultiheadLatentAttention state_dict to canonical tensors.

    sd: mapping name -> tensor (extra entries such as buffers are ignored).
    Returns {prefix + canonical name: contiguous tensor}, same dtype as the input.
    """
    sd = _strip_prefix(dict(sd), src_prefix)
    missing = [k for k in _REQUIRED if k not in sd]
    if missing:
        raise ValueError(f"tutorial state_dict lacks {missing}")
    H, p = int(n_head), int(rope_dim)

    q_proj = sd["q_proj.weight"]
    q_dec = sd["q_decompress.weight"]
    q_rope = sd["q_rope_proj.weight"]
    kv_proj = sd["kv_proj.weight"]
    kv_norm = sd["kv_norm.weight"]
    k_rope = sd["k_rope_proj.weight"]
    k_dec = sd["k_decompress.weight"]
    v_dec = sd["v_decompress.weight"]
    o_w = sd["o_proj.weight"]

    d = q_proj.shape[1]
    r_q = q_proj.shape[0]
    r = kv_proj.shape[0]
    if q_dec.shape[0] % H:
        raise ValueError(f"q_decompress rows {q_dec.shape[0]} not divisible by n_head {H}")
    hd = q_dec.shape[0] // H
    checks = {
        "q_decompress.weight": (q_dec, (H * hd, r_q)),
        "q_rope_proj.weight": (q_rope, (H * p, r_q)),
        "kv_proj.weight": (kv_proj, (r, d)),
        "kv_norm.weight": (kv_norm, (r,)),
        "k_rope_proj.weight": (k_rope, (H * p, d)),
        "k_decompress.weight": (k_dec, (H * hd, r)),
        "v_decompress.weight": (v_dec, (H * hd, r)),
        "o_proj.weight": (o_w, (d, H * hd)),
    }
    for name, (t, shape) in checks.items():
        if tuple(t.shape) != shape:
            raise ValueError(f"{name}: shape {tuple(t.shape)}, expected {shape} "
                             f"(n_head={H}, rope_dim={p})")

    q_b = torch.cat([q_dec.reshape(H, hd, r_q), q_rope.reshape(H, p, r_q)], dim=1)
    kv_b = torch.cat([k_dec.reshape(H, hd, r), v_dec.reshape(H, hd, r)], dim=1)
    out = {
        "q_a_proj.weight": q_proj,
        "q_b_proj.weight": q_b.reshape(H * (hd + p), r_q),
        "kv_a_proj_with_mqa.weight": torch.cat([kv_proj, k_rope], dim=0),
        "kv_a_layernorm.weight": kv_norm,
        "kv_b_proj.weight": kv_b.reshape(H * 2 * hd, r),
        "o_proj.weight": o_w,
    }
    if sd.get("o_proj.bias") is not None:
        out["o_proj.bias"] = sd["o_proj.bias"]
    return {prefix + k: v.detach().contiguous().clone() for k, v in out.items()}


def tutorial_metadata(sd_canonical, n_head, rope_dim, prefix="", rms_norm_eps=1e-6,
                      rope_theta=10000.0, max_position=128, extra=None):
    """safetensors __metadata__ (str -> str) for converted tutorial weights."""
    H, p = int(n_head), int(rope_dim)
    q_a = sd_canonical[prefix + "q_a_proj.weight"]
    kv_b = sd_canonical[prefix + "kv_b_proj.weight"]
    r = kv_b.shape[1]
    hd = kv_b.shape[0] // (2 * H)
    meta = {
        "variant": "tutorial",
        "hidden_size": str(q_a.shape[1]),
        "num_heads": str(H),
        "q_lora_rank": str(q_a.shape[0]),
        "kv_lora_rank": str(r),
        "qk_nope_head_dim": str(hd),
        "qk_rope_head_dim": str(p),
        "v_head_dim": str(hd),
        "rope_layout": "half",
        "rope_key": "per_head",
        "q_norm": "0",
        "attention_bias": "1" if (prefix + "o_proj.bias") in sd_canonical else "0",
        "original_max_position": str(int(max_position)),
        "rms_norm_eps": repr(float(rms_norm_eps)),
        "rope_theta": repr(float(rope_theta)),
        "rope_factor": repr(1.0),
        "beta_fast": repr(32.0),
        "beta_slow": repr(1.0),
        "mscale": repr(1.0),
        "mscale_all_dim": repr(1.0),
        "softmax_scale": "0",
        "generator": f"tools/convert_tutorial.py torch {torch.__version__}",
    }
    if extra:
        meta.update({k: str(v) for k, v in extra.items()})
    return meta


def write_safetensors(path, tensors, metadata=None):
    """Write a safetensors file byte-for-byte deterministically.

    safetensors.torch.save_file writes __metadata__ in hash order (it differs from run
    to run); this writer sorts metadata keys and tensor names so that the same input
    always gives the same bytes. Tensors are written little-endian, row-major.
    """
    import json
    import struct

    dtypes = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
              torch.float64: "F64", torch.int64: "I64", torch.int32: "I32"}
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(metadata[k]) for k in sorted(metadata)}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        if t.dtype not in dtypes:
            raise ValueError(f"{name}: unsupported dtype {t.dtype}")
        raw = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": dtypes[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    head += b" " * ((-len(head)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for raw in blobs:
            f.write(raw)


def _load_state_dict(path, allow_pickle=False):
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        return load_file(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except Exception as e:
        if allow_pickle:
            raise
        raise SystemExit(
            f"{path}: torch.load(weights_only=True) failed ({type(e).__name__}). If this file "
            "holds a pickled module and you trust it, rerun with --allow-pickle (its classes "
            "must be importable).") from None
    if isinstance(obj, torch.nn.Module):
        return obj.state_dict()
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, dict):
                return inner
            if isinstance(inner, torch.nn.Module):
                return inner.state_dict()
        return obj
    raise ValueError(f"{path}: not a state_dict (got {type(obj).__name__})")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("input", help="tutorial checkpoint (.pt/.pth via torch.load, or .safetensors)")
    ap.add_argument("output", help="canonical .safetensors to write")
    ap.add_argument("--n-head", type=int, default=8)
    ap.add_argument("--rope-dim", type=int, default=64)
    ap.add_argument("--prefix", default=DEFAULT_PREFIX, help=f"output name prefix ({DEFAULT_PREFIX!r})")
    ap.add_argument("--src-prefix", default=None,
                    help="prefix of the attention block inside the input (auto-detected)")
    ap.add_argument("--rms-norm-eps", type=float, default=1e-6)
    ap.add_argument("--rope-theta", type=float, default=10000.0)
    ap.add_argument("--max-position", type=int, default=128,
                    help="written as original_max_position (informational: no YaRN)")
    ap.add_argument("--allow-pickle", action="store_true",
                    help="torch.load with weights_only=False (runs code from the file: trusted files only)")
    ap.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32")
    args = ap.parse_args(argv)

    sd = _load_state_dict(args.input, args.allow_pickle)
    out = convert_state_dict(sd, args.n_head, args.rope_dim, prefix=args.prefix,
                             src_prefix=args.src_prefix)
    dtype = getattr(torch, args.dtype)
    out = {k: v.to(dtype).contiguous() for k, v in out.items()}
    meta = tutorial_metadata(out, args.n_head, args.rope_dim, prefix=args.prefix,
                             rms_norm_eps=args.rms_norm_eps, rope_theta=args.rope_theta,
                             max_position=args.max_position)
    write_safetensors(args.output, out, meta)
    for k, v in out.items():
        print(f"{k:60s} {list(v.shape)}")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
