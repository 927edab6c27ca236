//! Kernel parameter blocks: one `#[repr(C)]` struct per kernel, passed by value
//! as the kernel's only parameter. Each mirrors the struct of the same name in
//! kernels/mla.cu field for field (64-bit addresses first, then 32-bit values,
//! padded to a multiple of 8 bytes); both sides assert the sizes.

/// `LinP`: one or two linear layers sharing their input (see `linear_impl`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct LinP {
    pub x: u64,
    pub w: u64,
    pub bias: u64,
    pub y: u64,
    pub w2: u64,
    pub bias2: u64,
    pub y2: u64,
    pub xnorm: u64,
    pub flag_set: u64,
    pub flag_gate: u64,
    pub n_tok: u32,
    pub rows: u32,
    pub cols: u32,
    pub x_stride: u32,
    pub y_stride: u32,
    pub grp_rows: u32,
    pub w_grp_stride: u32,
    pub w_row_off: u32,
    pub x_grp_off: u32,
    pub rows2: u32,
    pub y2_stride: u32,
    pub vec: u32,
    pub gen: u32,
    pub eps: f32,
}

/// `PrepP`: cache rows and absorbed queries (see `prep_impl`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PrepP {
    pub kva: u64,
    pub norm_w: u64,
    pub cache: u64,
    pub cos_t: u64,
    pub sin_t: u64,
    pub q: u64,
    pub kvb: u64,
    pub qt: u64,
    pub n_tok: u32,
    pub kva_stride: u32,
    pub cache_row: u32,
    pub r: u32,
    pub p: u32,
    pub n_rope: u32,
    pub start: u32,
    pub layout: u32,
    pub n_heads: u32,
    pub n: u32,
    pub v: u32,
    pub qk: u32,
    pub absorb_blocks: u32,
    pub eps: f32,
}

/// `AttnP`: attention over the cache, one context split per block (see
/// `attn_cc_impl`, `attn_tc_impl`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct AttnP {
    pub qt: u64,
    pub q: u64,
    pub cache: u64,
    pub part_acc: u64,
    pub part_ml: u64,
    pub cos_t: u64,
    pub sin_t: u64,
    pub n_tok: u32,
    pub n_heads: u32,
    pub r: u32,
    pub p: u32,
    pub qk: u32,
    pub n: u32,
    pub cache_row: u32,
    pub per_head: u32,
    pub start: u32,
    pub split_len: u32,
    pub n_split: u32,
    pub g: u32,
    pub layout: u32,
    pub tile_rows: u32,
    pub mode: u32,
    pub pad0: u32,
    pub scale: f32,
    pub pad1: u32,
}

/// `CombineP`: merges the context splits (see `mla_attn_combine`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CombineP {
    pub part_acc: u64,
    pub part_ml: u64,
    pub ctx: u64,
    pub n_tok: u32,
    pub n_heads: u32,
    pub r: u32,
    pub n_split: u32,
}

/// `SelftestP`: one mma.sync on given matrices (see `mla_selftest_mma`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SelftestP {
    pub a: u64,
    pub b_kn: u64,
    pub b_nk: u64,
    pub c: u64,
    pub d: u64,
    pub dtype: u32,
    pub pad0: u32,
}

// The same sizes as the static_asserts in kernels/mla.cu.
const _: () = assert!(core::mem::size_of::<LinP>() == 10 * 8 + 14 * 4);
const _: () = assert!(core::mem::size_of::<PrepP>() == 8 * 8 + 14 * 4);
const _: () = assert!(core::mem::size_of::<AttnP>() == 7 * 8 + 18 * 4);
const _: () = assert!(core::mem::size_of::<CombineP>() == 3 * 8 + 4 * 4);
const _: () = assert!(core::mem::size_of::<SelftestP>() == 5 * 8 + 2 * 4);
