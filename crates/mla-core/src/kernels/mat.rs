//! Matrix views: checked windows over slices that the kernels read ([`Mat`],
//! [`MatE`]) and write ([`MatMut`]). Every extent is checked when a view is
//! built, so the raw pointers the kernels derive from a view stay in bounds.

use crate::dtype::{Elems, F8Elems};
use crate::weights::Tensor;
use core::marker::PhantomData;
use half::{bf16, f16};

/// `rows * cols` fits in a buffer of `len` elements with row stride `stride`.
pub(super) fn fits(len: usize, rows: usize, cols: usize, stride: usize) -> bool {
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
    pub(super) rows: usize,
    pub(super) cols: usize,
    pub(super) stride: usize,
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

    /// The first element (of row 0).
    pub(super) fn ptr(&self) -> *const E {
        self.data.as_ptr()
    }

    /// Row `i` (its `cols` elements), `None` out of range.
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(dead_code)
    )]
    pub(super) fn row(&self, i: usize) -> Option<&'a [E]> {
        if i >= self.rows {
            return None;
        }
        let start = i.checked_mul(self.stride)?;
        self.data.get(start..start.checked_add(self.cols)?)
    }

    /// Rows `r0 .. r0 + m`, columns `c0 .. c0 + n`, `None` out of range.
    pub(super) fn sub(&self, r0: usize, m: usize, c0: usize, n: usize) -> Option<Mat<'a, E>> {
        if r0.checked_add(m)? > self.rows || c0.checked_add(n)? > self.cols {
            return None;
        }
        let start = if m == 0 {
            0
        } else {
            r0.checked_mul(self.stride)?.checked_add(c0)?
        };
        Mat::new(self.data.get(start..)?, m, n, self.stride)
    }
}

/// A read-only view of rows of an FP8 weight tensor (whole rows, contiguous):
/// `rows` rows of `cols` codes, the first being row `row0` of the tensor,
/// whose block scales it reads.
#[derive(Clone, Copy, Debug)]
pub struct F8Mat<'a> {
    pub(super) e: F8Elems<'a>,
    pub(super) rows: usize,
    pub(super) cols: usize,
    pub(super) row0: usize,
}

impl<'a> F8Mat<'a> {
    /// The block scale of element `(j, k)` of this view (0 outside the
    /// tensor's scales, which the tensor's construction rules out).
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(dead_code)
    )]
    #[inline(always)]
    pub(super) fn scale_of(&self, j: usize, k: usize) -> f32 {
        self.e.scale(self.row0.saturating_add(j), k)
    }

    /// Dequantizes columns `k0 .. k0 + out.len()` of row `j` into `out` (one
    /// scale block at most: `k0` a multiple of 128, `out.len() <= 128`). False
    /// out of range.
    #[inline]
    pub(super) fn dequant(&self, j: usize, k0: usize, out: &mut [f32]) -> bool {
        let Some(codes) = j
            .checked_mul(self.cols)
            .and_then(|s| s.checked_add(k0))
            .and_then(|s| self.e.codes().get(s..s.checked_add(out.len())?))
        else {
            return false;
        };
        let s = self.e.scale(self.row0.saturating_add(j), k0);
        // Vectorized, bit for bit `fp8::to_f32(code) * s` (a scale is never
        // above 2^7 in a checkpoint; larger ones take the exact slow path),
        // compiled for AVX2 where the CPU has it (8 codes an instruction).
        #[cfg(target_arch = "x86_64")]
        if matches!(super::isa(), super::Isa::Avx2 | super::Isa::Avx512) {
            // SAFETY: `isa()` reports AVX2 (or AVX-512, which implies it) only
            // when the CPU has it.
            unsafe { decode_avx2(codes, s, out) };
            return true;
        }
        crate::cache::decode_group(codes, s, out);
        true
    }
}

/// `cache::decode_group` compiled with AVX2.
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn decode_avx2(codes: &[u8], s: f32, out: &mut [f32]) {
    crate::cache::decode_group(codes, s, out);
}

/// A matrix view over typed elements (weights: f32, f16 or bf16).
///
/// The kernels are generic over the element (`simd::Elem`); an element type
/// added there gets a variant here. A format with block scales would carry
/// its scales in its variant, beside the elements.
#[derive(Clone, Copy, Debug)]
pub enum MatE<'a> {
    /// f32 elements.
    F32(Mat<'a, f32>),
    /// f16 elements.
    F16(Mat<'a, f16>),
    /// bf16 elements.
    BF16(Mat<'a, bf16>),
    /// FP8 E4M3 weights with block scales (whole rows of a tensor only).
    F8(F8Mat<'a>),
}

impl<'a> MatE<'a> {
    /// A view over `e` (see [`Mat::new`]). FP8 runs must be whole rows of
    /// their tensor: `cols` its column count, `stride == cols`, the run
    /// starting at a row.
    pub fn new(e: Elems<'a>, rows: usize, cols: usize, stride: usize) -> Option<Self> {
        Some(match e {
            Elems::F32(s) => MatE::F32(Mat::new(s, rows, cols, stride)?),
            Elems::F16(s) => MatE::F16(Mat::new(s, rows, cols, stride)?),
            Elems::BF16(s) => MatE::BF16(Mat::new(s, rows, cols, stride)?),
            Elems::F8(f) => {
                let whole = f.cols() == cols && stride == cols;
                let row0 = f.offset().checked_div(cols)?;
                if !whole
                    || f.offset().checked_rem(cols)? != 0
                    || rows.checked_mul(cols)? > f.codes().len()
                {
                    return None;
                }
                MatE::F8(F8Mat {
                    e: f,
                    rows,
                    cols,
                    row0,
                })
            }
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
            MatE::F8(m) => m.rows,
        }
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        match self {
            MatE::F32(m) => m.cols,
            MatE::F16(m) => m.cols,
            MatE::BF16(m) => m.cols,
            MatE::F8(m) => m.cols,
        }
    }
}

/// A writable row-major f32 matrix view (`rows` x `cols`, row stride `stride`).
///
/// Built safely from a `&mut [f32]` ([`MatMut::new`]) or, for tasks that write
/// disjoint parts of one buffer concurrently, by
/// [`crate::parallel::SharedMut::mat`].
pub struct MatMut<'a> {
    pub(super) ptr: *mut f32,
    pub(super) rows: usize,
    pub(super) cols: usize,
    pub(super) stride: usize,
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
