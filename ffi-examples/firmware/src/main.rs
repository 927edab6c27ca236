//! Bare-metal demo: the tutorial golden case (tests/data/tutorial.safetensors,
//! d 256, H 8, r 128, r_q 192, p 64 per-head rope keys) through the engine on a
//! Cortex-M4F, with no std and no allocator.
//!
//! The 2 MB golden file is linked into flash (include_bytes!, 64-byte aligned) and
//! bound zero-copy; the engine's memory is a static whose size the compiler
//! computes with the const `Engine::memory_bytes_const` (checked again at run time). The firmware runs the
//! 16 reference tokens three ways (prefill 8 then 8 decode steps in the configured
//! `Auto` mode; naive; absorbed), prints the max relative error of each over Arm
//! semihosting and exits with status 0 when every error is <= 1e-5, else 1.
//!
//! Run: `cargo run --release` in this directory (qemu-system-arm, MPS2 AN386).
#![no_std]
#![no_main]
// mla_core::Error carries its message inline (no allocation), so it is large by design.
#![allow(clippy::result_large_err)]

mod plan;

use cortex_m_rt::{entry, exception, ExceptionFrame};
use cortex_m_semihosting::{debug, hprintln};
use mla_core::dtype::Elems;
use mla_core::safetensors::{config_from_metadata, SafeTensors};
use mla_core::{AttnMode, Config, Engine, Error};

/// Bytes with the alignment the engine and zero-copy f32 views need.
#[repr(C, align(64))]
struct Aligned<B: ?Sized>(B);

/// The golden case: canonical weights, `inputs` and `outputs` [16][256], config metadata.
static GOLDEN: &Aligned<[u8]> =
    &Aligned(*include_bytes!("../../../tests/data/tutorial.safetensors"));

/// Weight prefix used by the golden files.
const PREFIX: &str = "model.layers.0.self_attn.";

use plan::{CHUNK, T};

/// The planned config: the tutorial's dims with `max_seq_len` = T and
/// `max_tokens_per_call` = CHUNK (the golden file's config is checked against
/// the arena at run time).
const PLANNED: Config = Config {
    max_seq_len: T as u32,
    max_tokens_per_call: CHUNK as u32,
    ..Config::tutorial()
};

/// The engine's memory for [`PLANNED`], computed by the compiler for this target.
const ARENA_BYTES: usize = Engine::memory_bytes_const(&PLANNED);
const _: () = assert!(ARENA_BYTES > 0, "the planned config is invalid");

/// Hidden size of the tutorial config (checked against the file).
const D: usize = 256;
/// f32 tolerance of docs/design.md section 6.
const TOL: f32 = 1e-5;

#[entry]
fn main() -> ! {
    // cortex-m-rt turns `static mut` in the entry function into `&'static mut`
    // references that only this function holds.
    static mut ARENA: Aligned<[u8; ARENA_BYTES]> = Aligned([0; ARENA_BYTES]);
    static mut OUT: [f32; T * D] = [0.0; T * D];

    let code = match run(&mut ARENA.0, OUT) {
        Ok(true) => {
            hprintln!("mla-firmware: PASS");
            0
        }
        Ok(false) => {
            hprintln!("mla-firmware: FAIL (error above {:e})", TOL);
            1
        }
        Err(e) => {
            hprintln!("mla-firmware: error {:?}: {}", e.status(), e.message());
            2
        }
    };
    exit(code)
}

/// Runs the three schedules; true when all are within `TOL`.
fn run(arena: &mut [u8], out: &mut [f32]) -> Result<bool, Error> {
    let st = SafeTensors::parse(&GOLDEN.0)?;
    let mut cfg = config_from_metadata(&st, &Config::tutorial())?;
    cfg.max_seq_len = T as u32;
    cfg.max_tokens_per_call = CHUNK as u32;
    cfg.validate()?;
    let w = st.weights(PREFIX, &cfg)?;
    let x = f32_tensor(&st, "inputs")?;
    let want = f32_tensor(&st, "outputs")?;
    if cfg.hidden_size as usize != D || x.len() != T * D || want.len() != T * D {
        hprintln!(
            "golden file: expected {} tokens of {}, got hidden_size {} and {} inputs",
            T,
            D,
            cfg.hidden_size,
            x.len()
        );
        return Ok(false);
    }

    let need = Engine::memory_bytes(&cfg)?;
    hprintln!(
        "mla-firmware: tutorial config d {} H {} r_q {} r {} n {} p {} v {}, {} tokens",
        cfg.hidden_size,
        cfg.num_heads,
        cfg.q_lora_rank,
        cfg.kv_lora_rank,
        cfg.qk_nope_head_dim,
        cfg.qk_rope_head_dim,
        cfg.v_head_dim,
        T
    );
    hprintln!(
        "engine memory: {} bytes needed, {} in the static arena",
        need,
        arena.len()
    );
    if need != arena.len() {
        hprintln!("arena size differs from the compile-time plan (ARENA_BYTES)");
        return Ok(false);
    }

    let mut e = Engine::new(&cfg, &w, arena)?;
    let mut ok = true;
    let schedules: [(&str, AttnMode, bool); 3] = [
        ("prefill 8 + decode 8, auto", AttnMode::Auto, true),
        ("chunks of 8, naive", AttnMode::Naive, false),
        ("chunks of 8, absorbed", AttnMode::Absorb, false),
    ];
    for (label, mode, decode) in schedules {
        e.reset();
        out.fill(0.0);
        let mut t0 = 0;
        while t0 < T {
            let n = if decode && t0 >= CHUNK { 1 } else { CHUNK };
            let (xs, os) = match (
                x.get(t0 * D..(t0 + n) * D),
                out.get_mut(t0 * D..(t0 + n) * D),
            ) {
                (Some(xs), Some(os)) => (xs, os),
                _ => return Ok(false),
            };
            e.forward_mode(xs, os, mode)?;
            t0 += n;
        }
        let err = rel_err(out, want);
        let pass = err <= TOL;
        ok &= pass;
        hprintln!(
            "{}: max rel err {:e} ({}), cache len {}",
            label,
            err,
            if pass { "ok" } else { "FAIL" },
            e.len()
        );
    }
    Ok(ok)
}

/// An f32 tensor of the file by name.
fn f32_tensor<'a>(st: &SafeTensors<'a>, name: &str) -> Result<&'a [f32], Error> {
    match st.tensor(name)?.map(|v| v.elems()).transpose()? {
        Some(Elems::F32(s)) => Ok(s),
        _ => Err(Error::new(
            mla_core::Status::WeightShape,
            "golden file: f32 tensor missing: ",
        )
        .s(name)),
    }
}

/// max |got - want| / max |want| (docs/design.md section 6).
fn rel_err(got: &[f32], want: &[f32]) -> f32 {
    let mut num = 0f32;
    let mut den = 0f32;
    for (&g, &w) in got.iter().zip(want) {
        num = num.max((g - w).abs());
        den = den.max(w.abs());
    }
    if got.len() != want.len() || !num.is_finite() || den == 0.0 {
        return f32::INFINITY;
    }
    num / den
}

/// Ends the emulation (semihosting SYS_EXIT_EXTENDED) with `code`.
fn exit(code: u32) -> ! {
    let status = if code == 0 {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    };
    debug::exit(status);
    // Only reached without a semihosting host (real hardware, no debugger).
    loop {
        core::hint::spin_loop();
    }
}

#[exception]
unsafe fn HardFault(ef: &ExceptionFrame) -> ! {
    hprintln!("mla-firmware: HardFault at pc {:#010x}", ef.pc());
    exit(3)
}

/// The firmware's own panic handler: mla-core has none (it is an rlib with no
/// opinion on panics). Reports the panic over semihosting and fails.
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    hprintln!("mla-firmware: panic: {}", info);
    exit(4)
}
