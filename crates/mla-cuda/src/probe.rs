//! The device queries and the MMA self-test: [`device_count`], [`device_name`],
//! [`module_info`], [`failed_module_log`], [`selftest_mma`].

// crate::Error carries its message inline (no allocation in the core), so every
// Result is large by design.
#![allow(clippy::result_large_err)]

use super::*;

/// Initialises the driver and returns the number of CUDA devices.
/// Fails with [`Status::Device`] when there is no usable driver (e.g. the stub
/// libcuda of CI) or no device.
pub fn device_count() -> Result<u32> {
    device::init()?;
    let mut n: core::ffi::c_int = 0;
    // SAFETY: writes one int through a pointer to a local.
    check("cuDeviceGetCount", unsafe { cu::cuDeviceGetCount(&mut n) })?;
    Ok(u32::try_from(n).unwrap_or(0))
}

/// Name of device `ordinal` (e.g. "NVIDIA H200").
pub fn device_name(ordinal: u32) -> Result<String> {
    Ok(DeviceState::get(ordinal)?.name.clone())
}

/// What was loaded on a device (initialising it if needed).
#[derive(Clone, Debug)]
pub struct ModuleInfo {
    /// The device's name.
    pub device: String,
    /// Compute capability (major, minor).
    pub compute_capability: (u32, u32),
    /// Multiprocessors.
    pub multiprocessors: usize,
    /// Opt-in shared memory per block, bytes.
    pub shared_memory_optin: usize,
    /// Which image was loaded (embedded PTX for sm_72 / sm_80, a fatbin, or the
    /// file named by `MLA_CUDA_MODULE_FILE` / `MLA_CUDA_PTX_FILE`).
    pub image: String,
    /// The JIT compiler's log (verbose: registers, spills and shared memory per
    /// kernel when the driver compiled PTX).
    pub jit_log: String,
}

/// The module and device information of device `ordinal`.
pub fn module_info(ordinal: u32) -> Result<ModuleInfo> {
    let d = DeviceState::get(ordinal)?;
    Ok(ModuleInfo {
        device: d.name.clone(),
        compute_capability: d.cc,
        multiprocessors: d.sm_count,
        shared_memory_optin: d.smem_optin,
        image: d.module_desc.clone(),
        jit_log: d.jit_log.clone(),
    })
}

/// The whole JIT error and info log of the last module load that failed in this
/// process (the error message holds only its first line); "" if none failed.
pub fn failed_module_log() -> String {
    device::failed_jit_log()
}

/// Checks the tensor-core fragment layout the kernels use (kernels/mla.cu,
/// `frag_*`) on the device: one `mma.sync` per dtype and B layout against a plain
/// matrix product of the same numbers. Returns the largest relative error, or
/// `None` when the loaded module has no tensor-core kernels (compute capability
/// below 8.0). A layout mistake gives errors of order 1; a correct one, f32
/// rounding.
pub fn selftest_mma(ordinal: u32) -> Result<Option<f64>> {
    let d = DeviceState::get(ordinal)?;
    d.check_usable()?;
    d.make_current()?;
    let Some(f) = d.function("mla_selftest_mma")? else {
        return Ok(None);
    };
    let mut worst = 0f64;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    for dtype in [1u32, 2] {
        let to_bits = |v: f32| -> u16 {
            if dtype == 1 {
                half::f16::from_f32(v).to_bits()
            } else {
                half::bf16::from_f32(v).to_bits()
            }
        };
        let from_bits = |b: u16| -> f64 {
            if dtype == 1 {
                half::f16::from_bits(b).to_f64()
            } else {
                half::bf16::from_bits(b).to_f64()
            }
        };
        let a: Vec<u16> = (0..256).map(|_| to_bits(next())).collect();
        let b_kn: Vec<u16> = (0..128).map(|_| to_bits(next())).collect();
        let b_nk: Vec<u16> = (0..128)
            .map(|i| *b_kn.get((i % 16) * 8 + i / 16).unwrap_or(&0))
            .collect();
        let c: Vec<f32> = (0..128).map(|_| next()).collect();
        let bufs = [
            DevBuf::from_bytes("selftest a", bytemuck::cast_slice(&a))?,
            DevBuf::from_bytes("selftest b", bytemuck::cast_slice(&b_kn))?,
            DevBuf::from_bytes("selftest b", bytemuck::cast_slice(&b_nk))?,
            DevBuf::from_f32("selftest c", &c)?,
            DevBuf::alloc("selftest d", 256 * 4)?,
        ];
        let p = SelftestP {
            a: bufs[0].ptr(),
            b_kn: bufs[1].ptr(),
            b_nk: bufs[2].ptr(),
            c: bufs[3].ptr(),
            d: bufs[4].ptr(),
            dtype,
            pad0: 0,
        };
        d.check(
            "mla_selftest_mma",
            device::launch(f, core::ptr::null_mut(), [1, 1, 1], 0, &p),
        )?;
        let mut out = vec![0f32; 256];
        // SAFETY: the buffer holds 256 floats; the copy on the legacy stream
        // waits for the kernel.
        d.check("mla_selftest_mma (result)", unsafe {
            cu::cuMemcpyDtoH_v2(out.as_mut_ptr().cast(), bufs[4].ptr(), 1024)
        })?;
        for pass in 0..2 {
            for m in 0..16 {
                for n in 0..8 {
                    let mut want = f64::from(*c.get(m * 8 + n).unwrap_or(&0.0));
                    let mut mag = want.abs();
                    for k in 0..16 {
                        let x = from_bits(*a.get(m * 16 + k).unwrap_or(&0));
                        let y = from_bits(*b_kn.get(k * 8 + n).unwrap_or(&0));
                        want += x * y;
                        mag += (x * y).abs();
                    }
                    let got = f64::from(*out.get(pass * 128 + m * 8 + n).unwrap_or(&f32::NAN));
                    let e = (got - want).abs() / mag.max(1e-30);
                    worst = if e.is_nan() {
                        f64::INFINITY
                    } else {
                        worst.max(e)
                    };
                }
            }
        }
    }
    Ok(Some(worst))
}
