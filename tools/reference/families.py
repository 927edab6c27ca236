"""MLA families of Hugging Face transformers 5.24: per-layer attention parameters and an
independent float64 reference of the attention math (docs/families.md written as code).

Two entry points, both pure functions of plain data (no transformers import):

* `derive_layers(model_type, config_json)` reads a `config.json` dict exactly as
  `save_pretrained` writes it (nested `text_config` included) and returns, per decoder
  layer, its kind and every number the engine needs: dims, latent-norm eps, RoPE type and
  parameters, softmax scale, window, DSA indexer, producer layers for shared KV / top-k,
  and the checkpoint tensor names. This is what `mla_config_from_hf_json` must reproduce
  (tests/data/hf_configs/expected.json is this function applied to the default configs).
* `reference_forward(layers, weights, inputs, schedule)` runs the MLA layers from those
  specs and the checkpoint tensors in float64: prefill (one chunk) or any chunked
  prefill/decode schedule, with caches, sliding windows, DSA selection, shared KV and
  shared top-k. make_families.py checks it against transformers' own modules.

Only facts (formulas, names, defaults) come from transformers; the code is the project's.
"""

import math

import torch

F64 = torch.float64

# --------------------------------------------------------------------------------------
# per-family facts
# --------------------------------------------------------------------------------------

# attention module path inside the checkpoint, as save_pretrained writes it ({i} = layer)
# and the names of the tensors under it. A role missing from a family's map means "the
# family has no such tensor".
_DS_NAMES = {
    "q_proj": "q_proj.weight", "q_a_proj": "q_a_proj.weight", "q_a_proj.bias": "q_a_proj.bias",
    "q_a_norm": "q_a_layernorm.weight", "q_b_proj": "q_b_proj.weight",
    "kv_a_proj": "kv_a_proj_with_mqa.weight", "kv_a_proj.bias": "kv_a_proj_with_mqa.bias",
    "kv_a_norm": "kv_a_layernorm.weight", "kv_b_proj": "kv_b_proj.weight",
    "o_proj": "o_proj.weight", "o_proj.bias": "o_proj.bias",
}
_INDEXER_NAMES = {
    "idx.wq_b": "indexer.wq_b.weight", "idx.wk": "indexer.wk.weight",
    "idx.k_norm": "indexer.k_norm.weight", "idx.k_norm.bias": "indexer.k_norm.bias",
    "idx.weights_proj": "indexer.weights_proj.weight",
}

FAMILIES = {
    # model_type: prefix template, tensor-name map, text sub-config key
    "deepseek_v2": dict(prefix="model.layers.{i}.self_attn.", names=_DS_NAMES),
    "deepseek_v3": dict(prefix="model.layers.{i}.self_attn.", names=_DS_NAMES),
    "sarvam_mla": dict(prefix="model.layers.{i}.self_attn.", names=_DS_NAMES),
    "kimi_k25": dict(prefix="language_model.model.blocks.{i}.self_attn.", names=_DS_NAMES,
                     text_config=True),
    "youtu": dict(prefix="model.layers.{i}.self_attn.", names=_DS_NAMES),
    "axk1": dict(prefix="model.layers.{i}.self_attn.", names=_DS_NAMES),
    "glm4_moe_lite": dict(prefix="model.layers.{i}.self_attn.", names=_DS_NAMES),
    "minicpm3": dict(prefix="model.layers.{i}.self_attn.", names=_DS_NAMES),
    "kimi_linear": dict(prefix="model.layers.{i}.self_attn.", names=_DS_NAMES),
    "bailing_hybrid": dict(prefix="model.layers.{i}.attention.",
                           names={**_DS_NAMES, "o_proj": "dense.weight", "o_proj.bias": "dense.bias",
                                  "gate_proj": "g_proj.weight"}),
    "mistral4": dict(prefix="model.layers.{i}.self_attn.", names=_DS_NAMES),
    "mistral_large4": dict(prefix="layers.{i}.attention.", text_config=True, names={
        "q_proj": "wq.weight", "kv_a_proj": "wkv_a_with_mqa.weight", "kv_a_proj.bias": "wkv_a_with_mqa.bias",
        "kv_a_norm": "kv_a_norm.weight", "kv_b_proj": "wkv_b.weight", "o_proj": "wo.weight",
        "o_proj.bias": "wo.bias", "q_scale": "ssmax_scaling.s", "q_scale.bias": "ssmax_scaling.b",
        **_INDEXER_NAMES, "idx.q_norm": "indexer.q_input_norm.weight",
        "idx.q_norm.bias": "indexer.q_input_norm.bias", "idx.q_scale": "indexer.ssmax_scaling.s",
        "idx.q_scale.bias": "indexer.ssmax_scaling.b"},
        globals={"rope_alpha": "lerope.alpha"}),
    "longcat_flash": dict(prefix="model.layers.{i2}.self_attn.{j}.", names=_DS_NAMES),
    "deepseek_v32": dict(prefix="model.layers.{i}.self_attn.", names={**_DS_NAMES, **_INDEXER_NAMES}),
    "glm_moe_dsa": dict(prefix="model.layers.{i}.self_attn.", names={**_DS_NAMES, **_INDEXER_NAMES}),
    "axk2": dict(prefix="model.layers.{i}.self_attn.", names={
        **_DS_NAMES, "q_gate_proj": "q_b_proj.weight", **_INDEXER_NAMES}),
    "hy_v4": dict(prefix="model.layers.{i}.self_attn.", names={
        **_DS_NAMES, "gate_proj": "linear_gate.weight", "sinks": "learnable_sink_param", **_INDEXER_NAMES}),
    "hy_v4_vl": dict(prefix="model.layers.{i}.self_attn.", text_config=True, names={
        **_DS_NAMES, "gate_proj": "linear_gate.weight", "sinks": "learnable_sink_param", **_INDEXER_NAMES}),
    "dots3_note": dict(prefix="model.layers.{i}.self_attn.", text_config=True, names={
        **_DS_NAMES, "gate_proj": "g_proj.weight", "k_rope_norm": "k_rope_only_layernorm.weight",
        **_INDEXER_NAMES}),
    "glm5_next": dict(prefix="model.language_model.layers.{i}.self_attn.", text_config=True, names={
        **_DS_NAMES, **_INDEXER_NAMES, "idx.kpool_ape": "indexer.index_kpool_compress_ape",
        "idx.kpool_gate": "indexer.index_kpool_compress_gate"}),
}

# Values the config classes use for keys a config.json leaves out (save_pretrained writes
# them all; hand-written and older files may not). Checked against transformers by
# make_families.py. The derived lists (layer_types, indexer_types, ...) are not defaults:
# they follow from the rules in _layer_types / _indexer_types / derive_layers.
CLASS_DEFAULTS = {
    'deepseek_v2': {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128, "rms_norm_eps": 1e-06, "attention_bias": False, "max_position_embeddings": 2048},
    'deepseek_v3': {"hidden_size": 7168, "num_hidden_layers": 61, "num_attention_heads": 128, "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128, "rms_norm_eps": 1e-06, "attention_bias": False, "rope_interleave": True, "max_position_embeddings": 4096},
    'sarvam_mla': {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 64, "q_lora_rank": None, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128, "rms_norm_eps": 1e-06, "attention_bias": False, "rope_interleave": True, "max_position_embeddings": 4096},
    'kimi_k25': {"hidden_size": 7168, "num_hidden_layers": 61, "num_attention_heads": 128, "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128, "rms_norm_eps": 1e-06, "attention_bias": False, "rope_interleave": True, "max_position_embeddings": 4096},
    'youtu': {"hidden_size": 2048, "num_hidden_layers": 32, "num_attention_heads": 16, "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128, "rms_norm_eps": 1e-06, "attention_bias": False, "rope_interleave": True, "max_position_embeddings": 131072},
    'axk1': {"hidden_size": 7168, "num_hidden_layers": 61, "num_attention_heads": 64, "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128, "rms_norm_eps": 1e-06, "attention_bias": False, "rope_interleave": True, "max_position_embeddings": 32768},
    'glm4_moe_lite': {"hidden_size": 2048, "num_hidden_layers": 47, "num_attention_heads": 20, "q_lora_rank": 768, "kv_lora_rank": 512, "qk_nope_head_dim": 192, "qk_rope_head_dim": 64, "v_head_dim": 256, "rms_norm_eps": 1e-05, "attention_bias": False, "rope_interleave": True, "max_position_embeddings": 202752},
    'minicpm3': {"hidden_size": 2560, "num_hidden_layers": 62, "num_attention_heads": 40, "q_lora_rank": 768, "kv_lora_rank": 256, "qk_nope_head_dim": 64, "qk_rope_head_dim": 32, "v_head_dim": 64, "rms_norm_eps": 1e-05, "attention_bias": False, "max_position_embeddings": 32768},
    'kimi_linear': {"hidden_size": 2304, "num_hidden_layers": 27, "num_attention_heads": 32, "q_lora_rank": None, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128, "rms_norm_eps": 1e-05, "attention_bias": False, "max_position_embeddings": 1048576},
    'bailing_hybrid': {"hidden_size": 2560, "num_hidden_layers": 42, "num_attention_heads": 32, "q_lora_rank": None, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128, "rms_norm_eps": 1e-06, "attention_bias": False, "max_position_embeddings": 262144, "layer_group_size": 6},
    'mistral4': {"hidden_size": 4096, "num_hidden_layers": 36, "num_attention_heads": 32, "q_lora_rank": 1024, "kv_lora_rank": 256, "qk_nope_head_dim": 64, "qk_rope_head_dim": 64, "v_head_dim": 128, "rms_norm_eps": 1e-06, "attention_bias": False, "rope_interleave": True, "max_position_embeddings": 1048576},
    'mistral_large4': {"hidden_size": 6144, "num_hidden_layers": 72, "num_attention_heads": 64, "kv_lora_rank": 512, "qk_nope_head_dim": 64, "qk_rope_head_dim": 64, "v_head_dim": 128, "rms_norm_eps": 1e-05, "attention_bias": False, "max_position_embeddings": 1048576, "index_topk": 2048, "index_head_dim": 128, "index_n_heads": 32},
    'longcat_flash': {"hidden_size": 6144, "num_layers": 28, "num_attention_heads": 64, "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128, "rms_norm_eps": 1e-05, "attention_bias": False, "max_position_embeddings": 131072},
    'deepseek_v32': {"hidden_size": 7168, "num_hidden_layers": 61, "num_attention_heads": 128, "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128, "rms_norm_eps": 1e-06, "attention_bias": False, "max_position_embeddings": 163840, "index_topk": 2048, "index_head_dim": 128, "index_n_heads": 64},
    'glm_moe_dsa': {"hidden_size": 6144, "num_hidden_layers": 78, "num_attention_heads": 64, "q_lora_rank": 2048, "kv_lora_rank": 512, "qk_nope_head_dim": 192, "qk_rope_head_dim": 64, "v_head_dim": 256, "rms_norm_eps": 1e-05, "attention_bias": False, "max_position_embeddings": 202752, "index_topk": 2048, "index_head_dim": 128, "index_n_heads": 32},
    'axk2': {"hidden_size": 2048, "num_hidden_layers": 48, "num_attention_heads": 32, "q_lora_rank": 384, "kv_lora_rank": 128, "qk_nope_head_dim": 64, "qk_rope_head_dim": 32, "v_head_dim": 64, "rms_norm_eps": 1e-06, "attention_bias": False, "max_position_embeddings": 131072, "index_topk": 2048, "index_head_dim": 128, "index_n_heads": 16},
    'hy_v4': {"hidden_size": 2816, "num_hidden_layers": 34, "num_attention_heads": 32, "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 192, "qk_rope_head_dim": 64, "v_head_dim": 256, "rms_norm_eps": 1e-05, "attention_bias": False, "max_position_embeddings": 262144, "index_topk": 2048, "index_head_dim": 128, "index_n_heads": 16},
    'hy_v4_vl': {"hidden_size": 6144, "num_hidden_layers": 78, "num_attention_heads": 64, "q_lora_rank": 2048, "kv_lora_rank": 512, "qk_nope_head_dim": 192, "qk_rope_head_dim": 64, "v_head_dim": 256, "rms_norm_eps": 1e-05, "attention_bias": False, "max_position_embeddings": 262144, "index_topk": 2048, "index_head_dim": 128, "index_n_heads": 32},
    'dots3_note': {"hidden_size": 5120, "num_hidden_layers": 46, "num_attention_heads": 128, "q_lora_rank": 1024, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128, "rms_norm_eps": 1e-05, "attention_bias": False, "max_position_embeddings": 524288, "index_topk": 2048, "index_head_dim": 128, "index_n_heads": 64},
    'glm5_next': {"hidden_size": 4096, "num_hidden_layers": 45, "num_attention_heads": 64, "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 256, "qk_rope_head_dim": 0, "v_head_dim": 256, "rms_norm_eps": 1e-05, "attention_bias": False, "max_position_embeddings": 1048576, "index_topk": 2048, "index_head_dim": 128, "index_n_heads": 32, "index_kpool": 16, "index_kpool_always_select_tail": True},
}

# rope_parameters when a config has none: most classes use {"rope_type": "default"} with
# the class's default theta; these two build a YaRN dict instead
DEFAULT_ROPE = {
    "mistral4": lambda t: {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 128.0,
                           "original_max_position_embeddings": 8192, "beta_fast": 32.0, "beta_slow": 1.0,
                           "mscale_all_dim": 1.0, "mscale": 1.0, "llama_4_scaling_beta": 0.1},
    "mistral_large4": lambda t: {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 2048.0,
                                 "original_max_position_embeddings": 512, "beta_fast": 32.0, "beta_slow": 1.0,
                                 "attention_factor": 1.0},
}

# default rope_theta of each config class (used when neither rope_parameters nor the legacy
# top-level rope_theta say otherwise)
_DEFAULT_THETA = {"longcat_flash": 10_000_000.0, "bailing_hybrid": 6_000_000.0,
                  "dots3_note": 80_000_000.0}


def _attention_prefix(model_type, i):
    return FAMILIES[model_type]["prefix"].format(i=i, i2=i // 2, j=i % 2)


# --------------------------------------------------------------------------------------
# config.json -> per-layer specs
# --------------------------------------------------------------------------------------

def text_config(model_type, cfg):
    """The dict that holds the language model's keys: `text_config` for the multimodal
    families; flat text-only checkpoints of dots3_note / glm5_next keep them at the top level."""
    if FAMILIES[model_type].get("text_config") and cfg.get("text_config"):
        t = cfg["text_config"]
    else:
        t = cfg
    t = {**CLASS_DEFAULTS[model_type], **t}
    if not (t.get("rope_parameters") or t.get("rope_scaling")) and model_type in DEFAULT_ROPE:
        t["rope_parameters"] = DEFAULT_ROPE[model_type](t)
    if model_type == "dots3_note":
        t = _dots3_legacy(t)
    return t


_DOTS3_SWA_DEFAULTS = {"num_attention_heads": 64, "num_key_value_heads": 64, "q_lora_rank": 1024,
                       "kv_lora_rank": 1024, "head_dim": 256, "qk_nope_head_dim": 192, "v_head_dim": 128}


def _dots3_legacy(t):
    """dots3_note configs written before per_layer_config: `use_dsa`, `use_sliding_window`,
    `sliding_window_size`, `swa_*` dims, `swa_rope_theta`, a flat rope dict. Converted the
    way Dots3NoteTextConfig does it; a canonical config passes through unchanged."""
    rp0 = t.get("rope_parameters") or {}
    nested = any(k in rp0 for k in ("indexed_attention", "sliding_attention", "full_attention"))
    if nested and t.get("layer_types") is not None and "per_layer_config" in t:
        return t
    t = dict(t)
    nl = t["num_hidden_layers"]
    use_dsa = t.get("use_dsa", None if "per_layer_config" in t else True)
    use_swa = t.get("use_sliding_window", True)
    if t.get("sliding_window") is None:
        t["sliding_window"] = t.get("sliding_window_size", 512)
    if t.get("layer_types") is None:
        full = "full_attention" if use_dsa is False else "indexed_attention"
        t["layer_types"] = [full if not use_swa or i < 2 or i % 4 == 1 else "sliding_attention" for i in range(nl)]
    if use_dsa is not None:
        old, new = ("full_attention", "indexed_attention") if use_dsa else ("indexed_attention", "full_attention")
        t["layer_types"] = [new if x == old else x for x in t["layer_types"]]
    swa = {k: t.get("swa_" + k, v) for k, v in _DOTS3_SWA_DEFAULTS.items()}
    swa["qk_rope_head_dim"] = t.get("swa_qk_rope_head_dim", swa["head_dim"] - swa["qk_nope_head_dim"])
    if "per_layer_config" not in t:
        t["per_layer_config"] = {str(i): swa for i, x in enumerate(t["layer_types"]) if x == "sliding_attention"}
    theta = t.get("rope_theta", _DEFAULT_THETA["dots3_note"])
    rp = t.get("rope_parameters") or t.get("rope_scaling")
    types = set(t["layer_types"])
    if rp is None:
        rp = {lt: {"rope_type": "default",
                   "rope_theta": t.get("swa_rope_theta", 50_000.0) if lt == "sliding_attention" else theta}
              for lt in types}
    elif not any(lt in rp for lt in types):
        rp = {lt: dict(rp) for lt in types}
    for lt in types:
        rp[lt].setdefault("rope_theta", theta)
    t["rope_parameters"] = rp
    return t


def _rope_parameters(cfg, model_type, layer_type=None):
    """transformers' standardisation: rope_parameters (or legacy rope_scaling) with
    rope_type (legacy key `type`), rope_theta filled from the top level; a dict nested per
    layer type (dots3_note) is selected with `layer_type`."""
    rp = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    if layer_type is not None and layer_type in rp and isinstance(rp[layer_type], dict):
        rp = rp[layer_type]
    rp = dict(rp)
    rp["rope_type"] = rp.get("rope_type", rp.get("type", "default"))
    rp.setdefault("rope_theta", cfg.get("rope_theta", _DEFAULT_THETA.get(model_type, 10000.0)))
    if rp["rope_type"] in ("llama3", "yarn", "longrope"):
        rp.setdefault("original_max_position_embeddings", _max_pos(cfg))
    return rp


def _max_pos(cfg):
    return cfg.get("max_position_embeddings") or cfg.get("model_max_length")


def yarn_mscale(scale, m):
    return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0


def rope_spec(rp, dim, cfg):
    """RoPE spec for rotary dimension `dim` from standardised rope parameters: type, theta,
    type parameters and the cos/sin factor (transformers' attention_scaling)."""
    t = rp["rope_type"]
    out = {"type": t, "theta": float(rp["rope_theta"]), "dim": dim}
    if t == "default":
        out["attention_scaling"] = 1.0
    elif t in ("linear", "dynamic"):
        out["factor"] = float(rp["factor"])
        out["attention_scaling"] = 1.0
        if t == "dynamic":
            out["max_position_embeddings"] = _max_pos(cfg)
    elif t == "yarn":
        factor = rp.get("factor")
        L0 = rp["original_max_position_embeddings"]
        if factor is None:
            factor = _max_pos(cfg) / L0
        att = rp.get("attention_factor")
        ms, msa = rp.get("mscale"), rp.get("mscale_all_dim")
        if att is None:
            att = yarn_mscale(factor, ms) / yarn_mscale(factor, msa) if (ms and msa) else yarn_mscale(factor, 1.0)
        out.update(factor=float(factor), original_max_position_embeddings=int(L0),
                   beta_fast=float(rp.get("beta_fast") or 32), beta_slow=float(rp.get("beta_slow") or 1),
                   truncate=bool(cfg_truncate(cfg, rp)), attention_scaling=float(att))
    elif t == "longrope":
        L0 = rp["original_max_position_embeddings"]
        factor = rp.get("factor")
        if factor is None:
            factor = _max_pos(cfg) / L0
        att = rp.get("attention_factor")
        if att is None:
            att = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(L0))
        out.update(original_max_position_embeddings=int(L0), factor=float(factor),
                   short_factor=[float(x) for x in rp["short_factor"]],
                   long_factor=[float(x) for x in rp["long_factor"]], attention_scaling=float(att))
    elif t == "llama3":
        out.update(factor=float(rp["factor"]), low_freq_factor=float(rp["low_freq_factor"]),
                   high_freq_factor=float(rp["high_freq_factor"]),
                   original_max_position_embeddings=int(rp["original_max_position_embeddings"]),
                   attention_scaling=1.0)
    else:
        raise ValueError(f"rope_type {t!r} is not supported by the MLA families")
    return out


def cfg_truncate(cfg, rp):
    # transformers reads `truncate` from the top-level rope_parameters dict, not from a
    # per-layer-type nested one
    top = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    return top.get("truncate", True) if "rope_type" in top or "type" in top else True


def softmax_scale_mscale(rp, qk_head_dim):
    """(n+p)^-0.5, times mscale(factor, mscale_all_dim)^2 when the rope type is not
    `default` and mscale_all_dim is present and non-zero (the DeepSeek rule)."""
    s = qk_head_dim ** -0.5
    if rp.get("rope_type", "default") != "default":
        msa = rp.get("mscale_all_dim", 0)
        if msa:
            m = yarn_mscale(rp["factor"], msa)
            s = s * m * m
    return s


def _names(model_type, i, roles):
    fam = FAMILIES[model_type]
    prefix = _attention_prefix(model_type, i)
    out = {}
    for r in roles:
        if r in fam["names"]:
            out[r] = prefix + fam["names"][r]
        elif r in fam.get("globals", {}):
            out[r] = fam["globals"][r]
        else:
            raise KeyError(f"{model_type}: no tensor name for role {r}")
    return out


def _kinds_suffix(nope, sliding, kv_shared, dsa):
    k = "mla"
    if nope:
        k += "_nope"
    if sliding:
        k += "_sliding"
    if kv_shared:
        k += "_kv_shared"
    if dsa == "full":
        k += "_dsa"
    elif dsa == "shared":
        k += "_dsa_shared"
    return k


def _layer_types(model_type, t, nl):
    """Per-layer type list as each config class derives it when `layer_types` is absent."""
    lt = t.get("layer_types")
    if model_type == "kimi_linear":
        if lt is None:
            lac = t.get("linear_attn_config") or {}
            if "full_attn_layers" in lac and "kda_layers" in lac:
                lt = [None] * nl
                for x in lac["full_attn_layers"]:
                    lt[x - 1] = "full_attention"
                for x in lac["kda_layers"]:
                    lt[x - 1] = "linear_attention"
            else:
                lt = ["full_attention" if i and i % 4 == 0 else "linear_attention" for i in range(nl)]
        return lt
    if model_type == "bailing_hybrid":
        g = t.get("layer_group_size", 6)
        return lt or ["full_attention" if (i + 1) % g == 0 else "linear_attention" for i in range(nl)]
    if model_type == "glm5_next":
        lt = lt or ["linear_attention" if i % 4 != 3 else "indexed_attention" for i in range(nl)]
        return ["indexed_attention" if x == "full_attention" else x for x in lt]
    if model_type == "dots3_note":
        if lt is None:
            lt = ["indexed_attention" if i < 2 or i % 4 == 1 else "sliding_attention" for i in range(nl)]
        return lt
    return lt


def _indexer_types(model_type, t, nl):
    it = t.get("indexer_types")
    if it is not None:
        return list(it)
    if model_type in ("hy_v4", "hy_v4_vl"):
        return ["full" if i == 0 or (i - 1) % 4 == 0 else "shared" for i in range(nl)]
    pat = t.get("index_topk_pattern")
    if pat is not None:
        return [{"F": "full", "S": "shared"}[c] for c in pat] if isinstance(pat, str) else list(pat)
    freq = max(t.get("index_topk_freq", 1), 1)
    off = t.get("index_skip_topk_offset", 2)
    return ["full" if (max(i - off + 1, 0) % freq) == 0 else "shared" for i in range(nl)]


def _per_layer(t, i):
    """dots3_note: per_layer_config overrides (keys are zero-padded layer indices)."""
    plc = t.get("per_layer_config") or {}
    for k, v in plc.items():
        if int(k) == i:
            return {**t, **v}
    return t


# top-level model_types that are a family's text sub-config with a causal-LM class of their own
ALIASES = {"dots3_note_text": "dots3_note"}


def derive_layers(model_type, cfg):
    """Per decoder-layer attention spec (list indexed by transformers' layer_idx)."""
    model_type = ALIASES.get(model_type, model_type)
    if model_type not in FAMILIES:
        raise KeyError(model_type)
    t = text_config(model_type, cfg)
    if model_type == "longcat_flash":
        nl = 2 * t["num_layers"]
    else:
        nl = t["num_hidden_layers"]
    lt = _layer_types(model_type, t, nl)
    dsa_family = model_type in ("deepseek_v32", "glm_moe_dsa", "axk2", "hy_v4", "hy_v4_vl", "mistral_large4",
                                "dots3_note", "glm5_next")
    it = _indexer_types(model_type, t, nl) if dsa_family and model_type not in ("deepseek_v32", "axk2",
                                                                                 "dots3_note") else None
    out = []
    last_full_dsa = None
    for i in range(nl):
        c = _per_layer(t, i) if model_type == "dots3_note" else t
        ltype = lt[i] if lt is not None else None
        if ltype == "linear_attention":
            out.append({"layer": i, "kind": "linear_attention"})
            continue
        spec = _mla_layer(model_type, cfg, t, c, i, ltype, it)
        # DSA producer bookkeeping
        dsa = spec.get("dsa")
        if dsa is not None:
            if dsa["mode"] == "full":
                dsa["topk_source_layer"] = i
                last_full_dsa = i
            else:
                if model_type == "glm5_next":
                    prev = out[i - 1] if i > 0 else None
                    ok = prev is not None and prev.get("dsa") is not None and prev["dsa"]["mode"] == "full"
                    dsa["topk_source_layer"] = i - 1 if ok else None
                else:
                    dsa["topk_source_layer"] = last_full_dsa
        spec["kind"] = _kinds_suffix(spec["rope"] is None, spec["sliding_window"] > 0,
                                     spec["kv_source_layer"] != i, dsa["mode"] if dsa else None)
        out.append(spec)
    return out


def _mla_layer(model_type, cfg, t, c, i, ltype, it):
    d = c["hidden_size"]
    H = c["num_attention_heads"]
    rq = c.get("q_lora_rank") or 0
    r = c["kv_lora_rank"]
    n = c["qk_nope_head_dim"]
    p = c["qk_rope_head_dim"]
    v = c["v_head_dim"]
    eps_cfg = float(c.get("rms_norm_eps", 1e-6))
    s = {"layer": i, "kind": None, "prefix": _attention_prefix(model_type, i), "hidden_size": d,
         "num_heads": H, "q_lora_rank": rq, "kv_lora_rank": r, "qk_nope_head_dim": n, "qk_rope_head_dim": p,
         "v_head_dim": v}
    # ---- latent norms and their eps
    eps_from_cfg = model_type in ("dots3_note", "glm5_next", "hy_v4_vl", "mistral_large4")
    eps = eps_cfg if eps_from_cfg else 1e-6
    always_lora = model_type in ("axk1", "longcat_flash", "deepseek_v32", "glm_moe_dsa", "axk2", "hy_v4",
                                 "hy_v4_vl", "glm5_next", "dots3_note")
    if model_type == "mistral_large4":
        rq = 0
        s["q_lora_rank"] = 0
    elif always_lora and rq == 0:
        raise ValueError(f"{model_type} needs q_lora_rank")
    s["q_norm_eps"] = eps if rq else None
    s["kv_norm_eps"] = eps
    s["attention_bias"] = bool(c.get("attention_bias", False))
    # ---- RoPE
    rp = _rope_parameters(t, model_type, ltype if model_type == "dots3_note" else None)
    # hy_v4: rotate_half; hy_v4_vl imports ERNIE 4.5's rotation: pairs (2i, 2i+1), in f32
    layout = {"minicpm3": "half", "hy_v4": "half"}.get(model_type, "interleaved")
    if model_type in ("deepseek_v3", "sarvam_mla", "kimi_k25", "youtu", "axk1", "glm4_moe_lite", "mistral4"):
        layout = "interleaved" if c.get("rope_interleave", True) else "half"
    nope = model_type in ("kimi_linear", "glm5_next")
    if model_type == "mistral_large4":
        every = c.get("no_rope_layer_interval", 4)
        nrl = c.get("no_rope_layers") or [int((j + 1) % every != 0) for j in range(c["num_hidden_layers"])]
        if not nrl[i]:
            nope = True
            n, p = n + p, 0
            s["qk_nope_head_dim"], s["qk_rope_head_dim"] = n, p
    if nope:
        s["rope"] = None
        # kimi_linear: the p "rope" values of the key are used as they are (no rotation) and
        # the query is one n+p vector per head
    else:
        s["rope"] = rope_spec(rp, p, t)
        s["rope"]["layout"] = layout
        if model_type == "mistral_large4":
            s["rope"]["frequency_multiplier"] = "exp(alpha)"
        if model_type == "hy_v4_vl":
            s["rope"]["mrope_section"] = list(rp.get("mrope_section", [12, 10, 10]))
    s["rope_key_norm_eps"] = eps_cfg if model_type == "dots3_note" else None
    # ---- softmax scale
    qk = n + p if model_type != "longcat_flash" else c.get("qk_head_dim") or (n + p)
    if model_type == "mistral_large4":
        qk = c["qk_nope_head_dim"] + c["qk_rope_head_dim"]
    if model_type in ("kimi_linear", "glm5_next", "dots3_note"):
        s["softmax_scale"] = qk ** -0.5
    else:
        s["softmax_scale"] = softmax_scale_mscale(rp, qk)
    # ---- window
    s["sliding_window"] = int(c["sliding_window"]) if (model_type == "dots3_note" and ltype == "sliding_attention") else 0
    # ---- latent scales
    if model_type in ("longcat_flash", "dots3_note"):
        s["latent_scale_q"] = (d / rq) ** 0.5
        s["latent_scale_kv"] = (d / r) ** 0.5
    else:
        s["latent_scale_q"] = 1.0
        s["latent_scale_kv"] = 1.0
    # ---- query scaling
    if model_type == "mistral4":
        s["query_scale"] = {"type": "llama4", "beta": float(rp["llama_4_scaling_beta"]),
                            "original_max_position_embeddings": int(rp["original_max_position_embeddings"])}
    elif model_type == "mistral_large4":
        s["query_scale"] = {"type": "learned_log_position"}
    else:
        s["query_scale"] = None
    # ---- gates and sinks
    s["gate"] = {"bailing_hybrid": "per_head", "dots3_note": "per_head", "hy_v4": "per_channel",
                 "hy_v4_vl": "per_channel", "axk2": "fused_q_gate"}.get(model_type)
    s["sinks"] = model_type in ("hy_v4", "hy_v4_vl")
    # ---- KV sharing
    s["kv_source_layer"] = i
    if model_type == "mistral_large4":
        src = c.get("kv_source_layers") or list(range(c["num_hidden_layers"]))
        s["kv_source_layer"] = int(src[i])
    # ---- DSA
    s["dsa"] = None
    dsa_here = (model_type in ("deepseek_v32", "axk2") or
                (model_type in ("glm_moe_dsa", "hy_v4", "hy_v4_vl", "mistral_large4")) or
                (model_type in ("dots3_note", "glm5_next") and ltype == "indexed_attention"))
    if dsa_here:
        Hi, Di, K = c["index_n_heads"], c["index_head_dim"], c["index_topk"]
        mode = it[i] if it is not None else "full"
        dsa = {"mode": mode, "index_n_heads": Hi, "index_head_dim": Di, "index_topk": K}
        if mode == "full":
            dsa["q_input"] = {"mistral_large4": "hidden_layernorm", "dots3_note": "q_latent_scaled"}.get(
                model_type, "q_latent")
            dsa["q_norm_eps"] = 1e-6 if model_type == "mistral_large4" else None
            dsa["query_scale"] = "learned_log_position" if model_type == "mistral_large4" else None
            dsa["k_norm_eps"] = eps_cfg if model_type in ("hy_v4", "hy_v4_vl") else 1e-6
            if s["rope"] is None:
                dsa["rope_part"], dsa["rope_layout"] = None, None
            else:
                dsa["rope_part"] = "last" if model_type in ("hy_v4", "hy_v4_vl") else "first"
                dsa["rope_layout"] = "half" if model_type in ("deepseek_v32", "axk2", "hy_v4") else "interleaved"
            dsa["score_scale"] = Di ** -0.5
            dsa["weights_scale"] = Hi ** -0.5
            if model_type == "glm5_next":
                dsa["kpool"] = int(c.get("index_kpool", 16))
                dsa["always_select_tail"] = bool(c.get("index_kpool_always_select_tail", True))
        s["dsa"] = dsa
    # ---- tensor names
    roles = []
    if rq:
        roles += ["q_a_proj", "q_a_norm", "q_gate_proj" if model_type == "axk2" else "q_b_proj"]
        if s["attention_bias"]:
            roles.append("q_a_proj.bias")
    else:
        roles.append("q_proj")
    if s["kv_source_layer"] == i:
        roles += ["kv_a_proj", "kv_a_norm"]
        if s["attention_bias"]:
            roles.append("kv_a_proj.bias")
    roles += ["kv_b_proj", "o_proj"]
    if s["attention_bias"]:
        roles.append("o_proj.bias")
    if s["gate"] in ("per_head", "per_channel"):
        roles.append("gate_proj")
    if s["sinks"]:
        roles.append("sinks")
    if s["rope_key_norm_eps"] is not None:
        roles.append("k_rope_norm")
    if s["query_scale"] and s["query_scale"]["type"] == "learned_log_position":
        roles += ["q_scale", "q_scale.bias"]
    if s["rope"] is not None and s["rope"].get("frequency_multiplier"):
        roles.append("rope_alpha")
    if s["dsa"] is not None and s["dsa"]["mode"] == "full":
        roles += ["idx.wq_b", "idx.wk", "idx.k_norm", "idx.k_norm.bias", "idx.weights_proj"]
        if model_type == "mistral_large4":
            roles += ["idx.q_norm", "idx.q_norm.bias", "idx.q_scale", "idx.q_scale.bias"]
        if model_type == "glm5_next":
            roles += ["idx.kpool_ape", "idx.kpool_gate"]
    s["tensors"] = _names(model_type, i, roles)
    return s


# --------------------------------------------------------------------------------------
# RoPE tables (own rendering of the formulas in docs/families.md)
# --------------------------------------------------------------------------------------

def inv_freq(rope, seq_len=None):
    """Inverse frequencies (f64, length dim/2) for a call whose largest position is
    seq_len - 1, and the cos/sin factor. transformers computes these in float32; the
    values are rounded to f32 here so that the reference uses the same table."""
    dim, theta = rope["dim"], rope["theta"]
    i2 = torch.arange(0, dim, 2, dtype=torch.float32)
    base = 1.0 / (theta ** (i2 / dim))                      # f32, as transformers
    t = rope["type"]
    if t == "default":
        f = base
    elif t == "linear":
        f = base / rope["factor"]
    elif t == "yarn":
        s, L0 = rope["factor"], rope["original_max_position_embeddings"]

        def corr(k):
            return dim * math.log(L0 / (k * 2 * math.pi)) / (2 * math.log(theta))
        lo, hi = corr(rope["beta_fast"]), corr(rope["beta_slow"])
        if rope["truncate"]:
            lo, hi = math.floor(lo), math.ceil(hi)
        lo, hi = max(lo, 0), min(hi, dim - 1)
        if lo == hi:
            hi += 0.001
        ramp = ((torch.arange(dim // 2, dtype=torch.float32) - lo) / (hi - lo)).clamp(0, 1)
        pos_freqs = theta ** (i2 / dim)
        extra = 1.0 / pos_freqs
        inter = 1.0 / (s * pos_freqs)
        keep = 1 - ramp
        f = inter * (1 - keep) + extra * keep
    elif t == "longrope":
        L0 = rope["original_max_position_embeddings"]
        fac = rope["long_factor"] if (seq_len is not None and seq_len > L0) else rope["short_factor"]
        f = 1.0 / (torch.tensor(fac, dtype=torch.float32) * theta ** (i2 / dim))
    elif t == "llama3":
        s = rope["factor"]
        lo_f, hi_f, L0 = rope["low_freq_factor"], rope["high_freq_factor"], rope["original_max_position_embeddings"]
        wl = 2 * math.pi / base
        low_wl, high_wl = L0 / lo_f, L0 / hi_f
        f = torch.where(wl > low_wl, base / s, base)
        smooth = (L0 / wl - lo_f) / (hi_f - lo_f)
        sm = (1 - smooth) * f / s + smooth * f
        med = ~(wl < high_wl) * ~(wl > low_wl)
        f = torch.where(med, sm, f)
    else:
        raise ValueError(t)
    return f.to(torch.float32).to(F64), rope["attention_scaling"]


def rope_cos_sin(rope, positions, seq_len, alpha=None):
    """cos/sin [len(positions), dim/2] (angle of pair i), cos/sin factor applied; computed
    in f32 like transformers, returned as f64."""
    f, att = inv_freq(rope, seq_len)
    f = f.to(torch.float32)
    if alpha is not None:                                    # mistral_large4 LeRoPE
        f = f * alpha.to(torch.float32).exp()
    ang = positions.to(torch.float32)[:, None] * f[None, :]
    return (ang.cos() * att).to(F64), (ang.sin() * att).to(F64)


def apply_rope(x, cos, sin, layout):
    """x [..., T, p]; pairs (2i, 2i+1) (interleaved) or (i, i+p/2) (half) rotate by angle i.
    Output keeps the input's layout (dot products do not depend on the order)."""
    if layout == "interleaved":
        a, b = x[..., 0::2], x[..., 1::2]
        out = torch.empty_like(x)
        out[..., 0::2] = a * cos - b * sin
        out[..., 1::2] = b * cos + a * sin
        return out
    h = x.shape[-1] // 2
    a, b = x[..., :h], x[..., h:]
    return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)


# --------------------------------------------------------------------------------------
# float64 reference of one or more MLA layers
# --------------------------------------------------------------------------------------

def rms(x, w, eps):
    return w * (x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = (x - mu).pow(2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


class _LayerState:
    def __init__(self):
        self.c = None        # [t, r] latent (after norm and latent scale)
        self.kpe = None      # [t, p] rotated rope key (NoPE: raw)
        self.ik = None       # [t, Di] indexer keys (rope applied)
        self.igate = None    # glm5_next: [t, Di] pool gate scores
        self.sel = {}        # query position -> sorted list of selected key positions


def _cat(a, b):
    return b if a is None else torch.cat([a, b], 0)


def reference_forward(layers, W, X, schedule, record=None):
    """Run MLA layers (specs from derive_layers, in layer order) over `schedule`, a list
    of (start, end) position chunks covering 0..T-1 (one chunk = prefill; (0,P) then
    single tokens = decode). W: checkpoint name -> tensor; X: layer -> [T, d] inputs.
    Returns layer -> [T, d] outputs (f64). `record`, if a dict, receives per layer the
    selected key positions of every query (DSA) and the index scores (for gap checks)."""
    W = {k: v.to(F64) for k, v in W.items()}
    by_idx = {L["layer"]: L for L in layers}
    st = {L["layer"]: _LayerState() for L in layers}
    outs = {L["layer"]: [] for L in layers}
    for (s0, e0) in schedule:
        pos = torch.arange(s0, e0)
        for L in layers:
            i = L["layer"]
            outs[i].append(_layer_step(L, W, X[i][s0:e0].to(F64), pos, e0, st, by_idx, record))
    return {i: torch.cat(v, 0) for i, v in outs.items()}


def _lin(W, names, role, x):
    y = x @ W[names[role]].T
    b = names.get(role + ".bias")
    return y if b is None else y + W[b]


def _layer_step(L, W, x, pos, seq_len, st, by_idx, record):
    i = L["layer"]
    nm = L["tensors"]
    T = x.shape[0]
    H, n, p, v, r = L["num_heads"], L["qk_nope_head_dim"], L["qk_rope_head_dim"], L["v_head_dim"], L["kv_lora_rank"]
    S = st[i]
    # ---------------- query
    gate = None
    cqn = None
    if L["q_lora_rank"]:
        cq = _lin(W, nm, "q_a_proj", x)
        cqn = rms(cq, W[nm["q_a_norm"]], L["q_norm_eps"])
        if L["gate"] == "fused_q_gate":
            y = torch.cat([cqn, cq], -1) @ W[nm["q_gate_proj"]].T
            y = y.view(T, H, n + p + v)
            q, gate = y[..., :n + p], y[..., n + p:]
        else:
            q = (cqn * L["latent_scale_q"]) @ W[nm["q_b_proj"]].T
            q = q.view(T, H, n + p)
    else:
        q = (x @ W[nm["q_proj"]].T).view(T, H, n + p)
    q = q.transpose(0, 1).clone()                                   # [H, T, n+p]
    # ---------------- rope tables for this call
    cos = sin = None
    alpha = W[nm["rope_alpha"]] if "rope_alpha" in nm else None
    if L["rope"] is not None:
        cos, sin = rope_cos_sin(L["rope"], pos, seq_len, alpha)
        q[..., n:] = apply_rope(q[..., n:], cos, sin, L["rope"]["layout"])
    # ---------------- latent cache
    src = L["kv_source_layer"]
    if src == i:
        a = _lin(W, nm, "kv_a_proj", x)
        c = rms(a[:, :r], W[nm["kv_a_norm"]], L["kv_norm_eps"]) * L["latent_scale_kv"]
        kpe = a[:, r:r + p]
        if L["rope_key_norm_eps"] is not None:
            kpe = rms(kpe, W[nm["k_rope_norm"]], L["rope_key_norm_eps"])
        if L["rope"] is not None:
            kpe = apply_rope(kpe, cos, sin, L["rope"]["layout"])
        S.c, S.kpe = _cat(S.c, c), _cat(S.kpe, kpe)
        C, KPE = S.c, S.kpe
    else:
        C, KPE = st[src].c, st[src].kpe
    # ---------------- query scaling (after RoPE, whole head)
    qs = L["query_scale"]
    if qs is not None:
        if qs["type"] == "llama4":
            f = 1 + qs["beta"] * torch.log1p(torch.floor(pos.to(F64) / qs["original_max_position_embeddings"]))
            q = q * f[None, :, None]
        else:
            lp = torch.log(pos.to(F64) + 1)
            f = W[nm["q_scale"]][:, None] * lp[None, :] + W[nm["q_scale.bias"]][:, None]   # [H, T]
            q = q * f[..., None]
    # ---------------- keys / values of all cached tokens
    Tk = C.shape[0]
    kv = (C @ W[nm["kv_b_proj"]].T).view(Tk, H, n + v).transpose(0, 1)      # [H, Tk, n+v]
    k_nope, val = kv[..., :n], kv[..., n:]
    scores = (q[..., :n] @ k_nope.transpose(-1, -2))
    if p:
        scores = scores + q[..., n:] @ KPE.T[None]
    scores = scores * L["softmax_scale"]                                       # [H, T, Tk]
    # ---------------- visibility
    kpos = torch.arange(Tk)
    vis = kpos[None, :] <= pos[:, None]
    if L["sliding_window"]:
        vis &= kpos[None, :] > (pos[:, None] - L["sliding_window"])
    dsa = L["dsa"]
    if dsa is not None:
        if dsa["mode"] == "full":
            sel = _indexer(L, W, x, cqn, pos, cos, sin, S, record)
        else:
            sel = st[dsa["topk_source_layer"]].sel
        for qi, t in enumerate(pos.tolist()):
            m = torch.zeros(Tk, dtype=torch.bool)
            m[sel[t]] = True
            vis[qi] &= m
            if L["dsa"]["mode"] == "shared":
                S.sel[t] = sel[t]
    scores = scores.masked_fill(~vis[None], float("-inf"))
    if L["sinks"]:
        sink = W[nm["sinks"]][:, None, None].expand(H, T, 1)
        z = torch.cat([scores, sink], -1)
        prob = torch.softmax(z, -1)[..., :-1]
    else:
        prob = torch.softmax(scores, -1)
    o = prob @ val                                                            # [H, T, v]
    if L["gate"] == "per_head":
        g = x @ W[nm["gate_proj"]].T                                           # [T, H]
        o = o * torch.sigmoid(g).T[..., None]
    elif L["gate"] == "per_channel":
        g = (x @ W[nm["gate_proj"]].T).view(T, H, v).transpose(0, 1)
        o = o * torch.sigmoid(g)
    elif L["gate"] == "fused_q_gate":
        o = o * torch.sigmoid(gate.transpose(0, 1))
    o = o.transpose(0, 1).reshape(T, H * v)
    return _lin(W, nm, "o_proj", o)


def _indexer(L, W, x, cqn, pos, cos, sin, S, record):
    """Selected key positions for every query of this call (DSA lightning indexer)."""
    dsa, nm = L["dsa"], L["tensors"]
    Hi, Di, K = dsa["index_n_heads"], dsa["index_head_dim"], dsa["index_topk"]
    T = x.shape[0]
    p = L["qk_rope_head_dim"]
    qin = {"q_latent": lambda: cqn, "q_latent_scaled": lambda: cqn * L["latent_scale_q"],
           "hidden_layernorm": lambda: layer_norm(x, W[nm["idx.q_norm"]], W[nm["idx.q_norm.bias"]],
                                                  dsa["q_norm_eps"])}[dsa["q_input"]]()
    q = (qin @ W[nm["idx.wq_b"]].T).view(T, Hi, Di)
    if dsa["query_scale"] == "learned_log_position":
        lp = torch.log(pos.to(F64) + 1)
        q = q * (W[nm["idx.q_scale"]][None, :] * lp[:, None] + W[nm["idx.q_scale.bias"]][None, :])[..., None]
    k = layer_norm(x @ W[nm["idx.wk"]].T, W[nm["idx.k_norm"]], W[nm["idx.k_norm.bias"]], dsa["k_norm_eps"])
    if dsa["rope_part"] is not None:
        sl = slice(0, p) if dsa["rope_part"] == "first" else slice(Di - p, Di)
        q = q.clone()
        k = k.clone()
        q[..., sl] = apply_rope(q[..., sl].transpose(0, 1), cos, sin, dsa["rope_layout"]).transpose(0, 1)
        k[:, sl] = apply_rope(k[:, sl], cos, sin, dsa["rope_layout"])
    w = (x @ W[nm["idx.weights_proj"]].T) * dsa["weights_scale"]             # [T, Hi]
    if "kpool" in dsa:
        gsc = x @ W[nm["idx.kpool_gate"]].T                                  # [T, Di]
        S.ik, S.igate = _cat(S.ik, k), _cat(S.igate, gsc)
        return _pooled_select(L, W, q, w, pos, S, record)
    S.ik = _cat(S.ik, k)
    Kc = S.ik                                                                 # [Tk, Di]
    sc = torch.relu(torch.einsum("thd,kd->thk", q, Kc) * dsa["score_scale"])  # [T, Hi, Tk]
    I = torch.einsum("th,thk->tk", w, sc)                                    # [T, Tk]
    for qi, t in enumerate(pos.tolist()):
        valid = I[qi, :t + 1]
        if t + 1 <= K:
            S.sel[t] = list(range(t + 1))
        else:
            S.sel[t] = sorted(torch.topk(valid, K).indices.tolist())
        if record is not None:
            record.setdefault(L["layer"], {})[t] = (valid.clone(), K)
    return S.sel


def _pooled_select(L, W, q, w, pos, S, record):
    """glm5_next: score complete pools of `kpool` consecutive keys, keep the best
    index_topk / kpool visible pools, expand them to tokens, add the query's own
    incomplete pool (always_select_tail)."""
    dsa, nm = L["dsa"], L["tensors"]
    kp, K = dsa["kpool"], dsa["index_topk"]
    Tk = S.ik.shape[0]
    npool = Tk // kp
    ape = W[nm["idx.kpool_ape"]]                                             # [kp, Di]
    keys = S.ik[:npool * kp].view(npool, kp, -1)
    gl = S.igate[:npool * kp].view(npool, kp, -1) + ape[None]
    pk = (torch.softmax(gl, dim=1) * keys).sum(1)                            # [npool, Di]
    sc = torch.relu(torch.einsum("thd,jd->thj", q, pk) * dsa["score_scale"])
    I = torch.einsum("th,thj->tj", w, sc)                                    # [T, npool]
    select_k = K // kp
    for qi, t in enumerate(pos.tolist()):
        nvis = (t + 1) // kp                                                  # complete pools ending <= t
        chosen = []
        if nvis:
            valid = I[qi, :nvis]
            kk = min(select_k, nvis)
            chosen = sorted(torch.topk(valid, kk).indices.tolist()) if kk < nvis else list(range(nvis))
            if record is not None:
                record.setdefault(L["layer"], {})[t] = (valid.clone(), select_k)
        toks = [j * kp + u for j in chosen for u in range(kp)]
        if dsa["always_select_tail"]:
            toks += list(range(nvis * kp, t + 1))
        S.sel[t] = sorted(toks)
    return S.sel
