//! Products with FP8 E4M3 weights that carry one f32 scale per 128 x 128 block
//! (DeepSeek-V3's checkpoints, [`crate::dtype::F8Elems`]).
//!
//! The weights are never widened as a whole: a panel of at most [`PANEL`] rows
//! by one or two 128-column scale blocks is dequantized (code times its
//! block's scale, the exact f32 a dequantized checkpoint holds) into a small
//! stack buffer and fed to the f32 kernels of the instruction set in use. The
//! order of every sum is fixed by the shapes alone, so a value does not depend
//! on how rows or tasks are split.

use super::mat::{F8Mat, Mat, MatMut};
use super::Isa;
use super::{nn_typed, nt_typed};
use crate::dtype::F8_BLOCK;

/// Rows of B dequantized per panel (the panel is `PANEL x KB` f32 on the
/// stack: 16 KiB on 64-bit desktops and servers, 1 KiB on small targets).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const PANEL: usize = 16;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const PANEL: usize = 2;
/// Columns (k) per panel of the NT product: whole scale blocks.
const KB: usize = 2 * F8_BLOCK;
/// Rows of A per NT tile (the tile `MI x PANEL` of partial sums).
const MI: usize = 8;

/// `C = A B^T` with B FP8 (`A` m x k f32, `B` n x k, `C` m x n). False (and
/// nothing written) if the shapes disagree.
///
/// Per panel of `PANEL` rows of B by `KB` columns (dequantized row-major), the
/// f32 NT kernel computes `MI x PANEL` tiles of partial dot products, added to
/// `C` panel after panel in increasing `k`: the panels' bounds along k are
/// fixed (multiples of `KB`), so a value does not depend on the row split.
pub(super) fn nt(isa: Isa, a: &Mat<f32>, b: &F8Mat, c: &mut MatMut) -> bool {
    if a.cols != b.cols || c.rows != a.rows || c.cols != b.rows {
        return false;
    }
    for i in 0..c.rows {
        if let Some(r) = c.row(i) {
            r.fill(0.0);
        }
    }
    let mut panel = [0f32; KB * PANEL];
    let mut tile = [0f32; MI * PANEL];
    let mut j0 = 0;
    while j0 < b.rows {
        let nj = PANEL.min(b.rows - j0);
        let mut k0 = 0;
        while k0 < b.cols {
            let nk = KB.min(b.cols - k0);
            for jj in 0..nj {
                prefetch_next(b, j0 + jj, k0 + nk, nj);
                let mut kb = 0;
                while kb < nk {
                    let len = F8_BLOCK.min(nk - kb);
                    let at = jj * nk + kb;
                    let Some(dst) = panel.get_mut(at..at + len) else {
                        return false;
                    };
                    if !b.dequant(j0 + jj, k0 + kb, dst) {
                        return false;
                    }
                    kb += len;
                }
            }
            let Some(bm) = panel.get(..nj * nk).and_then(|p| Mat::new(p, nj, nk, nk)) else {
                return false;
            };
            let mut i0 = 0;
            while i0 < a.rows {
                let mi = MI.min(a.rows - i0);
                let (Some(a_blk), Some(mut t)) = (
                    a.sub(i0, mi, k0, nk),
                    tile.get_mut(..mi * nj)
                        .and_then(|t| MatMut::new(t, mi, nj, nj)),
                ) else {
                    return false;
                };
                if !nt_typed(isa, &a_blk, &bm, &mut t, None) {
                    return false;
                }
                for i in 0..mi {
                    let (Some(dst), Some(src)) = (
                        c.row(i0 + i).and_then(|r| r.get_mut(j0..j0 + nj)),
                        tile.get(i * nj..(i + 1) * nj),
                    ) else {
                        return false;
                    };
                    dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
                }
                i0 += mi;
            }
            k0 += nk;
        }
        j0 += nj;
    }
    true
}

/// Prefetches (into L2) the codes of row `j` of `b` at columns `k ..
/// k + KB`, or, past the row's end, of row `j + nj` from its start: the
/// panel after the current one. Weights in FP8 are read 16 rows at a time,
/// which the hardware prefetchers do not foresee.
#[inline(always)]
fn prefetch_next(b: &F8Mat, j: usize, k: usize, nj: usize) {
    let (j, k) = if k < b.cols { (j, k) } else { (j + nj, 0) };
    prefetch(b, j, k, KB);
}

/// Prefetches (into L2) `len` codes of row `j` of `b` from column `k`.
#[inline(always)]
fn prefetch(b: &F8Mat, j: usize, k: usize, len: usize) {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        let base = b.e.codes().as_ptr();
        let mut t = 0;
        while t < len {
            // Addresses computed with wrapping arithmetic and never dereferenced.
            super::simd::prefetch_l2(base.wrapping_add(j.wrapping_mul(b.cols).wrapping_add(k + t)));
            t += 64;
        }
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = (b, j, k, len);
}

/// `C += A B` with B FP8 (`A` m x kd f32, `B` kd x n, `C` m x n). False (and
/// nothing written) if the shapes disagree.
pub(super) fn nn(isa: Isa, a: &Mat<f32>, b: &F8Mat, c: &mut MatMut) -> bool {
    if a.cols != b.rows || c.rows != a.rows || c.cols != b.cols {
        return false;
    }
    let mut panel = [0f32; F8_BLOCK * PANEL];
    let mut k0 = 0;
    while k0 < b.rows {
        let nk = PANEL.min(b.rows - k0);
        let mut j0 = 0;
        while j0 < b.cols {
            let nj = F8_BLOCK.min(b.cols - j0);
            for kk in 0..nk {
                // The same columns PANEL rows on (the next panel along k).
                prefetch(b, k0 + kk + PANEL, j0, nj);
                let Some(dst) = panel.get_mut(kk * nj..(kk + 1) * nj) else {
                    return false;
                };
                if !b.dequant(k0 + kk, j0, dst) {
                    return false;
                }
            }
            let (Some(a_blk), Some(bm), Some(mut c_blk)) = (
                a.sub(0, a.rows, k0, nk),
                panel.get(..nk * nj).and_then(|p| Mat::new(p, nk, nj, nj)),
                c.sub(0, c.rows, j0, nj),
            ) else {
                return false;
            };
            if !nn_typed(isa, &a_blk, &bm, &mut c_blk) {
                return false;
            }
            j0 += nj;
        }
        k0 += nk;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::super::{gemm_nn_with, gemm_nt_packed, isa, Mat, MatE, MatMut};
    use crate::dtype::Elems;
    use crate::fp8;
    use crate::weights::Tensor;

    /// A deterministic `[rows][cols]` FP8 tensor: codes from a hash (no NaN
    /// codes), scales varying per block; and its dequantized f32 copy.
    fn tensor(rows: usize, cols: usize) -> (Vec<u8>, Vec<f32>, Vec<f32>) {
        let codes: Vec<u8> = (0..rows * cols)
            .map(|i| {
                let c = ((i as u32).wrapping_mul(2_654_435_761) >> 24) as u8;
                if c & 0x7f == 0x7f {
                    0x3f
                } else {
                    c
                }
            })
            .collect();
        let (br, bc) = (rows.div_ceil(128), cols.div_ceil(128));
        let scales: Vec<f32> = (0..br * bc).map(|b| 0.001 * (b as f32 + 1.5)).collect();
        let deq = (0..rows * cols)
            .map(|g| fp8::to_f32(codes[g]) * scales[(g / cols / 128) * bc + (g % cols) / 128])
            .collect();
        (codes, scales, deq)
    }

    fn close(a: &[f32], b: &[f32]) {
        let m = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        let e = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(e <= 1e-5 * m.max(1e-30), "max error {e} of {m}");
    }

    /// Rows not starting on a block boundary (37..), edge blocks (300 x 200):
    /// both products equal the f32 products on the dequantized weights.
    #[test]
    #[cfg_attr(miri, ignore)]
    fn f8_products_match_dequantized_f32() {
        let (rows, cols) = (300, 200);
        let (codes, scales, deq) = tensor(rows, cols);
        let t8 = Tensor::f8(&codes, &scales, rows, cols).unwrap();
        let t32 = Tensor::f32(&deq, rows, cols).unwrap();
        let mut w = vec![0f32; rows * cols];
        t8.data.widen_into(&mut w);
        assert_eq!(w, deq, "widen_into dequantizes exactly");
        let (r0, nr) = (37, 150);
        let b8 = MatE::tensor_rows(&t8, r0, nr).unwrap();
        let b32 = MatE::tensor_rows(&t32, r0, nr).unwrap();
        assert!(matches!(b8, MatE::F8(_)));
        for m in [1, 5, 20] {
            let x: Vec<f32> = (0..m * cols)
                .map(|i| ((i * 7 % 23) as f32 - 11.0) * 0.1)
                .collect();
            let a = Mat::new(&x, m, cols, cols).unwrap();
            let (mut y8, mut y32) = (vec![0f32; m * nr], vec![0f32; m * nr]);
            assert!(gemm_nt_packed(
                isa(),
                &a,
                &b8,
                &mut MatMut::new(&mut y8, m, nr, nr).unwrap(),
                None
            ));
            assert!(gemm_nt_packed(
                isa(),
                &a,
                &b32,
                &mut MatMut::new(&mut y32, m, nr, nr).unwrap(),
                None
            ));
            close(&y8, &y32);
            // C += A B with B the nr x cols rows (k = nr).
            let xa: Vec<f32> = (0..m * nr)
                .map(|i| ((i * 5 % 17) as f32 - 8.0) * 0.1)
                .collect();
            let a = Mat::new(&xa, m, nr, nr).unwrap();
            let (mut z8, mut z32) = (vec![1f32; m * cols], vec![1f32; m * cols]);
            assert!(gemm_nn_with(
                isa(),
                &a,
                &b8,
                &mut MatMut::new(&mut z8, m, cols, cols).unwrap()
            ));
            assert!(gemm_nn_with(
                isa(),
                &a,
                &b32,
                &mut MatMut::new(&mut z32, m, cols, cols).unwrap()
            ));
            close(&z8, &z32);
        }
        // Shapes that disagree are refused, nothing written.
        let x = [0f32; 7];
        let a = Mat::new(&x, 1, 7, 7).unwrap();
        let mut y = [9f32; 150];
        assert!(!gemm_nt_packed(
            isa(),
            &a,
            &b8,
            &mut MatMut::new(&mut y, 1, 150, 150).unwrap(),
            None
        ));
        assert_eq!(y, [9f32; 150]);
    }

    /// A run that does not start a row, or a view of other column count, is no
    /// F8 matrix view; slices keep the scale indexing of the whole tensor.
    #[test]
    fn f8_views_are_whole_rows() {
        let (codes, scales, deq) = tensor(130, 3);
        let t = Tensor::f8(&codes, &scales, 130, 3).unwrap();
        assert!(MatE::new(t.data.slice(1, 6).unwrap(), 2, 3, 3).is_none());
        assert!(MatE::new(t.data, 195, 2, 2).is_none());
        assert!(MatE::new(t.data, 130, 3, 4).is_none());
        let Some(Elems::F8(f)) = t.data.slice(127 * 3 + 1, 5) else {
            panic!("an f8 slice")
        };
        let mut v = [0f32; 5];
        f.dequantize_into(&mut v);
        assert_eq!(v[..], deq[127 * 3 + 1..127 * 3 + 6]);
    }
}
