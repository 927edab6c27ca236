//! Zero-copy, allocation-free reader of the safetensors format, and the binder that
//! turns one layer's Hugging Face tensors into [`Weights`].
//!
//! File layout: 8 bytes little-endian `N`, then `N` bytes of UTF-8 JSON (the header),
//! then the data section. The header is one JSON object: each key is a tensor name
//! mapped to `{"dtype": "F32", "shape": [rows, cols], "data_offsets": [begin, end]}`
//! (offsets relative to the data section), plus an optional `"__metadata__"` object
//! of string values.
//!
//! [`SafeTensors::parse`] checks everything up front with its own strict JSON
//! scanner (no allocation, no recursion deeper than [`MAX_DEPTH`]): the header
//! length, UTF-8, the JSON grammar (escapes, numbers, nesting, no trailing bytes),
//! every tensor entry (known dtype, rank <= [`MAX_RANK`], element and byte counts
//! without overflow, `begin <= end <= data length`, `end - begin` = the bytes the
//! shape needs) and that the tensors tile the data section exactly (no overlap, no
//! hole, no trailing bytes). Nothing is stored: lookups re-scan the validated
//! header, so a [`SafeTensors`] is three words and the data stays where it is.
//! Every malformed or hostile input gets a [`Status`], never a panic.

// `Error` is returned by value on purpose (no allocation); its size is by design.
#![allow(clippy::result_large_err)]

use crate::config::{AttnMode, Config, RopeKey, RopeLayout, RopeType};
use crate::dtype::{DType, Elems};
use crate::status::{err, Error, Result, Status};
use crate::weights::{Tensor, Weights};

/// Largest header accepted, in bytes (100 MiB).
pub const MAX_HEADER_BYTES: u64 = 100 * 1024 * 1024;
/// Largest tensor rank accepted.
pub const MAX_RANK: usize = 8;
/// Deepest JSON nesting accepted in the header (the header object is depth 1,
/// a tensor entry depth 2; only unknown fields inside an entry nest further).
pub const MAX_DEPTH: usize = 32;
/// Most tensors accepted when their `data_offsets` are not in header order. Files
/// written by the safetensors library list tensors in offset order, which is checked
/// in one pass; other orders need a pairwise overlap check (each tensor against a
/// re-scan of the header), so their count and header size are capped.
pub const MAX_UNORDERED_TENSORS: usize = 1024;
/// Largest header accepted when `data_offsets` are not in header order (256 KiB).
pub const MAX_UNORDERED_HEADER_BYTES: usize = 256 * 1024;

/// Element type of a tensor in a safetensors file (every dtype of the format).
/// Only `F32`, `F16` and `BF16` can be bound as weights ([`FileDType::to_dtype`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileDType {
    /// Boolean, one byte.
    Bool,
    /// 4-bit float (two per byte).
    F4,
    /// 6-bit float, 2 exponent bits.
    F6E2M3,
    /// 6-bit float, 3 exponent bits.
    F6E3M2,
    /// Unsigned 8-bit integer.
    U8,
    /// Signed 8-bit integer.
    I8,
    /// 8-bit float, 5 exponent bits.
    F8E5M2,
    /// 8-bit float, 4 exponent bits.
    F8E4M3,
    /// 8-bit exponent-only scale.
    F8E8M0,
    /// Signed 16-bit integer.
    I16,
    /// Unsigned 16-bit integer.
    U16,
    /// IEEE binary16.
    F16,
    /// bfloat16.
    BF16,
    /// Signed 32-bit integer.
    I32,
    /// Unsigned 32-bit integer.
    U32,
    /// IEEE binary32.
    F32,
    /// Complex of two binary32.
    C64,
    /// IEEE binary64.
    F64,
    /// Signed 64-bit integer.
    I64,
    /// Unsigned 64-bit integer.
    U64,
}

impl FileDType {
    /// Every dtype, in the order of the format's specification.
    pub const ALL: [FileDType; 20] = [
        FileDType::Bool,
        FileDType::F4,
        FileDType::F6E2M3,
        FileDType::F6E3M2,
        FileDType::U8,
        FileDType::I8,
        FileDType::F8E5M2,
        FileDType::F8E4M3,
        FileDType::F8E8M0,
        FileDType::I16,
        FileDType::U16,
        FileDType::F16,
        FileDType::BF16,
        FileDType::I32,
        FileDType::U32,
        FileDType::F32,
        FileDType::C64,
        FileDType::F64,
        FileDType::I64,
        FileDType::U64,
    ];

    /// The dtype's name as written in the header (`"F32"`, `"BF16"`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            FileDType::Bool => "BOOL",
            FileDType::F4 => "F4",
            FileDType::F6E2M3 => "F6_E2M3",
            FileDType::F6E3M2 => "F6_E3M2",
            FileDType::U8 => "U8",
            FileDType::I8 => "I8",
            FileDType::F8E5M2 => "F8_E5M2",
            FileDType::F8E4M3 => "F8_E4M3",
            FileDType::F8E8M0 => "F8_E8M0",
            FileDType::I16 => "I16",
            FileDType::U16 => "U16",
            FileDType::F16 => "F16",
            FileDType::BF16 => "BF16",
            FileDType::I32 => "I32",
            FileDType::U32 => "U32",
            FileDType::F32 => "F32",
            FileDType::C64 => "C64",
            FileDType::F64 => "F64",
            FileDType::I64 => "I64",
            FileDType::U64 => "U64",
        }
    }

    /// Bits per element (4 and 6 for the sub-byte floats).
    pub const fn bits(self) -> usize {
        match self {
            FileDType::F4 => 4,
            FileDType::F6E2M3 | FileDType::F6E3M2 => 6,
            FileDType::Bool
            | FileDType::U8
            | FileDType::I8
            | FileDType::F8E5M2
            | FileDType::F8E4M3
            | FileDType::F8E8M0 => 8,
            FileDType::I16 | FileDType::U16 | FileDType::F16 | FileDType::BF16 => 16,
            FileDType::I32 | FileDType::U32 | FileDType::F32 => 32,
            FileDType::C64 | FileDType::F64 | FileDType::I64 | FileDType::U64 => 64,
        }
    }

    /// The engine dtype, for the three the engine computes with; `None` otherwise.
    pub const fn to_dtype(self) -> Option<DType> {
        match self {
            FileDType::F32 => Some(DType::F32),
            FileDType::F16 => Some(DType::F16),
            FileDType::BF16 => Some(DType::BF16),
            _ => None,
        }
    }

    /// The dtype named `name` (exact, case-sensitive), or `None`.
    pub fn from_name(name: &str) -> Option<FileDType> {
        FileDType::ALL.iter().copied().find(|d| d.name() == name)
    }
}

/// One tensor of the file: dtype, shape and its bytes, borrowed from the file.
#[derive(Clone, Copy, Debug)]
pub struct TensorView<'a> {
    /// Element type as stored.
    pub dtype: FileDType,
    /// Dimensions, outermost first; only the first `rank` entries are used (the rest are 0).
    pub shape: [usize; MAX_RANK],
    /// Number of dimensions (0 for a scalar).
    pub rank: usize,
    /// The tensor's bytes (row-major, little-endian), exactly the size its shape and
    /// dtype need; a sub-slice of the buffer given to [`SafeTensors::parse`].
    pub data: &'a [u8],
}

impl<'a> TensorView<'a> {
    /// The tensor's bytes (same as the `data` field).
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// The used dimensions, `shape[..rank]`.
    pub fn dims(&self) -> &[usize] {
        self.shape.get(..self.rank).unwrap_or(&[])
    }

    /// Number of elements (the product of the dimensions; 1 for a scalar).
    /// Checked at parse time not to overflow.
    pub fn numel(&self) -> usize {
        self.dims()
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .unwrap_or(0)
    }

    /// The data as typed elements. `WeightDtype` unless the dtype is F32, F16 or
    /// BF16; `Misaligned` when the bytes are not aligned in memory to the element size.
    pub fn elems(&self) -> Result<Elems<'a>> {
        let dt = self.dtype.to_dtype().ok_or_else(|| {
            err(Status::WeightDtype, "tensor dtype ")
                .s(self.dtype.name())
                .s(" is not supported (F32, F16 or BF16)")
        })?;
        Elems::from_bytes(self.data, dt).ok_or_else(|| {
            err(Status::Misaligned, "tensor ")
                .s(self.dtype.name())
                .s(" data is not aligned to ")
                .n(dt.size())
                .s(" bytes in memory")
        })
    }
}

/// A validated safetensors file, borrowed: header and data stay in the caller's buffer.
#[derive(Clone, Copy, Debug)]
pub struct SafeTensors<'a> {
    /// The JSON header (validated UTF-8 and grammar).
    header: &'a [u8],
    /// The data section (everything after the header).
    data: &'a [u8],
    /// Number of tensor entries.
    count: usize,
    /// The `__metadata__` object's text, braces included, if present.
    meta: Option<&'a [u8]>,
}

impl<'a> SafeTensors<'a> {
    /// Parses and validates a whole file held in `bytes` (see the module docs for
    /// every check). Any malformed input is `Status::InvalidArgument` with a message
    /// saying what and where.
    pub fn parse(bytes: &'a [u8]) -> Result<SafeTensors<'a>> {
        let (len8, rest) = match bytes.split_first_chunk::<8>() {
            Some(v) => v,
            None => {
                return Err(bad("file is ")
                    .n(bytes.len())
                    .s(" bytes, shorter than the 8-byte header length"))
            }
        };
        let n = u64::from_le_bytes(*len8);
        if n > MAX_HEADER_BYTES {
            return Err(num64(bad("header length "), n).s(" is above the 100 MiB limit"));
        }
        if n > rest.len() as u64 {
            return Err(num64(bad("header length "), n)
                .s(" runs past the end of the file (")
                .n(rest.len())
                .s(" bytes after the length)"));
        }
        let (header, data) = rest
            .split_at_checked(n as usize)
            .ok_or_else(|| bad("header length runs past the end of the file"))?;
        if core::str::from_utf8(header).is_err() {
            return Err(bad("header is not UTF-8"));
        }

        let mut count = 0usize;
        let mut meta = None;
        // Fast tiling check: offsets in header order, each tensor starting where
        // the previous one ended.
        let mut cursor = 0usize;
        let mut in_order = true;
        let mut entries = Entries::new(header, data.len());
        while let Some(e) = entries.next_entry()? {
            match e.value {
                Value::Meta(m) => {
                    if meta.is_some() {
                        return Err(bad("__metadata__ appears twice"));
                    }
                    meta = Some(m);
                }
                Value::Tensor(info) => {
                    count = count
                        .checked_add(1)
                        .ok_or_else(|| bad("too many tensors"))?;
                    if in_order && info.begin == cursor {
                        cursor = info.end;
                    } else {
                        in_order = false;
                    }
                }
            }
        }
        let st = SafeTensors {
            header,
            data,
            count,
            meta,
        };
        if !(in_order && cursor == data.len()) {
            st.check_tiling()?;
        }
        Ok(st)
    }

    /// The general (pairwise) form of the tiling check, for headers whose offsets
    /// are not in order: no two non-empty tensors overlap and their sizes add up
    /// to the data section (so no hole and no trailing bytes).
    fn check_tiling(&self) -> Result<()> {
        let mut total = 0usize;
        let mut all = Entries::new(self.header, self.data.len());
        while let Some(info) = all.next_tensor()?.map(|(_, i)| i) {
            total = total
                .checked_add(info.len())
                .ok_or_else(|| bad("tensor sizes overflow"))?;
        }
        if total != self.data.len() {
            return Err(bad("tensors cover ")
                .n(total)
                .s(" bytes of a data section of ")
                .n(self.data.len())
                .s(" (holes, overlap or trailing bytes)"));
        }
        if self.count > MAX_UNORDERED_TENSORS || self.header.len() > MAX_UNORDERED_HEADER_BYTES {
            return Err(
                bad("tensor offsets are not in header order (allowed for at most ")
                    .n(MAX_UNORDERED_TENSORS)
                    .s(" tensors and a 256 KiB header; found ")
                    .n(self.count)
                    .s(" tensors, ")
                    .n(self.header.len())
                    .s(" bytes)"),
            );
        }
        let mut outer = Entries::new(self.header, self.data.len());
        let mut k = 0usize;
        while let Some((name, a)) = outer.next_tensor()? {
            k = k.saturating_add(1);
            if a.len() == 0 {
                continue;
            }
            let mut inner = Entries::new(self.header, self.data.len());
            let mut j = 0usize;
            while let Some((_, b)) = inner.next_tensor()? {
                j = j.saturating_add(1);
                if j > k && b.len() > 0 && a.begin < b.end && b.begin < a.end {
                    return Err(tensor_err(name, "data overlaps another tensor's"));
                }
            }
        }
        Ok(())
    }

    /// Number of tensors in the file.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when the file holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The data section (all tensor bytes, after the header).
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// The tensor called `name` (compared after JSON unescaping), `Ok(None)` if
    /// absent; `InvalidArgument` if the name appears more than once.
    pub fn tensor(&self, name: &str) -> Result<Option<TensorView<'a>>> {
        self.find(&[name])
    }

    /// Looks up the tensor whose name is the concatenation of `parts`.
    fn find(&self, parts: &[&str]) -> Result<Option<TensorView<'a>>> {
        let mut found: Option<TensorView<'a>> = None;
        let mut all = Entries::new(self.header, self.data.len());
        while let Some((name, info)) = all.next_tensor()? {
            if name.eq_parts(parts) {
                if found.is_some() {
                    return Err(named(
                        Status::InvalidArgument,
                        parts,
                        ": name appears twice in the header",
                    ));
                }
                found = Some(self.view(&info, parts)?);
            }
        }
        Ok(found)
    }

    /// Looks up every name of [`LAYER_TENSORS`] under `prefix` in one pass.
    fn find_layer(&self, prefix: &str) -> Result<[Option<TensorView<'a>>; LAYER_TENSORS.len()]> {
        let mut found = [None; LAYER_TENSORS.len()];
        let mut all = Entries::new(self.header, self.data.len());
        while let Some((name, info)) = all.next_tensor()? {
            for (slot, suffix) in found.iter_mut().zip(LAYER_TENSORS) {
                let parts = [prefix, suffix];
                if name.eq_parts(&parts) {
                    if slot.is_some() {
                        return Err(named(
                            Status::InvalidArgument,
                            &parts,
                            ": name appears twice in the header",
                        ));
                    }
                    *slot = Some(self.view(&info, &parts)?);
                    break;
                }
            }
        }
        Ok(found)
    }

    /// The view of a validated entry.
    fn view(&self, info: &Info, parts: &[&str]) -> Result<TensorView<'a>> {
        let data = self.data.get(info.begin..info.end).ok_or_else(|| {
            named(
                Status::Internal,
                parts,
                ": offsets outside the data section",
            )
        })?;
        Ok(TensorView {
            dtype: info.dtype,
            shape: info.shape,
            rank: info.rank,
            data,
        })
    }

    /// The string value of `key` in `__metadata__`, as written in the file. `None`
    /// when there is no metadata, no such key, the key appears twice, or the value
    /// holds JSON escapes (only plain values are returned, zero-copy).
    pub fn metadata(&self, key: &str) -> Option<&'a str> {
        self.meta_value(key).ok().flatten()
    }

    /// Like [`SafeTensors::metadata`], but escapes and duplicates are errors.
    fn meta_value(&self, key: &str) -> Result<Option<&'a str>> {
        let obj = match self.meta {
            Some(o) => o,
            None => return Ok(None),
        };
        let mut c = Cur { b: obj, i: 0 };
        let mut found: Option<JStr<'a>> = None;
        c.ws();
        c.expect(b'{')?;
        c.ws();
        if !c.eat(b'}') {
            loop {
                c.ws();
                let k = c.string()?;
                c.ws();
                c.expect(b':')?;
                c.ws();
                let v = c.string()?;
                if k.eq_parts(&[key]) {
                    if found.is_some() {
                        return Err(err(Status::InvalidArgument, "metadata ")
                            .s(key)
                            .s(": key appears twice"));
                    }
                    found = Some(v);
                }
                c.ws();
                if c.eat(b',') {
                    continue;
                }
                c.expect(b'}')?;
                break;
            }
        }
        match found {
            None => Ok(None),
            Some(v) if v.esc => Err(err(Status::InvalidArgument, "metadata ")
                .s(key)
                .s(": value holds escapes (not supported)")),
            Some(v) => core::str::from_utf8(v.raw)
                .map(Some)
                .map_err(|_| err(Status::Internal, "metadata: value is not UTF-8")),
        }
    }

    /// Binds one layer's weights by their Hugging Face names under `prefix`; see
    /// [`bind_weights`].
    pub fn weights(&self, prefix: &str, cfg: &Config) -> Result<Weights<'a>> {
        let dm = cfg.dims()?;
        let b = Binder {
            st: self,
            prefix,
            found: self.find_layer(prefix)?,
        };
        let (q_proj, q_a_proj, q_a_proj_bias, q_b_proj) = if dm.rq == 0 {
            b.unused("q_a_proj.weight", "q_lora_rank is 0")?;
            b.unused("q_a_proj.bias", "q_lora_rank is 0")?;
            b.unused("q_b_proj.weight", "q_lora_rank is 0")?;
            let q = b.matrix("q_proj.weight", dm.q_width, dm.d)?;
            (Some(q), None, None, None)
        } else {
            b.unused(
                "q_proj.weight",
                "q_lora_rank > 0 uses q_a_proj and q_b_proj",
            )?;
            let qa = b.matrix("q_a_proj.weight", dm.rq, dm.d)?;
            let qab = b.vector_opt("q_a_proj.bias", dm.rq)?;
            let qb = b.matrix("q_b_proj.weight", dm.q_width, dm.rq)?;
            (None, Some(qa), qab, Some(qb))
        };
        let q_a_layernorm = if cfg.q_norm {
            Some(b.vector("q_a_layernorm.weight", dm.rq)?)
        } else {
            b.unused("q_a_layernorm.weight", "q_norm is 0")?;
            None
        };
        let w = Weights {
            q_proj,
            q_a_proj,
            q_a_layernorm,
            q_b_proj,
            kv_a_proj_with_mqa: b.matrix("kv_a_proj_with_mqa.weight", dm.kv_a_rows, dm.d)?,
            kv_a_layernorm: b.vector("kv_a_layernorm.weight", dm.r)?,
            kv_b_proj: b.matrix("kv_b_proj.weight", dm.kv_b_rows, dm.r)?,
            o_proj: b.matrix("o_proj.weight", dm.d, dm.o_cols)?,
            q_a_proj_bias,
            kv_a_proj_bias: b.vector_opt("kv_a_proj_with_mqa.bias", dm.kv_a_rows)?,
            o_proj_bias: b.vector_opt("o_proj.bias", dm.d)?,
        };
        w.check(cfg)?;
        Ok(w)
    }
}

/// Parses `bytes` as safetensors and binds one MLA layer's tensors, zero-copy.
///
/// Tensors are looked up as `prefix` + the Hugging Face name (`prefix` is e.g.
/// `model.layers.3.self_attn.`): `q_proj.weight` (when `q_lora_rank` is 0) or
/// `q_a_proj.weight`, `q_a_proj.bias` (optional) and `q_b_proj.weight`;
/// `q_a_layernorm.weight` (when `q_norm`); `kv_a_proj_with_mqa.weight`,
/// `kv_a_proj_with_mqa.bias` (optional), `kv_a_layernorm.weight`,
/// `kv_b_proj.weight`, `o_proj.weight`, `o_proj.bias` (optional).
/// 2-D tensors bind as `[rows][cols]`, 1-D norms and biases as `[1][len]`.
///
/// Statuses: `InvalidArgument` for a malformed file, `InvalidConfig` for a bad
/// `cfg`, `WeightShape` for a missing tensor, a wrong shape, or a query tensor the
/// config does not use (e.g. `q_a_layernorm.weight` with `q_norm` 0), `WeightDtype`
/// for a dtype other than F32/F16/BF16, `Misaligned` when a tensor's bytes are not
/// aligned in memory to its element size. Messages give the full tensor name.
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
/// `cache_dtype` `f32`/`f16`/`bf16`, `attn_mode` `auto`/`naive`/`absorb`.
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
            _ => return Err(meta_err("cache_dtype", v, "is not f32, f16 or bf16")),
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

/// The Hugging Face names of one layer's tensors, after the prefix.
const LAYER_TENSORS: [&str; 11] = [
    "q_proj.weight",
    "q_a_proj.weight",
    "q_a_proj.bias",
    "q_a_layernorm.weight",
    "q_b_proj.weight",
    "kv_a_proj_with_mqa.weight",
    "kv_a_proj_with_mqa.bias",
    "kv_a_layernorm.weight",
    "kv_b_proj.weight",
    "o_proj.weight",
    "o_proj.bias",
];

struct Binder<'s, 'a> {
    st: &'s SafeTensors<'a>,
    prefix: &'s str,
    /// The tensors of [`LAYER_TENSORS`] found under `prefix`, in that order.
    found: [Option<TensorView<'a>>; LAYER_TENSORS.len()],
}

impl<'a> Binder<'_, 'a> {
    fn get(&self, suffix: &str) -> Result<Option<TensorView<'a>>> {
        let i = LAYER_TENSORS
            .iter()
            .position(|s| *s == suffix)
            .ok_or_else(|| self.name_err(Status::Internal, suffix, ": not a layer tensor"))?;
        Ok(self.found.get(i).copied().flatten())
    }

    fn name_err(&self, status: Status, suffix: &str, what: &str) -> Error {
        named(status, &[self.prefix, suffix], what)
    }

    /// Fails if the file holds a tensor the config does not use.
    fn unused(&self, suffix: &str, why: &str) -> Result<()> {
        match self.get(suffix)? {
            None => Ok(()),
            Some(_) => Err(self
                .name_err(
                    Status::WeightShape,
                    suffix,
                    ": in the file but unused by the config (",
                )
                .s(why)
                .s(")")),
        }
    }

    fn matrix(&self, suffix: &str, rows: usize, cols: usize) -> Result<Tensor<'a>> {
        match self.get(suffix)? {
            Some(v) => self.bind(suffix, &v, &[rows, cols]),
            None => Err(self
                .name_err(Status::WeightShape, suffix, ": missing, expected [")
                .n(rows)
                .s(", ")
                .n(cols)
                .s("]")),
        }
    }

    fn vector(&self, suffix: &str, len: usize) -> Result<Tensor<'a>> {
        self.vector_opt(suffix, len)?.ok_or_else(|| {
            self.name_err(Status::WeightShape, suffix, ": missing, expected [")
                .n(len)
                .s("]")
        })
    }

    fn vector_opt(&self, suffix: &str, len: usize) -> Result<Option<Tensor<'a>>> {
        match self.get(suffix)? {
            Some(v) => self.bind(suffix, &v, &[len]).map(Some),
            None => Ok(None),
        }
    }

    /// Checks dtype, shape (`want` = expected dims) and alignment, then borrows.
    fn bind(&self, suffix: &str, v: &TensorView<'a>, want: &[usize]) -> Result<Tensor<'a>> {
        let dt = v.dtype.to_dtype().ok_or_else(|| {
            self.name_err(Status::WeightDtype, suffix, ": dtype ")
                .s(v.dtype.name())
                .s(" is not supported (F32, F16 or BF16)")
        })?;
        if v.dims() != want {
            let mut e = self.name_err(Status::WeightShape, suffix, ": expected ");
            e = push_dims(e, want).s(", got ");
            return Err(push_dims(e, v.dims()));
        }
        let (rows, cols) = match *want {
            [len] => (1, len),
            [rows, cols] => (rows, cols),
            _ => return Err(self.name_err(Status::Internal, suffix, ": bad expected rank")),
        };
        let offset = (v.data.as_ptr() as usize).wrapping_sub(self.st.data.as_ptr() as usize);
        Tensor::from_bytes(v.data, dt, rows, cols).map_err(|e| {
            if e.status() == Status::Misaligned {
                self.name_err(Status::Misaligned, suffix, ": ")
                    .s(v.dtype.name())
                    .s(" data (data offset ")
                    .n(offset)
                    .s(") is not aligned to ")
                    .n(dt.size())
                    .s(" bytes in memory")
            } else {
                self.name_err(e.status(), suffix, ": ").s(e.message())
            }
        })
    }
}

fn push_dims(mut e: Error, dims: &[usize]) -> Error {
    e.push_str("[");
    for (i, &d) in dims.iter().enumerate() {
        if i > 0 {
            e.push_str(", ");
        }
        e.push_num(d as u64);
    }
    e.push_str("]");
    e
}

fn named(status: Status, parts: &[&str], what: &str) -> Error {
    let mut e = err(status, "");
    for p in parts {
        e.push_str(p);
    }
    e.push_str(what);
    e
}

fn meta_err(key: &str, v: &str, what: &str) -> Error {
    err(Status::InvalidArgument, "metadata ")
        .s(key)
        .s(": '")
        .s(v)
        .s("' ")
        .s(what)
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

// ---------------------------------------------------------------------------------
// The JSON scanner
// ---------------------------------------------------------------------------------

/// Status of malformed files.
fn bad(what: &str) -> Error {
    err(Status::InvalidArgument, "safetensors: ").s(what)
}

fn num64(mut e: Error, v: u64) -> Error {
    e.push_num(v);
    e
}

fn json_err(what: &str, at: usize) -> Error {
    bad("header JSON: ").s(what).s(" at byte ").n(at)
}

fn tensor_err(name: JStr, what: &str) -> Error {
    bad("tensor ").s(name.text()).s(": ").s(what)
}

/// A JSON string as it appears in the header, between its quotes.
#[derive(Clone, Copy, Debug)]
struct JStr<'a> {
    /// Raw bytes between the quotes (valid UTF-8; escapes not decoded).
    raw: &'a [u8],
    /// True when `raw` holds at least one backslash escape.
    esc: bool,
}

/// One decoded piece of a JSON string.
enum Unit {
    /// UTF-8 bytes `.0[..len]`.
    Bytes([u8; 4], usize),
    /// End of the string.
    End,
    /// A malformed escape (never after validation).
    Bad,
}

impl<'a> JStr<'a> {
    /// The raw text, for messages.
    fn text(&self) -> &'a str {
        core::str::from_utf8(self.raw).unwrap_or("?")
    }

    /// True when the decoded string equals the concatenation of `parts`.
    fn eq_parts(&self, parts: &[&str]) -> bool {
        let mut want = parts.iter().flat_map(|p| p.bytes());
        if !self.esc {
            for &b in self.raw {
                if want.next() != Some(b) {
                    return false;
                }
            }
            return want.next().is_none();
        }
        let mut i = 0usize;
        loop {
            match decode_unit(self.raw, &mut i) {
                Unit::End => return want.next().is_none(),
                Unit::Bad => return false,
                Unit::Bytes(buf, len) => {
                    for &b in buf.get(..len).unwrap_or(&[]) {
                        if want.next() != Some(b) {
                            return false;
                        }
                    }
                }
            }
        }
    }
}

fn hex4(raw: &[u8], at: usize) -> Option<u32> {
    let digits = raw.get(at..at.checked_add(4)?)?;
    digits.iter().try_fold(0u32, |acc, &b| {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return None,
        };
        Some(acc * 16 + u32::from(d))
    })
}

/// Decodes the escape sequence starting at `raw[i] == b'\\'`; returns the char and
/// the index after the sequence. `None` for a malformed escape or a lone surrogate.
fn decode_escape(raw: &[u8], i: usize) -> Option<(char, usize)> {
    let kind = *raw.get(i.checked_add(1)?)?;
    let simple = match kind {
        b'"' => Some('"'),
        b'\\' => Some('\\'),
        b'/' => Some('/'),
        b'b' => Some('\u{8}'),
        b'f' => Some('\u{c}'),
        b'n' => Some('\n'),
        b'r' => Some('\r'),
        b't' => Some('\t'),
        b'u' => None,
        _ => return None,
    };
    if let Some(c) = simple {
        return Some((c, i.checked_add(2)?));
    }
    let hi = hex4(raw, i.checked_add(2)?)?;
    let after = i.checked_add(6)?;
    match hi {
        0xD800..=0xDBFF => {
            if raw.get(after) != Some(&b'\\') || raw.get(after.checked_add(1)?) != Some(&b'u') {
                return None;
            }
            let lo = hex4(raw, after.checked_add(2)?)?;
            if !(0xDC00..=0xDFFF).contains(&lo) {
                return None;
            }
            let cp = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
            Some((char::from_u32(cp)?, after.checked_add(6)?))
        }
        0xDC00..=0xDFFF => None,
        _ => Some((char::from_u32(hi)?, after)),
    }
}

/// UTF-8 encoding of `c` (written out so that no bounds check or panic path is linked).
fn utf8(c: char) -> ([u8; 4], usize) {
    let cp = c as u32;
    // Each `as u8` keeps the low 8 bits of a value already masked to fit.
    if cp < 0x80 {
        ([cp as u8, 0, 0, 0], 1)
    } else if cp < 0x800 {
        ([0xC0 | (cp >> 6) as u8, 0x80 | (cp & 0x3F) as u8, 0, 0], 2)
    } else if cp < 0x10000 {
        (
            [
                0xE0 | (cp >> 12) as u8,
                0x80 | ((cp >> 6) & 0x3F) as u8,
                0x80 | (cp & 0x3F) as u8,
                0,
            ],
            3,
        )
    } else {
        (
            [
                0xF0 | ((cp >> 18) & 0x07) as u8,
                0x80 | ((cp >> 12) & 0x3F) as u8,
                0x80 | ((cp >> 6) & 0x3F) as u8,
                0x80 | (cp & 0x3F) as u8,
            ],
            4,
        )
    }
}

/// The next decoded piece of `raw` at `*i`, advancing `*i`.
fn decode_unit(raw: &[u8], i: &mut usize) -> Unit {
    match raw.get(*i) {
        None => Unit::End,
        Some(b'\\') => match decode_escape(raw, *i) {
            Some((c, next)) => {
                *i = next;
                let (buf, len) = utf8(c);
                Unit::Bytes(buf, len)
            }
            None => Unit::Bad,
        },
        Some(&b) => {
            *i = i.saturating_add(1);
            Unit::Bytes([b, 0, 0, 0], 1)
        }
    }
}

/// A cursor over header bytes; every access is bounds-checked.
struct Cur<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cur<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn bump(&mut self) {
        self.i = self.i.saturating_add(1);
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.bump();
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.bump();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> Result<()> {
        if self.eat(c) {
            Ok(())
        } else {
            let what = match c {
                b'{' => "expected '{'",
                b'}' => "expected ',' or '}'",
                b'[' => "expected '['",
                b']' => "expected ',' or ']'",
                b':' => "expected ':'",
                b',' => "expected ','",
                _ => "unexpected character",
            };
            Err(json_err(what, self.i))
        }
    }

    /// A string at the cursor (which must be on its opening quote).
    fn string(&mut self) -> Result<JStr<'a>> {
        if !self.eat(b'"') {
            return Err(json_err("expected a string", self.i));
        }
        let start = self.i;
        let mut esc = false;
        loop {
            match self.peek() {
                None => return Err(json_err("unterminated string", start)),
                Some(b'"') => {
                    let raw = self
                        .b
                        .get(start..self.i)
                        .ok_or_else(|| json_err("bad string bounds", start))?;
                    self.bump();
                    return Ok(JStr { raw, esc });
                }
                Some(b'\\') => {
                    esc = true;
                    match decode_escape(self.b, self.i) {
                        Some((_, next)) => self.i = next,
                        None => return Err(json_err("bad escape in string", self.i)),
                    }
                }
                Some(c) if c < 0x20 => {
                    return Err(json_err("control character in string", self.i));
                }
                Some(_) => self.bump(),
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.bump();
        }
        self.i.saturating_sub(start)
    }

    /// A JSON number (grammar only); returns whether it is a plain non-negative integer.
    fn number(&mut self) -> Result<bool> {
        let start = self.i;
        let mut int = !self.eat(b'-');
        match self.peek() {
            Some(b'0') => self.bump(),
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(json_err("bad number", start)),
        }
        if self.eat(b'.') {
            int = false;
            if self.digits() == 0 {
                return Err(json_err("bad number", start));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            int = false;
            self.bump();
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            if self.digits() == 0 {
                return Err(json_err("bad number", start));
            }
        }
        Ok(int)
    }

    /// A non-negative integer fitting a u64.
    fn uint(&mut self) -> Result<u64> {
        let start = self.i;
        if !self.number()? {
            return Err(json_err("expected a non-negative integer", start));
        }
        let text = self.b.get(start..self.i).unwrap_or(&[]);
        text.iter()
            .try_fold(0u64, |acc, &b| {
                acc.checked_mul(10)?
                    .checked_add(u64::from(b.wrapping_sub(b'0')))
            })
            .ok_or_else(|| json_err("integer does not fit 64 bits", start))
    }

    fn literal(&mut self, lit: &[u8]) -> Result<()> {
        let end = self.i.saturating_add(lit.len());
        if self.b.get(self.i..end) == Some(lit) {
            self.i = end;
            Ok(())
        } else {
            Err(json_err("unexpected character", self.i))
        }
    }

    /// Any JSON value (grammar check only), at nesting `depth`.
    fn value(&mut self, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(json_err("nesting too deep", self.i));
        }
        self.ws();
        match self.peek() {
            Some(b'{') => {
                self.bump();
                self.ws();
                if self.eat(b'}') {
                    return Ok(());
                }
                loop {
                    self.ws();
                    self.string()?;
                    self.ws();
                    self.expect(b':')?;
                    self.value(depth.saturating_add(1))?;
                    self.ws();
                    if self.eat(b',') {
                        continue;
                    }
                    return self.expect(b'}');
                }
            }
            Some(b'[') => {
                self.bump();
                self.ws();
                if self.eat(b']') {
                    return Ok(());
                }
                loop {
                    self.value(depth.saturating_add(1))?;
                    self.ws();
                    if self.eat(b',') {
                        continue;
                    }
                    return self.expect(b']');
                }
            }
            Some(b'"') => self.string().map(|_| ()),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number().map(|_| ()),
            None => Err(json_err("unexpected end", self.i)),
            Some(_) => Err(json_err("unexpected character", self.i)),
        }
    }
}

/// A validated tensor entry.
#[derive(Clone, Copy, Debug)]
struct Info {
    dtype: FileDType,
    shape: [usize; MAX_RANK],
    rank: usize,
    /// Byte range in the data section, `begin <= end <= data length`.
    begin: usize,
    end: usize,
}

impl Info {
    fn len(&self) -> usize {
        self.end.saturating_sub(self.begin)
    }
}

enum Value<'a> {
    /// The `__metadata__` object's text, braces included (string values only).
    Meta(&'a [u8]),
    Tensor(Info),
}

struct Entry<'a> {
    name: JStr<'a>,
    value: Value<'a>,
}

/// Walks the header object, validating each entry as it goes.
struct Entries<'a> {
    cur: Cur<'a>,
    data_len: usize,
    /// 0: before '{', 1: inside, 2: finished.
    state: u8,
}

impl<'a> Entries<'a> {
    fn new(header: &'a [u8], data_len: usize) -> Entries<'a> {
        Entries {
            cur: Cur { b: header, i: 0 },
            data_len,
            state: 0,
        }
    }

    /// The next tensor entry, skipping `__metadata__`.
    fn next_tensor(&mut self) -> Result<Option<(JStr<'a>, Info)>> {
        loop {
            match self.next_entry()? {
                None => return Ok(None),
                Some(Entry {
                    name,
                    value: Value::Tensor(info),
                }) => return Ok(Some((name, info))),
                Some(_) => continue,
            }
        }
    }

    fn finish(&mut self) -> Result<Option<Entry<'a>>> {
        self.cur.ws();
        if self.cur.i != self.cur.b.len() {
            return Err(json_err(
                "trailing characters after the header object",
                self.cur.i,
            ));
        }
        self.state = 2;
        Ok(None)
    }

    fn next_entry(&mut self) -> Result<Option<Entry<'a>>> {
        let c = &mut self.cur;
        match self.state {
            0 => {
                c.ws();
                if !c.eat(b'{') {
                    return Err(json_err("the header must be a JSON object", c.i));
                }
                c.ws();
                if c.eat(b'}') {
                    return self.finish();
                }
                self.state = 1;
            }
            1 => {
                c.ws();
                if !c.eat(b',') {
                    c.expect(b'}')?;
                    return self.finish();
                }
            }
            _ => return Ok(None),
        }
        let c = &mut self.cur;
        c.ws();
        let name = c.string()?;
        c.ws();
        c.expect(b':')?;
        c.ws();
        let value = if name.eq_parts(&["__metadata__"]) {
            Value::Meta(self.metadata_object()?)
        } else {
            Value::Tensor(self.tensor_info(name)?)
        };
        Ok(Some(Entry { name, value }))
    }

    /// `{"key": "value", ...}` with string values only; returns its text.
    fn metadata_object(&mut self) -> Result<&'a [u8]> {
        let c = &mut self.cur;
        let start = c.i;
        c.expect(b'{')?;
        c.ws();
        if !c.eat(b'}') {
            loop {
                c.ws();
                c.string()?;
                c.ws();
                c.expect(b':')?;
                c.ws();
                if c.peek() != Some(b'"') {
                    return Err(json_err("__metadata__ values must be strings", c.i));
                }
                c.string()?;
                c.ws();
                if c.eat(b',') {
                    continue;
                }
                c.expect(b'}')?;
                break;
            }
        }
        c.b.get(start..c.i)
            .ok_or_else(|| json_err("bad metadata bounds", start))
    }

    /// `{"dtype": ..., "shape": [...], "data_offsets": [b, e]}` (other keys are
    /// skipped), validated against the data section.
    fn tensor_info(&mut self, name: JStr<'a>) -> Result<Info> {
        let data_len = self.data_len;
        let c = &mut self.cur;
        if c.peek() != Some(b'{') {
            return Err(tensor_err(name, "entry must be an object"));
        }
        c.bump();
        let mut dtype: Option<FileDType> = None;
        let mut shape: Option<([usize; MAX_RANK], usize)> = None;
        let mut offsets: Option<(u64, u64)> = None;
        c.ws();
        if !c.eat(b'}') {
            loop {
                c.ws();
                let key = c.string()?;
                c.ws();
                c.expect(b':')?;
                c.ws();
                if key.eq_parts(&["dtype"]) {
                    if dtype.is_some() {
                        return Err(tensor_err(name, "dtype given twice"));
                    }
                    if c.peek() != Some(b'"') {
                        return Err(tensor_err(name, "dtype must be a string"));
                    }
                    let s = c.string()?;
                    let d = FileDType::ALL
                        .iter()
                        .copied()
                        .find(|d| s.eq_parts(&[d.name()]))
                        .ok_or_else(|| tensor_err(name, "unknown dtype ").s(s.text()))?;
                    dtype = Some(d);
                } else if key.eq_parts(&["shape"]) {
                    if shape.is_some() {
                        return Err(tensor_err(name, "shape given twice"));
                    }
                    shape = Some(Self::shape(c, name)?);
                } else if key.eq_parts(&["data_offsets"]) {
                    if offsets.is_some() {
                        return Err(tensor_err(name, "data_offsets given twice"));
                    }
                    offsets = Some(Self::offsets(c, name)?);
                } else {
                    c.value(3)?;
                }
                c.ws();
                if c.eat(b',') {
                    continue;
                }
                c.expect(b'}')?;
                break;
            }
        }
        let dtype = dtype.ok_or_else(|| tensor_err(name, "dtype missing"))?;
        let (shape, rank) = shape.ok_or_else(|| tensor_err(name, "shape missing"))?;
        let (begin, end) = offsets.ok_or_else(|| tensor_err(name, "data_offsets missing"))?;
        let numel = shape
            .get(..rank)
            .unwrap_or(&[])
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| tensor_err(name, "element count overflows"))?;
        let bits = numel
            .checked_mul(dtype.bits())
            .ok_or_else(|| tensor_err(name, "byte count overflows"))?;
        if bits % 8 != 0 {
            return Err(tensor_err(name, "sub-byte dtype does not fill whole bytes"));
        }
        let nbytes = bits / 8;
        if begin > end {
            return Err(tensor_err(name, "data_offsets begin is after end"));
        }
        if end > data_len as u64 {
            return Err(num64(tensor_err(name, "data_offsets end "), end)
                .s(" is past the data section (")
                .n(data_len)
                .s(" bytes)"));
        }
        // end <= data_len, so both fit usize.
        let (begin, end) = (begin as usize, end as usize);
        if end - begin != nbytes {
            return Err(tensor_err(name, "data_offsets span ")
                .n(end - begin)
                .s(" bytes, shape and dtype need ")
                .n(nbytes));
        }
        Ok(Info {
            dtype,
            shape,
            rank,
            begin,
            end,
        })
    }

    fn shape(c: &mut Cur<'a>, name: JStr<'a>) -> Result<([usize; MAX_RANK], usize)> {
        let mut dims = [0usize; MAX_RANK];
        let mut rank = 0usize;
        if !c.eat(b'[') {
            return Err(tensor_err(name, "shape must be an array"));
        }
        c.ws();
        if c.eat(b']') {
            return Ok((dims, 0));
        }
        loop {
            c.ws();
            let d = c.uint()?;
            let d =
                usize::try_from(d).map_err(|_| tensor_err(name, "dimension does not fit usize"))?;
            match dims.get_mut(rank) {
                Some(slot) => *slot = d,
                None => return Err(tensor_err(name, "rank above 8")),
            }
            rank += 1;
            c.ws();
            if c.eat(b',') {
                continue;
            }
            c.expect(b']')?;
            return Ok((dims, rank));
        }
    }

    fn offsets(c: &mut Cur<'a>, name: JStr<'a>) -> Result<(u64, u64)> {
        if !c.eat(b'[') {
            return Err(tensor_err(
                name,
                "data_offsets must be an array of 2 integers",
            ));
        }
        c.ws();
        let begin = c.uint()?;
        c.ws();
        if !c.eat(b',') {
            return Err(tensor_err(
                name,
                "data_offsets must be an array of 2 integers",
            ));
        }
        c.ws();
        let end = c.uint()?;
        c.ws();
        if !c.eat(b']') {
            return Err(tensor_err(
                name,
                "data_offsets must be an array of 2 integers",
            ));
        }
        Ok((begin, end))
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::{String, ToString};
    use std::vec::Vec;
    use std::{format, vec};

    /// A file buffer whose start is 8-byte aligned (so alignment is deterministic).
    struct Buf {
        words: Vec<u64>,
        len: usize,
    }

    impl Buf {
        fn new(bytes: &[u8]) -> Buf {
            let mut words = vec![0u64; bytes.len().div_ceil(8) + 1];
            bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
            Buf {
                words,
                len: bytes.len(),
            }
        }
        fn bytes(&self) -> &[u8] {
            &bytemuck::cast_slice::<u64, u8>(&self.words)[..self.len]
        }
    }

    /// Test-only writer of safetensors files (header padded to 8 like the library).
    #[derive(Default)]
    struct Builder {
        tensors: Vec<(String, String, Vec<usize>, Vec<u8>)>,
        meta: Vec<(String, String)>,
    }

    fn f32_bytes(n: usize, seed: f32) -> Vec<u8> {
        (0..n)
            .flat_map(|i| (seed + i as f32 * 0.01).to_le_bytes())
            .collect()
    }

    impl Builder {
        fn f32(mut self, name: &str, shape: &[usize]) -> Self {
            let n: usize = shape.iter().product();
            let seed = self.tensors.len() as f32;
            self.tensors.push((
                name.to_string(),
                "F32".to_string(),
                shape.to_vec(),
                f32_bytes(n, seed),
            ));
            self
        }
        fn raw(mut self, name: &str, dtype: &str, shape: &[usize], data: Vec<u8>) -> Self {
            self.tensors
                .push((name.to_string(), dtype.to_string(), shape.to_vec(), data));
            self
        }
        fn meta(mut self, k: &str, v: &str) -> Self {
            self.meta.push((k.to_string(), v.to_string()));
            self
        }
        fn header_and_data(&self) -> (String, Vec<u8>) {
            let mut h = String::from("{");
            if !self.meta.is_empty() {
                h.push_str("\"__metadata__\":{");
                let items: Vec<String> = self
                    .meta
                    .iter()
                    .map(|(k, v)| format!("\"{k}\":\"{v}\""))
                    .collect();
                h.push_str(&items.join(","));
                h.push('}');
            }
            let mut data = Vec::new();
            for (name, dtype, shape, bytes) in &self.tensors {
                if h.len() > 1 {
                    h.push(',');
                }
                let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
                h.push_str(&format!(
                    "\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":[{}],\"data_offsets\":[{},{}]}}",
                    dims.join(","),
                    data.len(),
                    data.len() + bytes.len()
                ));
                data.extend_from_slice(bytes);
            }
            h.push('}');
            (h, data)
        }
        fn build(&self) -> Buf {
            let (mut h, data) = self.header_and_data();
            while (8 + h.len()) % 8 != 0 {
                h.push(' ');
            }
            file(&h, &data)
        }
    }

    fn file(header: &str, data: &[u8]) -> Buf {
        let mut v = (header.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(header.as_bytes());
        v.extend_from_slice(data);
        Buf::new(&v)
    }

    const P: &str = "model.layers.0.self_attn.";

    /// d 8, H 2, n 4, p 2, v 4, r 4, r_q 6 with q_norm, shared rope key.
    fn small_cfg() -> Config {
        let mut c = Config::deepseek_v3();
        c.hidden_size = 8;
        c.num_heads = 2;
        c.q_lora_rank = 6;
        c.kv_lora_rank = 4;
        c.qk_nope_head_dim = 4;
        c.qk_rope_head_dim = 2;
        c.v_head_dim = 4;
        c.max_seq_len = 16;
        c.max_tokens_per_call = 4;
        c
    }

    fn good(cfg: &Config, bias: bool) -> Builder {
        let dm = cfg.dims().unwrap();
        let mut b = Builder::default().meta("variant", "deepseek");
        if dm.rq == 0 {
            b = b.f32(&format!("{P}q_proj.weight"), &[dm.q_width, dm.d]);
        } else {
            b = b
                .f32(&format!("{P}q_a_proj.weight"), &[dm.rq, dm.d])
                .f32(&format!("{P}q_b_proj.weight"), &[dm.q_width, dm.rq]);
            if bias {
                b = b.f32(&format!("{P}q_a_proj.bias"), &[dm.rq]);
            }
        }
        if cfg.q_norm {
            b = b.f32(&format!("{P}q_a_layernorm.weight"), &[dm.rq]);
        }
        b = b
            .f32(
                &format!("{P}kv_a_proj_with_mqa.weight"),
                &[dm.kv_a_rows, dm.d],
            )
            .f32(&format!("{P}kv_a_layernorm.weight"), &[dm.r])
            .f32(&format!("{P}kv_b_proj.weight"), &[dm.kv_b_rows, dm.r])
            .f32(&format!("{P}o_proj.weight"), &[dm.d, dm.o_cols]);
        if bias {
            b = b
                .f32(&format!("{P}kv_a_proj_with_mqa.bias"), &[dm.kv_a_rows])
                .f32(&format!("{P}o_proj.bias"), &[dm.d]);
        }
        b
    }

    fn status_of<T: core::fmt::Debug>(r: Result<T>) -> (Status, String) {
        let e = r.unwrap_err();
        (e.status(), e.message().to_string())
    }

    #[test]
    fn good_file_binds_zero_copy() {
        let cfg = small_cfg();
        let buf = good(&cfg, true).build();
        let bytes = buf.bytes();
        let w = bind_weights(bytes, P, &cfg).unwrap();
        assert!(w.q_proj.is_none());
        let qa = w.q_a_proj.unwrap();
        assert_eq!((qa.rows, qa.cols), (6, 8));
        let ln = w.q_a_layernorm.unwrap();
        assert_eq!((ln.rows, ln.cols), (1, 6));
        assert_eq!(
            (w.kv_a_proj_with_mqa.rows, w.kv_a_proj_with_mqa.cols),
            (6, 8)
        );
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
        // Values as written: tensor index 5 (after q_a, q_b, bias, q_a_layernorm,
        // kv_a) has seed 5.0 in the builder order... check via lookup instead.
        let st = SafeTensors::parse(bytes).unwrap();
        let v = st.tensor(&format!("{P}kv_b_proj.weight")).unwrap().unwrap();
        assert_eq!(v.dims(), &[16, 4]);
        assert_eq!(v.numel(), 64);
        let Elems::F32(e) = v.elems().unwrap() else {
            panic!("f32 expected")
        };
        assert_eq!(e.as_ptr(), s.as_ptr());
        assert_eq!(e[1], s[1]);
        assert_eq!(st.len(), 10);
        assert_eq!(st.metadata("variant"), Some("deepseek"));
        assert_eq!(st.metadata("nope"), None);
        assert!(st.tensor("absent").unwrap().is_none());
    }

    #[test]
    fn q_proj_and_half_precision_bind() {
        let mut cfg = small_cfg();
        cfg.q_lora_rank = 0;
        cfg.q_norm = false;
        let dm = cfg.dims().unwrap();
        let mut b = good(&cfg, false);
        // Replace kv_b_proj by a BF16 tensor and o_proj by F16.
        for t in b.tensors.iter_mut() {
            if t.0.ends_with("kv_b_proj.weight") {
                t.1 = "BF16".to_string();
                t.3 = [0x80u8, 0x3f].repeat(dm.kv_b_rows * dm.r); // 1.0
            }
            if t.0.ends_with("o_proj.weight") {
                t.1 = "F16".to_string();
                t.3 = [0x00u8, 0x3c].repeat(dm.d * dm.o_cols); // 1.0
            }
        }
        let buf = b.build();
        let w = bind_weights(buf.bytes(), P, &cfg).unwrap();
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

    #[test]
    fn header_length_errors() {
        // Truncated: fewer than 8 bytes.
        let (s, m) = status_of(SafeTensors::parse(&[1, 0, 0]));
        assert_eq!(s, Status::InvalidArgument);
        assert!(m.contains("shorter than the 8-byte"), "{m}");
        // Header length past the end.
        let mut v = 100u64.to_le_bytes().to_vec();
        v.extend_from_slice(b"{}");
        let (s, m) = status_of(SafeTensors::parse(&v));
        assert_eq!(s, Status::InvalidArgument);
        assert!(m.contains("header length 100 runs past the end"), "{m}");
        // Absurd lengths, including ones that overflow when 8 is added.
        for n in [u64::MAX, u64::MAX - 7, MAX_HEADER_BYTES + 1] {
            let mut v = n.to_le_bytes().to_vec();
            v.extend_from_slice(b"{}");
            assert_eq!(status_of(SafeTensors::parse(&v)).0, Status::InvalidArgument);
        }
        // Empty header and the smallest valid file.
        assert_eq!(
            status_of(SafeTensors::parse(&0u64.to_le_bytes())).0,
            Status::InvalidArgument
        );
        let ok = file("{}", &[]);
        let st = SafeTensors::parse(ok.bytes()).unwrap();
        assert!(st.is_empty());
        assert_eq!(st.metadata("x"), None);
        // Not UTF-8.
        let bad = file("{\"\u{e9}\"", &[]);
        let mut v = bad.bytes().to_vec();
        v[10] = 0xff;
        let (_, m) = status_of(SafeTensors::parse(&v));
        assert!(m.contains("not UTF-8"), "{m}");
    }

    #[test]
    fn bad_json_is_rejected() {
        let ent = r#""t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}"#;
        let cases = [
            "",
            " ",
            "[]",
            "{",
            "}",
            "{\"t\"}",
            "{\"t\":}",
            "{,}",
            "{\"a\":1,}",
            "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},}",
            "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}} x",
            "{\"t\":{\"dtype\":\"F32\",\"shape\":[01],\"data_offsets\":[0,4]}}",
            "{\"t\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}",
            "{\"t\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}",
            "{\"t\":{\"dtype\":\"F32\",\"shape\":[1e0],\"data_offsets\":[0,4]}}",
            "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}",
            "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}",
            "{\"t\":{\"dtype\":\"F32\",\"shape\":[1]}}",
            "{\"t\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}",
            "{\"t\":{\"shape\":[1],\"data_offsets\":[0,4]}}",
            "{\"t\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
            "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":tru}}",
            "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1.}}",
            "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":\"\\q\"}}",
            "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":\"\\ud800\"}}",
            "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":\"\t\"}}",
            "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":\"abc}}",
            "{\"t\":[1]}",
            "{\"t\":{\"dtype\":1,\"shape\":[1],\"data_offsets\":[0,4]}}",
            "{\"__metadata__\":{\"a\":1}}",
            "{\"__metadata__\":[]}",
            "{\"__metadata__\":{},\"__metadata__\":{}}",
            "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,18446744073709551616]}}",
            "{\"t\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}",
        ];
        for h in cases {
            let buf = file(h, &[0u8; 4]);
            let r = SafeTensors::parse(buf.bytes());
            assert_eq!(status_of(r).0, Status::InvalidArgument, "accepted: {h}");
        }
        // Deep nesting in an unknown field: bounded, an error, no stack overflow.
        let deep = format!(
            "{{\"t\":{{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":{}{}}}}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let (s, m) = status_of(SafeTensors::parse(file(&deep, &[0u8; 4]).bytes()));
        assert_eq!(s, Status::InvalidArgument);
        assert!(m.contains("nesting too deep"), "{m}");
        // The same shapes, well-formed, pass (so the cases above fail for their reason).
        let fine = format!(
            "{{ {ent} , \"__metadata__\" : {{ \"k\" : \"v\\n\" }}, \"u\":{{\"x\":[true,false,null,-1.5e+3,{{\"y\":\"\\u00e9\\ud83d\\ude00\"}}],\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,4]}} }}\n\r\t "
        );
        let buf = file(&fine, &[0u8; 4]);
        let st = SafeTensors::parse(buf.bytes()).unwrap();
        assert_eq!(st.len(), 2);
        // The value has an escape: metadata() gives None rather than the raw text.
        assert_eq!(st.metadata("k"), None);
        let u = st.tensor("u").unwrap().unwrap();
        assert_eq!(
            (u.dtype, u.rank, u.numel(), u.data.len()),
            (FileDType::U8, 1, 0, 0)
        );
    }

    #[test]
    fn offsets_out_of_range_overlap_and_size() {
        let one = |offs: &str, shape: &str, dtype: &str, data: usize| {
            let h = format!(
                "{{\"t\":{{\"dtype\":\"{dtype}\",\"shape\":{shape},\"data_offsets\":{offs}}}}}"
            );
            let buf = file(&h, &vec![0u8; data]);
            let r = SafeTensors::parse(buf.bytes()).map(|_| ());
            r.map_err(|e| (e.status(), e.message().to_string()))
        };
        assert!(one("[0,8]", "[2]", "F32", 8).is_ok());
        let (s, m) = one("[0,12]", "[3]", "F32", 8).unwrap_err();
        assert_eq!(s, Status::InvalidArgument);
        assert!(
            m.contains("tensor t: data_offsets end 12 is past the data section (8 bytes)"),
            "{m}"
        );
        let (_, m) = one("[8,4]", "[1]", "F32", 8).unwrap_err();
        assert!(m.contains("begin is after end"), "{m}");
        let (_, m) = one("[0,8]", "[3]", "F32", 8).unwrap_err();
        assert!(m.contains("span 8 bytes, shape and dtype need 12"), "{m}");
        // Trailing bytes in the data section (a hole at the end).
        let (_, m) = one("[0,4]", "[1]", "F32", 8).unwrap_err();
        assert!(m.contains("cover 4 bytes of a data section of 8"), "{m}");
        // Element count overflow.
        let (_, m) = one("[0,8]", "[4294967296,4294967296,16]", "F32", 8).unwrap_err();
        assert!(m.contains("overflows"), "{m}");
        // Sub-byte dtypes: 3 F4 values are 1.5 bytes.
        let (_, m) = one("[0,1]", "[3]", "F4", 1).unwrap_err();
        assert!(m.contains("whole bytes"), "{m}");
        assert!(one("[0,1]", "[2]", "F4", 1).is_ok());
        assert!(one("[0,4]", "[]", "I32", 4).is_ok());
        let (_, m) = one("[0,4]", "[1]", "F33", 4).unwrap_err();
        assert!(m.contains("unknown dtype F33"), "{m}");

        // Two tensors: overlapping (out of order) and in reverse order (fine).
        let two = |a: &str, b: &str, data: usize| {
            let h = format!(
                "{{\"a\":{{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":{a}}},\"b\":{{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":{b}}}}}"
            );
            let buf = file(&h, &vec![0u8; data]);
            SafeTensors::parse(buf.bytes())
                .map(|st| st.len())
                .map_err(|e| (e.status(), e.message().to_string()))
        };
        assert_eq!(two("[0,8]", "[8,16]", 16), Ok(2));
        assert_eq!(two("[8,16]", "[0,8]", 16), Ok(2));
        let (s, m) = two("[0,8]", "[4,12]", 12).unwrap_err();
        assert_eq!(s, Status::InvalidArgument);
        assert!(m.contains("cover 16 bytes of a data section of 12"), "{m}");
        // Same total but overlapping and leaving a hole: only the pairwise check sees it.
        let (_, m) = two("[4,12]", "[0,8]", 16).unwrap_err();
        assert!(
            m.contains("cover 16 bytes of a data section of 16") || m.contains("overlaps"),
            "{m}"
        );
        let h = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]},\"z\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[12,16]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}";
        let (s, m) = status_of(SafeTensors::parse(file(h, &[0u8; 16]).bytes()));
        assert_eq!(s, Status::InvalidArgument);
        assert!(m.contains("tensor a: data overlaps"), "{m}");
    }

    #[test]
    fn unknown_dtype_is_readable_but_not_bindable() {
        let cfg = small_cfg();
        let mut b = good(&cfg, false);
        for t in b.tensors.iter_mut() {
            if t.0.ends_with("kv_a_layernorm.weight") {
                t.1 = "I32".to_string();
            }
        }
        let buf = b.build();
        let st = SafeTensors::parse(buf.bytes()).unwrap();
        let v = st
            .tensor(&format!("{P}kv_a_layernorm.weight"))
            .unwrap()
            .unwrap();
        assert_eq!(v.dtype, FileDType::I32);
        assert_eq!(v.dtype.to_dtype(), None);
        assert_eq!(status_of(v.elems()).0, Status::WeightDtype);
        let (s, m) = status_of(bind_weights(buf.bytes(), P, &cfg));
        assert_eq!(s, Status::WeightDtype);
        assert_eq!(
            m,
            "model.layers.0.self_attn.kv_a_layernorm.weight: dtype I32 is not supported (F32, F16 or BF16)"
        );
        // F64 too.
        let mut b = good(&cfg, false);
        for t in b.tensors.iter_mut() {
            if t.0.ends_with("o_proj.weight") {
                t.1 = "F64".to_string();
                t.2 = vec![8, 4];
            }
        }
        let (s, m) = status_of(bind_weights(b.build().bytes(), P, &cfg));
        assert_eq!(s, Status::WeightDtype);
        assert!(m.contains("o_proj.weight: dtype F64"), "{m}");
    }

    #[test]
    fn misaligned_tensor_names_itself() {
        let cfg = small_cfg();
        let dm = cfg.dims().unwrap();
        // A 1-byte U8 tensor first pushes every F32 tensor off 4-byte alignment.
        let mut b = Builder::default().raw("pad", "U8", &[1], vec![7]);
        b.tensors.extend(good(&cfg, false).tensors);
        let buf = b.build();
        let (s, m) = status_of(bind_weights(buf.bytes(), P, &cfg));
        assert_eq!(s, Status::Misaligned);
        assert!(
            m.starts_with("model.layers.0.self_attn.q_a_proj.weight: F32 data (data offset 1) is not aligned to 4"),
            "{m}"
        );
        // Reading it as raw bytes still works.
        let st = SafeTensors::parse(buf.bytes()).unwrap();
        let v = st.tensor(&format!("{P}q_a_proj.weight")).unwrap().unwrap();
        assert_eq!(v.data.len(), dm.rq * dm.d * 4);
        assert_eq!(status_of(v.elems()).0, Status::Misaligned);
        // A header not padded to 8 misaligns the whole data section.
        let (h, data) = good(&cfg, false).header_and_data();
        let mut h = h;
        while (8 + h.len()) % 4 != 1 {
            h.push(' ');
        }
        let (s, _) = status_of(bind_weights(file(&h, &data).bytes(), P, &cfg));
        assert_eq!(s, Status::Misaligned);
    }

    #[test]
    fn wrong_shape_missing_and_unused() {
        let cfg = small_cfg();
        let mut b = good(&cfg, true);
        for t in b.tensors.iter_mut() {
            if t.0.ends_with("kv_b_proj.weight") {
                t.2 = vec![4, 16];
            }
        }
        let (s, m) = status_of(bind_weights(b.build().bytes(), P, &cfg));
        assert_eq!(s, Status::WeightShape);
        assert_eq!(
            m,
            "model.layers.0.self_attn.kv_b_proj.weight: expected [16, 4], got [4, 16]"
        );

        // 1-D norm given as 2-D.
        let mut b = good(&cfg, true);
        for t in b.tensors.iter_mut() {
            if t.0.ends_with("o_proj.bias") {
                t.2 = vec![1, 8];
            }
        }
        let (s, m) = status_of(bind_weights(b.build().bytes(), P, &cfg));
        assert_eq!(s, Status::WeightShape);
        assert!(m.ends_with("o_proj.bias: expected [8], got [1, 8]"), "{m}");

        // Missing.
        let mut b = good(&cfg, false);
        b.tensors.retain(|t| !t.0.ends_with("q_a_layernorm.weight"));
        let (s, m) = status_of(bind_weights(b.build().bytes(), P, &cfg));
        assert_eq!(s, Status::WeightShape);
        assert_eq!(
            m,
            "model.layers.0.self_attn.q_a_layernorm.weight: missing, expected [6]"
        );
        // Another prefix finds nothing.
        let (s, m) = status_of(bind_weights(
            good(&cfg, false).build().bytes(),
            "model.layers.1.self_attn.",
            &cfg,
        ));
        assert_eq!(s, Status::WeightShape);
        assert!(
            m.starts_with("model.layers.1.self_attn.q_a_proj.weight: missing, expected [6, 8]"),
            "{m}"
        );

        // Present but unused: q_a_layernorm with q_norm 0, q_proj next to q_a_proj.
        let mut c2 = cfg;
        c2.q_norm = false;
        let (s, m) = status_of(bind_weights(good(&cfg, false).build().bytes(), P, &c2));
        assert_eq!(s, Status::WeightShape);
        assert!(
            m.contains("q_a_layernorm.weight: in the file but unused"),
            "{m}"
        );
        let b = good(&cfg, false).f32(&format!("{P}q_proj.weight"), &[12, 8]);
        let (s, m) = status_of(bind_weights(b.build().bytes(), P, &cfg));
        assert_eq!(s, Status::WeightShape);
        assert!(m.contains("q_proj.weight: in the file but unused"), "{m}");

        // A config that does not validate.
        let mut c3 = cfg;
        c3.qk_rope_head_dim = 3;
        let (s, _) = status_of(bind_weights(good(&cfg, false).build().bytes(), P, &c3));
        assert_eq!(s, Status::InvalidConfig);
        // Malformed file through bind_weights.
        let (s, _) = status_of(bind_weights(&[0u8; 4], P, &cfg));
        assert_eq!(s, Status::InvalidArgument);
    }

    #[test]
    fn utf8_matches_core() {
        for c in [
            '\0',
            'a',
            '\u{7f}',
            '\u{80}',
            '\u{e9}',
            '\u{7ff}',
            '\u{800}',
            '\u{ffff}',
            '\u{10000}',
            '\u{1f600}',
            '\u{10ffff}',
        ] {
            let mut want = [0u8; 4];
            let w = c.encode_utf8(&mut want).len();
            assert_eq!(utf8(c), (want, w), "{c:?}");
        }
    }

    #[test]
    fn escaped_and_duplicate_names() {
        // "model.layers.0.self_attn.o_proj.weight" with escapes in the key.
        let h = "{\"a\\u002eb\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"\\u00e9\\ud83d\\ude00\\\"\\\\\\/\\n\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]},\"plain\":{\"dtype\":\"F\\u0033\\u0032\",\"shape\":[1],\"data_offsets\":[8,12]}}";
        let buf = file(h, &[0u8; 12]);
        let st = SafeTensors::parse(buf.bytes()).unwrap();
        assert!(st.tensor("a.b").unwrap().is_some());
        assert!(st.tensor("a\\u002eb").unwrap().is_none());
        assert!(st.tensor("a.").unwrap().is_none());
        assert!(st.tensor("a.bc").unwrap().is_none());
        let v = st.tensor("\u{e9}\u{1f600}\"\\/\n").unwrap().unwrap();
        assert_eq!(v.data.as_ptr(), st.data()[4..].as_ptr());
        assert_eq!(st.tensor("plain").unwrap().unwrap().dtype, FileDType::F32);

        // The same name twice (once escaped): lookups refuse to pick one.
        let h = "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"\\u0078\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}";
        let buf = file(h, &[0u8; 8]);
        let st = SafeTensors::parse(buf.bytes()).unwrap();
        let (s, m) = status_of(st.tensor("x"));
        assert_eq!(s, Status::InvalidArgument);
        assert_eq!(m, "x: name appears twice in the header");

        // Duplicate metadata keys and escaped values.
        let h = "{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\",\"e\":\"a\\tb\",\"hidden_size\":\"1\\u0032\"}}";
        let buf = file(h, &[]);
        let st = SafeTensors::parse(buf.bytes()).unwrap();
        assert_eq!(st.metadata("k"), None);
        assert_eq!(st.metadata("e"), None);
        let (s, m) = status_of(config_from_metadata(&st, &Config::tutorial()));
        assert_eq!(s, Status::InvalidArgument);
        assert!(m.contains("hidden_size: value holds escapes"), "{m}");
    }

    #[test]
    fn config_from_metadata_overrides_fields() {
        let b = Builder::default()
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
        let st = SafeTensors::parse(buf.bytes()).unwrap();
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

        // No metadata at all: the base comes back unchanged.
        let empty = file("{}", &[]);
        let st = SafeTensors::parse(empty.bytes()).unwrap();
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
            let buf = Builder::default().meta(k, v).build();
            let st = SafeTensors::parse(buf.bytes()).unwrap();
            let (s, m) = status_of(config_from_metadata(&st, &Config::tutorial()));
            assert_eq!(s, Status::InvalidArgument, "{k}={v}");
            assert!(m.starts_with(&format!("metadata {k}: '{v}'")), "{m}");
        }
    }

    #[test]
    #[cfg_attr(miri, ignore)] // a 1025-entry header: minutes under Miri
    fn many_unordered_tensors_are_capped() {
        // MAX_UNORDERED_TENSORS + 1 zero-size tensors plus one real one listed last
        // at offset 0: out of order, so the pairwise check would be needed.
        let n = MAX_UNORDERED_TENSORS + 1;
        let mut h = String::from("{");
        for i in 0..n {
            h.push_str(&format!(
                "\"t{i}\":{{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,4]}},"
            ));
        }
        h.push_str("\"last\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}");
        let (s, m) = status_of(SafeTensors::parse(file(&h, &[0u8; 4]).bytes()));
        assert_eq!(s, Status::InvalidArgument);
        assert!(m.contains("not in header order"), "{m}");

        // Two tensors out of order, but a header padded past 256 KiB.
        let mut h = String::from(
            "{\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]},\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}",
        );
        assert!(SafeTensors::parse(file(&h, &[0u8; 8]).bytes()).is_ok());
        h.push_str(&" ".repeat(MAX_UNORDERED_HEADER_BYTES));
        let (s, m) = status_of(SafeTensors::parse(file(&h, &[0u8; 8]).bytes()));
        assert_eq!(s, Status::InvalidArgument);
        assert!(m.contains("2 tensors, 262"), "{m}");
    }

    #[test]
    #[cfg_attr(miri, ignore)] // thousands of cases: slow under Miri
    fn mutated_files_never_panic() {
        // Every truncation and a sweep of single-byte corruptions of a good file.
        let cfg = small_cfg();
        let buf = good(&cfg, true).meta("hidden_size", "8").build();
        let good_bytes = buf.bytes().to_vec();
        for cut in 0..good_bytes.len() {
            let b = Buf::new(&good_bytes[..cut]);
            assert!(bind_weights(b.bytes(), P, &cfg).is_err());
        }
        let header_end = 8 + u64::from_le_bytes(good_bytes[..8].try_into().unwrap()) as usize;
        for pos in 0..header_end {
            for val in [
                0u8, b'"', b'\\', b'{', b'}', b'[', b']', b',', b':', b'9', 0xff, b' ',
            ] {
                let mut v = good_bytes.clone();
                v[pos] = val;
                let b = Buf::new(&v);
                if let Ok(st) = SafeTensors::parse(b.bytes()) {
                    let _ = st.weights(P, &cfg);
                    let _ = config_from_metadata(&st, &cfg);
                    let _ = st.metadata("variant");
                }
            }
        }
    }
}
