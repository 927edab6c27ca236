//! The keys read from a `config.json` (top level and RoPE object), by index.

/// Keys of the text config (and of a dots3_note per-layer override).
pub(super) mod k {
    pub const MODEL_TYPE: usize = 0;
    pub const TEXT_CONFIG: usize = 1;
    pub const HIDDEN_SIZE: usize = 2;
    pub const NUM_HIDDEN_LAYERS: usize = 3;
    pub const NUM_LAYERS: usize = 4;
    pub const HEADS: usize = 5;
    pub const Q_LORA_RANK: usize = 6;
    pub const KV_LORA_RANK: usize = 7;
    pub const NOPE: usize = 8;
    pub const ROPE: usize = 9;
    pub const V: usize = 10;
    pub const QK_HEAD_DIM: usize = 11;
    pub const RMS_NORM_EPS: usize = 12;
    pub const ATTENTION_BIAS: usize = 13;
    pub const MAX_POS: usize = 14;
    pub const MODEL_MAX_LENGTH: usize = 15;
    pub const ROPE_PARAMETERS: usize = 16;
    pub const ROPE_SCALING: usize = 17;
    pub const ROPE_THETA: usize = 18;
    pub const ROPE_INTERLEAVE: usize = 19;
    pub const LAYER_TYPES: usize = 20;
    pub const LINEAR_ATTN_CONFIG: usize = 21;
    pub const LAYER_GROUP_SIZE: usize = 22;
    pub const KV_SOURCE_LAYERS: usize = 23;
    pub const NO_ROPE_LAYERS: usize = 24;
    pub const NO_ROPE_LAYER_INTERVAL: usize = 25;
    pub const INDEXER_TYPES: usize = 26;
    pub const INDEX_TOPK_PATTERN: usize = 27;
    pub const INDEX_TOPK_FREQ: usize = 28;
    pub const INDEX_SKIP_TOPK_OFFSET: usize = 29;
    pub const INDEX_N_HEADS: usize = 30;
    pub const INDEX_HEAD_DIM: usize = 31;
    pub const INDEX_TOPK: usize = 32;
    pub const INDEX_KPOOL: usize = 33;
    pub const INDEX_KPOOL_TAIL: usize = 34;
    pub const PER_LAYER_CONFIG: usize = 35;
    pub const SLIDING_WINDOW: usize = 36;
    pub const SLIDING_WINDOW_SIZE: usize = 37;
    pub const USE_DSA: usize = 38;
    pub const USE_SLIDING_WINDOW: usize = 39;
    pub const SWA_ROPE_THETA: usize = 40;
    pub const SWA_HEADS: usize = 41;
    pub const SWA_Q_LORA_RANK: usize = 42;
    pub const SWA_KV_LORA_RANK: usize = 43;
    pub const SWA_HEAD_DIM: usize = 44;
    pub const SWA_NOPE: usize = 45;
    pub const SWA_V: usize = 46;
    pub const SWA_ROPE: usize = 47;
    pub const COUNT: usize = 48;
}

pub(super) static KEYS: [&str; k::COUNT] = [
    "model_type",
    "text_config",
    "hidden_size",
    "num_hidden_layers",
    "num_layers",
    "num_attention_heads",
    "q_lora_rank",
    "kv_lora_rank",
    "qk_nope_head_dim",
    "qk_rope_head_dim",
    "v_head_dim",
    "qk_head_dim",
    "rms_norm_eps",
    "attention_bias",
    "max_position_embeddings",
    "model_max_length",
    "rope_parameters",
    "rope_scaling",
    "rope_theta",
    "rope_interleave",
    "layer_types",
    "linear_attn_config",
    "layer_group_size",
    "kv_source_layers",
    "no_rope_layers",
    "no_rope_layer_interval",
    "indexer_types",
    "index_topk_pattern",
    "index_topk_freq",
    "index_skip_topk_offset",
    "index_n_heads",
    "index_head_dim",
    "index_topk",
    "index_kpool",
    "index_kpool_always_select_tail",
    "per_layer_config",
    "sliding_window",
    "sliding_window_size",
    "use_dsa",
    "use_sliding_window",
    "swa_rope_theta",
    "swa_num_attention_heads",
    "swa_q_lora_rank",
    "swa_kv_lora_rank",
    "swa_head_dim",
    "swa_qk_nope_head_dim",
    "swa_v_head_dim",
    "swa_qk_rope_head_dim",
];

/// Keys of a RoPE dict (and of dots3_note's per-layer-type entries).
pub(super) mod r {
    pub const ROPE_TYPE: usize = 0;
    pub const TYPE: usize = 1;
    pub const THETA: usize = 2;
    pub const FACTOR: usize = 3;
    pub const L0: usize = 4;
    pub const BETA_FAST: usize = 5;
    pub const BETA_SLOW: usize = 6;
    pub const TRUNCATE: usize = 7;
    pub const ATTENTION_FACTOR: usize = 8;
    pub const MSCALE: usize = 9;
    pub const MSCALE_ALL_DIM: usize = 10;
    pub const LOW_FREQ: usize = 11;
    pub const HIGH_FREQ: usize = 12;
    pub const SHORT_FACTOR: usize = 13;
    pub const LONG_FACTOR: usize = 14;
    pub const LLAMA4_BETA: usize = 15;
    pub const INDEXED: usize = 16;
    pub const SLIDING: usize = 17;
    pub const FULL: usize = 18;
    pub const COUNT: usize = 19;
}

pub(super) static ROPE_KEYS: [&str; r::COUNT] = [
    "rope_type",
    "type",
    "rope_theta",
    "factor",
    "original_max_position_embeddings",
    "beta_fast",
    "beta_slow",
    "truncate",
    "attention_factor",
    "mscale",
    "mscale_all_dim",
    "low_freq_factor",
    "high_freq_factor",
    "short_factor",
    "long_factor",
    "llama_4_scaling_beta",
    "indexed_attention",
    "sliding_attention",
    "full_attention",
];

pub(super) static LINEAR_KEYS: [&str; 2] = ["full_attn_layers", "kda_layers"];
