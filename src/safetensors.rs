//! `mla_weights_from_safetensors`: binds the weights of one layer zero-copy
//! from a safetensors file in memory.
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
