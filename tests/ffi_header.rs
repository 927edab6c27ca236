//! include/mla.h against the crate: version macros from Cargo.toml, numeric
//! values of every status and enum constant, the struct field order of
//! the C API (include/mla.h), the function list, and nothing in the header that is
//! not `mla_`/`MLA_` prefixed. (Freshness against the sources is CI's
//! `git diff --exit-code include/mla.h` after a build.)

use std::collections::BTreeMap;

use mla::ffi::*;
use mla_core::config::{Dsa, Gate, IndexQInput, IndexRope, QueryScale, RopeType};
use mla_core::{AttnMode, DType, RopeKey, RopeLayout, Status};

fn header() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/include/mla.h");
    std::fs::read_to_string(path).expect("include/mla.h is readable")
}

/// Object-like macros `#define NAME VALUE` (VALUE as written).
fn defines(h: &str) -> BTreeMap<String, String> {
    h.lines()
        .filter_map(|l| l.trim().strip_prefix("#define "))
        .filter_map(|rest| {
            let mut it = rest.splitn(2, char::is_whitespace);
            let name = it.next()?.to_string();
            let value = it.next().unwrap_or("").trim().to_string();
            Some((name, value))
        })
        .collect()
}

fn number(defs: &BTreeMap<String, String>, name: &str) -> u64 {
    let v = defs
        .get(name)
        .unwrap_or_else(|| panic!("{name} is not defined in mla.h"));
    v.parse()
        .unwrap_or_else(|_| panic!("{name} = {v:?} is not a number"))
}

#[test]
fn version_macros_match_cargo_toml() {
    let d = defines(&header());
    assert_eq!(
        number(&d, "MLA_VERSION_MAJOR"),
        env!("CARGO_PKG_VERSION_MAJOR").parse::<u64>().unwrap()
    );
    assert_eq!(
        number(&d, "MLA_VERSION_MINOR"),
        env!("CARGO_PKG_VERSION_MINOR").parse::<u64>().unwrap()
    );
    assert_eq!(
        number(&d, "MLA_VERSION_PATCH"),
        env!("CARGO_PKG_VERSION_PATCH").parse::<u64>().unwrap()
    );
    assert_eq!(
        d["MLA_VERSION_STRING"],
        format!("\"{}\"", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        number(&d, "MLA_ABI_VERSION"),
        u64::from(mla::ffi::MLA_ABI_VERSION)
    );
    assert_eq!(mla::ffi::MLA_ABI_VERSION, 2);
    assert_eq!(mla_abi_version(), 2);
    assert_eq!(number(&d, "MLA_MESSAGE_MAX"), MLA_MESSAGE_MAX as u64);
}

#[test]
fn status_and_enum_values_match_design() {
    let d = defines(&header());
    let statuses = [
        ("MLA_OK", Status::Ok, 0),
        ("MLA_ERR_NULL_POINTER", Status::NullPointer, 1),
        ("MLA_ERR_INVALID_CONFIG", Status::InvalidConfig, 2),
        ("MLA_ERR_WEIGHT_SHAPE", Status::WeightShape, 3),
        ("MLA_ERR_WEIGHT_DTYPE", Status::WeightDtype, 4),
        ("MLA_ERR_MISALIGNED", Status::Misaligned, 5),
        ("MLA_ERR_BUFFER_TOO_SMALL", Status::BufferTooSmall, 6),
        ("MLA_ERR_CACHE_FULL", Status::CacheFull, 7),
        ("MLA_ERR_INVALID_ARGUMENT", Status::InvalidArgument, 8),
        ("MLA_ERR_NON_FINITE", Status::NonFinite, 9),
        ("MLA_ERR_UNSUPPORTED", Status::Unsupported, 10),
        ("MLA_ERR_DEVICE", Status::Device, 11),
        ("MLA_ERR_ABI_MISMATCH", Status::AbiMismatch, 12),
        ("MLA_ERR_INTERNAL", Status::Internal, 13),
    ];
    for (name, status, value) in statuses {
        assert_eq!(number(&d, name), value, "{name}");
        assert_eq!(status as u64, value, "{name}");
    }
    let enums: [(&str, u32, u64); 34] = [
        ("MLA_DTYPE_F32", DType::F32 as u32, 0),
        ("MLA_DTYPE_F16", DType::F16 as u32, 1),
        ("MLA_DTYPE_BF16", DType::BF16 as u32, 2),
        ("MLA_DTYPE_F8_E4M3", DType::F8E4M3 as u32, 3),
        ("MLA_ROPE_TYPE_DEFAULT", RopeType::Default as u32, 0),
        ("MLA_ROPE_TYPE_YARN", RopeType::Yarn as u32, 1),
        ("MLA_ROPE_TYPE_LINEAR", RopeType::Linear as u32, 2),
        ("MLA_ROPE_TYPE_LLAMA3", RopeType::Llama3 as u32, 3),
        ("MLA_ROPE_TYPE_LONGROPE", RopeType::LongRope as u32, 4),
        ("MLA_ROPE_TYPE_NONE", RopeType::None as u32, 5),
        ("MLA_QUERY_SCALE_NONE", QueryScale::None as u32, 0),
        ("MLA_QUERY_SCALE_LLAMA4", QueryScale::Llama4 as u32, 1),
        (
            "MLA_QUERY_SCALE_LEARNED_LOG_POS",
            QueryScale::LearnedLogPos as u32,
            2,
        ),
        ("MLA_GATE_NONE", Gate::None as u32, 0),
        ("MLA_GATE_PER_HEAD", Gate::PerHead as u32, 1),
        ("MLA_GATE_PER_CHANNEL", Gate::PerChannel as u32, 2),
        ("MLA_GATE_FUSED_Q", Gate::FusedQ as u32, 3),
        ("MLA_DSA_NONE", Dsa::None as u32, 0),
        ("MLA_DSA_FULL", Dsa::Full as u32, 1),
        ("MLA_DSA_SHARED", Dsa::Shared as u32, 2),
        ("MLA_INDEX_Q_LATENT", IndexQInput::QLatent as u32, 0),
        (
            "MLA_INDEX_Q_HIDDEN_LAYERNORM",
            IndexQInput::HiddenLayerNorm as u32,
            1,
        ),
        ("MLA_INDEX_ROPE_FIRST", IndexRope::First as u32, 0),
        ("MLA_INDEX_ROPE_LAST", IndexRope::Last as u32, 1),
        ("MLA_INDEX_ROPE_NONE", IndexRope::None as u32, 2),
        ("MLA_ROPE_INTERLEAVED", RopeLayout::Interleaved as u32, 0),
        ("MLA_ROPE_HALF", RopeLayout::Half as u32, 1),
        ("MLA_ROPE_KEY_SHARED", RopeKey::Shared as u32, 0),
        ("MLA_ROPE_KEY_PER_HEAD", RopeKey::PerHead as u32, 1),
        ("MLA_ATTN_AUTO", AttnMode::Auto as u32, 0),
        ("MLA_ATTN_NAIVE", AttnMode::Naive as u32, 1),
        ("MLA_ATTN_ABSORB", AttnMode::Absorb as u32, 2),
        ("MLA_ABI_VERSION", MLA_ABI_VERSION, 2),
        (
            "MLA_MAX_ROPE_FACTORS",
            MLA_MAX_ROPE_FACTORS as u32,
            mla_core::config::MAX_ROPE_FACTORS as u64,
        ),
    ];
    for (name, rust, value) in enums {
        assert_eq!(number(&d, name), value, "{name}");
        assert_eq!(u64::from(rust), value, "{name}");
    }
}

/// Field names of `typedef struct NAME { ... } NAME;` in order.
fn fields(h: &str, name: &str) -> Vec<String> {
    let open = format!("typedef struct {name} {{");
    let start = h.find(&open).unwrap_or_else(|| panic!("no struct {name}")) + open.len();
    let end = start + h[start..].find(&format!("}} {name};")).expect("struct end");
    h[start..end]
        .lines()
        .map(str::trim)
        .filter(|l| l.ends_with(';'))
        .map(|l| {
            l.trim_end_matches(';')
                .rsplit([' ', '*'])
                .next()
                .unwrap()
                .split('[')
                .next()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[test]
fn struct_layouts_match_design() {
    let h = header();
    let config = [
        "struct_size",
        "hidden_size",
        "num_heads",
        "q_lora_rank",
        "kv_lora_rank",
        "qk_nope_head_dim",
        "qk_rope_head_dim",
        "v_head_dim",
        "max_seq_len",
        "max_tokens_per_call",
        "rope_layout",
        "rope_key",
        "q_norm",
        "cache_dtype",
        "attn_mode",
        "original_max_position",
        "rms_norm_eps",
        "rope_theta",
        "rope_factor",
        "beta_fast",
        "beta_slow",
        "mscale",
        "mscale_all_dim",
        "softmax_scale",
        // ABI 2, appended.
        "rope_type",
        "rope_attention_factor",
        "rope_yarn_truncate",
        "rope_low_freq_factor",
        "rope_high_freq_factor",
        "rope_short_factor",
        "rope_long_factor",
        "rope_freq_alpha",
        "rope_key_norm",
        "q_latent_scale",
        "kv_latent_scale",
        "query_scale",
        "query_scale_beta",
        "query_scale_length",
        "gate",
        "sinks",
        "sliding_window",
        "kv_shared",
        "dsa",
        "index_n_heads",
        "index_head_dim",
        "index_topk",
        "index_q_input",
        "index_rope",
        "index_rope_layout",
        "index_k_norm_eps",
        "index_q_norm_eps",
        "index_query_scale",
        "index_cache_dtype",
        "index_kpool",
        "index_kpool_tail",
    ];
    assert_eq!(fields(&h, "mla_config"), config);
    assert!(h.contains("float rope_short_factor[MLA_MAX_ROPE_FACTORS];"));
    assert!(h.contains("float rope_long_factor[MLA_MAX_ROPE_FACTORS];"));
    assert_eq!(
        fields(&h, "mla_tensor"),
        ["data", "dtype", "rows", "cols", "scale", "scale_block"]
    );
    assert!(h.contains("const float *scale;"));
    let weights = [
        "q_proj",
        "q_a_proj",
        "q_a_layernorm",
        "q_b_proj",
        "kv_a_proj_with_mqa",
        "kv_a_layernorm",
        "kv_b_proj",
        "o_proj",
        "q_a_proj_bias",
        "kv_a_proj_bias",
        "o_proj_bias",
        // ABI 2, appended in the order of the core Weights.
        "gate_proj",
        "sinks",
        "rope_key_norm",
        "query_scale_s",
        "query_scale_b",
        "rope_freq_alpha",
        "index_wq_b",
        "index_wk",
        "index_k_norm",
        "index_k_norm_bias",
        "index_weights_proj",
        "index_q_norm",
        "index_q_norm_bias",
        "index_query_scale_s",
        "index_query_scale_b",
        "index_kpool_ape",
        "index_kpool_gate",
    ];
    assert_eq!(fields(&h, "mla_weights"), weights);
    let core_names: Vec<&str> = mla_core::Weights::new(dummy(), dummy())
        .named()
        .iter()
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(core_names, weights, "mla_weights follows the core Weights");
    // ABI 1: 16 uint32 then 8 float, no padding; ABI 2 appends 29 4-byte fields
    // and two 64-float arrays.
    assert_eq!(std::mem::size_of::<mla_config>(), 96 + 29 * 4 + 2 * 64 * 4);
    assert!(
        h.contains("typedef struct mla_engine mla_engine;"),
        "mla_engine is opaque"
    );
    for t in [
        "mla_status",
        "mla_dtype",
        "mla_rope_layout",
        "mla_rope_key",
        "mla_attn_mode",
        "mla_rope_type",
        "mla_query_scale",
        "mla_gate",
        "mla_dsa",
        "mla_index_q_input",
        "mla_index_rope",
    ] {
        assert!(
            h.contains(&format!("typedef uint32_t {t};")),
            "{t} is a uint32_t"
        );
    }
}

#[test]
fn functions_of_design_section_3_are_declared() {
    let h = header();
    let protos = [
        "uint32_t mla_abi_version(void);",
        "const char *mla_version(void);",
        "const char *mla_status_str(mla_status s);",
        "void mla_config_tutorial(struct mla_config *c);",
        "void mla_config_deepseek_v2_lite(struct mla_config *c);",
        "void mla_config_deepseek_v3(struct mla_config *c);",
        "mla_status mla_config_validate(const struct mla_config *c, char *msg, size_t msg_len);",
        "mla_status mla_cache_bytes_per_token(const struct mla_config *c, size_t *bytes);",
        "mla_status mla_engine_size(const struct mla_config *c, size_t *bytes);",
        "uint32_t mla_len(const struct mla_engine *e);",
        "mla_status mla_truncate(struct mla_engine *e, uint32_t len);",
        "void mla_reset(struct mla_engine *e);",
        "const char *mla_last_error(const struct mla_engine *e);",
    ];
    for p in protos {
        assert!(h.contains(p), "missing prototype: {p}");
    }
    // Multi-line prototypes: compare with whitespace squeezed.
    let flat: String = h.split_whitespace().collect::<Vec<_>>().join(" ");
    for p in [
        "mla_status mla_engine_init(const struct mla_config *c, const struct mla_weights *w, \
         void *mem, size_t mem_len, struct mla_engine **out);",
        "mla_status mla_forward(struct mla_engine *e, const float *x, uint32_t n_tokens, float *out);",
        "mla_status mla_weights_from_safetensors(const void *bytes, size_t len, const char *prefix, \
         const struct mla_config *c, struct mla_weights *out);",
        "mla_status mla_config_from_hf_json(const char *json, size_t json_len, uint32_t layer, \
         uint32_t max_seq_len, uint32_t max_tokens_per_call, struct mla_config *out);",
        "mla_status mla_weights_from_checkpoint(const void *bytes, size_t len, const char *json, \
         size_t json_len, uint32_t layer, const struct mla_config *c, struct mla_weights *out);",
        "mla_status mla_engine_share_topk(struct mla_engine *consumer, \
         const struct mla_engine *producer);",
        "mla_status mla_engine_share_cache(struct mla_engine *consumer, \
         const struct mla_engine *producer);",
    ] {
        assert!(flat.contains(p), "missing prototype: {p}");
    }
    // The guard, the includes, and C++ linkage.
    for s in [
        "#ifndef MLA_H",
        "#define MLA_H",
        "#include <stdint.h>",
        "#include <stddef.h>",
        "extern \"C\" {",
    ] {
        assert!(h.contains(s), "missing {s:?}");
    }
}

/// The header without comments and preprocessor lines, whitespace squeezed.
fn declarations(h: &str) -> String {
    let mut out = String::new();
    let mut rest = h;
    while let Some(i) = rest.find("/*") {
        out.push_str(&rest[..i]);
        rest = rest[i..].find("*/").map_or("", |j| &rest[i + j + 2..]);
    }
    out.push_str(rest);
    let code: Vec<&str> = out
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    code.join(" ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn header_exports_only_prefixed_names() {
    let h = header();
    for (name, _) in defines(&h) {
        assert!(name.starts_with("MLA_"), "unprefixed macro {name} in mla.h");
    }
    let decls = declarations(&h);
    let mut functions = 0;
    for decl in decls.split(';') {
        let decl = decl.trim();
        if let Some(ptr) = decl
            .strip_prefix("typedef")
            .and_then(|d| d.split_once("(*"))
        {
            // A function-pointer type: `typedef void (*name)(...)`.
            let name = ptr.1.split(')').next().unwrap_or("");
            assert!(
                name.starts_with("mla_"),
                "unprefixed typedef {name:?} in mla.h"
            );
        } else if let Some(paren) = decl.find('(') {
            let name = decl[..paren].rsplit([' ', '*']).next().unwrap_or("");
            assert!(
                name.starts_with("mla_"),
                "unprefixed function {name:?} in mla.h"
            );
            functions += 1;
        }
    }
    assert!(functions >= 17, "only {functions} functions found");
    for typedef in decls.split("typedef ").skip(1) {
        // `typedef struct x { ...; } x;` or `typedef uint32_t x;` (function-pointer
        // typedefs were checked above).
        if typedef.split(';').next().unwrap_or("").contains("(*") {
            continue;
        }
        let semi = typedef.find(';').unwrap_or(typedef.len());
        let tail = match typedef.find('{') {
            Some(open) if open < semi => &typedef[typedef.find('}').unwrap_or(open) + 1..],
            _ => typedef,
        };
        let name = tail
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .rsplit(' ')
            .next()
            .unwrap_or("");
        assert!(
            name.starts_with("mla_"),
            "unprefixed typedef {name:?} in mla.h"
        );
    }
    // The CUDA entry points, when present, sit behind MLA_FEATURE_CUDA.
    if let Some(i) = h.find("mla_cuda_") {
        assert!(
            h[..i].contains("MLA_FEATURE_CUDA"),
            "mla_cuda_* outside #if defined(MLA_FEATURE_CUDA)"
        );
    }
}

fn dummy() -> mla_core::Tensor<'static> {
    mla_core::Tensor::f32(&[], 0, 0).unwrap()
}
