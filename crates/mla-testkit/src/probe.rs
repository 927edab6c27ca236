//! Probes of what the machine can do, for the benchmarks' limits: read
//! bandwidth (a SIMD sum over a buffer, walked as one stream, four streams and
//! four streams with software prefetch; the best over whole sweeps and over
//! 4 MiB chunks timed one by one, since on a shared machine a short interval
//! often runs uninterrupted and a long one rarely does) and FMA peak
//! (independent FMA chains in registers on the engine's ISA; best also over
//! short bursts). Shared by examples/bench.rs and examples/serve_bench.rs so
//! that both compare against the same limits.

use mla_core::parallel::ParallelFor;
use std::time::Instant;

pub mod simd {
    /// How a read probe walks its buffer.
    #[derive(Clone, Copy, Debug)]
    pub enum Walk {
        /// One sequential stream, 8 vector accumulators.
        One,
        /// Four independent streams (the buffer in quarters, walked at once),
        /// two vectors per stream per step, 8 accumulators.
        Four,
        /// `Four` with a software prefetch 1 KiB ahead on every stream.
        FourPrefetch,
    }

    /// Every walk the probe tries.
    pub const WALKS: [Walk; 3] = [Walk::One, Walk::Four, Walk::FourPrefetch];

    /// Sums `v` with wide SIMD loads (the widest the engine's ISA has) the way
    /// `walk` says; returns (the sum, bytes read).
    pub fn sum(v: &[f32], walk: Walk) -> (f32, usize) {
        let isa = mla_core::kernels::isa().name();
        #[cfg(target_arch = "x86_64")]
        {
            if isa == "avx512" && std::is_x86_feature_detected!("avx512f") {
                // SAFETY: AVX-512F detected.
                return unsafe { x86::sum512(v, walk) };
            }
            if isa != "scalar" && std::is_x86_feature_detected!("avx2") {
                // SAFETY: AVX2 detected.
                return unsafe { x86::sum256(v, walk) };
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            if isa != "scalar" {
                // SAFETY: NEON is part of the aarch64 base ABI.
                return unsafe { arm::sum(v, walk) };
            }
        }
        let _ = (isa, walk);
        let mut acc = [0f32; 16];
        let n = v.len() / 16 * 16;
        for c in v[..n].chunks_exact(16) {
            for (a, &x) in acc.iter_mut().zip(c) {
                *a += x;
            }
        }
        (acc.iter().sum(), n * 4)
    }

    /// Stream starts and the elements each stream reads (a multiple of `step`).
    #[allow(dead_code)]
    fn streams(v: &[f32], walk: Walk, step: usize) -> (Vec<*const f32>, usize) {
        let n = match walk {
            Walk::One => 1,
            Walk::Four | Walk::FourPrefetch => 4,
        };
        let per = v.len() / n / step * step;
        // SAFETY: s * per <= v.len() for s < n.
        let starts = (0..n).map(|s| unsafe { v.as_ptr().add(s * per) }).collect();
        (starts, per)
    }

    /// Runs `iters` rounds of independent FMA chains (at least 1); returns
    /// (a value to keep, flops).
    pub fn fma(iters: usize) -> (f32, f64) {
        let isa = mla_core::kernels::isa().name();
        #[cfg(target_arch = "x86_64")]
        {
            if isa == "avx512" && std::is_x86_feature_detected!("avx512f") {
                // SAFETY: AVX-512F detected.
                return unsafe { x86::fma512(iters) };
            }
            if isa == "avx2"
                && std::is_x86_feature_detected!("avx2")
                && std::is_x86_feature_detected!("fma")
            {
                // SAFETY: AVX2 and FMA detected.
                return unsafe { x86::fma256(iters) };
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            if isa == "neon" {
                // SAFETY: NEON is part of the aarch64 base ABI.
                return unsafe { arm::fma(iters) };
            }
        }
        let _ = isa;
        {
            let mut a = [1.0f32; 16];
            for _ in 0..iters.max(1) {
                for x in a.iter_mut() {
                    *x = x.mul_add(0.999_999, 1e-7);
                }
            }
            (a.iter().sum(), iters.max(1) as f64 * 32.0)
        }
    }

    #[cfg(target_arch = "x86_64")]
    mod x86 {
        use std::arch::x86_64::*;

        /// Bytes a prefetch runs ahead of the loads.
        const AHEAD: usize = 1024;

        #[target_feature(enable = "avx512f")]
        pub unsafe fn sum512(v: &[f32], walk: super::Walk) -> (f32, usize) {
            let (st, per) = super::streams(v, walk, 32);
            let pf = matches!(walk, super::Walk::FourPrefetch);
            let mut a = [_mm512_setzero_ps(); 8];
            let mut i = 0;
            while i < per {
                for (s, &p) in st.iter().enumerate() {
                    if pf {
                        // A prefetch never faults, whatever the address.
                        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(i + AHEAD / 4).cast::<i8>());
                    }
                    // SAFETY: i + 32 <= per: inside stream s.
                    unsafe {
                        a[2 * s] = _mm512_add_ps(a[2 * s], _mm512_loadu_ps(p.add(i)));
                        a[2 * s + 1] = _mm512_add_ps(a[2 * s + 1], _mm512_loadu_ps(p.add(i + 16)));
                    }
                }
                i += 32;
            }
            let sum = a.iter().map(|&x| _mm512_reduce_add_ps(x)).sum();
            (sum, per * st.len() * 4)
        }

        #[target_feature(enable = "avx2")]
        pub unsafe fn sum256(v: &[f32], walk: super::Walk) -> (f32, usize) {
            let (st, per) = super::streams(v, walk, 16);
            let pf = matches!(walk, super::Walk::FourPrefetch);
            let mut a = [_mm256_setzero_ps(); 8];
            let mut i = 0;
            while i < per {
                for (s, &p) in st.iter().enumerate() {
                    if pf {
                        // A prefetch never faults, whatever the address.
                        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(i + AHEAD / 4).cast::<i8>());
                    }
                    // SAFETY: i + 16 <= per: inside stream s.
                    unsafe {
                        a[2 * s] = _mm256_add_ps(a[2 * s], _mm256_loadu_ps(p.add(i)));
                        a[2 * s + 1] = _mm256_add_ps(a[2 * s + 1], _mm256_loadu_ps(p.add(i + 8)));
                    }
                }
                i += 16;
            }
            let mut out = [0f32; 8];
            let mut s = _mm256_setzero_ps();
            for x in a {
                s = _mm256_add_ps(s, x);
            }
            // SAFETY: out has 8 floats.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr(), s) };
            (out.iter().sum(), per * st.len() * 4)
        }

        /// 16 independent chains of 512-bit FMAs in registers (inline asm, so
        /// that the compiler cannot reorder, spill or fold them).
        #[target_feature(enable = "avx512f")]
        pub unsafe fn fma512(iters: usize) -> (f32, f64) {
            // SAFETY: AVX-512F is enabled for this function (caller detected it);
            // the asm touches only the registers it declares.
            unsafe {
                std::arch::asm!(
                    "vxorps zmm0, zmm0, zmm0", "vxorps zmm1, zmm1, zmm1", "vxorps zmm2, zmm2, zmm2",
                    "vxorps zmm3, zmm3, zmm3", "vxorps zmm4, zmm4, zmm4", "vxorps zmm5, zmm5, zmm5",
                    "vxorps zmm6, zmm6, zmm6", "vxorps zmm7, zmm7, zmm7", "vxorps zmm8, zmm8, zmm8",
                    "vxorps zmm9, zmm9, zmm9", "vxorps zmm10, zmm10, zmm10", "vxorps zmm11, zmm11, zmm11",
                    "vxorps zmm12, zmm12, zmm12", "vxorps zmm13, zmm13, zmm13", "vxorps zmm14, zmm14, zmm14",
                    "vxorps zmm15, zmm15, zmm15",
                    "2:",
                    "vfmadd231ps zmm0, zmm16, zmm17", "vfmadd231ps zmm1, zmm16, zmm17",
                    "vfmadd231ps zmm2, zmm16, zmm17", "vfmadd231ps zmm3, zmm16, zmm17",
                    "vfmadd231ps zmm4, zmm16, zmm17", "vfmadd231ps zmm5, zmm16, zmm17",
                    "vfmadd231ps zmm6, zmm16, zmm17", "vfmadd231ps zmm7, zmm16, zmm17",
                    "vfmadd231ps zmm8, zmm16, zmm17", "vfmadd231ps zmm9, zmm16, zmm17",
                    "vfmadd231ps zmm10, zmm16, zmm17", "vfmadd231ps zmm11, zmm16, zmm17",
                    "vfmadd231ps zmm12, zmm16, zmm17", "vfmadd231ps zmm13, zmm16, zmm17",
                    "vfmadd231ps zmm14, zmm16, zmm17", "vfmadd231ps zmm15, zmm16, zmm17",
                    "dec {n}",
                    "jnz 2b",
                    n = inout(reg) iters.max(1) => _,
                    in("zmm16") _mm512_set1_ps(0.999_999),
                    in("zmm17") _mm512_set1_ps(1e-7),
                    out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _,
                    out("zmm4") _, out("zmm5") _, out("zmm6") _, out("zmm7") _,
                    out("zmm8") _, out("zmm9") _, out("zmm10") _, out("zmm11") _,
                    out("zmm12") _, out("zmm13") _, out("zmm14") _, out("zmm15") _,
                    options(nostack, nomem),
                );
            }
            (0.0, iters.max(1) as f64 * 16.0 * 16.0 * 2.0)
        }

        /// 12 independent chains of 256-bit FMAs (inline asm).
        #[target_feature(enable = "avx2,fma")]
        pub unsafe fn fma256(iters: usize) -> (f32, f64) {
            // SAFETY: AVX2 and FMA are enabled (caller detected them); the asm
            // touches only the registers it declares.
            unsafe {
                std::arch::asm!(
                    "vxorps ymm0, ymm0, ymm0", "vxorps ymm1, ymm1, ymm1", "vxorps ymm2, ymm2, ymm2",
                    "vxorps ymm3, ymm3, ymm3", "vxorps ymm4, ymm4, ymm4", "vxorps ymm5, ymm5, ymm5",
                    "vxorps ymm6, ymm6, ymm6", "vxorps ymm7, ymm7, ymm7", "vxorps ymm8, ymm8, ymm8",
                    "vxorps ymm9, ymm9, ymm9", "vxorps ymm10, ymm10, ymm10", "vxorps ymm11, ymm11, ymm11",
                    "2:",
                    "vfmadd231ps ymm0, ymm12, ymm13", "vfmadd231ps ymm1, ymm12, ymm13",
                    "vfmadd231ps ymm2, ymm12, ymm13", "vfmadd231ps ymm3, ymm12, ymm13",
                    "vfmadd231ps ymm4, ymm12, ymm13", "vfmadd231ps ymm5, ymm12, ymm13",
                    "vfmadd231ps ymm6, ymm12, ymm13", "vfmadd231ps ymm7, ymm12, ymm13",
                    "vfmadd231ps ymm8, ymm12, ymm13", "vfmadd231ps ymm9, ymm12, ymm13",
                    "vfmadd231ps ymm10, ymm12, ymm13", "vfmadd231ps ymm11, ymm12, ymm13",
                    "dec {n}",
                    "jnz 2b",
                    n = inout(reg) iters.max(1) => _,
                    in("ymm12") _mm256_set1_ps(0.999_999),
                    in("ymm13") _mm256_set1_ps(1e-7),
                    out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _,
                    out("ymm4") _, out("ymm5") _, out("ymm6") _, out("ymm7") _,
                    out("ymm8") _, out("ymm9") _, out("ymm10") _, out("ymm11") _,
                    options(nostack, nomem),
                );
            }
            (0.0, iters.max(1) as f64 * 12.0 * 8.0 * 2.0)
        }
    }

    #[cfg(target_arch = "aarch64")]
    mod arm {
        use std::arch::aarch64::*;

        #[target_feature(enable = "neon")]
        pub unsafe fn sum(v: &[f32], walk: super::Walk) -> (f32, usize) {
            let (st, per) = super::streams(v, walk, 8);
            let pf = matches!(walk, super::Walk::FourPrefetch);
            let mut a = [vdupq_n_f32(0.0); 8];
            let mut i = 0;
            while i < per {
                for (s, &p) in st.iter().enumerate() {
                    if pf {
                        // PRFM never faults and has no architectural effect.
                        unsafe {
                            std::arch::asm!("prfm pldl1keep, [{0}]", in(reg) p.wrapping_add(i + 256), options(nostack, readonly, preserves_flags))
                        };
                    }
                    // SAFETY: i + 8 <= per: inside stream s.
                    unsafe {
                        a[2 * s] = vaddq_f32(a[2 * s], vld1q_f32(p.add(i)));
                        a[2 * s + 1] = vaddq_f32(a[2 * s + 1], vld1q_f32(p.add(i + 4)));
                    }
                }
                i += 8;
            }
            (a.iter().map(|&x| vaddvq_f32(x)).sum(), per * st.len() * 4)
        }

        /// 16 independent chains of 128-bit FMLAs (inline asm).
        #[target_feature(enable = "neon")]
        pub unsafe fn fma(iters: usize) -> (f32, f64) {
            // SAFETY: NEON is always present on aarch64; the asm touches only
            // the registers it declares.
            unsafe {
                std::arch::asm!(
                    "movi v0.4s, #0", "movi v1.4s, #0", "movi v2.4s, #0", "movi v3.4s, #0",
                    "movi v4.4s, #0", "movi v5.4s, #0", "movi v6.4s, #0", "movi v7.4s, #0",
                    "movi v8.4s, #0", "movi v9.4s, #0", "movi v10.4s, #0", "movi v11.4s, #0",
                    "movi v12.4s, #0", "movi v13.4s, #0", "movi v14.4s, #0", "movi v15.4s, #0",
                    "2:",
                    "fmla v0.4s, v16.4s, v17.4s", "fmla v1.4s, v16.4s, v17.4s",
                    "fmla v2.4s, v16.4s, v17.4s", "fmla v3.4s, v16.4s, v17.4s",
                    "fmla v4.4s, v16.4s, v17.4s", "fmla v5.4s, v16.4s, v17.4s",
                    "fmla v6.4s, v16.4s, v17.4s", "fmla v7.4s, v16.4s, v17.4s",
                    "fmla v8.4s, v16.4s, v17.4s", "fmla v9.4s, v16.4s, v17.4s",
                    "fmla v10.4s, v16.4s, v17.4s", "fmla v11.4s, v16.4s, v17.4s",
                    "fmla v12.4s, v16.4s, v17.4s", "fmla v13.4s, v16.4s, v17.4s",
                    "fmla v14.4s, v16.4s, v17.4s", "fmla v15.4s, v16.4s, v17.4s",
                    "subs {n}, {n}, #1",
                    "b.ne 2b",
                    n = inout(reg) iters.max(1) => _,
                    in("v16") vdupq_n_f32(0.999_999),
                    in("v17") vdupq_n_f32(1e-7),
                    out("v0") _, out("v1") _, out("v2") _, out("v3") _,
                    out("v4") _, out("v5") _, out("v6") _, out("v7") _,
                    out("v8") _, out("v9") _, out("v10") _, out("v11") _,
                    out("v12") _, out("v13") _, out("v14") _, out("v15") _,
                    options(nostack, nomem),
                );
            }
            (0.0, iters.max(1) as f64 * 16.0 * 4.0 * 2.0)
        }
    }
}

/// Runs `n` tasks on `par` (or inline).
pub fn run_tasks(par: Option<&dyn ParallelFor>, n: usize, f: &(dyn Fn(usize) + Sync)) {
    match par {
        Some(p) => p.run(n, f),
        None => (0..n).for_each(f),
    }
}

/// The CPU caches Linux reports for CPU 0 (`/sys/devices/system/cpu/cpu0/
/// cache`), as (`L1d`, `L1i`, `L2`, ... name, bytes); empty where it reports
/// none.
pub fn caches() -> Vec<(String, usize)> {
    fn parse_size(s: &str) -> usize {
        let s = s.trim();
        let (num, mult) = if let Some(n) = s.strip_suffix('K') {
            (n, 1024)
        } else if let Some(n) = s.strip_suffix('M') {
            (n, 1024 * 1024)
        } else {
            (s, 1)
        };
        num.parse::<usize>().unwrap_or(0) * mult
    }
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let mut caches = Vec::new();
    for i in 0..8 {
        let base = format!("/sys/devices/system/cpu/cpu0/cache/index{i}");
        let size = read(&format!("{base}/size"));
        if size.is_empty() {
            break;
        }
        let level = read(&format!("{base}/level")).trim().to_string();
        let short = match read(&format!("{base}/type")).trim() {
            "Data" => "d",
            "Instruction" => "i",
            _ => "",
        };
        caches.push((format!("L{level}{short}"), parse_size(&size)));
    }
    caches
}

/// Bytes of the largest cache in [`caches`] (the last level), or 32 MiB
/// where none is reported: what a "cold" benchmark's working set must
/// exceed (twice over) for every step to read its weights from memory.
pub fn last_level_cache_bytes() -> usize {
    match caches().iter().map(|c| c.1).max() {
        Some(b) if b > 0 => b,
        _ => 32 << 20,
    }
}

/// Bytes of memory available (`MemAvailable` in `/proc/meminfo`), 4 GiB
/// where unknown: what the benchmarks size their cold layers against.
pub fn mem_available() -> usize {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemAvailable"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<usize>().ok())
        .map_or(4 << 30, |k| k * 1024)
}

/// Read bandwidth in GB/s, the buffer split into one part per thread, for
/// every walk of [`simd::WALKS`]: (median of the best walk, best time of
/// any walk, the best walk's name).
pub fn read_bandwidth(
    buf: &[f32],
    threads: usize,
    par: Option<&dyn ParallelFor>,
    reps: usize,
    sweeps: usize,
) -> (f64, f64, String) {
    // Each task also times its part chunk by chunk (4 MiB, well under a
    // scheduler slice): on a shared machine a whole sweep is nearly always
    // interrupted, one chunk often is not, and the engine's best step is timed
    // the same way. Best = the sum over the tasks of their best chunk rates.
    const CHUNK: usize = 1 << 20;
    let part = buf.len() / threads;
    let sink = std::sync::atomic::AtomicU32::new(0);
    let (mut best_med, mut best, mut name) = (0.0f64, 0.0f64, String::new());
    for walk in simd::WALKS {
        let mut times = Vec::new();
        let bytes = std::sync::atomic::AtomicUsize::new(0);
        let chunk_best = std::sync::Mutex::new(vec![0.0f64; threads]);
        for _ in 0..reps {
            bytes.store(0, std::sync::atomic::Ordering::Relaxed);
            let t = Instant::now();
            run_tasks(par, threads, &|i| {
                let mut task_best = 0.0f64;
                for _ in 0..sweeps {
                    for c in buf[i * part..(i + 1) * part].chunks(CHUNK) {
                        let t = Instant::now();
                        let (s, b) = simd::sum(c, walk);
                        let dt = t.elapsed().as_secs_f64();
                        if dt > 0.0 {
                            task_best = task_best.max(b as f64 / dt);
                        }
                        sink.fetch_add(s.to_bits() & 1, std::sync::atomic::Ordering::Relaxed);
                        bytes.fetch_add(b, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                let mut cb = chunk_best.lock().unwrap();
                cb[i] = cb[i].max(task_best);
            });
            times.push(t.elapsed().as_secs_f64());
        }
        let bytes = bytes.load(std::sync::atomic::Ordering::Relaxed) as f64;
        let (med, min) = med_min(&mut times);
        if bytes / med > best_med {
            best_med = bytes / med;
            name = format!("{walk:?}");
        }
        let chunks: f64 = chunk_best.lock().unwrap().iter().sum();
        best = best.max(bytes / min).max(chunks);
    }
    (best_med / 1e9, best / 1e9, name)
}

/// Best read bandwidth (GB/s) over a buffer of `bytes` (a working set that
/// may fit a cache: the limit of a `hot` layer) on each of `pars` (thread
/// count, pool): the buffer swept repeatedly inside each task (at least 64 MiB
/// in all, so that starting the tasks costs little), after one untimed pass.
pub fn read_bandwidth_ws(
    bytes: usize,
    pars: &[(usize, Option<&dyn ParallelFor>)],
    reps: usize,
) -> f64 {
    let n = (bytes / 4).max(64 * 1024);
    let buf: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
    let sweeps = (64 << 20) / (n * 4) + 1;
    let mut best = f64::NAN;
    for &(t, par) in pars {
        read_bandwidth(&buf, t, par, 1, 1);
        best = best.max(read_bandwidth(&buf, t, par, reps, sweeps).1);
    }
    best
}

/// FMA peak in GFLOP/s on `threads` threads.
pub fn fma_peak(threads: usize, par: Option<&dyn ParallelFor>, reps: usize) -> (f64, f64) {
    // Median: whole calls of `iters` rounds. Best: each task also times short
    // bursts (well under a scheduler slice) and keeps its best; summed over
    // the tasks.
    let (iters, burst) = (4_000_000, 100_000);
    let per_round = simd::fma(1).1;
    let flops = threads as f64 * per_round * iters as f64;
    let mut times = Vec::new();
    let sink = std::sync::atomic::AtomicU32::new(0);
    let burst_best = std::sync::Mutex::new(vec![0.0f64; threads]);
    for _ in 0..reps {
        let t = Instant::now();
        run_tasks(par, threads, &|i| {
            let (v, _) = simd::fma(iters);
            sink.fetch_add(v.to_bits() & 1, std::sync::atomic::Ordering::Relaxed);
            let mut task_best = 0.0f64;
            for _ in 0..8 {
                let t = Instant::now();
                let (v, _) = simd::fma(burst);
                let dt = t.elapsed().as_secs_f64();
                if dt > 0.0 {
                    task_best = task_best.max(per_round * burst as f64 / dt);
                }
                sink.fetch_add(v.to_bits() & 1, std::sync::atomic::Ordering::Relaxed);
            }
            let mut bb = burst_best.lock().unwrap();
            bb[i] = bb[i].max(task_best);
        });
        times.push(t.elapsed().as_secs_f64());
    }
    let (med, min) = med_min(&mut times);
    let bursts: f64 = burst_best.lock().unwrap().iter().sum();
    (flops / med / 1e9, (flops / min).max(bursts) / 1e9)
}

/// (median, minimum) of `v` (sorted in place); `v` must not be empty.
pub fn med_min(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[0])
}
