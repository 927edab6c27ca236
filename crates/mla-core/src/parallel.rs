//! Parallel-for: how the engine spreads heads and rows over threads it does not own.
//!
//! The core has no threads. A host hands the engine a *parallel-for*, something
//! that runs `task(i)` for every `i` in `0..n_tasks`, possibly concurrently, and
//! returns when all are done:
//!
//! - in Rust, any [`ParallelFor`] (a rayon pool, a job system, `ThreadPool`
//!   with `std`, or [`Sequential`]), through `Engine::set_parallel`;
//! - in C, a function pointer of type `mla_parallel_for_fn` with a context
//!   ([`HostParallelFor`], through `mla_engine_set_parallel`).
//!
//! Results are bitwise identical whatever the thread count: the engine splits
//! work into a number of tasks that depends only on the configuration and the
//! call (output row blocks of the projections, groups of heads, fixed ranges of
//! cached rows), every task writes its own part of the outputs and uses its own
//! scratch (planned in `Engine::memory_bytes`), and partial results are combined
//! in task order. Which thread runs a task, and when, changes nothing.
//!
//! Robustness against a faulty host: every call is limited to [`MAX_TASKS`]
//! tasks, each task index runs at most once (a per-call claim flag), and a task
//! the host skipped is run by the engine after the host returns. A host that
//! keeps running tasks after it has returned breaks its contract (data race).

use crate::kernels::MatMut;
use core::ffi::c_void;
use core::marker::PhantomData;
use core::sync::atomic::{AtomicBool, Ordering};

/// Runs `task(i)` for every `i` in `0..n_tasks`, possibly concurrently on
/// several threads, and returns when every call has returned.
///
/// `task` never panics when called by the engine. Implementations must not run
/// an index twice and must not call `task` after `run` has returned.
pub trait ParallelFor: Sync {
    /// Runs the tasks; returns when all are done.
    fn run(&self, n_tasks: usize, task: &(dyn Fn(usize) + Sync));

    /// Threads this parallel-for may use (informative; 1 by default).
    fn threads(&self) -> usize {
        1
    }
}

/// Runs every task in order on the calling thread.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sequential;

impl ParallelFor for Sequential {
    fn run(&self, n_tasks: usize, task: &(dyn Fn(usize) + Sync)) {
        for i in 0..n_tasks {
            task(i);
        }
    }
}

/// C type of one task: `void (*mla_task_fn)(void *task_ctx, uint32_t index)`.
pub type TaskFn = unsafe extern "C" fn(task_ctx: *mut c_void, index: u32);

/// C type of a host parallel-for: `void (*mla_parallel_for_fn)(void *host_ctx,
/// uint32_t n_tasks, mla_task_fn task, void *task_ctx)`. It must call
/// `task(task_ctx, i)` once for every `i` in `0..n_tasks`, on any threads,
/// possibly concurrently, and return when all calls have returned.
pub type ParallelForFn =
    unsafe extern "C" fn(host_ctx: *mut c_void, n_tasks: u32, task: TaskFn, task_ctx: *mut c_void);

/// A parallel-for provided by a C host: a function pointer and its context.
#[derive(Clone, Copy, Debug)]
pub struct HostParallelFor {
    f: ParallelForFn,
    ctx: *mut c_void,
}

// SAFETY: `HostParallelFor::new`'s contract: the host's function and context
// may be used from whichever thread calls the engine.
unsafe impl Send for HostParallelFor {}
// SAFETY: as above; the engine never calls it from two threads at once for one
// engine, and the host function is required to be thread-safe anyway.
unsafe impl Sync for HostParallelFor {}

impl HostParallelFor {
    /// Wraps a host function and its context.
    ///
    /// # Safety
    /// `f` behaves as [`ParallelForFn`] documents, `host_ctx` stays valid while the
    /// engine uses it, and both may be used from any thread that calls the engine.
    pub unsafe fn new(f: ParallelForFn, host_ctx: *mut c_void) -> Self {
        HostParallelFor { f, ctx: host_ctx }
    }
}

/// The C-callable side of a task: `task_ctx` points to a `&(dyn Fn(usize) + Sync)`.
unsafe extern "C" fn trampoline(task_ctx: *mut c_void, index: u32) {
    if task_ctx.is_null() {
        return;
    }
    // SAFETY: task_ctx is the pointer `HostParallelFor::run` passed with this
    // function: a `&(dyn Fn + Sync)` that outlives the host call, shared only.
    let task = unsafe { &*task_ctx.cast::<&(dyn Fn(usize) + Sync)>() };
    task(index as usize);
}

impl ParallelFor for HostParallelFor {
    fn run(&self, n_tasks: usize, task: &(dyn Fn(usize) + Sync)) {
        let Ok(n) = u32::try_from(n_tasks) else {
            return Sequential.run(n_tasks, task);
        };
        let obj: &(dyn Fn(usize) + Sync) = task;
        let ctx = (&obj as *const &(dyn Fn(usize) + Sync))
            .cast_mut()
            .cast::<c_void>();
        // SAFETY: the host function's contract (HostParallelFor::new); `ctx`
        // points to `obj`, alive until the host returns, and is only read.
        unsafe { (self.f)(self.ctx, n, trampoline, ctx) }
    }

    fn threads(&self) -> usize {
        0
    }
}

/// Most tasks the engine hands to one parallel-for call.
pub const MAX_TASKS: usize = 64;

/// Where an engine's tasks run.
#[derive(Clone, Copy, Default)]
enum Kind<'a> {
    #[default]
    Sequential,
    Borrowed(&'a dyn ParallelFor),
    Host(HostParallelFor),
}

/// What an engine runs its tasks on, and from what size of call on.
#[derive(Clone, Copy)]
pub struct Parallel<'a> {
    kind: Kind<'a>,
    min_work: usize,
}

impl Default for Parallel<'_> {
    fn default() -> Self {
        Parallel::SEQUENTIAL
    }
}

/// Below this many multiply-adds a call's tasks run on the calling thread by
/// default (handing work to other threads costs more). The tasks are the same
/// either way, so this changes no result.
pub const MIN_PARALLEL_WORK: usize = 1 << 17;

impl<'a> Parallel<'a> {
    /// Every task on the calling thread, in order.
    pub const SEQUENTIAL: Parallel<'static> = Parallel {
        kind: Kind::Sequential,
        min_work: MIN_PARALLEL_WORK,
    };

    /// Tasks on a Rust parallel-for.
    pub fn borrowed(p: &'a dyn ParallelFor) -> Self {
        Parallel {
            kind: Kind::Borrowed(p),
            min_work: MIN_PARALLEL_WORK,
        }
    }

    /// Tasks on a C host's parallel-for.
    pub fn host(h: HostParallelFor) -> Self {
        Parallel {
            kind: Kind::Host(h),
            min_work: MIN_PARALLEL_WORK,
        }
    }

    /// The same, with calls below `work` multiply-adds run inline (0: every
    /// call goes through the parallel-for).
    pub fn with_min_work(self, work: usize) -> Self {
        Parallel {
            min_work: work,
            ..self
        }
    }

    /// Whether [`for_each`](Self::for_each)`(n, work, ..)` runs its tasks on
    /// the calling thread, in order (a caller whose tasks are only a split of
    /// one product may then run it unsplit).
    pub(crate) fn runs_inline(&self, n: usize, work: usize) -> bool {
        n <= 1 || n > MAX_TASKS || work < self.min_work || matches!(self.kind, Kind::Sequential)
    }

    /// Runs `f(i)` exactly once for every `i` in `0..n` (n <= [`MAX_TASKS`];
    /// more run sequentially). `work`: estimated multiply-adds of all tasks.
    pub(crate) fn for_each(&self, n: usize, work: usize, f: &(dyn Fn(usize) + Sync)) {
        let inner: &dyn ParallelFor = match &self.kind {
            Kind::Sequential => &Sequential,
            Kind::Borrowed(p) => *p,
            Kind::Host(h) => h,
        };
        if self.runs_inline(n, work) {
            for i in 0..n {
                f(i);
            }
            return;
        }
        let claims: [AtomicBool; MAX_TASKS] = [const { AtomicBool::new(false) }; MAX_TASKS];
        let guarded = |i: usize| {
            if let Some(c) = claims.get(i) {
                if i < n && !c.swap(true, Ordering::AcqRel) {
                    f(i);
                }
            }
        };
        inner.run(n, &guarded);
        // A task the parallel-for skipped runs here.
        for (i, c) in claims.iter().enumerate().take(n) {
            if !c.swap(true, Ordering::AcqRel) {
                f(i);
            }
        }
    }
}

/// An f32 buffer that concurrent tasks write in disjoint parts.
///
/// This is the one place where the engine hands out several `&mut` views of a
/// buffer at once: [`SharedMut::slice`] and [`SharedMut::mat`] check bounds, and
/// their callers guarantee that views alive at the same time never overlap
/// (each task owns its rows, heads or scratch slot).
pub struct SharedMut<'a> {
    ptr: *mut f32,
    len: usize,
    _life: PhantomData<&'a mut [f32]>,
}

// SAFETY: a SharedMut is a `&mut [f32]` whose parts are handed out only through
// the unsafe methods below, whose contract forbids overlapping live views.
unsafe impl Sync for SharedMut<'_> {}
// SAFETY: as above (f32 is Send).
unsafe impl Send for SharedMut<'_> {}

impl<'a> SharedMut<'a> {
    /// Wraps a buffer for the duration of `'a`.
    pub fn new(s: &'a mut [f32]) -> Self {
        SharedMut {
            ptr: s.as_mut_ptr(),
            len: s.len(),
            _life: PhantomData,
        }
    }

    /// Elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Elements `start .. start + len` (`None` out of bounds).
    ///
    /// # Safety
    /// No other view of this buffer that overlaps the range is alive while the
    /// returned slice is.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice(&self, start: usize, len: usize) -> Option<&mut [f32]> {
        if start.checked_add(len)? > self.len {
            return None;
        }
        // SAFETY: in bounds (checked); exclusive by the caller's contract.
        Some(unsafe { core::slice::from_raw_parts_mut(self.ptr.add(start), len) })
    }

    /// The `rows x cols` window at `offset` with row stride `stride` (`None` out
    /// of bounds or if rows would overlap).
    ///
    /// # Safety
    /// No other view of this buffer that overlaps the window is alive while the
    /// returned view is.
    pub unsafe fn mat(
        &self,
        offset: usize,
        rows: usize,
        cols: usize,
        stride: usize,
    ) -> Option<MatMut<'_>> {
        if rows == 0 || cols == 0 {
            // SAFETY: an empty window touches nothing.
            return Some(unsafe { MatMut::from_raw(self.ptr, 0, 0, stride) });
        }
        if rows > 1 && stride < cols {
            return None;
        }
        let end = (rows - 1)
            .checked_mul(stride)?
            .checked_add(cols)?
            .checked_add(offset)?;
        if end > self.len {
            return None;
        }
        // SAFETY: the window lies inside the buffer (checked); exclusive by the
        // caller's contract.
        Some(unsafe { MatMut::from_raw(self.ptr.add(offset), rows, cols, stride) })
    }
}

#[cfg(all(any(feature = "std", test), target_has_atomic = "64"))]
pub use pool::ThreadPool;

#[cfg(all(any(feature = "std", test), target_has_atomic = "64"))]
mod pool {
    use super::ParallelFor;
    use std::cell::Cell;
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    use std::sync::{Arc, Condvar, Mutex, MutexGuard};
    use std::thread::JoinHandle;
    use std::{format, thread_local, vec::Vec};

    /// A job: the task (lifetime erased), its count and its generation.
    #[derive(Clone, Copy)]
    struct Job {
        task: *const (dyn Fn(usize) + Sync + 'static),
        n: usize,
        gen: u32,
    }

    // SAFETY: the task is `Sync`; it is only called through a ticket of its own
    // generation, and `ThreadPool::run` returns only when every such call is done.
    unsafe impl Send for Job {}

    struct State {
        job: Option<Job>,
        quit: bool,
    }

    struct Shared {
        state: Mutex<State>,
        wake: Condvar,
        done_cv: Condvar,
        /// `generation << 32 | next task index`: a task is claimed by a CAS
        /// that keeps the generation, so a late worker holding an old job can
        /// never claim (or run) a task of a newer one.
        ticket: AtomicU64,
        /// Tasks of the current job that have finished.
        done: AtomicUsize,
        panicked: AtomicBool,
    }

    thread_local! {
        static IN_POOL: Cell<bool> = const { Cell::new(false) };
    }

    /// Spin iterations before a waiting thread sleeps.
    const SPIN: usize = 4000;

    fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A persistent pool of `threads - 1` worker threads; the calling thread
    /// works too. Tasks are claimed dynamically (one atomic ticket), so a
    /// worker that is slow to wake up delays nothing: the caller runs whatever
    /// is left and returns as soon as every task has finished. Idle workers
    /// spin briefly, then sleep on a condition variable.
    ///
    /// One `run` at a time (concurrent callers are serialised); a `run` from
    /// inside a task runs sequentially.
    pub struct ThreadPool {
        shared: Arc<Shared>,
        workers: Vec<JoinHandle<()>>,
        run_lock: Mutex<()>,
        gen: Mutex<u32>,
    }

    impl ThreadPool {
        /// A pool running on `threads` threads in all (the caller included);
        /// 0 means `std::thread::available_parallelism()`.
        pub fn new(threads: usize) -> ThreadPool {
            let threads = if threads == 0 {
                std::thread::available_parallelism().map_or(1, |n| n.get())
            } else {
                threads
            };
            let shared = Arc::new(Shared {
                state: Mutex::new(State {
                    job: None,
                    quit: false,
                }),
                wake: Condvar::new(),
                done_cv: Condvar::new(),
                ticket: AtomicU64::new(0),
                done: AtomicUsize::new(0),
                panicked: AtomicBool::new(false),
            });
            let workers = (1..threads)
                .filter_map(|i| {
                    let s = Arc::clone(&shared);
                    std::thread::Builder::new()
                        .name(format!("mla-worker-{i}"))
                        .spawn(move || worker(&s))
                        .ok()
                })
                .collect();
            ThreadPool {
                shared,
                workers,
                run_lock: Mutex::new(()),
                gen: Mutex::new(0),
            }
        }
    }

    /// Claims and runs tasks of `job` until none of its generation is left.
    fn work(s: &Shared, job: Job) {
        loop {
            let t = s.ticket.load(Ordering::Acquire);
            let (gen, i) = ((t >> 32) as u32, (t & 0xffff_ffff) as usize);
            if gen != job.gen || i >= job.n {
                return;
            }
            if s.ticket
                .compare_exchange_weak(t, t + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                continue;
            }
            // SAFETY: a ticket of the job's generation was claimed, so `run`
            // has not returned (it waits for this task to be counted done).
            let task = unsafe { &*job.task };
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| task(i))).is_err() {
                s.panicked.store(true, Ordering::Release);
            }
            if s.done.fetch_add(1, Ordering::AcqRel) + 1 == job.n {
                let _st = lock(&s.state);
                s.done_cv.notify_all();
            }
        }
    }

    fn worker(s: &Shared) {
        IN_POOL.with(|f| f.set(true));
        let mut seen = u32::MAX;
        loop {
            for _ in 0..SPIN {
                if (s.ticket.load(Ordering::Acquire) >> 32) as u32 != seen {
                    break;
                }
                std::hint::spin_loop();
            }
            let job = {
                let mut st = lock(&s.state);
                loop {
                    if st.quit {
                        return;
                    }
                    match st.job {
                        Some(j) if j.gen != seen => break j,
                        _ => st = s.wake.wait(st).unwrap_or_else(|e| e.into_inner()),
                    }
                }
            };
            seen = job.gen;
            work(s, job);
        }
    }

    impl ParallelFor for ThreadPool {
        fn run(&self, n_tasks: usize, task: &(dyn Fn(usize) + Sync)) {
            let nested = IN_POOL.with(|f| f.get());
            if self.workers.is_empty() || n_tasks <= 1 || nested || n_tasks > u32::MAX as usize {
                for i in 0..n_tasks {
                    task(i);
                }
                return;
            }
            let _one = self.run_lock.lock().unwrap_or_else(|e| e.into_inner());
            let s = &*self.shared;
            let gen = {
                let mut g = self.gen.lock().unwrap_or_else(|e| e.into_inner());
                *g = g.wrapping_add(1);
                *g
            };
            // SAFETY: only the lifetime is erased; the task is called only with
            // tickets of this generation, and this function returns only after
            // all n_tasks calls have finished (done == n_tasks below).
            let erased: *const (dyn Fn(usize) + Sync + 'static) = unsafe {
                core::mem::transmute::<
                    *const (dyn Fn(usize) + Sync + '_),
                    *const (dyn Fn(usize) + Sync + 'static),
                >(task)
            };
            let job = Job {
                task: erased,
                n: n_tasks,
                gen,
            };
            {
                let mut st = lock(&s.state);
                s.done.store(0, Ordering::Release);
                s.ticket.store((gen as u64) << 32, Ordering::Release);
                st.job = Some(job);
            }
            s.wake.notify_all();
            IN_POOL.with(|f| f.set(true));
            work(s, job);
            IN_POOL.with(|f| f.set(false));
            let mut spins = 0;
            while s.done.load(Ordering::Acquire) < n_tasks && spins < SPIN {
                std::hint::spin_loop();
                spins += 1;
            }
            let mut st = lock(&s.state);
            while s.done.load(Ordering::Acquire) < n_tasks {
                st = s.done_cv.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            st.job = None;
            drop(st);
            if s.panicked.swap(false, Ordering::AcqRel) {
                panic!("a parallel task panicked");
            }
        }

        fn threads(&self) -> usize {
            self.workers.len() + 1
        }
    }

    impl Drop for ThreadPool {
        fn drop(&mut self) {
            lock(&self.shared.state).quit = true;
            self.shared.wake.notify_all();
            for w in self.workers.drain(..) {
                let _ = w.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::AtomicUsize;

    #[test]
    fn every_task_runs_once() {
        let counts: [AtomicUsize; 40] = [const { AtomicUsize::new(0) }; 40];
        let pool = ThreadPool::new(3);
        for par in [
            Parallel::SEQUENTIAL,
            Parallel::borrowed(&Sequential),
            Parallel::borrowed(&pool),
        ] {
            for _ in 0..if cfg!(miri) { 3 } else { 50 } {
                par.for_each(40, usize::MAX, &|i| {
                    counts[i].fetch_add(1, Ordering::Relaxed);
                });
            }
        }
        let want = if cfg!(miri) { 9 } else { 150 };
        assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == want));
    }

    unsafe extern "C" fn host_skips_odd(
        _ctx: *mut c_void,
        n: u32,
        task: TaskFn,
        task_ctx: *mut c_void,
    ) {
        // A faulty host: runs even indices twice and odd ones never.
        for i in (0..n).step_by(2) {
            // SAFETY: the engine's task function with its own context.
            unsafe {
                task(task_ctx, i);
                task(task_ctx, i);
                task(task_ctx, n + 5);
            }
        }
    }

    #[test]
    fn faulty_host_is_contained() {
        let counts: [AtomicUsize; 9] = [const { AtomicUsize::new(0) }; 9];
        // SAFETY: host_skips_odd is a plain function that ignores its context.
        let host = unsafe { HostParallelFor::new(host_skips_odd, core::ptr::null_mut()) };
        Parallel::host(host).for_each(9, usize::MAX, &|i| {
            counts[i].fetch_add(1, Ordering::Relaxed);
        });
        assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 1));
    }
}
