//! The numeric loops: dot products, blocked matrix products, softmax blocks,
//! RMSNorm, linear layers.
//!
//! # Instruction sets
//!
//! Every kernel is written once, generically over a small vector abstraction
//! ([`Simd`]), and instantiated per instruction set:
//!
//! | [`Isa`]  | where                          | lanes | selection                                   |
//! |----------|--------------------------------|-------|---------------------------------------------|
//! | `Avx512` | x86-64 with AVX-512F           | 16    | runtime (`std`) or `target_feature` (no_std)|
//! | `Avx2`   | x86-64 with AVX2 + FMA + F16C  | 8     | runtime (`std`) or `target_feature` (no_std)|
//! | `Neon`   | aarch64                        | 4     | always (NEON is part of the base ABI)       |
//! | `Scalar` | everything else (thumbv7em...) | 8     | fallback                                    |
//!
//! With `std` the choice is made once per process (`is_x86_feature_detected!`,
//! cached); the environment variable `MLA_ISA=scalar|avx2|avx512` can force a
//! lower level (for comparisons). f16/bf16 weights are widened in registers
//! (bf16: shift left by 16; f16: F16C / AVX-512 `vcvtph2ps`, NEON `fcvtl`,
//! the `half` crate in the scalar path).
//!
//! # Summation order
//!
//! A dot product of length `k` is computed in one canonical order: lane `j` of
//! a vector accumulator sums the elements `j, j + L, j + 2L, ...` of the whole
//! vectors with fused multiply-adds (plain multiply-add in the scalar path),
//! the lanes are reduced with a fixed tree, then the `k % L` tail elements are
//! added one by one. [`nn`]-style accumulations (`C += A B`) add the products
//! in increasing `k`. Every tile shape follows the same order, so a value never
//! depends on which tile, block or task computed it: results are bitwise
//! independent of the thread count and of how work is split (within one
//! process: a different [`Isa`] rounds differently).
//!
//! # Safety
//!
//! The inner kernels take raw pointers; the safe wrappers ([`Mat`], [`MatMut`],
//! [`gemm_nt`], [`gemm_nn`], ...) check every extent against the slice lengths
//! first, so the pointers the kernels compute stay in bounds.

use crate::dtype::Elems;
use crate::parallel::{Parallel, SharedMut, MAX_TASKS};
use crate::weights::Tensor;
use core::marker::PhantomData;
use half::{bf16, f16};

#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(target_arch = "x86_64")]
mod x86;

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
            Isa::Avx2 => x86::has_avx2(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => x86::has_avx512(),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => true,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Every instruction set this machine supports, best first.
    pub fn available() -> impl Iterator<Item = Isa> {
        [Isa::Avx512, Isa::Avx2, Isa::Neon, Isa::Scalar]
            .into_iter()
            .filter(|i| i.supported())
    }
}

#[cfg(feature = "std")]
static CHOSEN: core::sync::atomic::AtomicU8 = core::sync::atomic::AtomicU8::new(0);

fn detect() -> Isa {
    let best = Isa::available().next().unwrap_or(Isa::Scalar);
    #[cfg(feature = "std")]
    {
        if let Ok(want) = std::env::var("MLA_ISA") {
            let forced = [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon]
                .into_iter()
                .find(|i| i.name() == want.trim());
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
        const CODES: [Isa; 4] = [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon];
        let c = CHOSEN.load(Ordering::Relaxed);
        if let Some(&i) = c.checked_sub(1).and_then(|c| CODES.get(c as usize)) {
            return i;
        }
        let i = detect();
        let code = CODES.iter().position(|&x| x == i).unwrap_or(0) as u8 + 1;
        CHOSEN.store(code, Ordering::Relaxed);
        i
    }
    #[cfg(not(feature = "std"))]
    {
        detect()
    }
}

// ----------------------------------------------------------------------------
// The vector abstraction
// ----------------------------------------------------------------------------

/// One vector instruction set: `LANES` f32 lanes in a register type `V`.
///
/// # Safety
/// The methods use the instruction set's intrinsics: they may only run where
/// that instruction set is available (the dispatchers check [`Isa::supported`]
/// or run inside `#[target_feature]` functions). Pointer arguments must be
/// valid for `LANES` elements.
pub(crate) trait Simd: Copy {
    /// f32 lanes per vector.
    const LANES: usize;
    /// The register type.
    type V: Copy;
    unsafe fn zero() -> Self::V;
    unsafe fn splat(x: f32) -> Self::V;
    unsafe fn load(p: *const f32) -> Self::V;
    unsafe fn load_bf16(p: *const bf16) -> Self::V;
    unsafe fn load_f16(p: *const f16) -> Self::V;
    unsafe fn store(p: *mut f32, v: Self::V);
    /// `a * b + c` (fused where the instruction set has it).
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
    /// Sum of the lanes, in a fixed order.
    unsafe fn hsum(v: Self::V) -> f32;
    /// Maximum of the lanes.
    unsafe fn hmax(v: Self::V) -> f32;
    /// `e^x` per lane (relative error ~1e-7); exactly 0 below -87.
    unsafe fn exp(x: Self::V) -> Self::V;

    /// Transposes a `LANES x LANES` block, widening: element `t` of row `r`
    /// (at `src + r * lds + t`) goes to `dst + t * ldd + r`.
    ///
    /// # Safety
    /// `src` valid for `LANES` rows of `LANES` elements (stride `lds`), `dst`
    /// for `LANES` rows of `LANES` f32 (stride `ldd`); the ISA is available.
    #[inline(always)]
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(dead_code)
    )]
    unsafe fn transpose<E: Elem>(src: *const E, lds: usize, dst: *mut f32, ldd: usize) {
        for r in 0..Self::LANES {
            for t in 0..Self::LANES {
                // SAFETY: r, t < LANES: inside the caller's extents.
                unsafe { *dst.add(t * ldd + r) = (*src.add(r * lds + t)).f() };
            }
        }
    }
}

/// An element type a matrix can be stored in (widened to f32 on load).
pub(crate) trait Elem: Copy + Sync + Send + 'static {
    /// Loads `S::LANES` elements at `p`, widened.
    ///
    /// # Safety
    /// `p` valid for `S::LANES` elements; `S` available.
    unsafe fn vload<S: Simd>(p: *const Self) -> S::V;
    fn f(self) -> f32;
    /// `p` as an f32 pointer when `Self` is f32.
    #[allow(dead_code)]
    fn as_f32(_p: *const Self) -> Option<*const f32> {
        None
    }
}

impl Elem for f32 {
    #[inline(always)]
    unsafe fn vload<S: Simd>(p: *const f32) -> S::V {
        // SAFETY: forwarded contract.
        unsafe { S::load(p) }
    }
    #[inline(always)]
    fn f(self) -> f32 {
        self
    }
    #[inline(always)]
    fn as_f32(p: *const f32) -> Option<*const f32> {
        Some(p)
    }
}

impl Elem for bf16 {
    #[inline(always)]
    unsafe fn vload<S: Simd>(p: *const bf16) -> S::V {
        // SAFETY: forwarded contract.
        unsafe { S::load_bf16(p) }
    }
    #[inline(always)]
    fn f(self) -> f32 {
        self.to_f32()
    }
}

impl Elem for f16 {
    #[inline(always)]
    unsafe fn vload<S: Simd>(p: *const f16) -> S::V {
        // SAFETY: forwarded contract.
        unsafe { S::load_f16(p) }
    }
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        inline(never)
    )]
    #[cfg_attr(any(target_arch = "x86_64", target_arch = "aarch64"), inline(always))]
    fn f(self) -> f32 {
        self.to_f32()
    }
}

/// The portable fallback: 8 lanes in an array (4 on small targets, for code
/// size), plain multiply-add (no FMA).
#[derive(Clone, Copy)]
pub(crate) struct Scalar;

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const SL: usize = 8;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const SL: usize = 4;

impl Simd for Scalar {
    const LANES: usize = SL;
    type V = [f32; SL];
    #[inline(always)]
    unsafe fn zero() -> Self::V {
        [0.0; SL]
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self::V {
        [x; SL]
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self::V {
        // SAFETY: p is valid for SL f32 (trait contract); read_unaligned needs no alignment.
        unsafe { p.cast::<[f32; SL]>().read_unaligned() }
    }
    #[inline(always)]
    unsafe fn load_bf16(p: *const bf16) -> Self::V {
        // SAFETY: p is valid for SL elements (trait contract).
        let h = unsafe { p.cast::<[bf16; SL]>().read_unaligned() };
        h.map(|x| x.to_f32())
    }
    #[inline(always)]
    unsafe fn load_f16(p: *const f16) -> Self::V {
        // SAFETY: p is valid for SL elements (trait contract).
        let h = unsafe { p.cast::<[f16; SL]>().read_unaligned() };
        widen_f16(h)
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self::V) {
        // SAFETY: p is valid for SL f32 writes (trait contract).
        unsafe { p.cast::<[f32; SL]>().write_unaligned(v) }
    }
    #[inline(always)]
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        let mut r = c;
        for ((r, &a), &b) in r.iter_mut().zip(a.iter()).zip(b.iter()) {
            *r += a * b;
        }
        r
    }
    #[inline(always)]
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V {
        let mut r = a;
        r.iter_mut().zip(b.iter()).for_each(|(r, &b)| *r += b);
        r
    }
    #[inline(always)]
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V {
        let mut r = a;
        r.iter_mut().zip(b.iter()).for_each(|(r, &b)| *r *= b);
        r
    }
    #[inline(always)]
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V {
        let mut r = a;
        r.iter_mut().zip(b.iter()).for_each(|(r, &b)| {
            if b > *r {
                *r = b
            }
        });
        r
    }
    #[inline(always)]
    unsafe fn hsum(v: Self::V) -> f32 {
        // Halve the vector repeatedly: lane i += lane i + half.
        let mut v = v;
        let mut half = SL / 2;
        while half > 0 {
            let (lo, hi) = v.split_at_mut(half);
            lo.iter_mut().zip(hi.iter()).for_each(|(a, &b)| *a += b);
            half /= 2;
        }
        v[0]
    }
    #[inline(always)]
    unsafe fn hmax(v: Self::V) -> f32 {
        v.iter()
            .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a })
    }
    #[inline(always)]
    unsafe fn exp(x: Self::V) -> Self::V {
        x.map(|v| if v < EXP_LO { 0.0 } else { libm::expf(v) })
    }
}

/// f16 to f32 for a scalar vector (software conversion on targets without
/// hardware support: kept out of line on small targets, for code size).
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    inline(never)
)]
#[cfg_attr(any(target_arch = "x86_64", target_arch = "aarch64"), inline(always))]
fn widen_f16(h: [f16; SL]) -> [f32; SL] {
    h.map(|x| x.to_f32())
}

/// Below this, `exp` returns 0 (e^-87 ~ 1.6e-38, near the f32 normal range).
pub(crate) const EXP_LO: f32 = -87.0;
/// Above this the vector `exp` clamps (softmax arguments are <= 0).
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
pub(crate) const EXP_HI: f32 = 88.0;
// Cody-Waite split of ln 2 and the Cephes expf polynomial (|rel err| < 2^-23
// on [-ln2/2, ln2/2]); shared by the SIMD implementations.
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
pub(crate) const LOG2E: f32 = core::f32::consts::LOG2_E;
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
pub(crate) const LN2_HI: f32 = 0.693_359_4;
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
pub(crate) const LN2_LO: f32 = -2.121_944_4e-4;
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
pub(crate) const EXP_P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    0.166_666_65,
    0.5,
];

// ----------------------------------------------------------------------------
// Matrix views
// ----------------------------------------------------------------------------

/// `rows * cols` fits in a buffer of `len` elements with row stride `stride`.
fn fits(len: usize, rows: usize, cols: usize, stride: usize) -> bool {
    if rows == 0 || cols == 0 {
        return true;
    }
    if rows > 1 && stride < cols {
        return false;
    }
    (rows - 1)
        .checked_mul(stride)
        .and_then(|x| x.checked_add(cols))
        .is_some_and(|end| end <= len)
}

/// A read-only row-major matrix view: `rows` rows of `cols` elements, row `i`
/// at `data[i * stride ..]`. The extent is checked at construction.
#[derive(Clone, Copy, Debug)]
pub struct Mat<'a, E> {
    data: &'a [E],
    rows: usize,
    cols: usize,
    stride: usize,
}

impl<'a, E> Mat<'a, E> {
    /// A view, or `None` if the rows do not fit in `data` (or overlap: `stride < cols`).
    pub fn new(data: &'a [E], rows: usize, cols: usize, stride: usize) -> Option<Self> {
        fits(data.len(), rows, cols, stride).then_some(Mat {
            data,
            rows,
            cols,
            stride,
        })
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    fn ptr(&self) -> *const E {
        self.data.as_ptr()
    }
}

/// A matrix view over typed elements (weights: f32, f16 or bf16).
#[derive(Clone, Copy, Debug)]
pub enum MatE<'a> {
    /// f32 elements.
    F32(Mat<'a, f32>),
    /// f16 elements.
    F16(Mat<'a, f16>),
    /// bf16 elements.
    BF16(Mat<'a, bf16>),
}

impl<'a> MatE<'a> {
    /// A view over `e` (see [`Mat::new`]).
    pub fn new(e: Elems<'a>, rows: usize, cols: usize, stride: usize) -> Option<Self> {
        Some(match e {
            Elems::F32(s) => MatE::F32(Mat::new(s, rows, cols, stride)?),
            Elems::F16(s) => MatE::F16(Mat::new(s, rows, cols, stride)?),
            Elems::BF16(s) => MatE::BF16(Mat::new(s, rows, cols, stride)?),
        })
    }

    /// Rows `start .. start + count` of tensor `t` (all its columns).
    pub fn tensor_rows(t: &Tensor<'a>, start: usize, count: usize) -> Option<Self> {
        let sub = t.rows(start, count)?;
        MatE::new(sub.data, count, t.cols, t.cols)
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        match self {
            MatE::F32(m) => m.rows,
            MatE::F16(m) => m.rows,
            MatE::BF16(m) => m.rows,
        }
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        match self {
            MatE::F32(m) => m.cols,
            MatE::F16(m) => m.cols,
            MatE::BF16(m) => m.cols,
        }
    }
}

/// A writable row-major f32 matrix view (`rows` x `cols`, row stride `stride`).
///
/// Built safely from a `&mut [f32]` ([`MatMut::new`]) or, for tasks that write
/// disjoint parts of one buffer concurrently, by
/// [`crate::parallel::SharedMut::mat`].
pub struct MatMut<'a> {
    ptr: *mut f32,
    rows: usize,
    cols: usize,
    stride: usize,
    _life: PhantomData<&'a mut [f32]>,
}

impl<'a> MatMut<'a> {
    /// A view, or `None` if the rows do not fit in `data`.
    pub fn new(data: &'a mut [f32], rows: usize, cols: usize, stride: usize) -> Option<Self> {
        fits(data.len(), rows, cols, stride).then_some(MatMut {
            ptr: data.as_mut_ptr(),
            rows,
            cols,
            stride,
            _life: PhantomData,
        })
    }

    /// A view over raw memory.
    ///
    /// # Safety
    /// `ptr` is valid for reads and writes of the `rows x cols` window (row `i`
    /// at `ptr + i * stride`) for `'a`, and nothing else accesses that window
    /// while the view is alive.
    pub(crate) unsafe fn from_raw(ptr: *mut f32, rows: usize, cols: usize, stride: usize) -> Self {
        MatMut {
            ptr,
            rows,
            cols,
            stride,
            _life: PhantomData,
        }
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row `i` as a slice (`None` out of range).
    pub fn row(&mut self, i: usize) -> Option<&mut [f32]> {
        if i >= self.rows {
            return None;
        }
        // SAFETY: row i < rows lies inside the window this view owns (constructor
        // contract); the &mut self borrow keeps it unique.
        Some(unsafe { core::slice::from_raw_parts_mut(self.ptr.add(i * self.stride), self.cols) })
    }

    /// The sub-view of rows `r0 .. r0 + n` and columns `c0 .. c0 + m`.
    pub fn sub(&mut self, r0: usize, n: usize, c0: usize, m: usize) -> Option<MatMut<'_>> {
        if r0.checked_add(n)? > self.rows || c0.checked_add(m)? > self.cols {
            return None;
        }
        // SAFETY: the sub-window lies inside this view's window (checked); the
        // &mut self borrow keeps it unique for its lifetime.
        Some(unsafe {
            MatMut::from_raw(
                if n == 0 {
                    self.ptr
                } else {
                    self.ptr.add(r0 * self.stride + c0)
                },
                n,
                m,
                self.stride,
            )
        })
    }
}

// ----------------------------------------------------------------------------
// Generic kernels (raw pointers; extents checked by the callers)
// ----------------------------------------------------------------------------

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
/// `C[i][j] = A_i . B_j` for an `MR x NR` tile in the canonical order.
///
/// # Safety
/// `a` valid for `MR` rows of `k` at stride `lda`, `b` for `NR` rows of `k` at
/// stride `ldb`, `c` for `MR` rows of `NR` at stride `ldc`; `S` available.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn nt_tile<S: Simd, E: Elem, const MR: usize, const NR: usize>(
    a: *const f32,
    lda: usize,
    b: *const E,
    ldb: usize,
    k: usize,
    c: *mut f32,
    ldc: usize,
) {
    let l = S::LANES;
    let kv = k - k % l;
    // SAFETY (whole body): every offset is row * stride + column with row < MR
    // (a, c) or NR (b) and column < k (a, b) or NR (c): inside the extents the
    // caller guarantees.
    unsafe {
        let mut acc = [[S::zero(); NR]; MR];
        let mut kk = 0;
        while kk < kv {
            let mut bv = [S::zero(); NR];
            for (j, v) in bv.iter_mut().enumerate() {
                *v = E::vload::<S>(b.add(j * ldb + kk));
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let av = S::load(a.add(i * lda + kk));
                for (s, &bj) in row.iter_mut().zip(bv.iter()) {
                    *s = S::fma(av, bj, *s);
                }
            }
            kk += l;
        }
        for (i, row) in acc.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                let mut s = S::hsum(v);
                for t in kv..k {
                    s += *a.add(i * lda + t) * (*b.add(j * ldb + t)).f();
                }
                *c.add(i * ldc + j) = s;
            }
        }
    }
}

/// Raw arguments of an NT product `C (m x n) = A (m x k) . B (n x k)^T`.
#[derive(Clone, Copy)]
pub(crate) struct NtArgs<E> {
    a: *const f32,
    lda: usize,
    m: usize,
    b: *const E,
    ldb: usize,
    n: usize,
    k: usize,
    c: *mut f32,
    ldc: usize,
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
/// Runs the rows `i0..i1` of A against the rows `j0..j1` of B with `MR x NR` tiles.
#[inline(always)]
unsafe fn nt_range<S: Simd, E: Elem, const MR: usize, const NR: usize>(
    p: &NtArgs<E>,
    i0: usize,
    i1: usize,
) {
    let mut j = 0;
    // SAFETY (whole body): tiles stay inside rows i0..i1 <= m of A/C and
    // j..j + NR <= n of B/C (loop bounds); NtArgs extents are checked by its builder.
    unsafe {
        let (a, b, c) = (p.a, p.b, p.c);
        let at = |i: usize| a.add(i * p.lda);
        let ct = |i: usize, j: usize| c.add(i * p.ldc + j);
        while j + NR <= p.n {
            let bj = b.add(j * p.ldb);
            let mut i = i0;
            while i + MR <= i1 {
                nt_tile::<S, E, MR, NR>(at(i), p.lda, bj, p.ldb, p.k, ct(i, j), p.ldc);
                i += MR;
            }
            if MR > 2 && i1 - i == 2 {
                nt_tile::<S, E, 2, NR>(at(i), p.lda, bj, p.ldb, p.k, ct(i, j), p.ldc);
                i += 2;
            }
            while i < i1 {
                nt_tile::<S, E, 1, NR>(at(i), p.lda, bj, p.ldb, p.k, ct(i, j), p.ldc);
                i += 1;
            }
            j += NR;
        }
        while j < p.n {
            let bj = b.add(j * p.ldb);
            let mut i = i0;
            while i + MR <= i1 {
                nt_tile::<S, E, MR, 1>(at(i), p.lda, bj, p.ldb, p.k, ct(i, j), p.ldc);
                i += MR;
            }
            while i < i1 {
                nt_tile::<S, E, 1, 1>(at(i), p.lda, bj, p.ldb, p.k, ct(i, j), p.ldc);
                i += 1;
            }
            j += 1;
        }
    }
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
/// A matrix-vector product (`m == 1`): `1 x NR` tiles over the rows of B; with
/// f16/bf16 weights each tile prefetches the next tile's rows at the pace it
/// reads its own (those rows start on new pages, which the hardware
/// prefetchers do not foresee).
/// Same canonical order as [`nt_tile`].
///
/// # Safety
/// Extents checked by the builder of `p`.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
unsafe fn nt_matvec<S: Simd, E: Elem, const NR: usize>(p: &NtArgs<E>) {
    let l = S::LANES;
    let k = p.k;
    let kv = k - k % l;
    let mut j = 0;
    // SAFETY (whole body): row j + r < n of B and columns < k are in the
    // checked extents; prefetch addresses are computed with wrapping
    // arithmetic and never dereferenced.
    unsafe {
        while j + NR <= p.n {
            let b = p.b.add(j * p.ldb);
            let next = p.b.wrapping_add((j + NR) * p.ldb);
            // f32 rows span two pages and stream well by themselves (measured:
            // prefetching slows them down); 2-byte rows are one page each.
            let more = core::mem::size_of::<E>() < 4 && j + 2 * NR <= p.n;
            let mut acc = [S::zero(); NR];
            let mut kk = 0;
            while kk < kv {
                let av = S::load(p.a.add(kk));
                for (r, s) in acc.iter_mut().enumerate() {
                    if more {
                        prefetch_l2(next.wrapping_add(r * p.ldb + kk).cast::<u8>());
                    }
                    *s = S::fma(av, E::vload::<S>(b.add(r * p.ldb + kk)), *s);
                }
                kk += l;
            }
            for (r, &v) in acc.iter().enumerate() {
                let mut sum = S::hsum(v);
                for t in kv..k {
                    sum += *p.a.add(t) * (*b.add(r * p.ldb + t)).f();
                }
                *p.c.add(j + r) = sum;
            }
            j += NR;
        }
        while j < p.n {
            nt_tile::<S, E, 1, 1>(p.a, p.lda, p.b.add(j * p.ldb), p.ldb, k, p.c.add(j), p.ldc);
            j += 1;
        }
    }
}

/// Bytes of A rows kept hot while a tile row of B is swept over them.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const NT_A_BLOCK_BYTES: usize = 1024 * 1024;

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
/// `C = A B^T`, blocked: rows of A in blocks that stay in L2, `MR x NR` tiles;
/// a single row of A (a matrix-vector product) uses `1 x NR1` tiles.
#[inline(always)]
unsafe fn nt<S: Simd, E: Elem, const MR: usize, const NR: usize, const NR1: usize>(p: &NtArgs<E>) {
    // SAFETY: forwarded NtArgs extents (checked by the builder).
    unsafe {
        if p.m == 1 && (MR != 1 || NR1 != NR) {
            nt_matvec::<S, E, NR1>(p);
            return;
        }
        let row_bytes = p.k.saturating_mul(core::mem::size_of::<f32>());
        let mb = NT_A_BLOCK_BYTES
            .checked_div(row_bytes)
            .unwrap_or(0)
            .checked_div(MR)
            .unwrap_or(0)
            .max(1)
            * MR;
        let mut i0 = 0;
        while i0 < p.m {
            let i1 = p.m.min(i0 + mb);
            nt_range::<S, E, MR, NR>(p, i0, i1);
            i0 = i1;
        }
    }
}

/// `C[i][v*L..] += sum_kk A[i][kk] * B[kk][v*L..]` for `MR` rows and `NV` vectors.
///
/// # Safety
/// `a` valid for `MR` rows of `kdim` (stride `lda`), `b` for `kdim` rows of
/// `NV * LANES` (stride `ldb`), `c` for `MR` rows of `NV * LANES` (stride `ldc`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn nn_tile<S: Simd, E: Elem, const MR: usize, const NV: usize>(
    a: *const f32,
    lda: usize,
    b: *const E,
    ldb: usize,
    kdim: usize,
    c: *mut f32,
    ldc: usize,
) {
    let l = S::LANES;
    // SAFETY (whole body): offsets are row * stride + column inside the extents
    // the caller guarantees (rows < MR or kdim, columns < NV * LANES or kdim).
    unsafe {
        let mut acc = [[S::zero(); NV]; MR];
        for (i, row) in acc.iter_mut().enumerate() {
            for (v, s) in row.iter_mut().enumerate() {
                *s = S::load(c.add(i * ldc + v * l));
            }
        }
        for kk in 0..kdim {
            let mut bv = [S::zero(); NV];
            for (v, x) in bv.iter_mut().enumerate() {
                *x = E::vload::<S>(b.add(kk * ldb + v * l));
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let av = S::splat(*a.add(i * lda + kk));
                for (s, &bx) in row.iter_mut().zip(bv.iter()) {
                    *s = S::fma(av, bx, *s);
                }
            }
        }
        for (i, row) in acc.iter().enumerate() {
            for (v, &s) in row.iter().enumerate() {
                S::store(c.add(i * ldc + v * l), s);
            }
        }
    }
}

/// Depth (k) of one packed panel of [`gemm_nt_packed`].
pub const PACK_KC: usize = 256;
/// Widest packed panel (columns of C) of any instruction set.
pub const PACK_NP: usize = 64;
/// f32 of scratch one [`gemm_nt_packed`] call needs at most (any `k`).
pub const PACK_LEN: usize = PACK_KC * PACK_NP;

/// f32 of scratch a [`gemm_nt_packed`] call with depth `k` needs.
pub const fn pack_len(k: usize) -> usize {
    PACK_NP * if k < PACK_KC { k } else { PACK_KC }
}
/// Least rows of A for which [`gemm_nt_packed`] packs (fewer: the dot-product form).
pub const PACK_MIN_ROWS: usize = 16;

/// Hints the cache hierarchy to bring the line at `p` into L2 (no effect on
/// the results; a no-op where there is no prefetch instruction).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
fn prefetch_l2(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults and does not access memory
    // architecturally, whatever the address; SSE is baseline on x86-64.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T1 }>(p.cast::<i8>())
    };
    #[cfg(target_arch = "aarch64")]
    // SAFETY: PRFM never faults and has no architectural effect.
    unsafe {
        core::arch::asm!("prfm pldl2keep, [{0}]", in(reg) p, options(nostack, readonly, preserves_flags))
    };
}

/// One `MR x (NV vectors)` tile of the packed product: `C[r][j] (+)= sum_kk
/// A[r][kk] * P[kk][j]`, the products added in increasing `kk` onto `C` (or
/// onto 0 when `first`); only the first `nc` columns of `C` are touched.
///
/// # Safety
/// `a` valid for `MR` rows of `kc` (stride `lda`); `pack` for `kc * NV * LANES`;
/// `c` for `MR` rows of `nc <= NV * LANES` (stride `ldc`).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn ntp_tile<S: Simd, const MR: usize, const NV: usize>(
    a: *const f32,
    lda: usize,
    pack: *const f32,
    kc: usize,
    c: *mut f32,
    ldc: usize,
    nc: usize,
    first: bool,
) {
    let l = S::LANES;
    let np = NV * l;
    let full = nc == np;
    let mut tmp = [0f32; PACK_NP];
    // SAFETY (whole body): rows < MR, columns < nc (C, via tmp when partial) or
    // np (pack), kk < kc: inside the caller's extents; tmp holds PACK_NP >= np.
    unsafe {
        let mut acc = [[S::zero(); NV]; MR];
        if !first {
            for (r, row) in acc.iter_mut().enumerate() {
                let cr = c.add(r * ldc);
                if full {
                    for (v, x) in row.iter_mut().enumerate() {
                        *x = S::load(cr.add(v * l));
                    }
                } else {
                    for (j, t) in tmp.iter_mut().enumerate().take(np) {
                        *t = if j < nc { *cr.add(j) } else { 0.0 };
                    }
                    for (v, x) in row.iter_mut().enumerate() {
                        *x = S::load(tmp.as_ptr().add(v * l));
                    }
                }
            }
        }
        for kk in 0..kc {
            let mut w = [S::zero(); NV];
            for (v, x) in w.iter_mut().enumerate() {
                *x = S::load(pack.add(kk * np + v * l));
            }
            for (r, row) in acc.iter_mut().enumerate() {
                let av = S::splat(*a.add(r * lda + kk));
                for (x, &wv) in row.iter_mut().zip(w.iter()) {
                    *x = S::fma(av, wv, *x);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            let cr = c.add(r * ldc);
            if full {
                for (v, &x) in row.iter().enumerate() {
                    S::store(cr.add(v * l), x);
                }
            } else {
                for (v, &x) in row.iter().enumerate() {
                    S::store(tmp.as_mut_ptr().add(v * l), x);
                }
                for (j, &t) in tmp.iter().enumerate().take(nc) {
                    *cr.add(j) = t;
                }
            }
        }
    }
}

/// The packed NT product for many rows of A (prefill): B is copied (widened to
/// f32) panel by panel, `NV * LANES` rows of B by [`PACK_KC`] of k, into `pack`
/// in k-major order, then tiles of `MR` rows of A broadcast their elements
/// against the panel. Every `C[i][j]` is the sum of `A[i][k] B[j][k]` added in
/// increasing `k` (fused where the ISA has FMA), whatever the tile.
///
/// # Safety
/// Extents checked by the builder of `p`; `pack` valid for `pack_len(k)` f32 and
/// `NV * LANES <= PACK_NP`.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
unsafe fn ntp<S: Simd, E: Elem, const MR: usize, const NV: usize>(p: &NtArgs<E>, pack: *mut f32) {
    let np = NV * S::LANES;
    // Rows of A per block: their k-slice (PACK_KC wide) stays in L2 while every
    // panel of B is swept over it.
    let most = (NT_A_BLOCK_BYTES / (PACK_KC * core::mem::size_of::<f32>())).max(MR);
    let mb = ceil_div(ceil_div(p.m, ceil_div(p.m, most)), MR) * MR;
    // SAFETY (whole body): i < m, j0 + jj < n (or padding), k0 + kk < k: inside
    // the checked extents; pack offsets kk * np + jj < min(k, PACK_KC) * np <= pack_len(k).
    unsafe {
        let mut i0 = 0;
        while i0 < p.m {
            let i1 = p.m.min(i0 + mb);
            let mut k0 = 0;
            while k0 < p.k {
                let kc = PACK_KC.min(p.k - k0);
                let first = k0 == 0;
                let mut j0 = 0;
                while j0 < p.n {
                    let nc = np.min(p.n - j0);
                    // Transpose in LANES x LANES blocks (in registers where
                    // the ISA has a transpose); ragged edges element by
                    // element; columns past nc are zero.
                    let lanes = S::LANES;
                    let mut kb = 0;
                    while kb < kc {
                        let kn = lanes.min(kc - kb);
                        let mut jj = 0;
                        while jj < np {
                            let dst = pack.add(kb * np + jj);
                            let src = p.b.add((j0 + jj) * p.ldb + k0 + kb);
                            if kn == lanes && jj + lanes <= nc {
                                S::transpose::<E>(src, p.ldb, dst, np);
                            } else {
                                for r in 0..lanes {
                                    for t in 0..kn {
                                        *dst.add(t * np + r) = if jj + r < nc {
                                            (*src.add(r * p.ldb + t)).f()
                                        } else {
                                            0.0
                                        };
                                    }
                                }
                            }
                            jj += lanes;
                        }
                        kb += kn;
                    }
                    let at = |i: usize| p.a.add(i * p.lda + k0);
                    let ct = |i: usize| p.c.add(i * p.ldc + j0);
                    // While the tiles run, prefetch the next panel's rows of B
                    // into L2, spread evenly over the tiles.
                    let esz = core::mem::size_of::<E>().max(1);
                    let per_row = (kc * esz).div_ceil(64);
                    let next = np.min(p.n - j0 - nc);
                    let total = next * per_row;
                    let per_tile = total.div_ceil(((i1 - i0) / MR).max(1));
                    let mut pf = 0;
                    let mut i = i0;
                    while i + MR <= i1 {
                        for _ in 0..per_tile.min(total - pf) {
                            let (row, line) = (pf / per_row, pf % per_row);
                            let ptr =
                                p.b.add((j0 + nc + row) * p.ldb + k0)
                                    .cast::<u8>()
                                    .add(line * 64);
                            prefetch_l2(ptr);
                            pf += 1;
                        }
                        ntp_tile::<S, MR, NV>(at(i), p.lda, pack, kc, ct(i), p.ldc, nc, first);
                        i += MR;
                    }
                    if MR > 4 {
                        while i + 4 <= i1 {
                            ntp_tile::<S, 4, NV>(at(i), p.lda, pack, kc, ct(i), p.ldc, nc, first);
                            i += 4;
                        }
                    }
                    while i < i1 {
                        ntp_tile::<S, 1, NV>(at(i), p.lda, pack, kc, ct(i), p.ldc, nc, first);
                        i += 1;
                    }
                    j0 += nc;
                }
                k0 += kc;
            }
            i0 = i1;
        }
    }
}

/// Raw arguments of an NN accumulation `C (m x n) += A (m x kdim) . B (kdim x n)`.
#[derive(Clone, Copy)]
pub(crate) struct NnArgs<E> {
    a: *const f32,
    lda: usize,
    m: usize,
    b: *const E,
    ldb: usize,
    kdim: usize,
    n: usize,
    c: *mut f32,
    ldc: usize,
}

#[inline(always)]
unsafe fn nn_cols<S: Simd, E: Elem, const MR: usize, const NV: usize>(p: &NnArgs<E>, j: usize) {
    // SAFETY (whole body): column block j .. j + NV * LANES <= n (caller), rows
    // inside 0..m (loop bounds); NnArgs extents are checked by its builder.
    unsafe {
        let b = p.b.add(j);
        let mut i = 0;
        while i + MR <= p.m {
            let (a, c) = (p.a.add(i * p.lda), p.c.add(i * p.ldc + j));
            nn_tile::<S, E, MR, NV>(a, p.lda, b, p.ldb, p.kdim, c, p.ldc);
            i += MR;
        }
        while MR > 1 && i < p.m {
            let (a, c) = (p.a.add(i * p.lda), p.c.add(i * p.ldc + j));
            nn_tile::<S, E, 1, NV>(a, p.lda, b, p.ldb, p.kdim, c, p.ldc);
            i += 1;
        }
    }
}

/// `C += A B` with `MR x (NV vectors)` tiles, then 1-vector columns in taller
/// `MR1 x 1` tiles (enough independent accumulators to cover the FMA latency),
/// then a scalar tail for `n % LANES` columns.
#[inline(always)]
unsafe fn nn<S: Simd, E: Elem, const MR: usize, const NV: usize, const MR1: usize>(p: &NnArgs<E>) {
    let l = S::LANES;
    let nv = p.n - p.n % l;
    let mut j = 0;
    // SAFETY: column blocks stay below nv <= n; the tail loop indexes rows < m,
    // kk < kdim, columns < n: inside the checked extents.
    unsafe {
        while j + NV * l <= nv {
            nn_cols::<S, E, MR, NV>(p, j);
            j += NV * l;
        }
        if NV > 1 || MR1 != MR {
            while j < nv {
                nn_cols::<S, E, MR1, 1>(p, j);
                j += l;
            }
        }
        for i in 0..p.m {
            for jj in nv..p.n {
                let cp = p.c.add(i * p.ldc + jj);
                let mut s = *cp;
                for kk in 0..p.kdim {
                    s += *p.a.add(i * p.lda + kk) * (*p.b.add(kk * p.ldb + jj)).f();
                }
                *cp = s;
            }
        }
    }
}

/// `x[i] *= s` for a row.
#[inline(always)]
unsafe fn scale_row<S: Simd>(x: *mut f32, n: usize, s: f32) {
    let l = S::LANES;
    // SAFETY: x valid for n elements (caller); vector steps stay below n - n % l.
    unsafe {
        let sv = S::splat(s);
        let mut i = 0;
        while i + l <= n {
            S::store(x.add(i), S::mul(S::load(x.add(i)), sv));
            i += l;
        }
        while i < n {
            *x.add(i) *= s;
            i += 1;
        }
    }
}

/// `y[i] += s * x[i]` for a row.
#[inline(always)]
unsafe fn axpy_row<S: Simd>(s: f32, x: *const f32, y: *mut f32, n: usize) {
    let l = S::LANES;
    // SAFETY: x and y valid for n elements (caller); vector steps stay below n - n % l.
    unsafe {
        let sv = S::splat(s);
        let mut i = 0;
        while i + l <= n {
            S::store(y.add(i), S::fma(sv, S::load(x.add(i)), S::load(y.add(i))));
            i += l;
        }
        while i < n {
            *y.add(i) += s * *x.add(i);
            i += 1;
        }
    }
}

/// One block of an online softmax (see [`softmax_block`]).
///
/// # Safety
/// `x` valid for `len` elements, `len` a multiple of `S::LANES`, `valid <= len`.
#[inline(always)]
unsafe fn softmax_row<S: Simd>(
    x: *mut f32,
    len: usize,
    valid: usize,
    scale: f32,
    m: &mut f32,
    l: &mut f32,
) -> f32 {
    let lanes = S::LANES;
    // SAFETY: all accesses are x[i] with i < len (caller's extent).
    unsafe {
        for i in valid..len {
            *x.add(i) = f32::NEG_INFINITY;
        }
        let sv = S::splat(scale);
        let mut mx = S::splat(f32::NEG_INFINITY);
        let mut i = 0;
        while i < len {
            let v = S::mul(S::load(x.add(i)), sv);
            S::store(x.add(i), v);
            mx = S::max(mx, v);
            i += lanes;
        }
        let m_new = m.max(S::hmax(mx));
        let alpha = if *m == f32::NEG_INFINITY {
            0.0
        } else {
            libm::expf(*m - m_new)
        };
        let mv = S::splat(m_new);
        let neg = S::splat(-1.0);
        let mut sum = S::zero();
        let mut i = 0;
        while i < len {
            // x - m as fma(m, -1, x): exact (one rounding), like a subtraction.
            let e = S::exp(S::fma(mv, neg, S::load(x.add(i))));
            S::store(x.add(i), e);
            sum = S::add(sum, e);
            i += lanes;
        }
        *l = *l * alpha + S::hsum(sum);
        *m = m_new;
        alpha
    }
}

/// Online softmax down the columns of a block (see [`softmax_cols`]).
///
/// # Safety
/// `x` valid for `rows` rows of `cols` (stride `ld`); `m`, `l`, `alpha` for `cols`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn softmax_cols_k<S: Simd>(
    x: *mut f32,
    rows: usize,
    cols: usize,
    ld: usize,
    scale: f32,
    m: *mut f32,
    l: *mut f32,
    alpha: *mut f32,
) {
    let lanes = S::LANES;
    let cv = cols - cols % lanes;
    // SAFETY (whole body): offsets r * ld + j with r < rows and j < cols, and
    // j < cols for m, l, alpha: inside the caller's extents.
    unsafe {
        let sv = S::splat(scale);
        let neg = S::splat(-1.0);
        let mut j = 0;
        while j < cv {
            let mut mx = S::splat(f32::NEG_INFINITY);
            for r in 0..rows {
                let p = x.add(r * ld + j);
                let v = S::mul(S::load(p), sv);
                S::store(p, v);
                mx = S::max(mx, v);
            }
            let m_old = S::load(m.add(j));
            let m_new = S::max(m_old, mx);
            // exp(m_old - m_new): 0 on the first block (m_old = -inf).
            let a = S::exp(S::fma(m_new, neg, m_old));
            let mut sum = S::zero();
            for r in 0..rows {
                let p = x.add(r * ld + j);
                let e = S::exp(S::fma(m_new, neg, S::load(p)));
                S::store(p, e);
                sum = S::add(sum, e);
            }
            S::store(l.add(j), S::fma(S::load(l.add(j)), a, sum));
            S::store(m.add(j), m_new);
            S::store(alpha.add(j), a);
            j += lanes;
        }
        for j in cv..cols {
            let mut mx = f32::NEG_INFINITY;
            for r in 0..rows {
                let p = x.add(r * ld + j);
                *p *= scale;
                mx = mx.max(*p);
            }
            let m_old = *m.add(j);
            let m_new = m_old.max(mx);
            let a = if m_old == f32::NEG_INFINITY {
                0.0
            } else {
                libm::expf(m_old - m_new)
            };
            let mut sum = 0.0;
            for r in 0..rows {
                let p = x.add(r * ld + j);
                *p = libm::expf(*p - m_new);
                sum += *p;
            }
            *l.add(j) = *l.add(j) * a + sum;
            *m.add(j) = m_new;
            *alpha.add(j) = a;
        }
    }
}

// ----------------------------------------------------------------------------
// Dispatch
// ----------------------------------------------------------------------------

/// Per-ISA entry points of the generic kernels.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
macro_rules! isa_entry {
    ($name:ident, $S:ty, $feat:literal, $mr:literal, $nr:literal, $nr1:literal, $nv:literal, $mr1:literal, $pmr:literal, $pnv:literal) => {
        pub(crate) mod $name {
            use super::*;
            #[allow(unused_imports)]
            use $S as S;

            /// # Safety
            /// Extents checked by the builder of `p`; `pack` valid for `pack_len(k)` f32; the ISA is available.
            #[target_feature(enable = $feat)]
            pub(crate) unsafe fn ntp<E: Elem>(p: &NtArgs<E>, pack: *mut f32) {
                const { assert!($pnv * <$S as Simd>::LANES <= PACK_NP) };
                // SAFETY: forwarded.
                unsafe { super::ntp::<S, E, $pmr, $pnv>(p, pack) }
            }

            /// # Safety
            /// Extents checked by the builder of `p`; the ISA is available.
            #[target_feature(enable = $feat)]
            pub(crate) unsafe fn nt<E: Elem>(p: &NtArgs<E>) {
                // SAFETY: forwarded.
                unsafe { super::nt::<S, E, $mr, $nr, $nr1>(p) }
            }

            /// # Safety
            /// Extents checked by the builder of `p`; the ISA is available.
            #[target_feature(enable = $feat)]
            pub(crate) unsafe fn nn<E: Elem>(p: &NnArgs<E>) {
                // SAFETY: forwarded.
                unsafe { super::nn::<S, E, $mr, $nv, $mr1>(p) }
            }

            /// # Safety
            /// `x` valid for `len` (a multiple of the lanes), `valid <= len`.
            #[target_feature(enable = $feat)]
            pub(crate) unsafe fn softmax(
                x: *mut f32,
                len: usize,
                valid: usize,
                scale: f32,
                m: &mut f32,
                l: &mut f32,
            ) -> f32 {
                // SAFETY: forwarded.
                unsafe { super::softmax_row::<S>(x, len, valid, scale, m, l) }
            }

            /// # Safety
            /// See `softmax_cols_k`.
            #[target_feature(enable = $feat)]
            #[allow(clippy::too_many_arguments)]
            pub(crate) unsafe fn softmax_cols(
                x: *mut f32,
                rows: usize,
                cols: usize,
                ld: usize,
                scale: f32,
                m: *mut f32,
                l: *mut f32,
                alpha: *mut f32,
            ) {
                // SAFETY: forwarded.
                unsafe { super::softmax_cols_k::<S>(x, rows, cols, ld, scale, m, l, alpha) }
            }

            /// # Safety
            /// `x` valid for `n` elements.
            #[target_feature(enable = $feat)]
            pub(crate) unsafe fn scale(x: *mut f32, n: usize, s: f32) {
                // SAFETY: forwarded.
                unsafe { super::scale_row::<S>(x, n, s) }
            }

            /// # Safety
            /// `x`, `y` valid for `n` elements.
            #[target_feature(enable = $feat)]
            pub(crate) unsafe fn axpy(s: f32, x: *const f32, y: *mut f32, n: usize) {
                // SAFETY: forwarded.
                unsafe { super::axpy_row::<S>(s, x, y, n) }
            }
        }
    };
}

// The scalar entry has no target feature to enable: "sse2" is baseline on
// x86-64, "neon" on aarch64; other targets take the plain functions below.
#[cfg(target_arch = "x86_64")]
isa_entry!(scalar_k, Scalar, "sse2", 2, 2, 4, 1, 2, 4, 1);
#[cfg(target_arch = "aarch64")]
isa_entry!(scalar_k, Scalar, "neon", 2, 2, 4, 1, 2, 4, 1);
// Small targets (Cortex-M...): for code size, one dot product at a time, with
// f16/bf16 rows widened into a stack buffer so that a single f32 loop serves
// every element type; the canonical order is unchanged (lanes over whole
// vectors, fixed tree, then the tail).
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub(crate) mod scalar_k {
    use super::*;

    /// `acc[j] += a[t] * b[t]` over `t = j, j + SL, ...` for `n` (a multiple of SL) elements.
    #[inline(never)]
    unsafe fn acc_f32(acc: &mut [f32; SL], a: *const f32, b: *const f32, n: usize) {
        let mut t = 0;
        while t < n {
            // SAFETY: a and b valid for n elements (caller); t + SL <= n.
            let (av, bv) = unsafe { (Scalar::load(a.add(t)), Scalar::load(b.add(t))) };
            // SAFETY: plain array arithmetic.
            *acc = unsafe { Scalar::fma(av, bv, *acc) };
            t += SL;
        }
    }

    /// One canonical dot product of length `k`.
    unsafe fn dot1<E: Elem>(a: *const f32, b: *const E, k: usize) -> f32 {
        const CHUNK: usize = 16 * SL;
        let kv = k - k % SL;
        let mut acc = [0f32; SL];
        let mut buf = [0f32; CHUNK];
        let mut kk = 0;
        // SAFETY (whole body): a and b valid for k elements (caller); every
        // offset is below k.
        unsafe {
            while kk < kv {
                let len = CHUNK.min(kv - kk);
                let bp = match E::as_f32(b.add(kk)) {
                    Some(bp) => bp,
                    None => {
                        for (t, x) in buf.iter_mut().enumerate().take(len) {
                            *x = (*b.add(kk + t)).f();
                        }
                        buf.as_ptr()
                    }
                };
                acc_f32(&mut acc, a.add(kk), bp, len);
                kk += len;
            }
            let mut s = Scalar::hsum(acc);
            for t in kv..k {
                s += *a.add(t) * (*b.add(t)).f();
            }
            s
        }
    }

    pub(crate) unsafe fn nt<E: Elem>(p: &NtArgs<E>) {
        for i in 0..p.m {
            for j in 0..p.n {
                // SAFETY: rows i < m of A and C, j < n of B: inside the extents
                // checked by the builder of p.
                unsafe {
                    *p.c.add(i * p.ldc + j) = dot1(p.a.add(i * p.lda), p.b.add(j * p.ldb), p.k)
                };
            }
        }
    }
    pub(crate) unsafe fn nn<E: Elem>(p: &NnArgs<E>) {
        // SAFETY: forwarded.
        unsafe { super::nn::<Scalar, E, 1, 1, 1>(p) }
    }
    pub(crate) unsafe fn softmax(
        x: *mut f32,
        len: usize,
        valid: usize,
        scale: f32,
        m: &mut f32,
        l: &mut f32,
    ) -> f32 {
        // SAFETY: forwarded.
        unsafe { super::softmax_row::<Scalar>(x, len, valid, scale, m, l) }
    }
    pub(crate) unsafe fn scale(x: *mut f32, n: usize, s: f32) {
        // SAFETY: forwarded.
        unsafe { super::scale_row::<Scalar>(x, n, s) }
    }
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn softmax_cols(
        x: *mut f32,
        rows: usize,
        cols: usize,
        ld: usize,
        scale: f32,
        m: *mut f32,
        l: *mut f32,
        alpha: *mut f32,
    ) {
        // SAFETY: forwarded.
        unsafe { super::softmax_cols_k::<Scalar>(x, rows, cols, ld, scale, m, l, alpha) }
    }
    pub(crate) unsafe fn axpy(s: f32, x: *const f32, y: *mut f32, n: usize) {
        // SAFETY: forwarded.
        unsafe { super::axpy_row::<Scalar>(s, x, y, n) }
    }
}
#[cfg(target_arch = "x86_64")]
isa_entry!(avx2_k, x86::Avx2, "avx2,fma,f16c", 4, 3, 8, 2, 8, 6, 2);
#[cfg(target_arch = "x86_64")]
isa_entry!(
    avx512_k,
    x86::Avx512,
    "avx512f,avx2,fma,f16c",
    4,
    4,
    8,
    4,
    8,
    6,
    4
);
#[cfg(target_arch = "aarch64")]
isa_entry!(neon_k, neon::Neon, "neon", 4, 4, 8, 4, 8, 8, 3);

/// Calls `$f` of the module for `$isa` (falls back to scalar for an ISA this
/// target does not have).
macro_rules! dispatch {
    ($isa:expr, $f:ident ( $($arg:expr),* )) => {
        match $isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => avx512_k::$f($($arg),*),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => avx2_k::$f($($arg),*),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => neon_k::$f($($arg),*),
            _ => scalar_k::$f($($arg),*),
        }
    };
}

/// Lanes of the vectors of `isa` (the granularity of [`softmax_block`] rows).
pub const fn lanes(isa: Isa) -> usize {
    match isa {
        Isa::Scalar => SL,
        Isa::Avx2 => 8,
        Isa::Avx512 => 16,
        Isa::Neon => 4,
    }
}

/// Lengths that every [`softmax_block`] row must be a multiple of, on any ISA.
pub const SOFTMAX_MULTIPLE: usize = 16;

/// The chosen ISA if this machine supports it, else scalar.
fn usable(isa: Isa) -> Isa {
    if isa.supported() {
        isa
    } else {
        Isa::Scalar
    }
}

fn nt_typed<E: Elem>(
    isa: Isa,
    a: &Mat<f32>,
    b: &Mat<E>,
    c: &mut MatMut,
    pack: Option<&mut [f32]>,
) -> bool {
    let (m, n, k) = (a.rows, b.rows, a.cols);
    if b.cols != k || c.rows != m || c.cols != n {
        return false;
    }
    if m == 0 || n == 0 {
        return true;
    }
    let p = NtArgs {
        a: a.ptr(),
        lda: a.stride,
        m,
        b: b.ptr(),
        ldb: b.stride,
        n,
        k,
        c: c.ptr,
        ldc: c.stride,
    };
    let isa = usable(isa);
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    if let Some(pack) = pack.filter(|pk| pk.len() >= pack_len(k) && m >= PACK_MIN_ROWS) {
        // SAFETY: the views checked their extents, the shapes agree (above),
        // pack holds pack_len(k) f32 (what ntp touches), the ISA is supported.
        unsafe { dispatch!(isa, ntp(&p, pack.as_mut_ptr())) };
        return true;
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = pack;
    // SAFETY: the three views checked their extents at construction and the
    // shapes agree (checked above); the ISA is supported (`usable`).
    unsafe { dispatch!(isa, nt(&p)) };
    true
}

/// `C = A B^T`: `C[i][j] = A_i . B_j` (both operands contiguous along `k`),
/// in the canonical order. Returns false (and writes nothing) if the shapes
/// disagree: `A` m x k, `B` n x k, `C` m x n.
pub fn gemm_nt(a: &Mat<f32>, b: &MatE, c: &mut MatMut) -> bool {
    gemm_nt_with(isa(), a, b, c)
}

/// [`gemm_nt`] on a given instruction set (scalar if unsupported here).
pub fn gemm_nt_with(isa: Isa, a: &Mat<f32>, b: &MatE, c: &mut MatMut) -> bool {
    gemm_nt_packed(isa, a, b, c, None)
}

/// [`gemm_nt_with`] that may pack: with `pack` ([`pack_len`]`(k)` f32 of scratch)
/// and at least [`PACK_MIN_ROWS`] rows of `A`, B is packed panel by panel and
/// each `C[i][j]` is summed in increasing `k` (instead of the lane order of the
/// dot-product form). Either way the result depends only on the shapes, not on
/// how callers split the rows of `B` or `C`.
pub fn gemm_nt_packed(
    isa: Isa,
    a: &Mat<f32>,
    b: &MatE,
    c: &mut MatMut,
    pack: Option<&mut [f32]>,
) -> bool {
    match b {
        MatE::F32(b) => nt_typed(isa, a, b, c, pack),
        MatE::F16(b) => nt_typed(isa, a, b, c, pack),
        MatE::BF16(b) => nt_typed(isa, a, b, c, pack),
    }
}

fn nn_typed<E: Elem>(isa: Isa, a: &Mat<f32>, b: &Mat<E>, c: &mut MatMut) -> bool {
    let (m, kdim, n) = (a.rows, a.cols, b.cols);
    if b.rows != kdim || c.rows != m || c.cols != n {
        return false;
    }
    if m == 0 || n == 0 || kdim == 0 {
        return true;
    }
    let p = NnArgs {
        a: a.ptr(),
        lda: a.stride,
        m,
        b: b.ptr(),
        ldb: b.stride,
        kdim,
        n,
        c: c.ptr,
        ldc: c.stride,
    };
    // SAFETY: extents checked by the views, shapes checked above, ISA usable.
    unsafe { dispatch!(usable(isa), nn(&p)) };
    true
}

/// `C += A B`: `C[i][j] += sum_k A[i][k] B[k][j]` (B contiguous along `j`),
/// adding the products in increasing `k`. Returns false (and writes nothing)
/// if the shapes disagree: `A` m x kdim, `B` kdim x n, `C` m x n.
pub fn gemm_nn(a: &Mat<f32>, b: &MatE, c: &mut MatMut) -> bool {
    gemm_nn_with(isa(), a, b, c)
}

/// [`gemm_nn`] on a given instruction set (scalar if unsupported here).
pub fn gemm_nn_with(isa: Isa, a: &Mat<f32>, b: &MatE, c: &mut MatMut) -> bool {
    match b {
        MatE::F32(b) => nn_typed(isa, a, b, c),
        MatE::F16(b) => nn_typed(isa, a, b, c),
        MatE::BF16(b) => nn_typed(isa, a, b, c),
    }
}

/// One block of an online softmax over a row of raw scores.
///
/// `x[..valid]` holds scores; they are multiplied by `scale`, the running max
/// `m` and sum `l` are updated, and `x` becomes `exp(x*scale - m_new)`
/// (exactly 0 at `valid..`). Returns the factor `exp(m_old - m_new)` by which
/// an accumulator of the previous blocks must be scaled (0 on the first block).
/// `x.len()` must be a multiple of [`SOFTMAX_MULTIPLE`]; returns `None` (and
/// changes nothing) otherwise or if `valid > x.len()`.
pub fn softmax_block(
    x: &mut [f32],
    valid: usize,
    scale: f32,
    m: &mut f32,
    l: &mut f32,
) -> Option<f32> {
    softmax_block_with(isa(), x, valid, scale, m, l)
}

/// [`softmax_block`] on a given instruction set.
pub fn softmax_block_with(
    isa: Isa,
    x: &mut [f32],
    valid: usize,
    scale: f32,
    m: &mut f32,
    l: &mut f32,
) -> Option<f32> {
    if x.len() & (SOFTMAX_MULTIPLE - 1) != 0 || valid > x.len() {
        return None;
    }
    // SAFETY: x is valid for its length, a multiple of every ISA's lanes (they
    // divide SOFTMAX_MULTIPLE); valid <= len (checked); ISA usable.
    Some(unsafe {
        dispatch!(
            usable(isa),
            softmax(x.as_mut_ptr(), x.len(), valid, scale, m, l)
        )
    })
}

/// One block of an online softmax down the columns of `x` (`rows x cols`,
/// row stride `ld`): column `j` holds raw scores of one softmax (e.g. one head)
/// for `rows` consecutive keys. Scores are multiplied by `scale`, the running
/// max `m[j]` and sum `l[j]` updated, `x` becomes `exp(x*scale - m_new)`, and
/// `alpha[j] = exp(m_old - m_new)` (0 on the first block) is the factor for the
/// previous accumulator. Vectorised across columns. Returns false (changing
/// nothing) if a length does not fit.
#[allow(clippy::too_many_arguments)]
pub fn softmax_cols(
    isa: Isa,
    x: &mut [f32],
    rows: usize,
    cols: usize,
    ld: usize,
    scale: f32,
    m: &mut [f32],
    l: &mut [f32],
    alpha: &mut [f32],
) -> bool {
    if !fits(x.len(), rows, cols, ld) || m.len() < cols || l.len() < cols || alpha.len() < cols {
        return false;
    }
    if rows == 0 || cols == 0 {
        return true;
    }
    // SAFETY: extents checked above; ISA usable.
    unsafe {
        dispatch!(
            usable(isa),
            softmax_cols(
                x.as_mut_ptr(),
                rows,
                cols,
                ld,
                scale,
                m.as_mut_ptr(),
                l.as_mut_ptr(),
                alpha.as_mut_ptr()
            )
        )
    };
    true
}

/// `x[i] *= s`.
pub fn scale(x: &mut [f32], s: f32) {
    // SAFETY: x valid for its length; ISA usable.
    unsafe { dispatch!(usable(isa()), scale(x.as_mut_ptr(), x.len(), s)) }
}

/// `y[i] += s * x[i]` over the shorter length.
pub fn axpy(s: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    // SAFETY: both valid for n <= their lengths; ISA usable.
    unsafe { dispatch!(usable(isa()), axpy(s, x.as_ptr(), y.as_mut_ptr(), n)) }
}

/// `sum_i a[i] * b[i]` over the shorter length (canonical order).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let mut out = [0f32];
    let (Some(a), Some(b), Some(mut c)) = (
        a.get(..n).and_then(|a| Mat::new(a, 1, n, n)),
        b.get(..n).and_then(|b| Mat::new(b, 1, n, n)),
        MatMut::new(&mut out, 1, 1, 1),
    ) else {
        return 0.0;
    };
    gemm_nt(&a, &MatE::F32(b), &mut c);
    out[0]
}

/// A linear layer over `n_tok` rows: `y[t][o] = W[o] . x[t] + b[o]`.
///
/// `w` is `[rows][cols]`; `x` holds `n_tok` rows of `cols` values at a stride of
/// `x_stride` (>= cols); `y` is `[n_tok][rows]`. Returns false (writing
/// nothing) if a length does not fit.
pub fn linear(
    w: &Tensor,
    b: Option<&Tensor>,
    x: &[f32],
    x_stride: usize,
    n_tok: usize,
    y: &mut [f32],
) -> bool {
    linear_par(&Parallel::SEQUENTIAL, w, b, x, x_stride, n_tok, y, None)
}

/// `ceil(a / b)`, 0 when `b` is 0 (no panic path).
#[inline]
pub(crate) fn ceil_div(a: usize, b: usize) -> usize {
    match b {
        0 => 0,
        b => a / b + usize::from(a.checked_rem(b) != Some(0)),
    }
}

/// Tasks of a packed [`linear_par`] (each with its own [`pack_len`] scratch).
pub const PACK_SLOTS: usize = 16;

/// Output rows per task of [`linear_par`] for a layer of `rows` outputs: at
/// least 32 (a multiple of 8), at most [`MAX_TASKS`] tasks; when packing, at
/// most [`PACK_SLOTS`] tasks of a multiple of [`PACK_NP`] rows.
// Not `clamp`: it has a panic path (min > max).
#[allow(clippy::manual_clamp)]
pub fn linear_row_block(rows: usize, packed: bool) -> usize {
    if packed {
        let tasks = ceil_div(rows, PACK_NP).min(PACK_SLOTS).max(1);
        return ceil_div(ceil_div(rows, tasks), PACK_NP) * PACK_NP;
    }
    let tasks = ceil_div(rows, 32).min(MAX_TASKS).max(1);
    ceil_div(ceil_div(rows, tasks), 8) * 8
}

/// [`linear`] with the output rows split into fixed blocks
/// ([`linear_row_block`]) run as tasks of `par`. Every output value is computed
/// the same way whatever the split, so the result does not depend on `par`.
/// `pack`: [`PACK_SLOTS`] x [`pack_len`]`(cols)` f32 of scratch for the packed
/// product (used when `n_tok >= PACK_MIN_ROWS`).
#[allow(clippy::too_many_arguments)]
pub fn linear_par(
    par: &Parallel,
    w: &Tensor,
    b: Option<&Tensor>,
    x: &[f32],
    x_stride: usize,
    n_tok: usize,
    y: &mut [f32],
    pack: Option<&mut [f32]>,
) -> bool {
    let (rows, cols) = (w.rows, w.cols);
    let (Some(a), Some(_)) = (
        Mat::new(x, n_tok, cols, x_stride),
        MatE::new(w.data, rows, cols, cols),
    ) else {
        return false;
    };
    if !fits(y.len(), n_tok, rows, rows) {
        return false;
    }
    let plen = pack_len(cols);
    let pack = pack.filter(|p| n_tok >= PACK_MIN_ROWS && p.len() >= PACK_SLOTS * plen);
    let rb = linear_row_block(rows, pack.is_some()).max(1);
    let tasks = ceil_div(rows, rb);
    let isa = isa();
    let ys = SharedMut::new(y);
    let packs = pack.map(SharedMut::new);
    let work = n_tok.saturating_mul(rows).saturating_mul(cols);
    par.for_each(tasks, work, &|i| {
        let r0 = i * rb;
        let nr = rb.min(rows.saturating_sub(r0));
        // SAFETY: task i owns output columns r0 .. r0 + nr of every row; the
        // blocks of different tasks are disjoint.
        let (Some(wm), Some(mut c)) = (MatE::tensor_rows(w, r0, nr), unsafe {
            ys.mat(r0, n_tok, nr, rows)
        }) else {
            return;
        };
        // SAFETY: pack slot i belongs to task i alone (tasks <= PACK_SLOTS when packing).
        let slot = packs
            .as_ref()
            .and_then(|p| unsafe { p.slice(i * plen, plen) });
        gemm_nt_packed(isa, &a, &wm, &mut c, slot);
        add_bias(b, r0, &mut c);
    });
    true
}

/// Calls `f(offset, chunk)` for consecutive chunks of `e` widened to f32
/// (one loop body for every element type).
fn widened(e: Elems, mut f: impl FnMut(usize, &[f32])) {
    const CHUNK: usize = 64;
    let mut buf = [0f32; CHUNK];
    let mut at = 0;
    while at < e.len() {
        let n = CHUNK.min(e.len() - at);
        let (Some(src), Some(dst)) = (e.slice(at, n), buf.get_mut(..n)) else {
            return;
        };
        src.widen_into(dst);
        f(at, dst);
        at += n;
    }
}

/// Adds bias entries `b[j0 + j]` to column `j` of every row of `c` (nothing
/// if `b` is `None`).
pub fn add_bias(b: Option<&Tensor>, j0: usize, c: &mut MatMut) {
    let Some(b) = b else { return };
    let Some(bias) = b.data.slice(j0, c.cols) else {
        return;
    };
    for i in 0..c.rows {
        let Some(row) = c.row(i) else { return };
        widened(bias, |at, w| {
            if let Some(y) = row.get_mut(at..) {
                y.iter_mut().zip(w).for_each(|(y, &v)| *y += v);
            }
        });
    }
}

/// In-place RMSNorm: `x[i] = w[i] * x[i] / sqrt(mean(x^2) + eps)`.
pub fn rmsnorm(x: &mut [f32], w: Elems, eps: f32) {
    if x.is_empty() {
        return;
    }
    let ms = dot(x, x) / x.len() as f32;
    let inv = 1.0 / libm::sqrtf(ms + eps);
    widened(w, |at, w| {
        if let Some(x) = x.get_mut(at..) {
            x.iter_mut().zip(w).for_each(|(x, &w)| *x = w * (*x * inv));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::bf16;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    }

    fn rand(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n).map(|_| lcg(&mut s)).collect()
    }

    #[test]
    fn dot_and_linear() {
        let a: [f32; 19] = core::array::from_fn(|i| i as f32);
        let b: [f32; 19] = core::array::from_fn(|i| 1.0 - i as f32 * 0.5);
        let want: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - want).abs() < 1e-3);

        // W = [[1,2],[3,4],[5,6]], x = [[1,1],[0,1]] (stride 3), b = [10,20,30]
        let w = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let bias = [10.0, 20.0, 30.0];
        let wt = Tensor::f32(&w, 3, 2).unwrap();
        let bt = Tensor::f32(&bias, 1, 3).unwrap();
        let x = [1.0, 1.0, 99.0, 0.0, 1.0, 99.0];
        let mut y = [0.0; 6];
        assert!(linear(&wt, Some(&bt), &x, 3, 2, &mut y));
        assert_eq!(y, [13.0, 27.0, 41.0, 12.0, 24.0, 36.0]);
        assert!(
            !linear(&wt, None, &x, 3, 3, &mut y),
            "x too short for 3 tokens"
        );
    }

    #[test]
    fn rmsnorm_matches_formula() {
        let mut x = [3.0f32, 4.0];
        let w = [1.0f32, 2.0];
        rmsnorm(&mut x, Elems::F32(&w), 0.0);
        let r = (12.5f32).sqrt();
        assert!((x[0] - 3.0 / r).abs() < 1e-6 && (x[1] - 8.0 / r).abs() < 1e-6);
    }

    /// Every ISA of this machine, every tile edge: NT and NN agree with an f64
    /// reference, for f32, f16 and bf16 B; and each ISA gives the same bits
    /// for a value whatever tile computed it.
    #[test]
    fn gemm_all_isas_all_edges() {
        for isa in Isa::available() {
            for &(m, n, k) in &[
                (1, 1, 1),
                (1, 9, 37),
                (3, 5, 16),
                (7, 13, 70),
                (9, 11, 512),
                (1, 17, 2048),
            ] {
                let a = rand(m * (k + 3), 1);
                let bw = rand(n * k, 2);
                let bh: Vec<bf16> = bw.iter().map(|&x| bf16::from_f32(x)).collect();
                let bf: Vec<f16> = bw.iter().map(|&x| f16::from_f32(x)).collect();
                let am = Mat::new(&a, m, k, k + 3).unwrap();
                let b32 = MatE::F32(Mat::new(&bw, n, k, k).unwrap());
                let bbf = MatE::BF16(Mat::new(&bh, n, k, k).unwrap());
                let b16 = MatE::F16(Mat::new(&bf, n, k, k).unwrap());
                for (label, b, wide) in [
                    ("f32", b32, bw.clone()),
                    (
                        "bf16",
                        bbf,
                        bh.iter().map(|x| x.to_f32()).collect::<Vec<_>>(),
                    ),
                    (
                        "f16",
                        b16,
                        bf.iter().map(|x| x.to_f32()).collect::<Vec<_>>(),
                    ),
                ] {
                    let mut c = vec![0f32; m * n];
                    assert!(gemm_nt_with(
                        isa,
                        &am,
                        &b,
                        &mut MatMut::new(&mut c, m, n, n).unwrap()
                    ));
                    for i in 0..m {
                        for j in 0..n {
                            let want: f64 = (0..k)
                                .map(|t| a[i * (k + 3) + t] as f64 * wide[j * k + t] as f64)
                                .sum();
                            let got = c[i * n + j] as f64;
                            assert!(
                                (got - want).abs() < 1e-5 * (1.0 + want.abs()),
                                "{isa:?} {label} nt {m}x{n}x{k} [{i}][{j}]: {got} vs {want}"
                            );
                            // The same value computed alone (1x1) has the same bits.
                            let mut one = [0f32];
                            let a1 = Mat::new(&a[i * (k + 3)..], 1, k, k).unwrap();
                            let b1 = match b {
                                MatE::F32(_) => MatE::F32(Mat::new(&bw[j * k..], 1, k, k).unwrap()),
                                MatE::BF16(_) => {
                                    MatE::BF16(Mat::new(&bh[j * k..], 1, k, k).unwrap())
                                }
                                MatE::F16(_) => MatE::F16(Mat::new(&bf[j * k..], 1, k, k).unwrap()),
                            };
                            gemm_nt_with(
                                isa,
                                &a1,
                                &b1,
                                &mut MatMut::new(&mut one, 1, 1, 1).unwrap(),
                            );
                            assert_eq!(
                                one[0].to_bits(),
                                c[i * n + j].to_bits(),
                                "{isa:?} {label} tile order"
                            );
                        }
                    }
                }
                // NN: C (m x n) += A (m x k) B (k x n); B = bw viewed as k x n.
                let bnn = Mat::new(&bw, k, n, n).unwrap();
                let c0 = rand(m * n, 3);
                let mut c = c0.clone();
                assert!(gemm_nn_with(
                    isa,
                    &am,
                    &MatE::F32(bnn),
                    &mut MatMut::new(&mut c, m, n, n).unwrap()
                ));
                for i in 0..m {
                    for j in 0..n {
                        let want: f64 = c0[i * n + j] as f64
                            + (0..k)
                                .map(|t| a[i * (k + 3) + t] as f64 * bw[t * n + j] as f64)
                                .sum::<f64>();
                        let got = c[i * n + j] as f64;
                        assert!(
                            (got - want).abs() < 1e-5 * (1.0 + want.abs()),
                            "{isa:?} nn {m}x{n}x{k}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    /// The packed product (prefill): every ISA, edges in m, n and k; f32,
    /// bf16 and f16 B; and splitting the rows of B (as `linear_par` does)
    /// changes no bit.
    #[test]
    fn packed_gemm_all_isas() {
        let mut pack = vec![0f32; PACK_LEN];
        for isa in Isa::available() {
            // Miri (slow on SIMD intrinsics): one shape with ragged m, n and k.
            let shapes: &[(usize, usize, usize)] = if cfg!(miri) {
                &[(17, 65, 17)]
            } else {
                &[(16, 1, 1), (17, 70, 300), (29, 65, 16), (40, 129, 513)]
            };
            for &(m, n, k) in shapes {
                let a = rand(m * k, 11);
                let bw = rand(n * k, 12);
                let bh: Vec<bf16> = bw.iter().map(|&x| bf16::from_f32(x)).collect();
                let bf: Vec<f16> = bw.iter().map(|&x| f16::from_f32(x)).collect();
                let am = Mat::new(&a, m, k, k).unwrap();
                let views = [
                    (MatE::F32(Mat::new(&bw, n, k, k).unwrap()), bw.clone()),
                    (
                        MatE::BF16(Mat::new(&bh, n, k, k).unwrap()),
                        bh.iter().map(|x| x.to_f32()).collect(),
                    ),
                    (
                        MatE::F16(Mat::new(&bf, n, k, k).unwrap()),
                        bf.iter().map(|x| x.to_f32()).collect(),
                    ),
                ];
                for (b, wide) in views {
                    let mut c = vec![0f32; m * n];
                    assert!(gemm_nt_packed(
                        isa,
                        &am,
                        &b,
                        &mut MatMut::new(&mut c, m, n, n).unwrap(),
                        Some(&mut pack)
                    ));
                    for i in 0..m {
                        for j in 0..n {
                            let want: f64 = (0..k)
                                .map(|t| a[i * k + t] as f64 * wide[j * k + t] as f64)
                                .sum();
                            let got = c[i * n + j] as f64;
                            assert!(
                                (got - want).abs() < 1e-5 * (1.0 + want.abs()),
                                "{isa:?} packed {m}x{n}x{k}: {got} vs {want}"
                            );
                        }
                    }
                    // The rows of B in two parts: the same bits.
                    let cut = n / 2;
                    let mut c2 = vec![0f32; m * n];
                    for (j0, nn) in [(0, cut), (cut, n - cut)] {
                        if nn == 0 {
                            continue;
                        }
                        let bpart = match b {
                            MatE::F32(_) => MatE::F32(Mat::new(&bw[j0 * k..], nn, k, k).unwrap()),
                            MatE::BF16(_) => MatE::BF16(Mat::new(&bh[j0 * k..], nn, k, k).unwrap()),
                            MatE::F16(_) => MatE::F16(Mat::new(&bf[j0 * k..], nn, k, k).unwrap()),
                        };
                        let mut cm = MatMut::new(&mut c2[j0..], m, nn, n).unwrap();
                        assert!(gemm_nt_packed(isa, &am, &bpart, &mut cm, Some(&mut pack)));
                    }
                    assert!(
                        c.iter().zip(&c2).all(|(x, y)| x.to_bits() == y.to_bits()),
                        "{isa:?} split changed bits"
                    );
                }
            }
        }
    }

    #[test]
    fn softmax_block_all_isas() {
        for isa in Isa::available() {
            let raw = rand(48, 7).iter().map(|x| x * 40.0).collect::<Vec<_>>();
            let (mut m, mut l) = (f32::NEG_INFINITY, 0.0);
            let mut acc = 0.0f64;
            let mut x1 = raw[..32].to_vec();
            let a1 = softmax_block_with(isa, &mut x1, 32, 0.5, &mut m, &mut l).unwrap();
            assert_eq!(a1, 0.0);
            acc += x1.iter().map(|&v| v as f64).sum::<f64>();
            let mut x2 = raw[32..].to_vec();
            x2.resize(32, 0.0);
            let a2 = softmax_block_with(isa, &mut x2, 16, 0.5, &mut m, &mut l).unwrap();
            assert!(x2[16..].iter().all(|&v| v == 0.0));
            acc = acc * a2 as f64 + x2.iter().map(|&v| v as f64).sum::<f64>();
            let mx = raw.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b * 0.5));
            let want: f64 = raw.iter().map(|&v| ((v * 0.5 - mx) as f64).exp()).sum();
            assert_eq!(m, mx);
            assert!(
                ((l as f64) - want).abs() < 1e-5 * want,
                "{isa:?}: l {l} vs {want}"
            );
            assert!(
                (acc - want).abs() < 1e-5 * want,
                "{isa:?}: sum {acc} vs {want}"
            );
            // Exp accuracy over the softmax range.
            let (n, step) = if cfg!(miri) { (40, 2.5) } else { (2000, 0.05) };
            for i in 0..n {
                let v = -(i as f32) * step;
                let mut row = [v; 16];
                let (mut m2, mut l2) = (0.0f32, 0.0);
                softmax_block_with(isa, &mut row, 16, 1.0, &mut m2, &mut l2);
                let want = (v as f64).exp();
                assert!(
                    ((row[0] as f64) - want).abs() <= 3e-7 * want + 1e-37,
                    "{isa:?} exp({v}) = {} vs {want}",
                    row[0]
                );
            }
        }
    }
}
