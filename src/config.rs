//! Configuration entry points: the presets, `mla_config_validate`, and the size
//! queries `mla_cache_bytes_per_token` and `mla_engine_size`.
//!
//! Each function unpacks its arguments through the boundary and asks
//! `mla_core::Config`. A config is accepted by all three checking functions
//! alike: every field valid, every weight shape describable by `mla_tensor`, and
//! the engine memory, handle included, addressable (`isize`). Failures leave
//! their text in `mla_last_error(NULL)` on the calling thread and leave the
//! outputs alone (except `msg`, which always receives the message). The
//! README's "C API" section, "Rules", has the conventions in full.

use core::ffi::c_char;

use mla_core::config::Config;
use mla_core::status::{err, Result, Status};

use crate::boundary::{self, Slot};
use crate::engine::engine_size;
use crate::types::{mla_config, mla_status, read_config, MLA_ERR_NULL_POINTER};

/// Reads `*c` and checks it completely; returns the config and its engine size.
///
/// # Safety
/// As [`read_config`].
unsafe fn checked(c: *const mla_config) -> Result<(Config, usize)> {
    // SAFETY: forwarded from this function's contract.
    let cfg = unsafe { read_config(c) }?;
    cfg.validate()?;
    Ok((cfg, engine_size(&cfg)?))
}

/// Fills every field of `*c` (struct_size included) with the seed tutorial's
/// config: d 256, H 8, r_q 192, r 128, n = v = 32, p 64, per-head rope key,
/// half layout, no query norm, 1024 tokens, 128 per call. NULL: does nothing.
///
/// # Safety
/// `c` is NULL or points to a writable `mla_config`.
#[no_mangle]
pub unsafe extern "C" fn mla_config_tutorial(c: *mut mla_config) {
    // SAFETY: NULL or a writable mla_config (C contract).
    unsafe { boundary::write(c, mla_config::from_config(&Config::tutorial())) }
}

/// Fills every field of `*c` with DeepSeek-V2-Lite's attention config (d 2048,
/// H 16, no query LoRA, r 512, n 128, p 64, v 128, YaRN s 40 / 4096, mscale 0.707;
/// 4096 tokens, 256 per call). NULL: does nothing.
///
/// # Safety
/// `c` is NULL or points to a writable `mla_config`.
#[no_mangle]
pub unsafe extern "C" fn mla_config_deepseek_v2_lite(c: *mut mla_config) {
    // SAFETY: NULL or a writable mla_config (C contract).
    unsafe { boundary::write(c, mla_config::from_config(&Config::deepseek_v2_lite())) }
}

/// Fills every field of `*c` with DeepSeek-V3's attention config (d 7168, H 128,
/// r_q 1536 with RMSNorm, r 512, n 128, p 64, v 128, YaRN s 40 / 4096;
/// 4096 tokens, 256 per call). NULL: does nothing.
///
/// # Safety
/// `c` is NULL or points to a writable `mla_config`.
#[no_mangle]
pub unsafe extern "C" fn mla_config_deepseek_v3(c: *mut mla_config) {
    // SAFETY: NULL or a writable mla_config (C contract).
    unsafe { boundary::write(c, mla_config::from_config(&Config::deepseek_v3())) }
}

/// Fills `*out` with the config of attention layer `layer` (transformers'
/// `layer_idx`) of the Hugging Face model whose `config.json` is `json`
/// (`json_len` bytes of UTF-8, no NUL needed), with cache capacity `max_seq_len`
/// and `max_tokens_per_call` tokens per call. Every field is set: dims, eps (as
/// the family's module uses it), RoPE (type, factors, final cos/sin factor),
/// softmax scale, and the ABI 2 mechanisms. Families and keys: docs/families.md.
/// Bind the same layer's weights with `mla_weights_from_checkpoint`.
/// Errors (text in `mla_last_error(NULL)`; `*out` written only on success):
/// MLA_ERR_NULL_POINTER, MLA_ERR_INVALID_CONFIG (malformed JSON, a missing or
/// mistyped key, an absurd value, `layer` out of range: the message names the
/// key), MLA_ERR_UNSUPPORTED (an unknown `model_type`, a layer that is not MLA,
/// e.g. "layer 0 of kimi_linear is linear_attention, not MLA", or a mechanism the
/// engine does not run in this build).
///
/// # Safety
/// `json` is NULL or holds `json_len` readable bytes; `out` is NULL or points to a
/// writable `mla_config`.
#[no_mangle]
pub unsafe extern "C" fn mla_config_from_hf_json(
    json: *const c_char,
    json_len: usize,
    layer: u32,
    max_seq_len: u32,
    max_tokens_per_call: u32,
    out: *mut mla_config,
) -> mla_status {
    let what = "mla_config_from_hf_json";
    let null = "mla_config_from_hf_json: NULL argument";
    // SAFETY: `json` holds `json_len` bytes and `out` is NULL or writable (C contract).
    unsafe {
        boundary::produce(Slot::Cpu, what, out, null, || {
            if json.is_null() {
                return Err(err(Status::NullPointer, null));
            }
            let text = boundary::slice(json.cast::<u8>(), json_len)
                .ok_or_else(|| err(Status::InvalidArgument, "json_len is too large"))?;
            let (cfg, _) = Config::from_hf_json(text, layer, max_seq_len, max_tokens_per_call)?;
            cfg.check_supported()?;
            Ok(mla_config::from_config(&cfg))
        })
    }
}

/// Checks every field of `*c`. `msg` receives a NUL-terminated message naming
/// the offending field ("" when valid), cut to `msg_len` bytes; `msg` may be NULL
/// when `msg_len` is 0.
/// Returns MLA_OK, MLA_ERR_INVALID_CONFIG, MLA_ERR_ABI_MISMATCH or MLA_ERR_NULL_POINTER
/// (`c` NULL, or `msg` NULL with `msg_len` > 0).
///
/// # Safety
/// `c` is NULL or points to an `mla_config`; `msg` is NULL or holds `msg_len` writable
/// bytes.
#[no_mangle]
pub unsafe extern "C" fn mla_config_validate(
    c: *const mla_config,
    msg: *mut c_char,
    msg_len: usize,
) -> mla_status {
    if msg.is_null() && msg_len != 0 {
        let r: Result<()> = Err(err(
            Status::NullPointer,
            "mla_config_validate: msg is NULL, msg_len > 0",
        ));
        boundary::record_failure(Slot::Cpu, &r);
        return MLA_ERR_NULL_POINTER;
    }
    // SAFETY: `c` is NULL or points to an mla_config (C contract).
    let r = boundary::guard("mla_config_validate", || unsafe { checked(c) }.map(|_| ()));
    boundary::record_failure(Slot::Cpu, &r);
    let text = r.as_ref().err().map_or("", |e| e.message());
    // SAFETY: `msg` holds `msg_len` writable bytes (C contract); NULL only with 0.
    unsafe { boundary::write_message(msg, msg_len, text) };
    boundary::status(&r)
}

/// Bytes the latent cache holds per token: `(r + p) * sizeof(cache_dtype)`
/// (shared rope key) or `(r + H*p) * sizeof(cache_dtype)` (per head).
/// Returns MLA_OK, MLA_ERR_NULL_POINTER, MLA_ERR_ABI_MISMATCH or MLA_ERR_INVALID_CONFIG.
///
/// # Safety
/// `c` is NULL or points to an `mla_config`; `bytes` is NULL or points to a writable
/// `size_t`.
#[no_mangle]
pub unsafe extern "C" fn mla_cache_bytes_per_token(
    c: *const mla_config,
    bytes: *mut usize,
) -> mla_status {
    let what = "mla_cache_bytes_per_token";
    // SAFETY: `bytes` is NULL or a writable size_t, `c` NULL or an mla_config (C contract).
    unsafe {
        boundary::produce(Slot::Cpu, what, bytes, "bytes is NULL", || {
            checked(c)?.0.cache_bytes_per_token()
        })
    }
}

/// Bytes of memory `mla_engine_init` needs for config `*c`: the handle plus the
/// latent cache, RoPE tables and all scratch. `mem` must also be 64-byte aligned.
/// Returns MLA_OK, MLA_ERR_NULL_POINTER, MLA_ERR_ABI_MISMATCH or MLA_ERR_INVALID_CONFIG.
///
/// # Safety
/// `c` is NULL or points to an `mla_config`; `bytes` is NULL or points to a writable
/// `size_t`.
#[no_mangle]
pub unsafe extern "C" fn mla_engine_size(c: *const mla_config, bytes: *mut usize) -> mla_status {
    // SAFETY: `bytes` is NULL or a writable size_t, `c` NULL or an mla_config (C contract).
    unsafe {
        boundary::produce(Slot::Cpu, "mla_engine_size", bytes, "bytes is NULL", || {
            Ok(checked(c)?.1)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{MLA_ERR_INVALID_CONFIG, MLA_OK};
    use core::ffi::CStr;
    use core::ptr;

    #[test]
    fn validate_writes_truncated_message() {
        // SAFETY (each block): `c` points to a config or is NULL, and `m` to `n`
        // writable bytes or is NULL; `buf` is NUL-terminated by the call.
        let mut c = mla_config::from_config(&Config::tutorial());
        c.qk_rope_head_dim = 63;
        let mut buf = [0x55 as c_char; 8];
        let validate = |c: *const mla_config, m: *mut c_char, n: usize| unsafe {
            mla_config_validate(c, m, n)
        };
        assert_eq!(
            validate(&c, buf.as_mut_ptr(), buf.len()),
            MLA_ERR_INVALID_CONFIG
        );
        let s = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap();
        assert_eq!(s, "qk_rope");
        assert_eq!(validate(&c, ptr::null_mut(), 0), MLA_ERR_INVALID_CONFIG);
        assert_eq!(validate(&c, ptr::null_mut(), 4), MLA_ERR_NULL_POINTER);
        assert_eq!(
            validate(ptr::null(), buf.as_mut_ptr(), 8),
            MLA_ERR_NULL_POINTER
        );
        let good = mla_config::from_config(&Config::tutorial());
        assert_eq!(validate(&good, buf.as_mut_ptr(), 8), MLA_OK);
        assert_eq!(buf[0], 0);
    }

    #[test]
    fn all_three_checks_refuse_unrepresentable_shapes() {
        // The tutorial with H = 0xFFFFFFF0, n = 0xFFFF used to validate, with an
        // engine of 1.4e17 bytes; q_proj would need 2.8e14 rows.
        let mut c = mla_config::from_config(&Config::tutorial());
        c.num_heads = 0xFFFF_FFF0;
        c.qk_nope_head_dim = 0xFFFF;
        let mut msg = [0 as c_char; 192];
        let mut out = 12345usize;
        // SAFETY: valid pointers and sizes.
        unsafe {
            assert_eq!(
                mla_config_validate(&c, msg.as_mut_ptr(), msg.len()),
                MLA_ERR_INVALID_CONFIG
            );
            let text = CStr::from_ptr(msg.as_ptr()).to_str().unwrap();
            assert!(text.starts_with("num_heads * (qk_nope_head_dim"), "{text}");
            assert_eq!(
                mla_cache_bytes_per_token(&c, &mut out),
                MLA_ERR_INVALID_CONFIG
            );
            assert_eq!(mla_engine_size(&c, &mut out), MLA_ERR_INVALID_CONFIG);
            assert_eq!(out, 12345);
            let last = CStr::from_ptr(crate::engine::mla_last_error(ptr::null()));
            assert_eq!(last.to_str().unwrap(), text);
        }
    }
}
