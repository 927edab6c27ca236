//! Which instruction set the kernels run on, and every tile and block size of
//! every instruction set, in one place.
//!
//! Selection: with `std` the best instruction set of the CPU is detected once
//! per process (`is_x86_feature_detected!`, cached); `MLA_ISA=scalar|avx2|avx512`
//! may force a lower one (for comparisons). Without `std` the choice is fixed
//! at compile time by the enabled `target_feature`s.

/// The instruction set the kernels use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// Portable code (8-lane arrays the compiler may vectorise).
    Scalar,
    /// x86-64 AVX2 + FMA + F16C, 8 lanes.
    Avx2,
    /// x86-64 AVX-512F, 16 lanes.
    Avx512,
    /// aarch64 Advanced SIMD, 4 lanes.
    Neon,
}

impl Isa {
    /// Every instruction set, best first (whether or not this machine has it).
    pub(crate) const ALL: [Isa; 4] = [Isa::Avx512, Isa::Avx2, Isa::Neon, Isa::Scalar];

    /// Lower-case name (`scalar`, `avx2`, `avx512`, `neon`).
    pub const fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
        }
    }

    /// True when this machine (and build) can run kernels for `self`.
    pub fn supported(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => has_avx2(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => has_avx512(),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => true,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Every instruction set this machine supports, best first.
    pub fn available() -> impl Iterator<Item = Isa> {
        Isa::ALL.into_iter().filter(|i| i.supported())
    }
}

/// AVX2, FMA and F16C are available (runtime check with `std`, compile-time without).
#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    #[cfg(feature = "std")]
    {
        std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(feature = "std"))]
    {
        cfg!(all(
            target_feature = "avx2",
            target_feature = "fma",
            target_feature = "f16c"
        ))
    }
}

/// AVX-512F (and the AVX2 set) is available.
#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    #[cfg(feature = "std")]
    {
        std::is_x86_feature_detected!("avx512f") && has_avx2()
    }
    #[cfg(not(feature = "std"))]
    {
        cfg!(target_feature = "avx512f") && has_avx2()
    }
}

/// The instruction set chosen for this process: 0 before the first call of
/// [`isa`], else 1 + its position in [`Isa::ALL`].
#[cfg(feature = "std")]
static CHOSEN: core::sync::atomic::AtomicU8 = core::sync::atomic::AtomicU8::new(0);

/// The best supported instruction set, or the one `MLA_ISA` names if supported.
fn detect() -> Isa {
    let best = Isa::available().next().unwrap_or(Isa::Scalar);
    #[cfg(feature = "std")]
    {
        if let Ok(want) = std::env::var("MLA_ISA") {
            let forced = Isa::ALL.into_iter().find(|i| i.name() == want.trim());
            if let Some(i) = forced.filter(|i| i.supported()) {
                return i;
            }
        }
    }
    best
}

/// The instruction set in use (detected once with `std`; fixed at compile time
/// without it).
pub fn isa() -> Isa {
    #[cfg(feature = "std")]
    {
        use core::sync::atomic::Ordering;
        let code = CHOSEN.load(Ordering::Relaxed);
        if let Some(&i) = code.checked_sub(1).and_then(|c| Isa::ALL.get(c as usize)) {
            return i;
        }
        let i = detect();
        let code = Isa::ALL.iter().position(|&x| x == i).unwrap_or(0) as u8 + 1;
        CHOSEN.store(code, Ordering::Relaxed);
        i
    }
    #[cfg(not(feature = "std"))]
    {
        detect()
    }
}

/// `isa` if this machine supports it, else scalar.
pub(crate) fn usable(isa: Isa) -> Isa {
    if isa.supported() {
        isa
    } else {
        Isa::Scalar
    }
}

/// Lanes of the vectors of `isa` (the granularity of
/// [`softmax_block`](super::softmax_block) rows).
pub const fn lanes(isa: Isa) -> usize {
    match isa {
        Isa::Scalar => SCALAR_LANES,
        Isa::Avx2 => 8,
        Isa::Avx512 => 16,
        Isa::Neon => 4,
    }
}

// ----------------------------------------------------------------------------
// Tiles: the shape of C that one micro-kernel call keeps in vector registers
// ----------------------------------------------------------------------------

/// f32 lanes of the portable `Scalar` vectors: 8 (the compiler may map them
/// onto SSE/NEON registers), 4 on small targets (code size).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) const SCALAR_LANES: usize = 8;
/// f32 lanes of the portable `Scalar` vectors: 8 (the compiler may map them
/// onto SSE/NEON registers), 4 on small targets (code size).
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub(crate) const SCALAR_LANES: usize = 4;

/// Register-tile shapes of one instruction set's micro-kernels. `L` below is
/// [`lanes`]; a tile of `r x c` holds `r * c` vector accumulators, which with
/// the operand vectors must fit in the register file.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tiles {
    /// NT product `C = A B^T`, dot-product form (`gemm::nt_tile`): rows of A
    /// and C per tile (MR). Edge rows take tiles of 2, then 1 row.
    pub nt_mr: usize,
    /// NT: rows of B (columns of C) per tile (NR). Edge columns: 1 per tile.
    pub nt_nr: usize,
    /// NT with an element type whose two vectors come from one load in an
    /// order of their own (bf16 on AVX2, [`Elem::vload_half`]): `[MR, NR]`.
    /// Both halves of `NR` rows of B are held at once, so the tile is smaller.
    ///
    /// [`Elem::vload_half`]: super::simd::Elem::vload_half
    pub nt_paired: [usize; 2],
    /// Mat-vec (NT with one row of A, `matvec::nt_matvec`): rows of B per tile.
    pub matvec_nr: usize,
    /// NN accumulation `C += A B` (`gemm::nn_tile`): rows of A and C per tile (MR).
    pub nn_mr: usize,
    /// NN: vectors of C columns per tile (NV, `NV * L` columns).
    pub nn_nv: usize,
    /// NN: rows per tile for the columns left after the `NV`-vector blocks
    /// (one vector wide, so taller: enough accumulators to hide FMA latency).
    pub nn_tall_mr: usize,
    /// Attention products of the absorbed decode (`gemm::nn`, NN for the
    /// scores of a block of cached rows against the heads' queries, TN for the
    /// latent sum of the rows weighted by the heads' probabilities; the heads,
    /// padded to 16, run across the vectors): rows of C per tile (MR).
    pub attn_mr: usize,
    /// Attention: vectors of C columns (heads) per tile (NV).
    pub attn_nv: usize,
    /// Attention: rows per tile of the one-vector column blocks left over.
    pub attn_tall_mr: usize,
    /// Packed NT (prefill, `pack::ntp_tile`): rows of A per tile (MR); edge
    /// rows take tiles of 4 (when MR > 4), then 1.
    pub pack_mr: usize,
    /// Packed NT: vectors per packed panel of B (NV, a panel is `NV * L`
    /// columns of C wide, at most [`PACK_NP`]).
    pub pack_nv: usize,
    /// NT with FP8 weights in registers (`f8::tile`): rows of A per tile (MR).
    pub f8_mr: usize,
    /// FP8 NT: rows of B per tile (NR) when A has several rows. The FP8 NN
    /// product (`f8::nn_tile`) uses `f8_mr x f8_nr` vectors, `1 x
    /// f8_matvec_nr` for one row of A (these vectors divide a 128-column scale
    /// block).
    pub f8_nr: usize,
    /// FP8 mat-vec (one row of A): rows of B per tile.
    pub f8_matvec_nr: usize,
}

impl Tiles {
    /// `nt`: `[MR, NR]`; `nn` and `attn`: `[MR, NV, TALL_MR]`; `packed`:
    /// `[MR, NV]`; `f8`: `[MR, NR, MATVEC_NR]`.
    const fn new(
        nt: [usize; 2],
        matvec_nr: usize,
        nn: [usize; 3],
        attn: [usize; 3],
        packed: [usize; 2],
        f8: [usize; 3],
    ) -> Tiles {
        Tiles {
            nt_mr: nt[0],
            nt_nr: nt[1],
            nt_paired: nt,
            matvec_nr,
            nn_mr: nn[0],
            nn_nv: nn[1],
            nn_tall_mr: nn[2],
            attn_mr: attn[0],
            attn_nv: attn[1],
            attn_tall_mr: attn[2],
            pack_mr: packed[0],
            pack_nv: packed[1],
            f8_mr: f8[0],
            f8_nr: f8[1],
            f8_matvec_nr: f8[2],
        }
    }
}

impl Tiles {
    /// These tiles with `nt_paired` set.
    const fn with_paired(self, nt_paired: [usize; 2]) -> Tiles {
        Tiles { nt_paired, ..self }
    }
}

/// The micro-kernel tiles of `isa`.
pub(crate) const fn tiles(isa: Isa) -> Tiles {
    // Columns: NT [MR, NR], mat-vec NR, NN [MR, NV, TALL_MR], attention
    // [MR, NV, TALL_MR], packed [MR, NV], FP8 NT [MR, NR, mat-vec NR] (each
    // FP8 tile also keeps a mask and 2^64 in registers; its block totals live
    // in memory).
    match isa {
        // Portable: small tiles (the compiler's registers are unknown).
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        Isa::Scalar => Tiles::new([2, 2], 4, [2, 1, 2], [2, 1, 2], [4, 1], [2, 2, 2]),
        // Small targets: the NT product runs one dot product at a time
        // (`gemm::nt` there), so only the NN shape (1 x 1) is used.
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        Isa::Scalar => Tiles::new([1, 1], 1, [1, 1, 1], [1, 1, 1], [1, 1], [1, 1, 1]),
        // 16 ymm registers: NT 4 x 3 = 12 accumulators + 3 B vectors + 1 A;
        // attention 4 x 2 = 8 + 2 vectors + 1 broadcast (16 heads are two
        // vectors); packed 6 x 2 = 12 + 2 panel vectors + 1 broadcast;
        // FP8 4 x 2 = 8 accumulators + 2 B + 1 A + 2 constants; bf16 NT
        // 3 x 3 = 9 accumulators + both halves of 3 rows of B + 1 A.
        Isa::Avx2 => {
            Tiles::new([4, 3], 8, [4, 2, 8], [4, 2, 8], [6, 2], [4, 2, 4]).with_paired([3, 3])
        }
        // 32 zmm registers: NT 4 x 4 = 16 accumulators; packed 6 x 4 = 24;
        // attention: 16 heads are one vector, so 16 x 1 (tall) tiles.
        Isa::Avx512 => Tiles::new([4, 4], 8, [4, 4, 8], [8, 2, 16], [6, 4], [4, 4, 4]),
        // 32 q registers: NT 4 x 4 = 16 accumulators; packed 8 x 3 = 24;
        // attention 6 x 4 = 24 (16 heads are four vectors).
        Isa::Neon => Tiles::new([4, 4], 8, [4, 4, 8], [6, 4, 16], [8, 3], [4, 4, 4]),
    }
}

// ----------------------------------------------------------------------------
// Blocks: how much of an operand stays in cache while another is swept over it
// ----------------------------------------------------------------------------

/// Bytes of A rows kept hot (in L2) while a tile row or a packed panel of B is
/// swept over them.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) const NT_A_BLOCK_BYTES: usize = 1024 * 1024;

/// Bytes of one cache line (the unit of the software prefetches).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) const CACHE_LINE: usize = 64;

/// Bytes the mat-vec's software prefetch runs ahead of its loads in each of
/// its streams ([`nt_matvec`](super::matvec::nt_matvec)).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) const MATVEC_AHEAD: usize = 1024;

/// Elements of a cached latent row in every DeepSeek model (V2, V2-Lite, V3,
/// V3.2) and the families that copied its dims: 512 latent + 64 rope. On
/// x86-64 the attention scores run a copy of their kernel with this row
/// stride fixed at compile time: the addresses of a tall tile's 16 rows are
/// then one pointer and constant offsets, where a stride known only at run
/// time takes 16 registers, more than x86-64 has beside the loop's own (7
/// of them were reloaded from the stack every step). Scores over 256 cached
/// rows in L2 on the Xeon (AVX-512): 122 -> 148 GFLOP/s; V2-Lite decode at
/// 16384 tokens with the layer in the last-level cache, 1-2% faster.
#[cfg(target_arch = "x86_64")]
pub(crate) const LATENT_ROW: usize = 576;

/// Depth (k) of one packed panel of [`gemm_nt_packed`](super::gemm_nt_packed).
pub const PACK_KC: usize = 256;
/// Widest packed panel (columns of C) of any instruction set.
pub const PACK_NP: usize = 64;
/// f32 of scratch one [`gemm_nt_packed`](super::gemm_nt_packed) call needs at
/// most (any `k`).
pub const PACK_LEN: usize = PACK_KC * PACK_NP;
/// Whether [`gemm_nt_packed`](super::gemm_nt_packed) packs B on `isa` when B
/// is f32 with rows of `k` (f16/bf16 always pack; FP8 has its own rule):
/// everywhere but on AVX2 from [`PACK_KC`] up. There the packed kernel's
/// broadcasts of A compete with its FMAs (256-bit operations are two
/// micro-ops on Zen 1), while the dot-product tiles load both operands as
/// vectors. Measured on Zen 1 (GFLOP/s, tiles against packed): projections
/// (512 x 3072 x 2048, cold weights) 32-36 against 27-31; a head's key and
/// value decompression (64 x 128 x 512) 36 against 30; a 512-token V2-Lite
/// prefill with f32 weights 12% faster on one thread and on two. Shorter rows
/// pay the tiles' final sums over fewer steps: the attention scores (k = 192,
/// 512 queries x 64 keys) ran 32.5 against 36 packed, so they still pack.
pub(crate) const fn packs_f32(isa: Isa, k: usize) -> bool {
    !matches!(isa, Isa::Avx2) || k < PACK_KC
}

/// Whether a product with many rows of A and an f16, bf16 or FP8 B of rows
/// of `k`, given `len` f32 of packing scratch, runs the f32 dot-product tiles
/// on B's rows widened into that scratch instead of packing: where an f32 B
/// would not be packed ([`packs_f32`]) and one tile's rows of B fit.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) const fn widens(isa: Isa, k: usize, len: usize) -> bool {
    !packs_f32(isa, k) && len >= tiles(isa).nt_nr.saturating_mul(k)
}

/// Least rows of A for which [`gemm_nt_packed`](super::gemm_nt_packed) packs
/// (fewer: the dot-product form). Packing widens every panel of B once per
/// block of A rows; below 32 rows that costs more than it saves: on an AVX2
/// core (Zen 1) the dot-product tiles ran f32 and bf16 weights 1.2-2x faster
/// than the packed product at 16 to 31 rows (FP8 from about 24 rows packs a
/// little faster), and a batch of 16 decode tokens took 37 ms against 47.
pub const PACK_MIN_ROWS: usize = 32;
/// Most tasks of a packed [`linear_par`](super::linear_par), each with its own
/// [`pack_len`](super::pack_len) scratch (a layer of `rows` outputs runs
/// [`pack_tasks`](super::pack_tasks)`(rows)` of them).
pub const PACK_SLOTS: usize = 16;

/// Lengths that every [`softmax_block`](super::softmax_block) row must be a
/// multiple of, on any ISA.
pub const SOFTMAX_MULTIPLE: usize = 16;

// Every ISA: lanes divide SOFTMAX_MULTIPLE, a packed panel fits in PACK_NP,
// and no tile is empty (the drivers step by the tile sizes).
const _: () = {
    let mut i = 0;
    while i < Isa::ALL.len() {
        let isa = Isa::ALL[i];
        let t = tiles(isa);
        assert!(SOFTMAX_MULTIPLE.is_multiple_of(lanes(isa)));
        assert!(t.pack_nv * lanes(isa) <= PACK_NP);
        assert!(t.nt_mr > 0 && t.nt_nr > 0 && t.matvec_nr > 0);
        assert!(t.nt_paired[0] > 0 && t.nt_paired[1] > 0);
        assert!(t.nn_mr > 0 && t.nn_nv > 0 && t.nn_tall_mr > 0);
        assert!(t.attn_mr > 0 && t.attn_nv > 0 && t.attn_tall_mr > 0);
        assert!(t.pack_mr > 0 && t.pack_nv > 0);
        assert!(t.f8_mr > 0 && t.f8_nr > 0 && t.f8_matvec_nr > 0);
        // The FP8 NN tiles (f8_nr or f8_matvec_nr vectors) stay in one scale block.
        assert!(crate::dtype::F8_BLOCK.is_multiple_of(t.f8_nr * lanes(isa)));
        assert!(crate::dtype::F8_BLOCK.is_multiple_of(t.f8_matvec_nr * lanes(isa)));
        i += 1;
    }
};
