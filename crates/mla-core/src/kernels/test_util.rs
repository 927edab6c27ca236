//! The kernels' test harness: the instruction sets to test (with a visible
//! SKIPPED line for each one this machine lacks), edge sizes around a tile,
//! random operands in every element type, plain f64 references, and
//! [`test_a_kernel`], which runs one matrix-product entry point on every ISA
//! and every edge shape against the reference.

use super::isa::{lanes, tiles, Isa, Tiles};
use super::mat::{Mat, MatE, MatMut};
use half::{bf16, f16};

/// The instruction sets this machine runs, best first; prints a `SKIPPED`
/// line (with the reason) for each of the others.
pub(super) fn isas_here() -> Vec<Isa> {
    Isa::ALL
        .into_iter()
        .filter(|&isa| {
            let ok = isa.supported();
            if !ok {
                eprintln!("SKIPPED: {} kernels: {}", isa.name(), why_unsupported(isa));
            }
            ok
        })
        .collect()
}

/// Why `isa` does not run here.
fn why_unsupported(isa: Isa) -> &'static str {
    let x86 = cfg!(target_arch = "x86_64");
    match isa {
        Isa::Avx2 | Isa::Avx512 if !x86 => "not an x86-64 build",
        Isa::Avx2 => "AVX2 + FMA + F16C not detected on this CPU (or under Miri)",
        Isa::Avx512 => "AVX-512F not detected on this CPU (or under Miri)",
        Isa::Neon => "not an aarch64 build",
        Isa::Scalar => "(always supported)",
    }
}

/// Sizes around a tile of `tile`: 1, 2, `tile - 1`, `tile`, `tile + 1` and
/// `2 tile + 2` (two whole tiles and a 2-wide edge), without 0 and repeats.
pub(super) fn edges(tile: usize) -> Vec<usize> {
    let mut v = vec![1, 2, tile.saturating_sub(1), tile, tile + 1, 2 * tile + 2];
    v.retain(|&x| x > 0);
    v.sort_unstable();
    v.dedup();
    v
}

/// The union of sets of sizes, sorted.
pub(super) fn union(sets: &[Vec<usize>]) -> Vec<usize> {
    let mut v: Vec<usize> = sets.concat();
    v.sort_unstable();
    v.dedup();
    v
}

/// `n` pseudo-random values in [-0.5, 0.5) (an LCG, fixed by `seed`).
pub(super) fn rand(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

/// An element type of B.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ty {
    F32,
    BF16,
    F16,
}

impl Ty {
    pub(super) const ALL: [Ty; 3] = [Ty::F32, Ty::BF16, Ty::F16];
}

/// The same values stored in every element type.
pub(super) struct TypedVec {
    f32: Vec<f32>,
    bf16: Vec<bf16>,
    f16: Vec<f16>,
}

impl TypedVec {
    /// `values` rounded to each type.
    pub(super) fn new(values: Vec<f32>) -> Self {
        TypedVec {
            bf16: values.iter().map(|&x| bf16::from_f32(x)).collect(),
            f16: values.iter().map(|&x| f16::from_f32(x)).collect(),
            f32: values,
        }
    }

    /// The values the `ty` copy holds, widened to f32.
    pub(super) fn widened(&self, ty: Ty) -> Vec<f32> {
        match ty {
            Ty::F32 => self.f32.clone(),
            Ty::BF16 => self.bf16.iter().map(|x| x.to_f32()).collect(),
            Ty::F16 => self.f16.iter().map(|x| x.to_f32()).collect(),
        }
    }

    /// A `rows x cols` view (row stride `stride`) of the `ty` copy from element `at`.
    pub(super) fn view(
        &self,
        ty: Ty,
        at: usize,
        rows: usize,
        cols: usize,
        stride: usize,
    ) -> MatE<'_> {
        match ty {
            Ty::F32 => MatE::F32(Mat::new(&self.f32[at..], rows, cols, stride).unwrap()),
            Ty::BF16 => MatE::BF16(Mat::new(&self.bf16[at..], rows, cols, stride).unwrap()),
            Ty::F16 => MatE::F16(Mat::new(&self.f16[at..], rows, cols, stride).unwrap()),
        }
    }
}

/// How B is laid out in a product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Layout {
    /// `C = A B^T`: B is `n x k` (row stride k); C is overwritten.
    Nt,
    /// `C += A B`: B is `k x n` (row stride n); C is accumulated onto.
    Nn,
}

/// One product of [`test_a_kernel`]: `A` is `m x k` at row stride `lda`
/// (> k: the rows are padded), `B` as the layout says, in element type `ty`.
pub(super) struct Case<'a> {
    pub isa: Isa,
    pub ty: Ty,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: &'a [f32],
    pub lda: usize,
    pub b: &'a TypedVec,
}

impl Case<'_> {
    /// Rows `i0 .. i0 + rows` of A.
    pub(super) fn a_rows(&self, i0: usize, rows: usize) -> Mat<'_, f32> {
        Mat::new(&self.a[i0 * self.lda..], rows, self.k, self.lda).unwrap()
    }

    /// Rows `j0 .. j0 + rows` of an NT-layout B.
    pub(super) fn b_rows(&self, j0: usize, rows: usize) -> MatE<'_> {
        self.b.view(self.ty, j0 * self.k, rows, self.k, self.k)
    }

    /// All of B.
    pub(super) fn b_all(&self, layout: Layout) -> MatE<'_> {
        match layout {
            Layout::Nt => self.b_rows(0, self.n),
            Layout::Nn => self.b.view(self.ty, 0, self.k, self.n, self.n),
        }
    }
}

/// The f64 reference of a product: `C0 + A B` (NN) or `A B^T` (NT), from the
/// values B holds (widened).
fn reference(layout: Layout, case: &Case, c0: &[f32]) -> Vec<f64> {
    let b = case.b.widened(case.ty);
    let (m, n, k) = (case.m, case.n, case.k);
    let mut want = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let dot: f64 = (0..k)
                .map(|t| {
                    let bt = match layout {
                        Layout::Nt => b[j * k + t],
                        Layout::Nn => b[t * n + j],
                    };
                    case.a[i * case.lda + t] as f64 * bt as f64
                })
                .sum();
            want[i * n + j] = match layout {
                Layout::Nt => dot,
                Layout::Nn => c0[i * n + j] as f64 + dot,
            };
        }
    }
    want
}

/// The generic kernel test. For every ISA here, every shape `(m, n, k)` that
/// `shapes` gives for that ISA's tiles and lanes, and every element type of B:
/// fills A (padded rows), B and C (random), calls `run(case, C)` (C is
/// `m x n`, contiguous), and checks C against the f64 reference to 1e-5
/// relative. `run` may make further checks of its own (bitwise invariances).
pub(super) fn test_a_kernel(
    name: &str,
    layout: Layout,
    shapes: impl Fn(&Tiles, usize) -> Vec<(usize, usize, usize)>,
    mut run: impl FnMut(&Case, &mut MatMut),
) {
    for isa in isas_here() {
        let list = shapes(&tiles(isa), lanes(isa));
        for (s, &(m, n, k)) in list.iter().enumerate() {
            let lda = k + 3;
            let seed = 8 * s as u64;
            let a = rand(m * lda, seed + 1);
            let b = TypedVec::new(rand(n * k, seed + 2));
            let c0 = rand(m * n, seed + 3);
            for ty in Ty::ALL {
                let case = Case {
                    isa,
                    ty,
                    m,
                    n,
                    k,
                    a: &a,
                    lda,
                    b: &b,
                };
                let mut c = c0.clone();
                run(&case, &mut MatMut::new(&mut c, m, n, n).unwrap());
                let want = reference(layout, &case, &c0);
                for (idx, (&got, &want)) in c.iter().zip(&want).enumerate() {
                    assert!(
                        (got as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()),
                        "{name} {isa:?} {ty:?} {m}x{n}x{k} [{}][{}]: {got} vs {want}",
                        idx / n,
                        idx % n
                    );
                }
            }
        }
    }
}

/// Every `(m, n, k)` of the three lists.
pub(super) fn cartesian(ms: &[usize], ns: &[usize], ks: &[usize]) -> Vec<(usize, usize, usize)> {
    let mut v = Vec::new();
    for &m in ms {
        for &n in ns {
            for &k in ks {
                v.push((m, n, k));
            }
        }
    }
    v
}
