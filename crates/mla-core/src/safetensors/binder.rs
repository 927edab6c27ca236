//! The weight binder: one layer's Hugging Face tensors under a prefix -> [`Weights`],
//! and a [`Config`] from the file's `__metadata__`.

// `Error` is returned by value on purpose (no allocation); its size is by design.
#![allow(clippy::result_large_err)]

use super::json::{utf8, JsonStr};
use super::reader::{FileDType, SafeTensors, TensorView};
use super::{error, push, Piece, Piece::N, Piece::S};
use crate::config::{AttnMode, Config, LayerInfo, Names, RopeKey, RopeLayout, RopeType};
use crate::dtype::{f8_blocks, DType};
use crate::status::{Error, Result, Status, MESSAGE_CAPACITY};
use crate::weights::{
    absent_reason, expected_shapes, Tensor, Weights, F8_ALLOWED, OPTIONAL, WEIGHT_COUNT,
    WEIGHT_NAMES,
};

impl<'a> SafeTensors<'a> {
    /// Binds one layer's weights by their canonical (DeepSeek) names under
    /// `prefix`; see [`bind_weights`].
    pub fn weights(&self, prefix: &str, cfg: &Config) -> Result<Weights<'a>> {
        self.bind(prefix, &Names::CANONICAL, cfg, None)
    }

    /// Binds layer `info.layer` of a checkpoint with its family's names under
    /// `info.prefix` (from [`Config::from_hf_json`]); see [`bind_layer`].
    pub fn layer_weights(&self, cfg: &Config, info: &LayerInfo) -> Result<Weights<'a>> {
        if !info.mla {
            return Err(error(
                Status::Unsupported,
                "layer ",
                &[
                    N(u64::from(info.layer)),
                    S(" of "),
                    S(info.family.model_type()),
                    S(" is linear_attention, not MLA"),
                ],
            ));
        }
        self.bind(
            &info.prefix,
            info.family.names(),
            cfg,
            Some(info.attention_bias),
        )
    }

    /// Binds every tensor `cfg` uses by `names` under `prefix`. `bias`: whether
    /// the q_a / kv_a / o biases must be there (`Some(true)`), must not be
    /// (`Some(false)`) or may be (`None`).
    fn bind(
        &self,
        prefix: &str,
        names: &Names,
        cfg: &Config,
        bias: Option<bool>,
    ) -> Result<Weights<'a>> {
        let want = expected_shapes(cfg)?;
        let suffixes = names.suffixes();
        let b = Binder {
            st: self,
            prefix,
            suffixes,
            found: find_layer(self, prefix, &suffixes),
        };
        let mut out: [Option<Tensor<'a>>; WEIGHT_COUNT] = [None; WEIGHT_COUNT];
        for (i, slot) in out.iter_mut().enumerate() {
            let suffix = suffixes.get(i).copied().flatten();
            let global = i == ROPE_FREQ_ALPHA && names.rope_freq_alpha_global;
            let wanted = want.get(i).copied().flatten().is_some();
            let view = match (suffix, global) {
                // A global tensor belongs to the model: looked up only when the
                // layer uses it (mistral_large4's NoPE layer leaves lerope.alpha).
                (Some(name), true) if wanted => self.tensor(name)?,
                (Some(_), true) => None,
                (Some(_), false) => b.found.get(i).copied().flatten(),
                (None, _) => None,
            };
            let (at, name) = if global {
                ("", suffix.unwrap_or(""))
            } else {
                (prefix, suffix.unwrap_or(""))
            };
            match want.get(i).copied().flatten() {
                Some((rows, cols)) => {
                    let optional = OPTIONAL.get(i).copied().unwrap_or(false);
                    let required = !optional || bias == Some(true);
                    if optional && bias == Some(false) && view.is_some() {
                        return Err(b.err_at(
                            at,
                            name,
                            ": in the file but attention_bias is false",
                            &[],
                        ));
                    }
                    let shape = [rows, cols];
                    let dims: &[usize] = if VECTOR.get(i).copied().unwrap_or(false) {
                        &shape[1..]
                    } else {
                        &shape
                    };
                    match (view, suffix) {
                        (Some(v), _) if v.dtype == FileDType::F8E4M3 => {
                            let allowed = F8_ALLOWED.get(i).copied().unwrap_or(false);
                            *slot = Some(b.bind_f8(at, name, &v, dims, allowed)?)
                        }
                        (Some(v), _) => *slot = Some(b.bind(at, name, &v, dims)?),
                        (None, Some(_)) if required => return Err(b.missing(at, name, dims)),
                        (None, None) if required => {
                            let field = WEIGHT_NAMES.get(i).copied().unwrap_or("?");
                            return Err(error(
                                Status::WeightShape,
                                field,
                                &[S(
                                    ": the config needs it; these checkpoints have no such tensor",
                                )],
                            ));
                        }
                        (None, _) => {}
                    }
                }
                None => {
                    if view.is_some() {
                        let why = absent_reason(i);
                        return Err(b.err_at(
                            at,
                            name,
                            ": in the file but unused by the config (",
                            &[S(why), S(")")],
                        ));
                    }
                }
            }
        }
        let Some(w) = Weights::from_tensors(out) else {
            return Err(error(Status::Internal, "kv_b_proj / o_proj not bound", &[]));
        };
        w.check(cfg)?;
        Ok(w)
    }
}

/// Index of `rope_freq_alpha` in [`Weights::named`].
const ROPE_FREQ_ALPHA: usize = 16;

/// The tensors stored 1-D in checkpoints (norms, biases, per-head vectors),
/// bound as `[1][len]`; the others are 2-D `[rows, cols]`.
const VECTOR: [bool; WEIGHT_COUNT] = [
    false, false, true, false, false, true, false, false, true, true, true, // v1
    false, true, true, true, true, true, // gate, sinks, rope_key_norm, q scales, alpha
    false, false, true, true, false, true, true, true, true, false, false, // indexer
];

/// Parses `bytes` as safetensors and binds layer `info.layer` of a Hugging Face
/// checkpoint with its family's tensor names (docs/families.md section 4): `cfg`
/// and `info` come from [`Config::from_hf_json`] on the model's `config.json`
/// (`cfg` may be changed in what does not alter shapes: capacity, dtypes,
/// attention mode). Tensors under `info.prefix`, plus the family's global ones
/// (mistral_large4 `lerope.alpha`) by their full name. The q_a / kv_a / o biases
/// must be present exactly when `info.attention_bias`. Statuses and messages as
/// [`bind_weights`]; `Unsupported` for a layer that is not MLA. The result has
/// passed [`Weights::check`].
pub fn bind_layer<'a>(bytes: &'a [u8], cfg: &Config, info: &LayerInfo) -> Result<Weights<'a>> {
    SafeTensors::parse(bytes)?.layer_weights(cfg, info)
}

/// Parses `bytes` as safetensors and binds one MLA layer's tensors, zero-copy.
///
/// Tensors are looked up as `prefix` + the Hugging Face name (`prefix` is e.g.
/// `model.layers.3.self_attn.`): `q_proj.weight` (when `q_lora_rank` is 0) or
/// `q_a_proj.weight`, `q_a_proj.bias` (optional) and `q_b_proj.weight`;
/// `q_a_layernorm.weight` (when `q_norm`); `kv_a_proj_with_mqa.weight`,
/// `kv_a_proj_with_mqa.bias` (optional), `kv_a_layernorm.weight`,
/// `kv_b_proj.weight`, `o_proj.weight`, `o_proj.bias` (optional); the
/// mechanisms of ABI version 2 by the names of [`Names::CANONICAL`] (DeepSeek-V3.2's
/// `indexer.*` for sparse attention). 2-D tensors bind as `[rows][cols]`, 1-D norms,
/// biases and per-head vectors as `[1][len]`.
///
/// Statuses: `InvalidArgument` for a malformed file, `InvalidConfig` for a bad
/// `cfg`, `WeightShape` for a missing tensor, a wrong shape, or a query tensor the
/// config does not use (e.g. `q_a_layernorm.weight` with `q_norm` 0), `WeightDtype`
/// for a dtype other than F32/F16/BF16, `Misaligned` when a tensor's bytes are not
/// aligned in memory to its element size. Messages give the full tensor name; for
/// a missing tensor they also list what the file holds under `prefix` (as many
/// names as the message has room for), or, when nothing of the layer is there,
/// the nearest prefix that does hold layer tensors.
/// The result has passed [`Weights::check`].
pub fn bind_weights<'a>(bytes: &'a [u8], prefix: &str, cfg: &Config) -> Result<Weights<'a>> {
    SafeTensors::parse(bytes)?.weights(prefix, cfg)
}

/// A copy of `base` with every field found in the file's `__metadata__` replaced.
///
/// Keys are the `mla_config` field names. Integers (`hidden_size`, `num_heads`,
/// `q_lora_rank`, `kv_lora_rank`, `qk_nope_head_dim`, `qk_rope_head_dim`,
/// `v_head_dim`, `max_seq_len`, `max_tokens_per_call`, `original_max_position`) are
/// plain decimal `u32`; floats (`rms_norm_eps`, `rope_theta`, `rope_factor`,
/// `beta_fast`, `beta_slow`, `mscale`, `mscale_all_dim`, `softmax_scale`) are
/// finite decimals with an optional exponent; `rope_layout` is `interleaved` or
/// `half`, `rope_key` `shared` or `per_head`, `q_norm` `0`/`1` (or `false`/`true`),
/// `cache_dtype` `f32`/`f16`/`bf16`/`f8_e4m3`, `attn_mode` `auto`/`naive`/`absorb`.
/// Other keys are ignored. A value that does not parse is `InvalidArgument` naming
/// the key. The result is not validated (call [`Config::validate`]).
pub fn config_from_metadata(st: &SafeTensors, base: &Config) -> Result<Config> {
    let mut c = *base;
    let u32_fields: [(&str, &mut u32); 10] = [
        ("hidden_size", &mut c.hidden_size),
        ("num_heads", &mut c.num_heads),
        ("q_lora_rank", &mut c.q_lora_rank),
        ("kv_lora_rank", &mut c.kv_lora_rank),
        ("qk_nope_head_dim", &mut c.qk_nope_head_dim),
        ("qk_rope_head_dim", &mut c.qk_rope_head_dim),
        ("v_head_dim", &mut c.v_head_dim),
        ("max_seq_len", &mut c.max_seq_len),
        ("max_tokens_per_call", &mut c.max_tokens_per_call),
        ("original_max_position", &mut c.original_max_position),
    ];
    for (key, field) in u32_fields {
        if let Some(v) = st.meta_value(key)? {
            *field = parse_u32(v).ok_or_else(|| meta_err(key, v, "is not a decimal u32"))?;
        }
    }
    let f32_fields: [(&str, &mut f32); 8] = [
        ("rms_norm_eps", &mut c.rms_norm_eps),
        ("rope_theta", &mut c.rope_theta),
        ("rope_factor", &mut c.rope_factor),
        ("beta_fast", &mut c.beta_fast),
        ("beta_slow", &mut c.beta_slow),
        ("mscale", &mut c.mscale),
        ("mscale_all_dim", &mut c.mscale_all_dim),
        ("softmax_scale", &mut c.softmax_scale),
    ];
    for (key, field) in f32_fields {
        if let Some(v) = st.meta_value(key)? {
            *field =
                parse_f32(v).ok_or_else(|| meta_err(key, v, "is not a finite decimal number"))?;
        }
    }
    // The golden files' metadata predates `rope_type`: YaRN is `rope_factor > 1`.
    c.rope_type = if c.rope_factor > 1.0 {
        RopeType::Yarn
    } else {
        RopeType::Default
    };
    if let Some(v) = st.meta_value("rope_layout")? {
        c.rope_layout = match v {
            "interleaved" => RopeLayout::Interleaved,
            "half" => RopeLayout::Half,
            _ => return Err(meta_err("rope_layout", v, "is not interleaved or half")),
        };
    }
    if let Some(v) = st.meta_value("rope_key")? {
        c.rope_key = match v {
            "shared" => RopeKey::Shared,
            "per_head" => RopeKey::PerHead,
            _ => return Err(meta_err("rope_key", v, "is not shared or per_head")),
        };
    }
    if let Some(v) = st.meta_value("q_norm")? {
        c.q_norm = match v {
            "0" | "false" => false,
            "1" | "true" => true,
            _ => return Err(meta_err("q_norm", v, "is not 0 or 1")),
        };
    }
    if let Some(v) = st.meta_value("cache_dtype")? {
        c.cache_dtype = match v {
            "f32" | "F32" => DType::F32,
            "f16" | "F16" => DType::F16,
            "bf16" | "BF16" => DType::BF16,
            "f8_e4m3" | "F8_E4M3" => DType::F8E4M3,
            _ => {
                return Err(meta_err(
                    "cache_dtype",
                    v,
                    "is not f32, f16, bf16 or f8_e4m3",
                ))
            }
        };
    }
    if let Some(v) = st.meta_value("attn_mode")? {
        c.attn_mode = match v {
            "auto" => AttnMode::Auto,
            "naive" => AttnMode::Naive,
            "absorb" => AttnMode::Absorb,
            _ => return Err(meta_err("attn_mode", v, "is not auto, naive or absorb")),
        };
    }
    Ok(c)
}

// ---------------------------------------------------------------------------------
// Binding helpers
// ---------------------------------------------------------------------------------

/// Every name of `suffixes` under `prefix`, looked up in one pass.
fn find_layer<'a>(
    st: &SafeTensors<'a>,
    prefix: &str,
    suffixes: &[Option<&'static str>; WEIGHT_COUNT],
) -> [Option<TensorView<'a>>; WEIGHT_COUNT] {
    let mut found = [None; WEIGHT_COUNT];
    for (name, view) in st.iter() {
        if !name.starts_with(prefix) {
            continue;
        }
        for (slot, suffix) in found.iter_mut().zip(suffixes) {
            if let Some(suffix) = suffix {
                if name.eq_parts(&[prefix, suffix]) {
                    *slot = Some(view);
                    break;
                }
            }
        }
    }
    found
}

struct Binder<'s, 'a> {
    st: &'s SafeTensors<'a>,
    prefix: &'s str,
    /// The names looked up, in the order of [`Weights::named`].
    suffixes: [Option<&'static str>; WEIGHT_COUNT],
    /// The tensors of `suffixes` found under `prefix`, in that order.
    found: [Option<TensorView<'a>>; WEIGHT_COUNT],
}

impl<'a> Binder<'_, 'a> {
    /// `at` + `suffix` + `what` + `more`.
    #[inline(never)]
    fn err_at(&self, at: &str, suffix: &str, what: &str, more: &[Piece]) -> Error {
        let mut e = error(Status::WeightShape, at, &[S(suffix), S(what)]);
        push(&mut e, more);
        e
    }

    /// Like [`Binder::err_at`] with another status.
    #[inline(never)]
    fn status_err(&self, status: Status, at: &str, suffix: &str, more: &[Piece]) -> Error {
        let mut e = error(status, at, &[S(suffix)]);
        push(&mut e, more);
        e
    }

    /// `WeightShape` for a required tensor that is not in the file, saying what the
    /// file holds under the prefix, or where the layer's tensors are instead.
    #[cold]
    #[inline(never)]
    fn missing(&self, at: &str, suffix: &str, want: &[usize]) -> Error {
        let mut e = self.err_at(at, suffix, ": missing, expected ", &[]);
        push_dims(&mut e, want);
        if at != self.prefix {
            // A global name: nothing to say about the layer's prefix.
            return e;
        }
        let under = self
            .st
            .iter()
            .filter(|(n, _)| n.starts_with(self.prefix))
            .count();
        if under == 0 {
            push(&mut e, &[S("; no tensor under this prefix")]);
        }
        if self.found.iter().all(Option::is_none) {
            match nearest_layer_prefix(self.st, self.prefix, &self.suffixes) {
                Some((name, len)) => {
                    push(&mut e, &[S("; layer tensors are under '")]);
                    push_decoded(&mut e, &name, 0, len);
                    push(&mut e, &[S("'")]);
                }
                None => {
                    let n = self.st.len() as u64;
                    push(
                        &mut e,
                        &[S("; no layer tensor in the file ("), N(n), S(" tensors)")],
                    );
                }
            }
        }
        if under == 0 {
            return e;
        }
        push(
            &mut e,
            &[S("; the prefix holds "), N(under as u64), S(": ")],
        );
        // As many names (after the prefix) as fit, keeping room for the count of
        // the rest: " (+N more)".
        let skip = self.prefix.len();
        let mut shown = 0usize;
        for (name, _) in self.st.iter().filter(|(n, _)| n.starts_with(self.prefix)) {
            let len = name.decoded_len().saturating_sub(skip);
            let sep: usize = if shown > 0 { 2 } else { 0 };
            let rest = under.saturating_sub(shown).saturating_sub(1);
            let room_for_rest = if rest == 0 { 0 } else { 8 + digits(rest) };
            let need = sep.saturating_add(len).saturating_add(room_for_rest);
            if e.message().len().saturating_add(need) > MESSAGE_CAPACITY {
                break;
            }
            if shown > 0 {
                push(&mut e, &[S(", ")]);
            }
            push_decoded(&mut e, &name, skip, usize::MAX);
            shown += 1;
        }
        if shown < under {
            let open = if shown > 0 { " (+" } else { "(+" };
            let rest = under.saturating_sub(shown) as u64;
            push(&mut e, &[S(open), N(rest), S(" more)")]);
        }
        e
    }

    /// Binds an F8_E4M3 matrix with its block scales `<name>_scale_inv` (F32
    /// `[ceil(rows/128), ceil(cols/128)]`, DeepSeek-V3's layout), zero-copy.
    /// `WeightDtype` for a tensor that may not be FP8 (norms, biases) or
    /// scales that are not F32; `WeightShape` for a wrong shape or missing
    /// scales (naming them); the scale values as [`Tensor::f8`]. Out of line:
    /// it is called once, from the loop over every tensor.
    #[inline(never)]
    fn bind_f8(
        &self,
        at: &str,
        suffix: &str,
        v: &TensorView<'a>,
        want: &[usize],
        allowed: bool,
    ) -> Result<Tensor<'a>> {
        let [rows, cols] = *want else {
            return Err(self.status_err(
                Status::WeightDtype,
                at,
                suffix,
                &[S(": dtype F8_E4M3 is for projection matrices, not vectors")],
            ));
        };
        if !allowed {
            return Err(self.status_err(
                Status::WeightDtype,
                at,
                suffix,
                &[S(": dtype F8_E4M3 is for the attention projections only")],
            ));
        }
        if v.dims() != want {
            let mut e = self.err_at(at, suffix, ": expected ", &[]);
            push_dims(&mut e, want);
            push(&mut e, &[S(", got ")]);
            push_dims(&mut e, v.dims());
            return Err(e);
        }
        const INV: &str = "_scale_inv";
        let want_s = [f8_blocks(rows), f8_blocks(cols)];
        let scale = self
            .st
            .iter()
            .find(|(n, _)| n.eq_parts(&[at, suffix, INV]))
            .map(|(_, s)| s);
        let Some(sv) = scale else {
            let mut e = self.err_at(at, suffix, INV, &[S(": missing, expected ")]);
            push_dims(&mut e, &want_s);
            push(&mut e, &[S(" F32 (the block scales of an F8_E4M3 weight)")]);
            return Err(e);
        };
        let scale_err = |status: Status, more: &[Piece]| {
            let mut e = self.status_err(status, at, suffix, &[S(INV)]);
            push(&mut e, more);
            e
        };
        if sv.dtype != FileDType::F32 {
            return Err(scale_err(
                Status::WeightDtype,
                &[S(": dtype "), S(sv.dtype.name()), S(", expected F32")],
            ));
        }
        if sv.dims() != want_s {
            let mut e = scale_err(Status::WeightShape, &[S(": expected ")]);
            push_dims(&mut e, &want_s);
            push(&mut e, &[S(", got ")]);
            push_dims(&mut e, sv.dims());
            return Err(e);
        }
        let Ok(scales) = bytemuck::try_cast_slice::<u8, f32>(sv.data) else {
            return Err(scale_err(
                Status::Misaligned,
                &[S(": F32 data is not aligned to 4 bytes in memory")],
            ));
        };
        Tensor::f8(v.data, scales, rows, cols)
            .map_err(|e| self.status_err(e.status(), at, suffix, &[S(": "), S(e.message())]))
    }

    /// Checks dtype, shape (`want` = expected dims) and alignment, then borrows.
    fn bind(
        &self,
        at: &str,
        suffix: &str,
        v: &TensorView<'a>,
        want: &[usize],
    ) -> Result<Tensor<'a>> {
        let dt = v.dtype.to_dtype().ok_or_else(|| {
            self.status_err(
                Status::WeightDtype,
                at,
                suffix,
                &[
                    S(": dtype "),
                    S(v.dtype.name()),
                    S(" is not supported (F32, F16, BF16; F8_E4M3 for projections)"),
                ],
            )
        })?;
        if v.dims() != want {
            let mut e = self.err_at(at, suffix, ": expected ", &[]);
            push_dims(&mut e, want);
            push(&mut e, &[S(", got ")]);
            push_dims(&mut e, v.dims());
            return Err(e);
        }
        let (rows, cols) = match *want {
            [len] => (1, len),
            [rows, cols] => (rows, cols),
            _ => {
                return Err(self.status_err(
                    Status::Internal,
                    at,
                    suffix,
                    &[S(": bad expected rank")],
                ))
            }
        };
        let offset = (v.data.as_ptr() as usize).wrapping_sub(self.st.data().as_ptr() as usize);
        Tensor::from_bytes(v.data, dt, rows, cols).map_err(|e| {
            if e.status() == Status::Misaligned {
                let what = [
                    S(": "),
                    S(v.dtype.name()),
                    S(" data (data offset "),
                    N(offset as u64),
                    S(") is not aligned to "),
                    N(dt.size() as u64),
                    S(" bytes in memory"),
                ];
                self.status_err(Status::Misaligned, at, suffix, &what)
            } else {
                self.status_err(e.status(), at, suffix, &[S(": "), S(e.message())])
            }
        })
    }
}

/// Among the names that end in a layer tensor's name, the prefix nearest to
/// `prefix`: one that extends it (`model.layers.0.` -> `model.layers.0.self_attn.`)
/// first, then the longest common beginning; the first in the file on ties.
/// Returns a name and the length of its prefix part (decoded bytes).
#[cold]
#[inline(never)]
fn nearest_layer_prefix<'a>(
    st: &SafeTensors<'a>,
    prefix: &str,
    suffixes: &[Option<&'static str>; WEIGHT_COUNT],
) -> Option<(JsonStr<'a>, usize)> {
    let mut best: Option<((bool, usize), JsonStr<'a>, usize)> = None;
    // The names of the 11 tensors of ABI version 1 mark a layer.
    let core = suffixes.get(..11).unwrap_or(&[]);
    for (name, _) in st.iter() {
        let Some(suffix) = core.iter().flatten().find(|s| name.ends_with(s)) else {
            continue;
        };
        let len = name.decoded_len().saturating_sub(suffix.len());
        let common = name
            .bytes()
            .take(len)
            .zip(prefix.bytes())
            .take_while(|(a, b)| a == b)
            .count();
        let score = (common == prefix.len() && len > prefix.len(), common);
        if best.as_ref().is_none_or(|(s, _, _)| score > *s) {
            best = Some((score, name, len));
        }
    }
    best.map(|(_, name, len)| (name, len))
}

/// Number of decimal digits of `n`.
fn digits(mut n: usize) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// Appends the decoded characters of `s` from byte `from` up to byte `to`.
fn push_decoded(e: &mut Error, s: &JsonStr, from: usize, to: usize) {
    let mut at = 0usize;
    for c in s.chars() {
        let next = at.saturating_add(c.len_utf8());
        if next > to {
            break;
        }
        if at >= from {
            let (buf, len) = utf8(c);
            if let Some(text) = buf.get(..len).and_then(|b| core::str::from_utf8(b).ok()) {
                push(e, &[S(text)]);
            }
        }
        at = next;
    }
}

fn push_dims(e: &mut Error, dims: &[usize]) {
    push(e, &[S("[")]);
    for (i, &d) in dims.iter().enumerate() {
        let sep = if i > 0 { ", " } else { "" };
        push(e, &[S(sep), N(d as u64)]);
    }
    push(e, &[S("]")]);
}

fn meta_err(key: &str, v: &str, what: &str) -> Error {
    let pieces = [S(key), S(": '"), S(v), S("' "), S(what)];
    error(Status::InvalidArgument, "metadata ", &pieces)
}

/// Plain decimal digits, no sign, fitting a u32.
fn parse_u32(s: &str) -> Option<u32> {
    if s.is_empty() {
        return None;
    }
    s.bytes().try_fold(0u32, |acc, b| {
        let d = b.checked_sub(b'0').filter(|d| *d < 10)?;
        acc.checked_mul(10)?.checked_add(u32::from(d))
    })
}

/// A finite decimal (`-1.5`, `1e-06`, `32`), no `inf`/`nan` spellings.
fn parse_f32(s: &str) -> Option<f32> {
    let ok = !s.is_empty()
        && s.bytes().any(|b| b.is_ascii_digit())
        && s.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'));
    if !ok {
        return None;
    }
    s.parse::<f32>().ok().filter(|v| v.is_finite())
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::super::st_file::{file, Writer};
    use super::super::FileDType;
    use super::*;
    use crate::dtype::Elems;
    use std::string::{String, ToString};
    use std::{format, vec};

    const P: &str = "model.layers.0.self_attn.";

    /// d 8, H 2, n 4, p 2, v 4, r 4, r_q 6 with q_norm, shared rope key.
    fn small_cfg() -> Config {
        super::super::configs::tiny_qlora()
    }

    /// A file with every tensor `cfg` needs under `prefix` (F32, distinct values).
    fn layer(cfg: &Config, prefix: &str, bias: bool) -> Writer {
        let dm = cfg.dims().unwrap();
        let mut w = Writer::new().meta("variant", "deepseek");
        let mut add = |suffix: &str, shape: &[usize]| {
            w = core::mem::take(&mut w).filled(&format!("{prefix}{suffix}"), shape);
        };
        if dm.rq == 0 {
            add("q_proj.weight", &[dm.q_width, dm.d]);
        } else {
            add("q_a_proj.weight", &[dm.rq, dm.d]);
            add("q_b_proj.weight", &[dm.q_width, dm.rq]);
            if bias {
                add("q_a_proj.bias", &[dm.rq]);
            }
        }
        if cfg.q_norm {
            add("q_a_layernorm.weight", &[dm.rq]);
        }
        add("kv_a_proj_with_mqa.weight", &[dm.kv_a_rows, dm.d]);
        add("kv_a_layernorm.weight", &[dm.r]);
        add("kv_b_proj.weight", &[dm.kv_b_rows, dm.r]);
        add("o_proj.weight", &[dm.d, dm.o_cols]);
        if bias {
            add("kv_a_proj_with_mqa.bias", &[dm.kv_a_rows]);
            add("o_proj.bias", &[dm.d]);
        }
        w
    }

    fn good(cfg: &Config, bias: bool) -> Writer {
        layer(cfg, P, bias)
    }

    fn status_of<T: core::fmt::Debug>(r: Result<T>) -> (Status, String) {
        let e = r.unwrap_err();
        (e.status(), e.message().to_string())
    }

    #[test]
    fn good_file_binds_zero_copy() {
        let cfg = small_cfg();
        let buf = good(&cfg, true).build();
        let bytes = buf.get();
        let w = bind_weights(bytes, P, &cfg).unwrap();
        assert!(w.q_proj.is_none());
        let qa = w.q_a_proj.unwrap();
        assert_eq!((qa.rows, qa.cols), (6, 8));
        let ln = w.q_a_layernorm.unwrap();
        assert_eq!((ln.rows, ln.cols), (1, 6));
        let kva = w.kv_a_proj_with_mqa.unwrap();
        assert_eq!((kva.rows, kva.cols), (6, 8));
        assert_eq!((w.kv_b_proj.rows, w.kv_b_proj.cols), (16, 4));
        assert_eq!((w.o_proj.rows, w.o_proj.cols), (8, 8));
        assert_eq!(w.o_proj_bias.unwrap().cols, 8);
        assert_eq!(w.kv_a_proj_bias.unwrap().cols, 6);
        assert_eq!(w.q_a_proj_bias.unwrap().cols, 6);
        // Zero-copy: the tensor's elements live inside the file buffer.
        let Elems::F32(s) = w.kv_b_proj.data else {
            panic!("f32 expected")
        };
        let range = bytes.as_ptr_range();
        assert!(range.contains(&(s.as_ptr() as *const u8)));
        // kv_b_proj is the 7th tensor written: its values are 6 + 0.01 i.
        assert_eq!((s[0], s[3]), (6.0, 6.03));
        let st = SafeTensors::parse(bytes).unwrap();
        let v = st.tensor(&format!("{P}kv_b_proj.weight")).unwrap().unwrap();
        assert_eq!(v.dims(), &[16, 4]);
        assert_eq!(v.numel(), 64);
        let Elems::F32(e) = v.elems().unwrap() else {
            panic!("f32 expected")
        };
        assert_eq!(e.as_ptr(), s.as_ptr());
        assert_eq!(st.len(), 10);
        assert_eq!(st.metadata("variant"), Some("deepseek"));
        assert!(st.tensor("absent").unwrap().is_none());
        // Through the parsed file, the same weights.
        let w2 = st.weights(P, &cfg).unwrap();
        assert_eq!(w2.o_proj.data.dtype(), DType::F32);
        let (Elems::F32(b1), Elems::F32(b2)) =
            (w.o_proj_bias.unwrap().data, w2.o_proj_bias.unwrap().data)
        else {
            panic!("f32 expected")
        };
        assert_eq!(b1.as_ptr(), b2.as_ptr());
    }

    #[test]
    fn q_proj_and_half_precision_bind() {
        let mut cfg = small_cfg();
        cfg.q_lora_rank = 0;
        cfg.q_norm = false;
        let dm = cfg.dims().unwrap();
        let mut b = good(&cfg, false);
        let t = b.entry_mut("kv_b_proj.weight").unwrap();
        t.dtype = "BF16".to_string();
        t.data = [0x80u8, 0x3f].repeat(dm.kv_b_rows * dm.r); // 1.0
        let t = b.entry_mut("o_proj.weight").unwrap();
        t.dtype = "F16".to_string();
        t.data = [0x00u8, 0x3c].repeat(dm.d * dm.o_cols); // 1.0
        let buf = b.build();
        let w = bind_weights(&buf, P, &cfg).unwrap();
        assert_eq!(w.q_proj.unwrap().rows, 12);
        assert!(w.q_a_proj.is_none() && w.q_b_proj.is_none() && w.q_a_layernorm.is_none());
        assert_eq!(w.kv_b_proj.data.dtype(), DType::BF16);
        assert_eq!(w.o_proj.data.dtype(), DType::F16);
        let mut out = [0f32; 3];
        w.kv_b_proj.data.widen_into(&mut out);
        assert_eq!(out, [1.0; 3]);
        w.o_proj.data.widen_into(&mut out);
        assert_eq!(out, [1.0; 3]);
    }

    /// `kv_b_proj` as F8_E4M3 (all codes 1.0) with scales `scales` of `shape`
    /// (`None`: no scale tensor).
    fn with_f8_kv_b(cfg: &Config, scales: Option<(&[usize], &[f32])>) -> Writer {
        let dm = cfg.dims().unwrap();
        let mut b = good(cfg, false);
        let t = b.entry_mut("kv_b_proj.weight").unwrap();
        t.dtype = "F8_E4M3".to_string();
        t.data = vec![0x38u8; dm.kv_b_rows * dm.r];
        match scales {
            Some((shape, v)) => b.f32(&format!("{P}kv_b_proj.weight_scale_inv"), shape, v),
            None => b,
        }
    }

    #[test]
    fn f8_weights_bind_with_their_scales() {
        let cfg = small_cfg();
        let dm = cfg.dims().unwrap();
        let buf = with_f8_kv_b(&cfg, Some((&[1, 1], &[0.25]))).build();
        let w = bind_weights(&buf, P, &cfg).unwrap();
        assert_eq!(w.kv_b_proj.data.dtype(), DType::F8E4M3);
        let Elems::F8(f) = w.kv_b_proj.data else {
            panic!("f8")
        };
        // Zero-copy: codes and scales point into the file.
        let st = SafeTensors::parse(&buf).unwrap();
        let codes = st.tensor(&format!("{P}kv_b_proj.weight")).unwrap().unwrap();
        assert_eq!(f.codes().as_ptr(), codes.data.as_ptr());
        let mut out = vec![0f32; dm.kv_b_rows * dm.r];
        w.kv_b_proj.data.widen_into(&mut out);
        assert!(out.iter().all(|&v| v == 0.25));

        // Missing scales: named.
        let buf = with_f8_kv_b(&cfg, None).build();
        let (s, m) = status_of(bind_weights(&buf, P, &cfg));
        assert_eq!(s, Status::WeightShape);
        assert!(
            m.starts_with(&format!(
                "{P}kv_b_proj.weight_scale_inv: missing, expected [1, 1]"
            )),
            "{m}"
        );
        // Wrong shape, wrong dtype.
        let buf = with_f8_kv_b(&cfg, Some((&[2, 1], &[1.0, 1.0]))).build();
        let (s, m) = status_of(bind_weights(&buf, P, &cfg));
        assert_eq!(s, Status::WeightShape);
        assert_eq!(
            m,
            format!("{P}kv_b_proj.weight_scale_inv: expected [1, 1], got [2, 1]")
        );
        let mut b = with_f8_kv_b(&cfg, Some((&[1, 1], &[1.0])));
        let t = b.entry_mut("kv_b_proj.weight_scale_inv").unwrap();
        t.dtype = "BF16".to_string();
        t.data.truncate(2);
        let (s, _) = status_of(bind_weights(&b.build(), P, &cfg));
        assert_eq!(s, Status::WeightDtype);
        // Bad values.
        for (v, want) in [
            (f32::NAN, Status::NonFinite),
            (f32::NEG_INFINITY, Status::NonFinite),
            (0.0, Status::WeightShape),
            (-0.5, Status::WeightShape),
        ] {
            let buf = with_f8_kv_b(&cfg, Some((&[1, 1], &[v]))).build();
            let (s, m) = status_of(bind_weights(&buf, P, &cfg));
            assert_eq!(s, want, "{v}: {m}");
            assert!(
                m.starts_with(&format!("{P}kv_b_proj.weight: f8 tensor: block scale 0")),
                "{m}"
            );
        }
        // A norm vector in F8: refused by dtype.
        let mut b = good(&cfg, false);
        let t = b.entry_mut("kv_a_layernorm.weight").unwrap();
        t.dtype = "F8_E4M3".to_string();
        t.data = vec![0x38u8; dm.r];
        let (s, m) = status_of(bind_weights(&b.build(), P, &cfg));
        assert_eq!(s, Status::WeightDtype);
        assert!(
            m.ends_with("dtype F8_E4M3 is for projection matrices, not vectors"),
            "{m}"
        );
    }

    #[test]
    fn unknown_dtype_is_readable_but_not_bindable() {
        let cfg = small_cfg();
        let mut b = good(&cfg, false);
        b.entry_mut("kv_a_layernorm.weight").unwrap().dtype = "I32".to_string();
        let buf = b.build();
        let st = SafeTensors::parse(&buf).unwrap();
        let v = st
            .tensor(&format!("{P}kv_a_layernorm.weight"))
            .unwrap()
            .unwrap();
        assert_eq!(v.dtype, FileDType::I32);
        assert_eq!(v.dtype.to_dtype(), None);
        assert_eq!(status_of(v.elems()).0, Status::WeightDtype);
        let (s, m) = status_of(bind_weights(&buf, P, &cfg));
        assert_eq!(s, Status::WeightDtype);
        assert_eq!(
            m,
            "model.layers.0.self_attn.kv_a_layernorm.weight: dtype I32 is not supported (F32, F16, BF16; F8_E4M3 for projections)"
        );
        // F64 too.
        let mut b = good(&cfg, false);
        let t = b.entry_mut("o_proj.weight").unwrap();
        t.dtype = "F64".to_string();
        t.shape = vec![8, 4];
        let (s, m) = status_of(bind_weights(&b.build(), P, &cfg));
        assert_eq!(s, Status::WeightDtype);
        assert!(m.contains("o_proj.weight: dtype F64"), "{m}");
    }

    #[test]
    fn misaligned_tensor_names_itself() {
        let cfg = small_cfg();
        let dm = cfg.dims().unwrap();
        // A 1-byte U8 tensor first pushes every F32 tensor off 4-byte alignment.
        let mut b = Writer::new().tensor("pad", "U8", &[1], vec![7]);
        b.tensors.extend(good(&cfg, false).tensors);
        let buf = b.build();
        let (s, m) = status_of(bind_weights(&buf, P, &cfg));
        assert_eq!(s, Status::Misaligned);
        assert!(
            m.starts_with("model.layers.0.self_attn.q_a_proj.weight: F32 data (data offset 1) is not aligned to 4"),
            "{m}"
        );
        // Reading it as raw bytes still works.
        let st = SafeTensors::parse(&buf).unwrap();
        let v = st.tensor(&format!("{P}q_a_proj.weight")).unwrap().unwrap();
        assert_eq!(v.data.len(), dm.rq * dm.d * 4);
        assert_eq!(status_of(v.elems()).0, Status::Misaligned);
        // A header not padded to 8 misaligns the whole data section.
        let (h, data) = good(&cfg, false).header_and_data();
        let mut h = h;
        while (8 + h.len()) % 4 != 1 {
            h.push(' ');
        }
        let (s, _) = status_of(bind_weights(&file(&h, &data), P, &cfg));
        assert_eq!(s, Status::Misaligned);
    }

    #[test]
    fn wrong_shape_and_unused() {
        let cfg = small_cfg();
        let mut b = good(&cfg, true);
        b.entry_mut("kv_b_proj.weight").unwrap().shape = vec![4, 16];
        let (s, m) = status_of(bind_weights(&b.build(), P, &cfg));
        assert_eq!(s, Status::WeightShape);
        assert_eq!(
            m,
            "model.layers.0.self_attn.kv_b_proj.weight: expected [16, 4], got [4, 16]"
        );

        // 1-D norm given as 2-D.
        let mut b = good(&cfg, true);
        b.entry_mut("o_proj.bias").unwrap().shape = vec![1, 8];
        let (s, m) = status_of(bind_weights(&b.build(), P, &cfg));
        assert_eq!(s, Status::WeightShape);
        assert!(m.ends_with("o_proj.bias: expected [8], got [1, 8]"), "{m}");

        // Present but unused: q_a_layernorm with q_norm 0, q_proj next to q_a_proj.
        let mut c2 = cfg;
        c2.q_norm = false;
        let (s, m) = status_of(bind_weights(&good(&cfg, false).build(), P, &c2));
        assert_eq!(s, Status::WeightShape);
        assert!(
            m.contains("q_a_layernorm.weight: in the file but unused"),
            "{m}"
        );
        let b = good(&cfg, false).filled(&format!("{P}q_proj.weight"), &[12, 8]);
        let (s, m) = status_of(bind_weights(&b.build(), P, &cfg));
        assert_eq!(s, Status::WeightShape);
        assert!(m.contains("q_proj.weight: in the file but unused"), "{m}");

        // A config that does not validate.
        let mut c3 = cfg;
        c3.qk_rope_head_dim = 3;
        let (s, _) = status_of(bind_weights(&good(&cfg, false).build(), P, &c3));
        assert_eq!(s, Status::InvalidConfig);
        // Malformed file through bind_weights.
        let (s, _) = status_of(bind_weights(&[0u8; 4], P, &cfg));
        assert_eq!(s, Status::InvalidArgument);
    }

    #[test]
    fn missing_tensor_says_what_the_prefix_holds() {
        let cfg = small_cfg();
        // One missing: the others under the prefix are listed, as many as fit.
        let b = good(&cfg, false).without("q_a_layernorm.weight");
        let (s, m) = status_of(bind_weights(&b.build(), P, &cfg));
        assert_eq!(s, Status::WeightShape);
        assert_eq!(
            m,
            "model.layers.0.self_attn.q_a_layernorm.weight: missing, expected [6]; the prefix holds 6: q_a_proj.weight, q_b_proj.weight, kv_a_proj_with_mqa.weight, kv_a_layernorm.weight (+2 more)"
        );
        // A short prefix: all of them fit.
        let b = layer(&cfg, "L.", false).without("o_proj.weight");
        let (_, m) = status_of(bind_weights(&b.build(), "L.", &cfg));
        assert_eq!(
            m,
            "L.o_proj.weight: missing, expected [8, 8]; the prefix holds 6: q_a_proj.weight, q_b_proj.weight, q_a_layernorm.weight, kv_a_proj_with_mqa.weight, kv_a_layernorm.weight, kv_b_proj.weight"
        );
        // More than fit: as many as fit, then the count of the rest; never cut mid-name.
        let mut b = good(&cfg, true).without("kv_b_proj.weight");
        for i in 0..20 {
            b = b.filled(&format!("{P}extra_{i}.weight"), &[1]);
        }
        let (_, m) = status_of(bind_weights(&b.build(), P, &cfg));
        assert!(m.len() <= crate::status::MESSAGE_CAPACITY);
        assert!(
            m.starts_with("model.layers.0.self_attn.kv_b_proj.weight: missing, expected [16, 4]; the prefix holds 29: q_a_proj.weight, q_b_proj.weight, "),
            "{m}"
        );
        let tail = m.rsplit_once(", ").unwrap().1;
        // Names shown: one more than the separators after "holds 29: ".
        let shown = m.split_once("holds 29: ").unwrap().1.matches(", ").count() + 1;
        assert!(tail.ends_with(" more)"), "{m}");
        let rest: usize = tail
            .split(" (+")
            .nth(1)
            .unwrap()
            .trim_end_matches(" more)")
            .parse()
            .unwrap();
        assert_eq!(shown + rest, 29, "{m}");

        // The layer one level further down: the nearest prefix is suggested, and
        // what the given prefix holds is listed.
        let b = layer(&cfg, "model.layers.0.self_attn.", false)
            .filled("model.layers.0.mlp.gate.weight", &[2]);
        let (s, m) = status_of(bind_weights(&b.build(), "model.layers.0.", &cfg));
        assert_eq!(s, Status::WeightShape);
        assert!(
            m.starts_with("model.layers.0.q_a_proj.weight: missing, expected [6, 8]; layer tensors are under 'model.layers.0.self_attn.'; the prefix holds 8: self_attn.q_a_proj.weight (+7 more)"),
            "{m}"
        );
        // Another layer's prefix: nothing under it; the nearest is named.
        let b = layer(&cfg, "model.layers.0.self_attn.", false);
        let (_, m) = status_of(bind_weights(&b.build(), "model.layers.1.self_attn.", &cfg));
        assert_eq!(
            m,
            "model.layers.1.self_attn.q_a_proj.weight: missing, expected [6, 8]; no tensor under this prefix; layer tensors are under 'model.layers.0.self_attn.'"
        );
        // Two layers: the one that extends the given prefix wins over the first one.
        let mut b = layer(&cfg, "model.layers.1.attn.", false);
        b.tensors
            .extend(layer(&cfg, "model.layers.2.attn.", false).tensors);
        let (_, m) = status_of(bind_weights(&b.build(), "model.layers.2.", &cfg));
        assert!(
            m.contains("layer tensors are under 'model.layers.2.attn.'"),
            "{m}"
        );
        // Escaped names decode in the suggestion.
        let b = layer(&cfg, "m\u{e9}.", false).ascii_escapes();
        let (_, m) = status_of(bind_weights(&b.build(), "m", &cfg));
        assert!(m.contains("layer tensors are under 'm\u{e9}.'"), "{m}");
        // No layer tensor anywhere.
        let b = Writer::new().filled("inputs", &[2]).filled("outputs", &[2]);
        let (_, m) = status_of(bind_weights(&b.build(), P, &cfg));
        assert_eq!(
            m,
            "model.layers.0.self_attn.q_a_proj.weight: missing, expected [6, 8]; no tensor under this prefix; no layer tensor in the file (2 tensors)"
        );
        // A very long prefix: the message is cut at its capacity, not corrupted.
        let long = "p".repeat(300);
        let (_, m) = status_of(bind_weights(&good(&cfg, false).build(), &long, &cfg));
        assert_eq!(m.len(), crate::status::MESSAGE_CAPACITY);
        assert!(m.chars().all(|c| c == 'p'));
    }

    #[test]
    fn config_from_metadata_overrides_fields() {
        let b = Writer::new()
            .meta("hidden_size", "64")
            .meta("num_heads", "4")
            .meta("q_lora_rank", "48")
            .meta("kv_lora_rank", "32")
            .meta("qk_nope_head_dim", "16")
            .meta("qk_rope_head_dim", "8")
            .meta("v_head_dim", "16")
            .meta("rope_layout", "interleaved")
            .meta("rope_key", "shared")
            .meta("q_norm", "1")
            .meta("original_max_position", "64")
            .meta("rms_norm_eps", "1e-06")
            .meta("rope_theta", "10000.0")
            .meta("rope_factor", "4.0")
            .meta("beta_fast", "32")
            .meta("beta_slow", "1.0")
            .meta("mscale", "0.707")
            .meta("mscale_all_dim", "-0.5E+1")
            .meta("softmax_scale", "0")
            .meta("cache_dtype", "bf16")
            .meta("attn_mode", "absorb")
            .meta("variant", "deepseek");
        let buf = b.build();
        let st = SafeTensors::parse(&buf).unwrap();
        let c = config_from_metadata(&st, &Config::tutorial()).unwrap();
        let mut want = Config::tutorial();
        want.hidden_size = 64;
        want.num_heads = 4;
        want.q_lora_rank = 48;
        want.kv_lora_rank = 32;
        want.qk_nope_head_dim = 16;
        want.qk_rope_head_dim = 8;
        want.v_head_dim = 16;
        want.rope_layout = RopeLayout::Interleaved;
        want.rope_key = RopeKey::Shared;
        want.q_norm = true;
        want.original_max_position = 64;
        want.rms_norm_eps = 1e-6;
        want.rope_theta = 10000.0;
        want.rope_factor = 4.0;
        want.rope_type = RopeType::Yarn;
        want.beta_fast = 32.0;
        want.beta_slow = 1.0;
        want.mscale = 0.707;
        want.mscale_all_dim = -5.0;
        want.softmax_scale = 0.0;
        want.cache_dtype = DType::BF16;
        want.attn_mode = AttnMode::Absorb;
        assert_eq!(c, want);
        // The FP8 cache by its safetensors dtype name.
        let buf = Writer::new().meta("cache_dtype", "F8_E4M3").build();
        let st = SafeTensors::parse(&buf).unwrap();
        let c = config_from_metadata(&st, &Config::tutorial()).unwrap();
        assert_eq!(c.cache_dtype, DType::F8E4M3);

        // No metadata at all: the base comes back unchanged.
        let empty = file("{}", &[]);
        let st = SafeTensors::parse(&empty).unwrap();
        assert_eq!(
            config_from_metadata(&st, &Config::deepseek_v3()).unwrap(),
            Config::deepseek_v3()
        );

        for (k, v) in [
            ("hidden_size", "-1"),
            ("hidden_size", "4294967296"),
            ("hidden_size", "1.0"),
            ("hidden_size", ""),
            ("rope_theta", "inf"),
            ("rope_theta", "NaN"),
            ("rope_theta", "1e999"),
            ("rope_theta", "1.2.3"),
            ("rope_theta", "."),
            ("rope_layout", "Half"),
            ("rope_key", "per-head"),
            ("q_norm", "2"),
            ("cache_dtype", "f64"),
            ("attn_mode", "fast"),
        ] {
            let buf = Writer::new().meta(k, v).build();
            let st = SafeTensors::parse(&buf).unwrap();
            let (s, m) = status_of(config_from_metadata(&st, &Config::tutorial()));
            assert_eq!(s, Status::InvalidArgument, "{k}={v}");
            assert!(m.starts_with(&format!("metadata {k}: '{v}'")), "{m}");
        }
        // A value with escapes is refused, naming the key.
        let buf = file("{\"__metadata__\":{\"hidden_size\":\"1\\u0032\"}}", &[]);
        let st = SafeTensors::parse(&buf).unwrap();
        let (s, m) = status_of(config_from_metadata(&st, &Config::tutorial()));
        assert_eq!(s, Status::InvalidArgument);
        assert_eq!(
            m,
            "metadata hidden_size: value holds escapes (not supported)"
        );
    }

    #[test]
    #[cfg_attr(miri, ignore)] // thousands of cases: slow under Miri
    fn mutated_files_never_panic() {
        // Every truncation and a sweep of single-byte corruptions of a good file.
        let cfg = small_cfg();
        let good_bytes = good(&cfg, true).meta("hidden_size", "8").to_bytes();
        for cut in 0..good_bytes.len() {
            let b = super::super::st_file::AlignedBytes::new(&good_bytes[..cut]);
            assert!(bind_weights(&b, P, &cfg).is_err());
        }
        let header_end = 8 + u64::from_le_bytes(good_bytes[..8].try_into().unwrap()) as usize;
        for pos in 0..header_end {
            for val in [
                0u8, b'"', b'\\', b'{', b'}', b'[', b']', b',', b':', b'9', 0xff, b' ',
            ] {
                let mut v = good_bytes.clone();
                v[pos] = val;
                let b = super::super::st_file::AlignedBytes::new(&v);
                if let Ok(st) = SafeTensors::parse(&b) {
                    let _ = st.weights(P, &cfg);
                    let _ = config_from_metadata(&st, &cfg);
                    let _ = st.metadata("variant");
                    assert_eq!(st.iter().count(), st.len());
                }
            }
        }
    }
}
