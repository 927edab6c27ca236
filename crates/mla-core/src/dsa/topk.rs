//! Deterministic top-k selection of index scores.

/// The score of `t` as ordered: NaN counts as `-inf`; `-0.0 == 0.0` already.
#[inline]
fn key(scores: &[f32], t: u32) -> f32 {
    match scores.get(t as usize) {
        Some(&s) if !s.is_nan() => s,
        _ => f32::NEG_INFINITY,
    }
}

/// True when token `a` ranks before token `b`: higher score, then lower
/// position (the tie rule; a strict total order on distinct positions).
#[inline]
fn before(scores: &[f32], a: u32, b: u32) -> bool {
    let (sa, sb) = (key(scores, a), key(scores, b));
    sa > sb || (sa == sb && a < b)
}

/// Restores the heap property below `i` of the min-heap `heap` (root = the
/// lowest-ranked of the kept tokens).
fn sift_down(scores: &[f32], heap: &mut [u32], mut i: usize) {
    let n = heap.len();
    loop {
        let (l, r) = (2 * i + 1, 2 * i + 2);
        let at = |heap: &[u32], j: usize| heap.get(j).copied().unwrap_or(0);
        let mut worst = i;
        if l < n && before(scores, at(heap, worst), at(heap, l)) {
            worst = l;
        }
        if r < n && before(scores, at(heap, worst), at(heap, r)) {
            worst = r;
        }
        if worst == i {
            return;
        }
        let (a, b) = (at(heap, i), at(heap, worst));
        if let Some(x) = heap.get_mut(i) {
            *x = b;
        }
        if let Some(y) = heap.get_mut(worst) {
            *y = a;
        }
        i = worst;
    }
}

/// Selects the `k` highest-ranked of tokens `0..scores.len()` (higher score
/// first, equal scores: lower position first; NaN ranks lowest) and writes them
/// to `out` in ascending position order. All tokens when `scores.len() <= k`.
/// Returns how many were written (`min(k, scores.len(), out.len())`).
///
/// Cost `O(n log k)` time, no scratch beyond `out`.
pub fn select_topk(scores: &[f32], k: usize, out: &mut [u32]) -> usize {
    let n = scores.len().min(u32::MAX as usize);
    let k = k.min(out.len());
    if n <= k {
        for (t, o) in out.iter_mut().take(n).enumerate() {
            *o = t as u32;
        }
        return n;
    }
    if k == 0 {
        return 0;
    }
    let Some(heap) = out.get_mut(..k) else {
        return 0;
    };
    // The first k tokens, heapified; then each later token replaces the root
    // when it ranks before it.
    for (t, h) in heap.iter_mut().enumerate() {
        *h = t as u32;
    }
    for i in (0..k / 2).rev() {
        sift_down(scores, heap, i);
    }
    for t in k..n {
        let t = t as u32;
        let root = heap.first().copied().unwrap_or(0);
        if before(scores, t, root) {
            if let Some(r) = heap.first_mut() {
                *r = t;
            }
            sift_down(scores, heap, 0);
        }
    }
    // The root is the k-th ranked token: a token is selected iff it ranks before
    // or equals it. One pass in position order writes them sorted.
    let last = heap.first().copied().unwrap_or(0);
    let mut w = 0;
    for t in 0..n as u32 {
        if t == last || before(scores, t, last) {
            if let Some(o) = out.get_mut(w) {
                *o = t;
            }
            w += 1;
        }
    }
    w.min(k)
}
