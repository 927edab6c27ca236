//! The boundary: the one place where C calls become Rust calls.
//!
//! Every `extern "C"` function of this crate is a few lines that hand their raw
//! arguments to the functions here and call `mla-core` in between. This module
//! alone:
//!
//! - turns caller pointers into Rust values: NULL and alignment checks
//!   ([`aligned`], [`array_bytes`], [`overlaps`]), then [`read`], [`slice`],
//!   [`slice_mut`], [`c_str`] and, for engine handles, [`CEngine`];
//! - runs the body of an entry point under the panic guard ([`guard`]): with the
//!   `std` feature inside `catch_unwind`, a caught panic becoming
//!   `MLA_ERR_INTERNAL`; without `std` there is no unwinding, so the bodies (this
//!   whole crate) are written panic-free: no indexing, no `unwrap`, checked
//!   arithmetic only. The firmware link check of the bare-metal CI proves it;
//! - turns the body's `Result` into an `mla_status` ([`status`]);
//! - records the failure's text: in the engine's handle ([`on_engine`]), or, for
//!   calls that have no engine, in the calling thread's slot ([`call`],
//!   [`produce`]; what `mla_last_error(NULL)` returns);
//! - writes a call's output only when the call succeeds ([`produce`]).
//!
//! The CPU entry points and the CUDA ones (feature `cuda`) share it: an engine
//! handle is a [`Handle`] around the engine type, named by a [`CEngine`] impl.

use core::ffi::{c_char, CStr};
use core::mem::{align_of, size_of};
use core::ptr;

use mla_core::config::Config;
use mla_core::engine::Engine;
use mla_core::status::{err, Error, Result, Status, MESSAGE_CAPACITY};

use crate::types::{mla_status, MLA_MESSAGE_MAX, MLA_OK};

const _: () = assert!(MLA_MESSAGE_MAX == MESSAGE_CAPACITY + 1);

// ---------------------------------------------------------------------------
// Error text and engine handles.

/// A NUL-terminated copy of an error message ("" when empty).
#[derive(Clone, Copy)]
pub(crate) struct Message([u8; MLA_MESSAGE_MAX]);

impl Message {
    /// The empty text.
    pub(crate) const EMPTY: Message = Message([0; MLA_MESSAGE_MAX]);

    /// Replaces the text by `e`'s message, cut to fit and always NUL-terminated.
    fn set(&mut self, e: &Error) {
        let msg = e.message().as_bytes();
        for (i, b) in self.0.iter_mut().enumerate() {
            *b = msg.get(i).copied().unwrap_or(0);
        }
        if let Some(last) = self.0.last_mut() {
            *last = 0;
        }
    }

    /// The text as a C string (valid while `self` is neither moved nor changed).
    fn as_c_str(&self) -> *const c_char {
        self.0.as_ptr().cast()
    }
}

/// What every engine handle of the C ABI holds: the engine and the text of its
/// last failure.
pub(crate) struct Handle<E> {
    engine: E,
    last_error: Message,
}

impl<E> Handle<E> {
    /// A handle around `engine`, with no error recorded.
    pub(crate) const fn new(engine: E) -> Self {
        Handle {
            engine,
            last_error: Message::EMPTY,
        }
    }
}

/// An opaque engine type of the C ABI (`mla_engine`, `mla_cuda_engine`).
pub(crate) trait CEngine {
    /// The Rust engine inside.
    type Engine;
    /// The thread slot of this API: where its calls without an engine leave
    /// their text, and what its `*_last_error(NULL)` returns.
    const SLOT: Slot;
    /// Whether a call given a NULL engine leaves its text in [`CEngine::SLOT`]
    /// (the CUDA API documents that slot as holding create failures only).
    const RECORD_NULL_ENGINE: bool;
    /// The handle.
    fn handle(&self) -> &Handle<Self::Engine>;
    /// The handle, mutably.
    fn handle_mut(&mut self) -> &mut Handle<Self::Engine>;
}

/// A thread's slot for the text of failed calls that had no engine to hold it.
#[derive(Clone, Copy)]
pub(crate) enum Slot {
    /// The CPU API: `mla_last_error(NULL)`.
    Cpu,
    /// The CUDA API: `mla_cuda_last_error(NULL)`.
    #[cfg(feature = "cuda")]
    Cuda,
}

#[cfg(feature = "std")]
std::thread_local! {
    /// This thread's [`Slot::Cpu`] text.
    static CPU_SLOT: core::cell::RefCell<Message> = const { core::cell::RefCell::new(Message::EMPTY) };
}

#[cfg(feature = "cuda")]
std::thread_local! {
    /// This thread's [`Slot::Cuda`] text.
    static CUDA_SLOT: core::cell::RefCell<Message> = const { core::cell::RefCell::new(Message::EMPTY) };
}

#[cfg(feature = "std")]
fn slot_key(slot: Slot) -> &'static std::thread::LocalKey<core::cell::RefCell<Message>> {
    match slot {
        Slot::Cpu => &CPU_SLOT,
        #[cfg(feature = "cuda")]
        Slot::Cuda => &CUDA_SLOT,
    }
}

/// Records `e` in this thread's `slot` (std builds; without `std` there is no
/// thread-local storage and nothing is kept).
fn record(slot: Slot, e: &Error) {
    #[cfg(feature = "std")]
    {
        // try_with / try_borrow_mut: during thread teardown, or if the caller's
        // pointer from *_last_error(NULL) were being read re-entrantly, skip.
        let _ = slot_key(slot).try_with(|m| {
            if let Ok(mut m) = m.try_borrow_mut() {
                m.set(e);
            }
        });
    }
    #[cfg(not(feature = "std"))]
    let _ = (slot, e);
}

/// This thread's text in `slot` (NUL-terminated, "" if none).
#[cfg(feature = "std")]
fn slot_text(slot: Slot) -> *const c_char {
    // The thread-local buffer lives as long as the thread and never moves; it is
    // rewritten only by a later failing call on this same thread.
    slot_key(slot)
        .try_with(|m| m.as_ptr().cast::<c_char>().cast_const())
        .unwrap_or_else(|_| static_str(b"mla_last_error: thread is exiting\0"))
}

/// Without `std`: a fixed text (no thread-local storage).
#[cfg(not(feature = "std"))]
fn slot_text(_slot: Slot) -> *const c_char {
    static_str(b"mla_last_error(NULL): details of calls without an engine need the std feature\0")
}

/// Why a handle pointer is unusable.
fn bad_handle<H>(e: *const H, what: &str) -> Option<Error> {
    if e.is_null() {
        Some(err(Status::NullPointer, what).s(": engine is NULL"))
    } else if !aligned(e) {
        Some(err(Status::Misaligned, what).s(": engine pointer is misaligned"))
    } else {
        None
    }
}

// ---------------------------------------------------------------------------
// Running entry points.

/// Runs `body`; with `std`, a panic is caught and becomes `MLA_ERR_INTERNAL`
/// ("`what`: internal error (panic caught)").
pub(crate) fn guard<T>(what: &str, body: impl FnOnce() -> Result<T>) -> Result<T> {
    #[cfg(feature = "std")]
    {
        // AssertUnwindSafe: the bodies only check their arguments and call the
        // core. The core's one multi-step mutation, Engine::forward, writes new
        // cache rows into slots at and past len() and commits the length as its
        // very last step (truncate and reset only set the length), so after a
        // caught panic the engine still has its previous length and its previous,
        // intact cache rows. Only `out` may hold partial results, and the caller
        // gets MLA_ERR_INTERNAL for it. Engine::forward_batch likewise commits
        // every engine's row last; a panic inside it would also leave engines[0]
        // without its scratch (taken out for the call), so that engine's later
        // calls fail with MLA_ERR_INTERNAL.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
            Ok(r) => r,
            Err(_) => Err(err(Status::Internal, what).s(": internal error (panic caught)")),
        }
    }
    #[cfg(not(feature = "std"))]
    {
        // No unwinding: a panic would reach the panic handler, which is why
        // everything under here is written panic-free.
        let _ = what;
        body()
    }
}

/// The `mla_status` of a result.
pub(crate) fn status<T>(r: &Result<T>) -> mla_status {
    match r {
        Ok(_) => MLA_OK,
        Err(e) => e.status() as mla_status,
    }
}

/// Records a failure of a call without an engine in `slot`.
pub(crate) fn record_failure<T>(slot: Slot, r: &Result<T>) {
    if let Err(e) = r {
        record(slot, e);
    }
}

/// An entry point without an engine: runs `body` under the guard; a failure's
/// text goes to this thread's `slot`.
pub(crate) fn call(slot: Slot, what: &str, body: impl FnOnce() -> Result<()>) -> mla_status {
    let r = guard(what, body);
    record_failure(slot, &r);
    status(&r)
}

/// An entry point without an engine that returns a value through `out`:
/// `out` NULL is `MLA_ERR_NULL_POINTER` (`null_msg`) before `body` runs, and
/// `*out` is written (any alignment) only when `body` succeeds.
///
/// # Safety
/// `out` is NULL or valid for a write of `T`.
pub(crate) unsafe fn produce<T>(
    slot: Slot,
    what: &str,
    out: *mut T,
    null_msg: &str,
    body: impl FnOnce() -> Result<T>,
) -> mla_status {
    call(slot, what, || {
        if out.is_null() {
            return Err(err(Status::NullPointer, null_msg));
        }
        let v = body()?;
        // SAFETY: `out` is not NULL (checked) and valid for a write of T (this
        // function's contract); write_unaligned accepts any placement.
        unsafe { ptr::write_unaligned(out, v) };
        Ok(())
    })
}

/// An entry point on an engine: `e` NULL is `MLA_ERR_NULL_POINTER` and a
/// misaligned `e` `MLA_ERR_MISALIGNED` (text in the thread slot if
/// [`CEngine::RECORD_NULL_ENGINE`]); otherwise runs `body` on the engine under
/// the guard and records a failure as the engine's last error.
///
/// # Safety
/// `e` is NULL, misaligned, or a live handle of its API, not used by another
/// thread during the call.
pub(crate) unsafe fn on_engine<H: CEngine>(
    e: *mut H,
    what: &str,
    body: impl FnOnce(&mut H::Engine) -> Result<()>,
) -> mla_status {
    if let Some(bad) = bad_handle(e, what) {
        if H::RECORD_NULL_ENGINE {
            record(H::SLOT, &bad);
        }
        return bad.status() as mla_status;
    }
    // SAFETY: not NULL, aligned, and (contract) a live handle used by this thread only.
    let Some(h) = (unsafe { e.as_mut() }) else {
        return Status::NullPointer as mla_status;
    };
    let h = h.handle_mut();
    let r = guard(what, || body(&mut h.engine));
    if let Err(err) = &r {
        h.last_error.set(err);
    }
    status(&r)
}

/// The engine behind `e`; `None` for NULL or a misaligned pointer.
///
/// # Safety
/// `e` is NULL, misaligned, or a live handle of its API not written by another
/// thread during `'a`.
pub(crate) unsafe fn engine_ref<'a, H: CEngine + 'a>(e: *const H) -> Option<&'a H::Engine> {
    if !aligned(e) {
        return None;
    }
    // SAFETY: NULL (None) or, aligned, a live handle (contract).
    unsafe { e.as_ref() }.map(|h| &h.handle().engine)
}

/// `*_last_error(e)`: the engine's last-error text, or for NULL this thread's
/// [`CEngine::SLOT`] text.
///
/// # Safety
/// As [`engine_ref`].
pub(crate) unsafe fn last_error<H: CEngine>(e: *const H) -> *const c_char {
    if !aligned(e) {
        return static_str(b"last error: engine pointer is misaligned\0");
    }
    // SAFETY: NULL or, aligned, a live handle (contract).
    match unsafe { e.as_ref() } {
        Some(h) => h.handle().last_error.as_c_str(),
        None => slot_text(H::SLOT),
    }
}

/// The engines of `mla_forward_batch`: the caller's array of `n` handles,
/// each checked non-NULL, aligned and distinct ([`cpu_batch`]), so the core
/// may borrow any one mutably at a time.
pub(crate) struct CpuBatch<'a> {
    handles: &'a [*mut crate::engine::mla_engine],
}

// SAFETY: the core reads the engines through shared borrows from the
// parallel-for's tasks (their caches only) while no mutable borrow is alive;
// the C caller keeps every engine to this call's thread (contract of
// mla_forward_batch), so nothing else touches them meanwhile.
unsafe impl Sync for CpuBatch<'_> {}

impl<'a> mla_core::engine::EngineBatch<'static, 'static> for CpuBatch<'a> {
    fn count(&self) -> usize {
        self.handles.len()
    }
    fn engine(&self, i: usize) -> Option<&Engine<'static, 'static>> {
        let p = *self.handles.get(i)?;
        // SAFETY: checked non-NULL and aligned by `cpu_batch`; a live handle
        // (contract); handles are distinct, and a shared borrow is only taken
        // while no mutable one is alive (the `&self` / `&mut self` receivers).
        unsafe { p.as_ref() }.map(|h| &h.handle().engine)
    }
    fn engine_mut(&mut self, i: usize) -> Option<&mut Engine<'static, 'static>> {
        let p = *self.handles.get(i)?;
        // SAFETY: as `engine`; `&mut self` keeps this the only borrow of any
        // engine of the batch.
        unsafe { p.as_mut() }.map(|h| &mut h.handle_mut().engine)
    }
}

/// The array of `n` engine handles of `mla_forward_batch`, checked: not NULL,
/// `n` handles each non-NULL, aligned and distinct (`MLA_ERR_NULL_POINTER`,
/// `MLA_ERR_MISALIGNED`, `MLA_ERR_INVALID_ARGUMENT` naming the index).
///
/// # Safety
/// `engines` is NULL or holds `n` readable pointers, valid during `'a`.
pub(crate) unsafe fn cpu_batch<'a>(
    what: &str,
    engines: *const *mut crate::engine::mla_engine,
    n: u32,
) -> Result<CpuBatch<'a>> {
    if engines.is_null() {
        return Err(err(Status::NullPointer, what).s(": engines is NULL"));
    }
    if n == 0 {
        return Err(err(Status::InvalidArgument, what).s(": n is 0"));
    }
    // SAFETY: `n` readable pointers (contract); `slice` checks NULL,
    // alignment and size.
    let handles = unsafe { slice(engines, n as usize) }
        .ok_or_else(|| err(Status::Misaligned, what).s(": engines is misaligned"))?;
    for (i, &p) in handles.iter().enumerate() {
        if let Some(bad) = bad_handle(p, what) {
            return Err(err(bad.status(), what)
                .s(": engines[")
                .n(i)
                .s("] is NULL or misaligned"));
        }
        if let Some(j) = handles.iter().take(i).position(|&q| core::ptr::eq(p, q)) {
            return Err(err(Status::InvalidArgument, what)
                .s(": engines[")
                .n(i)
                .s("] is engines[")
                .n(j)
                .s("] again (one token per engine)"));
        }
    }
    Ok(CpuBatch { handles })
}

/// Records `r`'s failure of a batched call: in this thread's CPU slot and, when
/// `first` is a usable handle, as its last error.
///
/// # Safety
/// `first` is NULL, misaligned, or a live handle not used by another thread.
pub(crate) unsafe fn record_batch(first: *mut crate::engine::mla_engine, r: &Result<()>) {
    if let Err(e) = r {
        record(Slot::Cpu, e);
        if bad_handle(first, "").is_none() {
            // SAFETY: not NULL, aligned, a live handle (contract).
            if let Some(h) = unsafe { first.as_mut() } {
                h.handle_mut().last_error.set(e);
            }
        }
    }
}

/// Releases a handle made by `Box::into_raw`; NULL does nothing; a panic while
/// dropping is contained.
///
/// # Safety
/// `e` is NULL or came from `Box::into_raw` and is not used afterwards.
#[cfg(feature = "cuda")]
pub(crate) unsafe fn release<H>(e: *mut H) {
    if e.is_null() {
        return;
    }
    // SAFETY: from Box::into_raw and not used again (contract).
    let b = unsafe { std::boxed::Box::from_raw(e) };
    let _ = guard("release", move || {
        drop(b);
        Ok(())
    });
}

// ---------------------------------------------------------------------------
// Pointers.

/// True when `p` is aligned for `T` (NULL is: check it first).
pub(crate) fn aligned<T>(p: *const T) -> bool {
    (p as usize).is_multiple_of(align_of::<T>())
}

/// Bytes of `n` values of `T`, when that is addressable (at most `isize::MAX`).
pub(crate) fn array_bytes<T>(n: usize) -> Option<usize> {
    n.checked_mul(size_of::<T>())
        .filter(|&b| b <= isize::MAX as usize)
}

/// True when the byte ranges `[a, a + a_len)` and `[b, b + b_len)` overlap.
pub(crate) fn overlaps<A, B>(a: *const A, a_len: usize, b: *const B, b_len: usize) -> bool {
    let (a, b) = (a as usize, b as usize);
    a < b.wrapping_add(b_len) && b < a.wrapping_add(a_len)
}

/// Reads `*p` (any alignment); `None` for NULL.
///
/// # Safety
/// `p` is NULL or valid for a read of `T`.
pub(crate) unsafe fn read<T>(p: *const T) -> Option<T> {
    if p.is_null() {
        return None;
    }
    // SAFETY: not NULL and readable (contract); read_unaligned accepts any placement.
    Some(unsafe { ptr::read_unaligned(p) })
}

/// Writes `v` to `*p` (any alignment); NULL does nothing.
///
/// # Safety
/// `p` is NULL or valid for a write of `T`.
pub(crate) unsafe fn write<T>(p: *mut T, v: T) {
    if !p.is_null() {
        // SAFETY: not NULL and writable (contract); any placement.
        unsafe { ptr::write_unaligned(p, v) }
    }
}

/// The caller's array of `n` values at `p`; `None` when `p` is NULL or
/// misaligned, or `n` values are not addressable.
///
/// # Safety
/// `p` is NULL or points to `n` readable values of `T`, valid and not written
/// by anyone during `'a`.
pub(crate) unsafe fn slice<'a, T>(p: *const T, n: usize) -> Option<&'a [T]> {
    if p.is_null() || !aligned(p) {
        return None;
    }
    array_bytes::<T>(n)?;
    // SAFETY: not NULL, aligned, n * size <= isize::MAX (checked); readable and
    // unaliased by writers for 'a (contract).
    Some(unsafe { core::slice::from_raw_parts(p, n) })
}

/// [`slice`], writable.
///
/// # Safety
/// `p` is NULL or points to `n` writable values of `T`, not accessed through any
/// other pointer during `'a`.
pub(crate) unsafe fn slice_mut<'a, T>(p: *mut T, n: usize) -> Option<&'a mut [T]> {
    if p.is_null() || !aligned(p) {
        return None;
    }
    array_bytes::<T>(n)?;
    // SAFETY: not NULL, aligned, n * size <= isize::MAX (checked); writable and
    // exclusively ours for 'a (contract).
    Some(unsafe { core::slice::from_raw_parts_mut(p, n) })
}

/// The caller's NUL-terminated string; `None` for NULL.
///
/// # Safety
/// `p` is NULL or a NUL-terminated string valid during `'a`.
pub(crate) unsafe fn c_str<'a>(p: *const c_char) -> Option<&'a CStr> {
    if p.is_null() {
        return None;
    }
    // SAFETY: not NULL and NUL-terminated (contract).
    Some(unsafe { CStr::from_ptr(p) })
}

/// Copies `text` into the caller's `msg` (capacity `msg_len` bytes, NUL
/// included), cut on a UTF-8 character boundary. Nothing is written when `msg`
/// is NULL or `msg_len` is 0.
///
/// # Safety
/// `msg` is NULL or valid for `msg_len` bytes of writes.
pub(crate) unsafe fn write_message(msg: *mut c_char, msg_len: usize, text: &str) {
    let Some(room) = msg_len.checked_sub(1) else {
        return;
    };
    if msg.is_null() {
        return;
    }
    let mut n = text.len().min(room);
    while n > 0 && !text.is_char_boundary(n) {
        n -= 1;
    }
    // SAFETY: `n < msg_len` bytes of `text` go into the caller's buffer, then the
    // NUL at index n < msg_len; `text` is Rust data, so the two do not overlap.
    unsafe {
        ptr::copy_nonoverlapping(text.as_ptr(), msg.cast::<u8>(), n);
        ptr::write(msg.add(n), 0);
    }
}

/// Pointer to a static NUL-terminated byte string.
pub(crate) fn static_str(s: &'static [u8]) -> *const c_char {
    s.as_ptr().cast()
}

/// The `x` / `out` arguments of a forward call with host pointers, checked and
/// borrowed: non-NULL, `1 <= n_tokens <= max_tokens_per_call`, 4-byte aligned,
/// not overlapping. Messages start with `what` (the entry point). Shared by
/// `mla_forward` and `mla_cuda_forward`.
///
/// # Safety
/// `x` / `out` are NULL or hold `n_tokens * cfg.hidden_size` readable /
/// writable floats, valid for `'a` and not otherwise accessed meanwhile.
pub(crate) unsafe fn forward_io<'a>(
    what: &str,
    cfg: &Config,
    x: *const f32,
    n_tokens: u32,
    out: *mut f32,
) -> Result<(&'a [f32], &'a mut [f32])> {
    if x.is_null() || out.is_null() {
        return Err(err(Status::NullPointer, what).s(": x or out is NULL"));
    }
    let max = cfg.max_tokens_per_call;
    if n_tokens == 0 || n_tokens > max {
        return Err(err(Status::InvalidArgument, what)
            .s(": n_tokens is ")
            .n(n_tokens as usize)
            .s(", must be 1 ..= max_tokens_per_call (")
            .n(max as usize)
            .s(")"));
    }
    // n_tokens <= max_tokens_per_call, so the memory plan checked the product; the
    // check here keeps this function sound on its own.
    let overflow = || err(Status::InvalidArgument, what).s(": n_tokens * hidden_size overflows");
    let len = (n_tokens as usize)
        .checked_mul(cfg.hidden_size as usize)
        .ok_or_else(overflow)?;
    let bytes = array_bytes::<f32>(len).ok_or_else(overflow)?;
    if !aligned(x) || !aligned(out) {
        return Err(err(Status::Misaligned, what).s(": x and out must be 4-byte aligned"));
    }
    if overlaps(x, bytes, out, bytes) {
        return Err(err(Status::InvalidArgument, what).s(": x and out overlap"));
    }
    let inconsistent = || err(Status::Internal, what).s(": buffer checks inconsistent");
    // SAFETY: `x` holds `len` floats (contract), checked above to be non-NULL,
    // aligned, addressable and disjoint from `out`.
    let xs = unsafe { slice(x, len) }.ok_or_else(inconsistent)?;
    // SAFETY: as for `x`, writable (contract).
    let os = unsafe { slice_mut(out, len) }.ok_or_else(inconsistent)?;
    Ok((xs, os))
}
