//! Launch planning of the attention kernels: which kernel, heads per block,
//! rows per tile, how tiles are copied, and the shared memory that needs. Pure
//! arithmetic (no driver calls), mirrored from kernels/mla.cu's layouts; unit
//! tested below.

use mla_core::config::Dims;
use mla_core::dtype::DType;

/// Heads per block of the tensor-core kernel (`MLA_TC_HEADS`).
pub(crate) const TC_HEADS: usize = 16;
/// Most latent columns of the tensor-core kernel (8 warps x NB = 8 blocks of 8).
pub(crate) const TC_MAX_R: usize = 512;
/// Most rows per tile of the CUDA-core kernel (`MLA_CC_TILE_MAX`).
pub(crate) const CC_TILE_MAX: usize = 32;
/// 16-byte chunks per thread staged in registers (`MLA_PREFETCH`).
const PREFETCH: usize = 8;
/// Threads per block.
const THREADS: usize = 256;
/// Largest kv_lora_rank of each CUDA-core variant: (heads per block, max r).
const CC_VARIANTS: [(usize, usize); 3] = [(16, 1024), (4, 2048), (1, 8192)];

/// How a tile is copied from the cache (`mode` in kernels/mla.cu).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyMode {
    /// Element by element (any layout).
    Elements = 0,
    /// 16-byte chunks staged in registers while the previous tile is used.
    Staged = 1,
    /// 16-byte `cp.async` (sm_80+), in flight while the previous tile is used.
    Async = 2,
}

/// The attention kernel an engine runs and its launch shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttnPlan {
    /// Kernel name in the module (e.g. `mla_attn_tc_bf16`).
    pub kernel: String,
    /// True for the tensor-core kernel.
    pub tensor_cores: bool,
    /// Heads per block (the last group may have fewer).
    pub heads_per_block: usize,
    /// Head groups (each cached row is read once per group).
    pub groups: usize,
    /// Cached rows per shared-memory tile.
    pub tile_rows: usize,
    /// How tiles are copied.
    pub copy: CopyMode,
    /// Dynamic shared memory per block, bytes.
    pub smem: usize,
}

/// What the plan depends on besides the dimensions.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Target {
    /// Compute capability as major * 10 + minor.
    pub arch: u32,
    /// Dynamic shared memory a block may use (the opt-in limit).
    pub smem_limit: usize,
    /// The module has the tensor-core kernels.
    pub has_tc: bool,
    /// Use the tensor-core kernel where it applies.
    pub allow_tc: bool,
    /// Must use the tensor-core kernel (error if it does not apply).
    pub require_tc: bool,
}

fn round_up(v: usize, m: usize) -> usize {
    v.div_ceil(m) * m
}

fn elem_size(dt: DType) -> usize {
    match dt {
        DType::F32 => 4,
        _ => 2,
    }
}

fn dtype_name(dt: DType) -> &'static str {
    match dt {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        DType::F8E4M3 => "f8_e4m3",
    }
}

/// Cache rows and the latent / rope segments are whole 16-byte chunks.
pub(crate) fn chunk_aligned(dm: &Dims, dt: DType) -> bool {
    let es = elem_size(dt);
    (dm.cache_row * es).is_multiple_of(16)
        && (dm.r * es).is_multiple_of(16)
        && (dm.p * es).is_multiple_of(16)
}

/// Shared memory of the CUDA-core kernel (the layout of `attn_cc_impl`).
pub(crate) fn cc_smem(dm: &Dims, per_head: bool, dt: DType, g: usize, tr: usize) -> usize {
    let es = elem_size(dt);
    let (r4, p4) = (round_up(dm.r, 4), round_up(dm.p, 4));
    let nk = if per_head { g } else { 1 };
    let qstride = r4 + p4;
    let mut words = (r4 + nk * p4) * es;
    words = words.div_ceil(16) * 4;
    if words % 8 != 4 {
        words += 4;
    }
    let tile_bytes = tr * words * 4;
    let nq = r4 / 4;
    let rg = if nq >= THREADS {
        1
    } else {
        (THREADS / nq.max(1)).min(32)
    };
    let stage = if rg > 1 { g * r4 * 4 } else { 0 };
    let g4 = round_up(g, 4);
    g * qstride * 4 + (2 * tile_bytes).max(stage) + 8 * g * tr * 4 + tr * g4 * 4 + 3 * g * 4
}

/// Shared memory of the tensor-core kernel (the layout of `attn_tc_impl`).
pub(crate) fn tc_smem(dm: &Dims, per_head: bool, tr: usize) -> usize {
    let (r4, p4) = (round_up(dm.r, 4), round_up(dm.p, 4));
    let k = if per_head { dm.r } else { r4 + dm.p };
    let k16 = round_up(k, 16);
    let ks = k16 + 8;
    let ts = if per_head {
        round_up((r4 + TC_HEADS.min(dm.h) * p4).max(k16), 16) + 8
    } else {
        ks
    };
    let q = 2 * TC_HEADS * ks * 2;
    let qpe = if per_head { TC_HEADS * p4 * 4 } else { 0 };
    let tiles = 2 * tr * ts * 2;
    let ksplit = 8 / (tr / 8);
    let s_part = ksplit * TC_HEADS * tr * 4;
    let pst = tr + 8;
    let p = 2 * TC_HEADS * pst * 2;
    q + qpe + tiles + s_part + p + 4 * TC_HEADS * 4
}

/// The attention plan for dimensions `dm`, or the reason none fits.
pub(crate) fn plan(dm: &Dims, per_head: bool, dt: DType, t: &Target) -> Result<AttnPlan, String> {
    if dm.r > 8192 {
        return Err(format!(
            "kv_lora_rank {} is above the CUDA kernels' 8192",
            dm.r
        ));
    }
    let aligned = chunk_aligned(dm, dt);
    let half = dt != DType::F32;
    let tc_ok = t.has_tc && t.arch >= 80 && half && dm.r <= TC_MAX_R;
    if t.require_tc && !tc_ok {
        return Err(format!(
            "tensor-core attention needs sm_80+, an f16/bf16 cache and kv_lora_rank <= {TC_MAX_R} \
             (device sm_{}, cache {}, r {})",
            t.arch,
            dtype_name(dt),
            dm.r
        ));
    }
    if tc_ok && t.allow_tc {
        for tr in [64, 32] {
            let smem = tc_smem(dm, per_head, tr);
            if smem <= t.smem_limit {
                return Ok(AttnPlan {
                    kernel: format!("mla_attn_tc_{}", dtype_name(dt)),
                    tensor_cores: true,
                    heads_per_block: TC_HEADS,
                    groups: dm.h.div_ceil(TC_HEADS),
                    tile_rows: tr,
                    copy: if aligned {
                        CopyMode::Async
                    } else {
                        CopyMode::Elements
                    },
                    smem,
                });
            }
        }
        if t.require_tc {
            return Err(format!(
                "tensor-core attention needs {} bytes of shared memory, the device allows {}",
                tc_smem(dm, per_head, 32),
                t.smem_limit
            ));
        }
    }
    // CUDA cores.
    let (gmax, variant) = match CC_VARIANTS.iter().find(|(_, max_r)| dm.r <= *max_r) {
        Some(&(g, _)) => (g, format!("g{g}")),
        None => return Err(format!("kv_lora_rank {} is too large", dm.r)),
    };
    let copy = if !aligned {
        CopyMode::Elements
    } else if t.arch >= 80 {
        CopyMode::Async
    } else {
        CopyMode::Staged
    };
    let es = elem_size(dt);
    // Most rows per tile: register staging holds PREFETCH chunks per thread.
    let tr_cap = |g: usize| -> usize {
        if copy == CopyMode::Staged {
            let a = if per_head { dm.r } else { dm.r + dm.p } * es;
            let b = if per_head { g * dm.p * es } else { 0 };
            let cpr = ((a + b) / 16).max(1);
            (PREFETCH * THREADS / cpr).clamp(1, CC_TILE_MAX)
        } else {
            CC_TILE_MAX
        }
    };
    let mut g = gmax.min(dm.h).max(1);
    loop {
        // Prefer more heads per block (fewer reads of the cache) as long as a
        // tile of 8 rows (or the most staging allows) fits; then the most rows.
        let cap = tr_cap(g);
        if cc_smem(dm, per_head, dt, g, cap.min(8)) <= t.smem_limit {
            let tr = (1..=cap)
                .rev()
                .find(|&tr| cc_smem(dm, per_head, dt, g, tr) <= t.smem_limit)
                .unwrap_or(1);
            return Ok(AttnPlan {
                kernel: format!("mla_attn_cc_{}_{variant}", dtype_name(dt)),
                tensor_cores: false,
                heads_per_block: g,
                groups: dm.h.div_ceil(g),
                tile_rows: tr,
                copy,
                smem: cc_smem(dm, per_head, dt, g, tr),
            });
        }
        if g == 1 {
            // One head and as few rows as allowed: does a single row fit?
            if cc_smem(dm, per_head, dt, 1, 1) <= t.smem_limit {
                return Ok(AttnPlan {
                    kernel: format!("mla_attn_cc_{}_{variant}", dtype_name(dt)),
                    tensor_cores: false,
                    heads_per_block: 1,
                    groups: dm.h,
                    tile_rows: 1,
                    copy,
                    smem: cc_smem(dm, per_head, dt, 1, 1),
                });
            }
            return Err(format!(
                "attention needs {} bytes of shared memory per block (kv_lora_rank {}, \
                 rope dim {}), the device allows {}",
                cc_smem(dm, per_head, dt, 1, 1),
                dm.r,
                dm.p,
                t.smem_limit
            ));
        }
        g -= 1;
    }
}

/// How a call's context is split (`splits`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct SplitPolicy {
    /// Head groups (blocks per split and token).
    pub groups: usize,
    /// Attention blocks resident on the whole GPU at once.
    pub block_slots: usize,
    /// Most splits per token (what the scratch holds).
    pub cap: usize,
    /// A fixed number of splits (0: automatic).
    pub want: usize,
    /// Fewest rows per split when automatic.
    pub min_rows: usize,
    /// Split lengths a multiple of this (the tile rows) when automatic.
    pub align: usize,
}

/// Context splits for one call of `t` tokens whose last one attends over `lk`
/// positions: `(n_split, split_len)`. Automatic: enough blocks to fill the GPU
/// once (`block_slots` blocks at a time, `groups * t` per split), at least
/// `min_rows` rows each, lengths a multiple of `align`.
pub(crate) fn splits(lk: usize, t: usize, p: &SplitPolicy) -> (usize, usize) {
    let lk = lk.max(1);
    let n = if p.want > 0 {
        p.want
    } else {
        let fill = (p.block_slots / (p.groups * t).max(1)).max(1);
        fill.min(lk.div_ceil(p.min_rows.max(1)))
    }
    .clamp(1, p.cap.max(1));
    let mut len = lk.div_ceil(n);
    if p.want == 0 {
        len = round_up(len, p.align.max(1));
    }
    (lk.div_ceil(len), len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mla_core::Config;

    fn dims(c: &Config) -> Dims {
        c.dims().unwrap()
    }

    fn target(arch: u32, smem_limit: usize) -> Target {
        Target {
            arch,
            smem_limit,
            has_tc: arch >= 80,
            allow_tc: true,
            require_tc: false,
        }
    }

    #[test]
    fn v2_lite_plans() {
        let dm = dims(&Config::deepseek_v2_lite());
        // H200: tensor cores for bf16, 64-row tiles, cp.async.
        let p = plan(&dm, false, DType::BF16, &target(90, 232_448)).unwrap();
        assert_eq!(p.kernel, "mla_attn_tc_bf16");
        assert_eq!((p.heads_per_block, p.groups, p.tile_rows), (16, 1, 64));
        assert_eq!(p.copy, CopyMode::Async);
        assert!(p.smem <= 232_448);
        // A100 / Orin (163 KiB): 32-row tiles.
        let p = plan(&dm, false, DType::BF16, &target(87, 166_912)).unwrap();
        assert_eq!(p.tile_rows, 32);
        // f32 cache: CUDA cores, all 16 heads in one block.
        let p = plan(&dm, false, DType::F32, &target(90, 232_448)).unwrap();
        assert_eq!(p.kernel, "mla_attn_cc_f32_g16");
        assert_eq!((p.heads_per_block, p.groups, p.tile_rows), (16, 1, 32));
        // Xavier (96 KiB, sm_72): staged copies, tiles limited by staging.
        let p = plan(&dm, false, DType::BF16, &target(72, 98_304)).unwrap();
        assert_eq!(p.kernel, "mla_attn_cc_bf16_g16");
        assert_eq!(p.copy, CopyMode::Staged);
        // Staging would allow 28 rows (8 * 256 chunks / 72 per row); 96 KiB allows 21.
        assert_eq!((p.heads_per_block, p.tile_rows), (16, 21));
        assert!(p.smem <= 98_304 && cc_smem(&dm, false, DType::BF16, 16, 22) > 98_304);
    }

    #[test]
    fn shared_memory_limit_is_enforced() {
        let mut c = Config::deepseek_v2_lite();
        c.kv_lora_rank = 8192;
        let dm = dims(&c);
        // 16 heads do not fit on an H200; one head with tiles does.
        let p = plan(&dm, false, DType::F32, &target(90, 232_448)).unwrap();
        assert_eq!(p.heads_per_block, 1);
        assert!(p.smem <= 232_448);
        // An f32 cache of rank 8192 needs 99164 bytes for one head and one row:
        // more than Xavier's 96 KiB.
        assert_eq!(cc_smem(&dm, false, DType::F32, 1, 1), 99_164);
        let e = plan(&dm, false, DType::F32, &target(72, 98_304)).unwrap_err();
        assert!(e.contains("99164 bytes of shared memory"), "{e}");
        // A bf16 cache fits (one head).
        let p = plan(&dm, false, DType::BF16, &target(72, 98_304)).unwrap();
        assert_eq!(p.heads_per_block, 1);
        c.kv_lora_rank = 8193;
        assert!(plan(&dims(&c), false, DType::F32, &target(90, 232_448)).is_err());
    }

    #[test]
    fn tensor_cores_only_where_they_apply() {
        let dm = dims(&Config::deepseek_v2_lite());
        let mut t = target(72, 98_304);
        t.require_tc = true;
        assert!(plan(&dm, false, DType::BF16, &t).is_err());
        let mut t = target(80, 166_912);
        t.require_tc = true;
        assert!(plan(&dm, false, DType::F32, &t).is_err());
        t.allow_tc = false;
        t.require_tc = false;
        assert!(!plan(&dm, false, DType::BF16, &t).unwrap().tensor_cores);
    }

    #[test]
    fn split_counts() {
        let s = |lk, t, groups, block_slots, cap, want, min_rows, align| {
            let p = SplitPolicy {
                groups,
                block_slots,
                cap,
                want,
                min_rows,
                align,
            };
            splits(lk, t, &p)
        };
        // 132 SMs, one group, one token: one split per SM, 64-row minimum.
        assert_eq!(s(32768, 1, 1, 132, 132, 0, 64, 64), (128, 256));
        assert_eq!(s(4096, 1, 1, 132, 132, 0, 64, 64), (64, 64));
        assert_eq!(s(1, 1, 1, 132, 132, 0, 64, 64), (1, 64));
        // Fixed counts are honoured up to the cap.
        assert_eq!(s(300, 1, 1, 4, 16, 5, 64, 32), (5, 60));
        assert_eq!(s(2400, 1, 1, 4, 300, 300, 8, 32), (300, 8));
        assert_eq!(s(2400, 1, 1, 4, 100, 300, 8, 32), (100, 24));
        // Prefill: per-token blocks share the slots.
        assert_eq!(s(1000, 50, 1, 132, 2, 0, 64, 32), (2, 512));
    }

    #[test]
    fn alignment_rule() {
        let mut c = Config::tutorial();
        assert!(chunk_aligned(&dims(&c), DType::F32));
        c.kv_lora_rank = 30;
        assert!(!chunk_aligned(&dims(&c), DType::F32));
    }
}
