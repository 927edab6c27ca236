//! Panic handler for `no_std` builds with the `panic-handler` feature: the
//! no-panic link check.
//!
//! A `no_std` staticlib must name a `#[panic_handler]`. This one calls
//! `mla_panic_is_reachable`, a symbol the library deliberately leaves undefined.
//! Link the staticlib into a program with `--gc-sections` (and build it with LTO):
//! when no panic is reachable from the functions the program calls, the handler is
//! discarded with everything else unreachable and the link succeeds; when one is
//! reachable, the link fails with "undefined reference to `mla_panic_is_reachable`",
//! which names the object that needs it. ffi-examples/firmware-c (run by
//! .ci/cross.sh) does this for every C entry point on Cortex-M4.
//!
//! A firmware that wants panics to be survivable instead defines the symbol itself
//! (`#[no_mangle] extern "C" fn mla_panic_is_reachable() -> !`, e.g. reset or halt);
//! ffi-examples/firmware does that to report a panic over semihosting.

use core::panic::PanicInfo;

extern "C" {
    /// Defined nowhere in the library (see the module docs).
    fn mla_panic_is_reachable() -> !;
}

#[panic_handler]
fn panic(_info: &PanicInfo) -> ! {
    // SAFETY: the function takes no arguments and never returns; if a program
    // defines it, it is that program's diverging panic hook, otherwise the program
    // does not link (which is the point), so the call never runs undefined.
    unsafe { mla_panic_is_reachable() }
}

/// Proof that the link check can fail (built only with `--cfg mla_panic_probe`,
/// e.g. `cargo rustc ... -- --cfg mla_panic_probe`): an entry point with a
/// reachable panic (index out of bounds for `i >= 3`). A C program that calls it
/// must fail to link with "undefined reference to `mla_panic_is_reachable`".
#[cfg(mla_panic_probe)]
#[no_mangle]
pub extern "C" fn mla_panic_probe(i: u32) -> u32 {
    const TABLE: [u32; 3] = [1, 2, 3];
    TABLE[i as usize]
}
