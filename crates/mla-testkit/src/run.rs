//! Running a case through a fresh engine: in one call, in uneven chunks, or token
//! by token, in any attention mode, optionally on threads.

use crate::arena::Arena;
use mla_core::parallel::{HostParallelFor, ParallelFor};
use mla_core::{AttnMode, Config, Engine, Weights};

/// How the tokens of a case are split into calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// All tokens in one call (prefill).
    OneCall,
    /// Chunks of 3, 1, 5, 2, 7, 3, 1, ... tokens ([`uneven`]).
    Uneven,
    /// One token per call (decode).
    Decode,
}

impl Schedule {
    /// The three schedules.
    pub const ALL: [Schedule; 3] = [Schedule::OneCall, Schedule::Uneven, Schedule::Decode];

    /// Call sizes covering `t` tokens.
    pub fn chunks(self, t: usize) -> Vec<usize> {
        match self {
            Schedule::OneCall => vec![t],
            Schedule::Uneven => uneven(t),
            Schedule::Decode => vec![1; t],
        }
    }

    /// A short name for messages.
    pub fn label(self) -> &'static str {
        match self {
            Schedule::OneCall => "one call",
            Schedule::Uneven => "uneven",
            Schedule::Decode => "decode",
        }
    }
}

/// Uneven call sizes covering `t` tokens: 3, 1, 5, 2, 7, 3, 1, ... (the last cut to fit).
pub fn uneven(t: usize) -> Vec<usize> {
    let mut v = Vec::new();
    let mut left = t;
    for n in [3, 1, 5, 2, 7].iter().cycle() {
        if left == 0 {
            break;
        }
        let n = (*n).min(left);
        v.push(n);
        left -= n;
    }
    v
}

/// How to run: the attention mode and, optionally, threads.
#[derive(Clone, Copy)]
pub struct Run<'p> {
    /// Attention path of every call.
    pub mode: AttnMode,
    /// A thread pool (or any parallel-for) for the engine.
    pub pool: Option<&'p dyn ParallelFor>,
    /// A C host's parallel-for (used instead of `pool` when set).
    pub host: Option<HostParallelFor>,
    /// `Engine::set_parallel_min_work` (0: every parallel loop goes to the threads).
    pub min_work: Option<usize>,
}

impl Run<'static> {
    /// Sequential, in `mode`.
    pub fn mode(mode: AttnMode) -> Run<'static> {
        Run {
            mode,
            pool: None,
            host: None,
            min_work: None,
        }
    }
}

impl<'p> Run<'p> {
    /// The same run on `pool`, every loop on the threads (min work 0).
    pub fn on<'q>(self, pool: &'q dyn ParallelFor) -> Run<'q>
    where
        'p: 'q,
    {
        Run {
            pool: Some(pool),
            min_work: Some(0),
            ..self
        }
    }

    /// The same run through a C host's parallel-for, every loop on it (min work 0).
    pub fn on_host(self, host: HostParallelFor) -> Run<'p> {
        Run {
            host: Some(host),
            min_work: Some(0),
            ..self
        }
    }

    /// Runs `x` (`[T][d]`) through a fresh engine in calls of `chunks` tokens
    /// (which must add up to T); returns all outputs. Panics on any error.
    pub fn run(&self, cfg: &Config, w: &Weights, x: &[f32], chunks: &[usize]) -> Vec<f32> {
        let mut arena = Arena::for_config(cfg);
        let mut e = Engine::new(cfg, w, arena.get()).expect("Engine::new");
        if let Some(work) = self.min_work {
            e.set_parallel_min_work(work);
        }
        if self.host.is_some() {
            e.set_parallel_host(self.host);
        } else {
            e.set_parallel(self.pool);
        }
        forward_chunks(&mut e, x, chunks, self.mode)
    }
}

/// Runs `x` through a fresh engine for `cfg` in calls of `chunks` tokens, in `mode`.
pub fn run(cfg: &Config, w: &Weights, x: &[f32], chunks: &[usize], mode: AttnMode) -> Vec<f32> {
    Run::mode(mode).run(cfg, w, x, chunks)
}

/// Appends `x` to an engine in calls of `chunks` tokens (which must cover `x`),
/// checking the length after each; returns the outputs.
pub fn forward_chunks(e: &mut Engine, x: &[f32], chunks: &[usize], mode: AttnMode) -> Vec<f32> {
    let d = e.config().hidden_size as usize;
    let mut out = vec![0f32; x.len()];
    let (mut t0, len0) = (0, e.len());
    for &n in chunks {
        let (xs, os) = (&x[t0 * d..(t0 + n) * d], &mut out[t0 * d..(t0 + n) * d]);
        e.forward_mode(xs, os, mode)
            .unwrap_or_else(|err| panic!("forward of {n} tokens at {t0}: {}", err.message()));
        t0 += n;
        assert_eq!(e.len(), len0 + t0);
    }
    assert_eq!(t0 * d, x.len(), "chunks must cover the input");
    out
}

/// True when both hold bitwise the same values.
pub fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}
