//! `mla_weights_from_safetensors` and `mla_weights_from_checkpoint`: bind the
//! weights of one layer zero-copy from a safetensors file in memory.
//!
//! The bytes are borrowed: the `mla_weights` written points into them, so they
//! must outlive every engine built from it. The parsing and the shape and dtype
//! checks are `mla_core::safetensors`; this module only unpacks the C arguments
//! through the boundary (conventions: the README's "C API" section, "Rules").

use core::ffi::{c_char, c_void};

use mla_core::status::{err, Status};

use crate::boundary::{self, Slot};
use crate::types::{mla_config, mla_status, mla_weights, read_config};

/// Binds weights zero-copy from a safetensors file held in memory (`bytes`,
/// `len`; e.g. mmap-ed, 8-byte aligned start recommended): `*out` points into
/// `bytes`, which must outlive the engine. Tensors are looked up by Hugging Face
/// name under `prefix` (NUL-terminated UTF-8, e.g. "model.layers.0.self_attn.";
/// NULL = ""), with shapes checked against `*c`.
/// Errors: MLA_ERR_NULL_POINTER, MLA_ERR_ABI_MISMATCH, MLA_ERR_INVALID_CONFIG,
/// MLA_ERR_INVALID_ARGUMENT (prefix not UTF-8, malformed file), MLA_ERR_WEIGHT_SHAPE,
/// MLA_ERR_WEIGHT_DTYPE, MLA_ERR_MISALIGNED, MLA_ERR_UNSUPPORTED (`*out` written only on
/// success).
///
/// # Safety
/// `bytes` is NULL or holds `len` readable bytes that outlive the weights; `prefix` is NULL
/// or NUL-terminated; `c` is NULL or points to an `mla_config`; `out` is NULL or points to
/// a writable `mla_weights`.
#[no_mangle]
pub unsafe extern "C" fn mla_weights_from_safetensors(
    bytes: *const c_void,
    len: usize,
    prefix: *const c_char,
    c: *const mla_config,
    out: *mut mla_weights,
) -> mla_status {
    let what = "mla_weights_from_safetensors";
    let null = "mla_weights_from_safetensors: NULL argument";
    // SAFETY: every pointer is NULL or what its type says (C contract).
    unsafe {
        boundary::produce(Slot::Cpu, what, out, null, || {
            if bytes.is_null() {
                return Err(err(Status::NullPointer, null));
            }
            let cfg = read_config(c)?;
            let prefix = match boundary::c_str(prefix) {
                None => "",
                Some(p) => p
                    .to_str()
                    .map_err(|_| err(Status::InvalidArgument, "prefix is not UTF-8"))?,
            };
            // 'static stands for "as long as the caller keeps the bytes" (C contract).
            let file: &'static [u8] = boundary::slice(bytes.cast::<u8>(), len)
                .ok_or_else(|| err(Status::InvalidArgument, "len is too large"))?;
            let weights = mla_core::safetensors::bind_weights(file, prefix, &cfg)?;
            mla_weights::from_weights(&weights)
        })
    }
}

/// Binds layer `layer` of a Hugging Face checkpoint zero-copy, with its family's
/// tensor names (docs/families.md section 4): `bytes`/`len` is the safetensors
/// file (e.g. mmap-ed `model.safetensors`), `json`/`json_len` the model's
/// `config.json`, `*c` the layer's config from `mla_config_from_hf_json` (same
/// json and layer; capacity, dtypes and attention mode may be changed since).
/// The family and the layer's prefix come from `json` (e.g.
/// `model.layers.3.self_attn.`, `layers.3.attention.` for Mistral Large 3,
/// `model.layers.1.self_attn.0.` for LongCat-Flash); model-wide tensors (LeRoPE
/// `lerope.alpha`) by their full name. `*out` points into `bytes`, which must
/// outlive the engine. So "config.json + model.safetensors + a layer index" is:
///
/// ```c
/// mla_config_from_hf_json(json, json_len, L, max_seq, per_call, &c);
/// mla_weights_from_checkpoint(st, st_len, json, json_len, L, &c, &w);
/// mla_engine_size(&c, &n);  mla_engine_init(&c, &w, mem, n, &e);
/// ```
///
/// Errors (`*out` written only on success; text in `mla_last_error(NULL)`): as
/// `mla_weights_from_safetensors`, plus MLA_ERR_INVALID_CONFIG / MLA_ERR_UNSUPPORTED
/// for the json as `mla_config_from_hf_json` says. A missing tensor's message
/// gives its full checkpoint name and what the layer's prefix holds.
///
/// # Safety
/// `bytes` is NULL or holds `len` readable bytes that outlive the weights; `json` is
/// NULL or holds `json_len` readable bytes; `c` is NULL or points to an `mla_config`;
/// `out` is NULL or points to a writable `mla_weights`.
#[no_mangle]
pub unsafe extern "C" fn mla_weights_from_checkpoint(
    bytes: *const c_void,
    len: usize,
    json: *const c_char,
    json_len: usize,
    layer: u32,
    c: *const mla_config,
    out: *mut mla_weights,
) -> mla_status {
    let what = "mla_weights_from_checkpoint";
    let null = "mla_weights_from_checkpoint: NULL argument";
    // SAFETY: every pointer is NULL or what its type says (C contract).
    unsafe {
        boundary::produce(Slot::Cpu, what, out, null, || {
            if bytes.is_null() || json.is_null() {
                return Err(err(Status::NullPointer, null));
            }
            let cfg = read_config(c)?;
            let text = boundary::slice(json.cast::<u8>(), json_len)
                .ok_or_else(|| err(Status::InvalidArgument, "json_len is too large"))?;
            let info = mla_core::config::hf_layer_info(text, layer)?;
            // 'static stands for "as long as the caller keeps the bytes" (C contract).
            let file: &'static [u8] = boundary::slice(bytes.cast::<u8>(), len)
                .ok_or_else(|| err(Status::InvalidArgument, "len is too large"))?;
            let weights = mla_core::safetensors::bind_layer(file, &cfg, &info)?;
            mla_weights::from_weights(&weights)
        })
    }
}
