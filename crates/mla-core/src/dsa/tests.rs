use super::*;
use crate::kernels::isa;

/// xorshift values in [-1, 1).
fn rand_vec(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// The selection by sorting all tokens by the written rule.
fn topk_by_sort(scores: &[f32], k: usize) -> Vec<u32> {
    let key = |t: usize| {
        let s = scores[t];
        if s.is_nan() {
            f32::NEG_INFINITY
        } else {
            s
        }
    };
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| key(b).partial_cmp(&key(a)).unwrap().then(a.cmp(&b)));
    let mut sel: Vec<u32> = idx.into_iter().take(k).map(|t| t as u32).collect();
    sel.sort();
    sel
}

#[test]
fn topk_matches_a_full_sort_with_the_tie_rule() {
    for (seed, n, k, levels) in [
        (1, 100, 16, 0),
        (2, 100, 16, 5),
        (3, 1000, 64, 3),
        (4, 17, 16, 0),
        (5, 16, 16, 0),
        (6, 5, 16, 0),
        (7, 300, 1, 2),
        (8, 257, 100, 1),
    ] {
        let mut s = rand_vec(seed, n);
        if levels > 0 {
            // Few distinct values: many ties.
            s.iter_mut().for_each(|v| *v = (*v * levels as f32).round());
        }
        let mut out = vec![u32::MAX; k];
        let got = select_topk(&s, k, &mut out);
        let want = topk_by_sort(&s, k);
        assert_eq!(got, want.len(), "seed {seed}");
        assert_eq!(&out[..got], &want[..], "seed {seed} n {n} k {k}");
    }
}

#[test]
fn topk_ties_keep_the_earlier_token_and_nan_ranks_last() {
    let s = [1.0, 3.0, 3.0, f32::NAN, 3.0, -0.0, 0.0, 2.0];
    let mut out = [0u32; 3];
    assert_eq!(select_topk(&s, 3, &mut out), 3);
    assert_eq!(out, [1, 2, 4]);
    let mut out = [0u32; 2];
    select_topk(&s, 2, &mut out);
    assert_eq!(out, [1, 2]);
    // -0.0 and 0.0 are equal: the earlier (-0.0 at 5) wins over 0.0 at 6.
    let z = [-0.0, 0.0, -1.0];
    let mut out = [0u32; 1];
    select_topk(&z, 1, &mut out);
    assert_eq!(out, [0]);
    let mut out = [0u32; 7];
    select_topk(&s, 7, &mut out);
    assert_eq!(out, [0, 1, 2, 4, 5, 6, 7]);
}

fn shape(heads: usize, dim: usize, p: usize, rope: IndexRope, layout: RopeLayout) -> IndexShape {
    IndexShape {
        heads,
        dim,
        rope_dims: p,
        rope,
        layout,
    }
}

#[test]
fn score_block_is_the_formula() {
    let sh = shape(8, 16, 8, IndexRope::First, RopeLayout::Half);
    let (cnt, hi, di) = (37, 8, 16);
    let q = rand_vec(11, hi * di);
    let w = rand_vec(12, hi);
    let keys = rand_vec(13, cnt * di);
    let mut dots = vec![0f32; cnt * hi];
    let mut out = vec![0f32; cnt];
    let mut q_t = vec![0f32; hi * di];
    assert!(transpose_query(&sh, &q, &mut q_t));
    assert!(score_block(
        isa(),
        &sh,
        &q_t,
        &w,
        &keys,
        cnt,
        &mut dots,
        &mut out
    ));
    for t in 0..cnt {
        let mut want = 0f64;
        for h in 0..hi {
            let d: f64 = (0..di)
                .map(|j| q[h * di + j] as f64 * keys[t * di + j] as f64)
                .sum();
            want += w[h] as f64 * (d * 0.25).max(0.0);
        }
        assert!(
            (out[t] as f64 - want).abs() < 1e-5,
            "{t}: {} vs {want}",
            out[t]
        );
    }
    // Wrong lengths: false.
    assert!(!score_block(
        isa(),
        &sh,
        &q_t[1..],
        &w,
        &keys,
        cnt,
        &mut dots,
        &mut out
    ));
}

#[test]
fn rotation_parts() {
    let cos = [0.0f32; 2];
    let sin = [1.0f32; 2];
    // Half layout on the first 4 of 6: (a, b) -> (-b, a) for pairs (0,2), (1,3).
    let mut v = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    shape(1, 6, 4, IndexRope::First, RopeLayout::Half).rotate(&mut v, &cos, &sin);
    assert_eq!(v, [-3.0, -4.0, 1.0, 2.0, 5.0, 6.0]);
    let mut v = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    shape(1, 6, 4, IndexRope::Last, RopeLayout::Interleaved).rotate(&mut v, &cos, &sin);
    assert_eq!(v, [1.0, 2.0, -4.0, 3.0, -6.0, 5.0]);
    let mut v = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    shape(1, 6, 4, IndexRope::None, RopeLayout::Half).rotate(&mut v, &cos, &sin);
    assert_eq!(v, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
}

#[test]
fn layer_norm_matches_f64() {
    let mut x = rand_vec(21, 16);
    let w = rand_vec(22, 16);
    let b = rand_vec(23, 16);
    let xd: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let mean = xd.iter().sum::<f64>() / 16.0;
    let var = xd.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 16.0;
    layer_norm(&mut x, Elems::F32(&w), Elems::F32(&b), 1e-6);
    for i in 0..16 {
        let want = (xd[i] - mean) / (var + 1e-6).sqrt() * w[i] as f64 + b[i] as f64;
        assert!((x[i] as f64 - want).abs() < 1e-5);
    }
}

#[repr(align(64))]
struct Mem([u8; 8192]);

#[test]
fn index_cache_rows_per_dtype() {
    assert_eq!(row_bytes(IndexDType::F8E4M3, 128), Some(132));
    assert_eq!(row_bytes(IndexDType::BF16, 128), Some(256));
    assert_eq!(row_bytes(IndexDType::F32, 128), Some(512));
    let di = 16;
    let keys = rand_vec(31, 4 * di);
    for dt in [IndexDType::F32, IndexDType::BF16, IndexDType::F8E4M3] {
        let mut mem = Mem([0; 8192]);
        let mut c = IndexCache::new(&mut mem.0, dt, di, 8).unwrap();
        for t in 0..4 {
            assert!(c.write(t, &keys[t * di..(t + 1) * di]));
        }
        assert!(!c.write(8, &keys[..di]));
        let mut widen = vec![0f32; 4 * di];
        let rows = c.rows(0, 4, &mut widen).to_vec();
        assert_eq!(rows.len(), 4 * di);
        for t in 0..4 {
            let k = &keys[t * di..(t + 1) * di];
            let amax = k.iter().fold(0f32, |m, v| m.max(v.abs()));
            for j in 0..di {
                let (got, want) = (rows[t * di + j], k[j]);
                let err = (got - want).abs();
                match dt {
                    IndexDType::F32 => assert_eq!(got, want),
                    // bf16: 8 significant bits.
                    IndexDType::BF16 => assert!(err <= want.abs() / 256.0),
                    // E4M3: 4 significant bits for normals (relative 2^-4),
                    // absolute 2^-10 * scale below 2^-6 * scale.
                    IndexDType::F8E4M3 => {
                        let s = amax / 448.0;
                        assert!(err <= want.abs() / 16.0 + s / 1024.0, "{got} {want}");
                    }
                }
            }
            let mut one = vec![0f32; di];
            assert!(c.read(t, &mut one));
            assert_eq!(&one[..], &rows[t * di..(t + 1) * di]);
        }
        assert!(c.rows(7, 2, &mut widen).is_empty());
        assert!(IndexCache::new(&mut mem.0[..100], dt, di, 8).is_none());
    }
    // The largest magnitude of a token is stored exactly (it maps to 448).
    let mut mem = Mem([0; 8192]);
    let mut c = IndexCache::new(&mut mem.0, IndexDType::F8E4M3, 4, 1).unwrap();
    c.write(0, &[0.3, -7.0, 1.0, 0.0]);
    let mut o = [0f32; 4];
    c.read(0, &mut o);
    assert_eq!(o[1], -7.0);
    assert_eq!(o[3], 0.0);
}

#[test]
fn score_cache_equals_blocks_of_any_size() {
    let sh = shape(4, 8, 4, IndexRope::First, RopeLayout::Interleaved);
    let n = 150;
    let keys = rand_vec(41, n * 8);
    let q = rand_vec(42, 32);
    let w = rand_vec(43, 4);
    let mut q_t = vec![0f32; 32];
    assert!(transpose_query(&sh, &q, &mut q_t));
    let q = q_t;
    let mut mem = Mem([0; 8192]);
    let mut c = IndexCache::new(&mut mem.0, IndexDType::F32, 8, 200).unwrap();
    for t in 0..n {
        c.write(t, &keys[t * 8..(t + 1) * 8]);
    }
    let (mut widen, mut dots) = (vec![0f32; SCORE_BLOCK * 8], vec![0f32; SCORE_BLOCK * 4]);
    let mut out = vec![0f32; n];
    assert!(score_cache(
        isa(),
        &sh,
        &c,
        n,
        &q,
        &w,
        &mut widen,
        &mut dots,
        &mut out
    ));
    let mut one = vec![0f32; n];
    let mut dots1 = vec![0f32; n * 4];
    assert!(score_block(
        isa(),
        &sh,
        &q,
        &w,
        &keys,
        n,
        &mut dots1,
        &mut one
    ));
    for t in 0..n {
        assert!((out[t] - one[t]).abs() <= 1e-6 * one[t].abs().max(1.0));
    }
    assert!(!score_cache(
        isa(),
        &sh,
        &c,
        201,
        &q,
        &w,
        &mut widen,
        &mut dots,
        &mut out
    ));
}
