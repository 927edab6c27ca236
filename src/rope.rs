//! RoPE on its own: `mla_rope_tables` (the cos/sin rows of a range of
//! positions) and `mla_rope_apply` (rotating vectors with them), for hosts that
//! run their own attention.
//!
//! Both check their arguments through the boundary (NULL, alignment, sizes,
//! overlap) and call `mla_core::rope`; nothing is written on error, and the
//! error text goes to `mla_last_error(NULL)`. Conventions: the README's "C API"
//! section, "Rules".

use core::mem::size_of;

use mla_core::status::{err, Result, Status};

use crate::boundary::{self, Slot};
use crate::types::{mla_config, mla_status, read_config};

/// RoPE on its own (docs/design.md section 2): fills `cos` and `sin`, each `[n_pos][p/2]`
/// floats (p = qk_rope_head_dim), with the rotation of positions
/// `start_pos .. start_pos + n_pos` for config `*c`: `cos(pos * f_i) * m` where
/// `f_i` are the inverse frequencies of the config's rope type and `m` its cos/sin
/// scaling, for one call over those positions (longrope: the long factors when
/// `start_pos + n_pos` exceeds original_max_position; NoPE: cos 1, sin 0).
/// Angles are computed in double precision.
/// Returns MLA_OK, MLA_ERR_NULL_POINTER, MLA_ERR_ABI_MISMATCH,
/// MLA_ERR_INVALID_CONFIG, MLA_ERR_MISALIGNED, MLA_ERR_INVALID_ARGUMENT
/// (n_pos = 0, qk_rope_head_dim = 0, overflow, or `cos` and `sin` overlap) or
/// MLA_ERR_UNSUPPORTED (LeRoPE: its frequencies come from weights). Nothing is
/// written on error.
///
/// # Safety
/// `c` is NULL or points to an `mla_config`; `cos` and `sin` are NULL or each hold
/// `n_pos * p/2` writable floats.
#[no_mangle]
pub unsafe extern "C" fn mla_rope_tables(
    c: *const mla_config,
    start_pos: u32,
    n_pos: u32,
    cos: *mut f32,
    sin: *mut f32,
) -> mla_status {
    boundary::call(Slot::Cpu, "mla_rope_tables", || {
        if cos.is_null() || sin.is_null() {
            return Err(err(Status::NullPointer, "cos or sin is NULL"));
        }
        // SAFETY: `c` is NULL or points to an mla_config (C contract).
        let cfg = unsafe { read_config(c) }?;
        cfg.validate()?;
        rotary_dim(&cfg)?;
        let rp = mla_core::rope::RopeParams::from_config(&cfg);
        // validate(): p is even and > 0, so half >= 1 (max(1) lets the compiler see it).
        let half = (rp.dim / 2).max(1);
        let n = rope_floats(n_pos, half)?;
        let bytes = n * size_of::<f32>();
        if !boundary::aligned(cos) || !boundary::aligned(sin) {
            return Err(err(
                Status::Misaligned,
                "cos and sin must be 4-byte aligned",
            ));
        }
        if boundary::overlaps(cos, bytes, sin, bytes) {
            return Err(err(Status::InvalidArgument, "cos and sin overlap"));
        }
        // SAFETY: each holds n writable floats (C contract), checked non-NULL,
        // aligned, addressable (rope_floats) and disjoint.
        let (cs, ss) = unsafe { (boundary::slice_mut(cos, n), boundary::slice_mut(sin, n)) };
        let (Some(cs), Some(ss)) = (cs, ss) else {
            return Err(err(
                Status::Internal,
                "mla_rope_tables: buffer checks inconsistent",
            ));
        };
        mla_core::rope::fill_tables_direct(&rp, start_pos as usize, cs, ss);
        Ok(())
    })
}

/// `InvalidArgument` for a config without a rope slot (NoPE with
/// `qk_rope_head_dim` 0: there are no tables, and `p/2` floats per position would
/// be 0); `Unsupported` for LeRoPE (its frequencies come from weights).
fn rotary_dim(cfg: &mla_core::Config) -> Result<()> {
    if cfg.qk_rope_head_dim == 0 {
        return Err(err(
            Status::InvalidArgument,
            "qk_rope_head_dim is 0 (NoPE without a rope slot): no RoPE tables",
        ));
    }
    if cfg.rope_freq_alpha {
        return Err(err(
            Status::Unsupported,
            "rope_freq_alpha (LeRoPE): its frequencies need the alpha weights, which these tables do not take",
        ));
    }
    Ok(())
}

/// `n_pos * half` floats, checked: > 0 and small enough to address.
fn rope_floats(n_pos: u32, half: usize) -> Result<usize> {
    (n_pos as usize)
        .checked_mul(half)
        .filter(|&n| n > 0 && boundary::array_bytes::<f32>(n).is_some())
        .ok_or_else(|| {
            err(
                Status::InvalidArgument,
                "n_pos must be > 0 and n_pos * p/2 addressable",
            )
        })
}

/// Rotates `x` in place: `x` is `[n_pos][n_per_pos][p]` floats, and the
/// `n_per_pos` vectors of row k (e.g. the heads of one token) are rotated by row
/// k of `cos` and `sin` (`[n_pos][p/2]`, from [`mla_rope_tables`]) in the config's
/// pair layout (interleaved or half).
/// Returns MLA_OK, MLA_ERR_NULL_POINTER, MLA_ERR_ABI_MISMATCH,
/// MLA_ERR_INVALID_CONFIG, MLA_ERR_MISALIGNED, MLA_ERR_INVALID_ARGUMENT (a count
/// of 0, qk_rope_head_dim = 0, overflow, or `x` overlapping a table) or
/// MLA_ERR_UNSUPPORTED (LeRoPE). Nothing is written on error.
///
/// # Safety
/// `c` is NULL or points to an `mla_config`; `x` is NULL or holds
/// `n_pos * n_per_pos * p` writable floats; `cos` and `sin` are NULL or each hold
/// `n_pos * p/2` floats.
#[no_mangle]
pub unsafe extern "C" fn mla_rope_apply(
    c: *const mla_config,
    x: *mut f32,
    n_pos: u32,
    n_per_pos: u32,
    cos: *const f32,
    sin: *const f32,
) -> mla_status {
    boundary::call(Slot::Cpu, "mla_rope_apply", || {
        if x.is_null() || cos.is_null() || sin.is_null() {
            return Err(err(Status::NullPointer, "x, cos or sin is NULL"));
        }
        // SAFETY: `c` is NULL or points to an mla_config (C contract).
        let cfg = unsafe { read_config(c) }?;
        cfg.validate()?;
        rotary_dim(&cfg)?;
        let p = (cfg.qk_rope_head_dim as usize).max(2);
        let half = (p / 2).max(1);
        let nt = rope_floats(n_pos, half)?;
        let row = (n_per_pos as usize)
            .checked_mul(p)
            .filter(|&r| r > 0)
            .ok_or_else(|| err(Status::InvalidArgument, "n_per_pos must be > 0"))?
            .max(1); // > 0 already; max(1) lets the compiler see it (chunk size)
        let nx = rope_floats(n_pos, row)?;
        if !boundary::aligned(x) || !boundary::aligned(cos) || !boundary::aligned(sin) {
            return Err(err(
                Status::Misaligned,
                "x, cos and sin must be 4-byte aligned",
            ));
        }
        let (xb, tb) = (nx * size_of::<f32>(), nt * size_of::<f32>());
        if boundary::overlaps(x, xb, cos, tb) || boundary::overlaps(x, xb, sin, tb) {
            return Err(err(Status::InvalidArgument, "x overlaps cos or sin"));
        }
        // SAFETY: sized per the C contract; checked non-NULL, aligned, addressable
        // (rope_floats), and x is disjoint from the tables.
        let (xs, cs, ss) = unsafe {
            (
                boundary::slice_mut(x, nx),
                boundary::slice(cos, nt),
                boundary::slice(sin, nt),
            )
        };
        let (Some(xs), Some(cs), Some(ss)) = (xs, cs, ss) else {
            return Err(err(
                Status::Internal,
                "mla_rope_apply: buffer checks inconsistent",
            ));
        };
        // Vector m of x belongs to position m / n_per_pos (index arithmetic, no chunk
        // iterators: their size hints divide by the chunk size).
        let per = (n_per_pos as usize).max(1);
        for m in 0..nx / p {
            let k = m / per;
            let (Some(v), Some(crow), Some(srow)) = (
                xs.get_mut(m * p..(m + 1) * p),
                cs.get(k * half..(k + 1) * half),
                ss.get(k * half..(k + 1) * half),
            ) else {
                break;
            };
            mla_core::rope::rotate(v, crow, srow, cfg.rope_layout);
        }
        Ok(())
    })
}
