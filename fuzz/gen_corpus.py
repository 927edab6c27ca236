#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/ (small, deterministic).

The safetensors seeds match the small configs of crates/mla-testkit/src/configs.rs
(tiny_qlora, tiny_qproj, tiny_tutorial), so the fuzzer starts from files that parse
and bind. Run: python3 fuzz/gen_corpus.py
"""
import base64
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
PREFIX = "model.layers.0.self_attn."

F32_BITS = lambda v: struct.unpack("<I", struct.pack("<f", v))[0]  # noqa: E731

# Field order of mla_config without struct_size (= Config), with enum values.
FIELDS = ["hidden_size", "num_heads", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim",
          "qk_rope_head_dim", "v_head_dim", "max_seq_len", "max_tokens_per_call",
          "rope_layout", "rope_key", "q_norm", "cache_dtype", "attn_mode",
          "original_max_position", "rms_norm_eps", "rope_theta", "rope_factor", "beta_fast",
          "beta_slow", "mscale", "mscale_all_dim", "softmax_scale"]
FLOATS = set(FIELDS[15:])

V3 = dict(hidden_size=7168, num_heads=128, q_lora_rank=1536, kv_lora_rank=512,
          qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128, max_seq_len=4096,
          max_tokens_per_call=256, rope_layout=0, rope_key=0, q_norm=1, cache_dtype=0,
          attn_mode=0, original_max_position=4096, rms_norm_eps=1e-6, rope_theta=10000.0,
          rope_factor=40.0, beta_fast=32.0, beta_slow=1.0, mscale=1.0, mscale_all_dim=1.0,
          softmax_scale=0.0)
V2L = dict(V3, hidden_size=2048, num_heads=16, q_lora_rank=0, q_norm=0, mscale=0.707,
           mscale_all_dim=0.707)
TUT = dict(V3, hidden_size=256, num_heads=8, q_lora_rank=192, kv_lora_rank=128,
           qk_nope_head_dim=32, qk_rope_head_dim=64, v_head_dim=32, max_seq_len=1024,
           max_tokens_per_call=128, rope_layout=1, rope_key=1, q_norm=0,
           original_max_position=1024, rope_factor=1.0)
# crates/mla-testkit/src/configs.rs: tiny_qlora, tiny_qproj, tiny_tutorial
QLORA = dict(V3, hidden_size=8, num_heads=2, q_lora_rank=6, kv_lora_rank=4, qk_nope_head_dim=4,
             qk_rope_head_dim=2, v_head_dim=4, max_seq_len=16, max_tokens_per_call=4,
             original_max_position=8, rope_factor=4.0)
QPROJ = dict(QLORA, q_lora_rank=0, q_norm=0, qk_nope_head_dim=2, v_head_dim=2, rope_layout=1,
             rope_factor=1.0)
TUTS = dict(QPROJ, q_lora_rank=4, rope_key=1)


def config_bytes(c):
    out = b""
    for f in FIELDS:
        out += struct.pack("<I", F32_BITS(c[f]) if f in FLOATS else c[f])
    return out


def dims(c):
    d, h, rq, r = c["hidden_size"], c["num_heads"], c["q_lora_rank"], c["kv_lora_rank"]
    n, p, v = c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"]
    rope_k = p if c["rope_key"] == 0 else h * p
    return dict(d=d, h=h, rq=rq, r=r, q_width=h * (n + p), kv_a=r + rope_k, kv_b=h * (n + v),
                o_cols=h * v)


def meta(c, variant):
    m = {"variant": variant, "n_tokens": "2"}
    for f in FIELDS:
        val = c[f]
        if f == "rope_layout":
            m[f] = ["interleaved", "half"][val]
        elif f == "rope_key":
            m[f] = ["shared", "per_head"][val]
        elif f == "cache_dtype":
            m[f] = ["f32", "f16", "bf16"][val]
        elif f == "attn_mode":
            m[f] = ["auto", "naive", "absorb"][val]
        elif f in FLOATS:
            m[f] = repr(float(val))
        else:
            m[f] = str(val)
    return m


def values(n, seed, dtype):
    vals = [((i * 37 + seed * 11) % 17 - 8) / 16.0 for i in range(n)]
    if dtype == "F32":
        return b"".join(struct.pack("<f", x) for x in vals)
    if dtype == "F16":
        return b"".join(struct.pack("<e", x) for x in vals)
    if dtype == "BF16":
        return b"".join(struct.pack("<f", x)[2:] for x in vals)
    if dtype == "F8_E4M3":
        # E4M3 codes, never the NaN codes 0x7f / 0xff.
        return bytes((i * 37 + seed * 11) % 0x7f | (0x80 if i % 3 == 0 else 0) for i in range(n))
    raise ValueError(dtype)


def layer(c, bias, dtypes=None):
    dm = dims(c)
    dtypes = dtypes or {}
    t = []

    def add(name, shape):
        dt = dtypes.get(name, "F32")
        n = 1
        for s in shape:
            n *= s
        t.append((PREFIX + name, dt, shape, values(n, len(t), dt)))
        if dt == "F8_E4M3":
            # DeepSeek-V3's block scales: F32 [ceil(rows/128), ceil(cols/128)].
            blocks = [(s + 127) // 128 for s in shape]
            nb = blocks[0] * blocks[1]
            t.append((PREFIX + name + "_scale_inv", "F32", blocks,
                      b"".join(struct.pack("<f", 0.5 + i) for i in range(nb))))

    if dm["rq"] == 0:
        add("q_proj.weight", [dm["q_width"], dm["d"]])
    else:
        add("q_a_proj.weight", [dm["rq"], dm["d"]])
        if bias:
            add("q_a_proj.bias", [dm["rq"]])
        add("q_b_proj.weight", [dm["q_width"], dm["rq"]])
    if c["q_norm"]:
        add("q_a_layernorm.weight", [dm["rq"]])
    add("kv_a_proj_with_mqa.weight", [dm["kv_a"], dm["d"]])
    if bias:
        add("kv_a_proj_with_mqa.bias", [dm["kv_a"]])
    add("kv_a_layernorm.weight", [dm["r"]])
    add("kv_b_proj.weight", [dm["kv_b"], dm["r"]])
    add("o_proj.weight", [dm["d"], dm["o_cols"]])
    if bias:
        add("o_proj.bias", [dm["d"]])
    t.append(("inputs", "F32", [2, dm["d"]], values(2 * dm["d"], 99, "F32")))
    return t


def safetensors(tensors, metadata=None, order=None, escape=False):
    """Header in `order` (default: offset order), padded to 8 like the library."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    data = b""
    entries = []
    for name, dt, shape, blob in tensors:
        entries.append((name, {"dtype": dt, "shape": shape,
                               "data_offsets": [len(data), len(data) + len(blob)]}))
        data += blob
    if order == "reversed":
        entries.reverse()
    for name, e in entries:
        header[name] = e
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=escape)
    text += " " * ((8 - (8 + len(text.encode())) % 8) % 8)
    h = text.encode()
    return struct.pack("<Q", len(h)) + h + data


def write(target, name, blob):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(blob)


def main():
    write("safetensors", "qlora", safetensors(
        layer(QLORA, False, {"kv_b_proj.weight": "BF16", "o_proj.weight": "F16"}),
        meta(QLORA, "deepseek")))
    # FP8 weights (F8_E4M3 + weight_scale_inv), as DeepSeek-V3 ships them.
    write("safetensors", "qlora_f8", safetensors(
        layer(QLORA, False, {"kv_b_proj.weight": "F8_E4M3", "o_proj.weight": "F8_E4M3",
                             "q_b_proj.weight": "F8_E4M3"}),
        meta(QLORA, "deepseek")))
    write("safetensors", "qproj_bias_reversed", safetensors(
        layer(QPROJ, True), meta(QPROJ, "deepseek"), order="reversed"))
    write("safetensors", "tutorial_small", safetensors(layer(TUTS, False), meta(TUTS, "tutorial")))
    odd = [("a.b", "F32", [1], values(1, 1, "F32")),
           ("\u00e9\U0001F600", "I8", [2, 2], bytes(4)),
           ("s", "F4", [2], bytes(1)),
           ("scalar", "F64", [], bytes(8)),
           ("empty", "U8", [0], b"")]
    write("safetensors", "escapes_and_dtypes", safetensors(
        odd, {"k": "tab\there", "hidden_size": "8"}, escape=True))
    write("safetensors", "empty", safetensors([]))

    for name, c in [("tutorial", TUT), ("v2_lite", V2L), ("v3", V3), ("qlora", QLORA),
                    ("qproj", QPROJ), ("tutorial_small", TUTS)]:
        write("config", name, config_bytes(c))
    # The FP8 latent cache (cache_dtype 3): FlashMLA's layout at V3 dims, and a
    # latent narrower than one 128-value scale group.
    for name, c in [("v3_fp8", V3), ("tutorial_small_fp8", TUTS)]:
        write("config", name, config_bytes(dict(c, cache_dtype=3)))

    # Regressions found by this target (each panicked with an overflow once):
    # Engine::memory_bytes -> attention::Scratch::lens multiplied H * r unchecked;
    write("config", "regress_scratch_lens_overflow", base64.b64decode(
        "CAAAAAIAAC0GAAAABQAAAAQAAC8CAAAABAAAABAAAAAEAAAAAAAAAAAAAAABAAAAAAAAAAAAAAAIUQAA"
        "vTeGAEA1HEYAAIBAAAAAQgAAgD8AAIA/AACAPwAAAAA="))
    # Config::full_kv_bytes_per_token: H * (n + p + v) * size overflows for a valid config.
    write("config", "regress_full_kv_overflow", config_bytes(dict(
        TUT, hidden_size=1, num_heads=1 << 31, q_lora_rank=0, q_norm=0, kv_lora_rank=1,
        qk_nope_head_dim=2, qk_rope_head_dim=2**32 - 2, v_head_dim=2**32 - 1, max_seq_len=1,
        max_tokens_per_call=1, rope_key=0)))

    # json: first byte even = the rest is the text; odd = the rest drives a generator
    # of valid JSON (see the target). Texts: config.json shapes the engine will read,
    # a safetensors header, and the corner cases of the grammar.
    hf_config = {
        "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
        "hidden_size": 7168, "num_attention_heads": 128, "q_lora_rank": 1536,
        "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
        "v_head_dim": 128, "rms_norm_eps": 1e-06, "rope_theta": 10000,
        "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40,
                         "mscale": 1.0, "mscale_all_dim": 1.0,
                         "original_max_position_embeddings": 4096, "type": "yarn"},
        "attention_bias": False, "sliding_window": None, "tie_word_embeddings": False,
        "torch_dtype": "bfloat16", "num_hidden_layers": 61}
    write("json", "config_deepseek_v3", b"\x00" + json.dumps(hf_config, indent=2).encode())
    nested = {
        "model_type": "mistral3",
        "text_config": {"model_type": "mistral_large4", "hidden_size": 12288,
                        "rope_parameters": {"rope_type": "yarn", "factor": 64.0,
                                            "llama_4_scaling_beta": 0.1},
                        "layer_types": ["full_attention", "sliding_attention"] * 3,
                        "kv_source_layers": [0, 0, 2, 2, -1, None]},
        "vision_config": None, "\u00e9scaped": "\ud83d\ude00"}
    write("json", "config_nested", b"\x00" + json.dumps(nested).encode())
    st = safetensors(layer(QLORA, True), meta(QLORA, "deepseek"))
    write("json", "safetensors_header", b"\x00" + st[8:8 + struct.unpack("<Q", st[:8])[0]])
    write("json", "grammar_corners", b"\x00" + (
        '[0,-0,-0.0e+0,1E9,123456789012345678901234567890,1.8e308,1e-400,'
        '"\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00",'
        '{"a":1,"b":2,"\\u0061":3},{"":[],"k":{}},true,false,null]').encode())
    write("json", "deep", b"\x00" + b"[" * 31 + b"{\"k\":" + b"1" + b"}" + b"]" * 31)
    write("json", "generated", bytes([1, 0, 5, 1, 3, 0, 4, 2, 1, 7, 6, 2, 9, 0, 0, 1, 4, 8, 3]))

    # hf_config: [layer u16 LE] then a config.json; every config of the tests, layer
    # 0, 1 and 3 (the hybrids' MLA layers are not all at the start).
    root = os.path.join(HERE, "..", "tests", "data")
    configs = [(n[:-5], os.path.join(root, "hf_configs", n))
               for n in sorted(os.listdir(os.path.join(root, "hf_configs")))
               if n.endswith(".json") and n != "expected.json"]
    configs += [("tiny_" + n, os.path.join(root, "families", n, "config.json"))
                for n in sorted(os.listdir(os.path.join(root, "families")))
                if os.path.isdir(os.path.join(root, "families", n))]
    for name, path in configs:
        with open(path, "rb") as f:
            text = f.read()
        for idx in (0, 1, 3):
            write("hf_config", f"{name}_{idx}", struct.pack("<H", idx) + text)

    # engine_calls: [which] then (op, arg[, salt]) triples; see the target.
    write("engine_calls", "prefill_decode", bytes([0, 0, 3, 5, 0, 1, 9, 4, 0, 0, 1, 2]))
    write("engine_calls", "errors", bytes([1, 0, 0, 0, 0, 4, 0x80, 1, 2, 0x40, 2, 9, 0, 7, 0]))
    write("engine_calls", "truncate_reset", bytes([0, 1, 4, 3, 2, 1, 3, 0, 0, 2, 7, 4, 1]))
    write("engine_calls", "fill_cache", bytes([1] + [0, 4, 1] * 4 + [4, 0]))


if __name__ == "__main__":
    main()
