//! Thin helpers over the CUDA driver API (through `cust` and `cust::sys`):
//! error conversion, device buffers, kernel arguments and launches.

use core::ffi::{c_char, c_void, CStr};
use core::ptr;

use cust::error::CudaError;
use cust::memory::DeviceBuffer;
use cust::sys as cu;

use mla_core::status::{err, Error, Result, Status};

/// `MLA_ERR_DEVICE` with `what: <CUDA error text>`.
pub(crate) fn dev_err(what: &str, e: CudaError) -> Error {
    err(Status::Device, what).s(": ").s(&e.to_string())
}

/// Checks a raw driver result; the error text comes from `cuGetErrorName` /
/// `cuGetErrorString`.
pub(crate) fn check(what: &str, r: cu::CUresult) -> Result<()> {
    if r == cu::CUresult::CUDA_SUCCESS {
        return Ok(());
    }
    let mut name: *const c_char = ptr::null();
    let mut text: *const c_char = ptr::null();
    // SAFETY: both functions only write a pointer to a static NUL-terminated
    // string (or leave it NULL) through the out-pointers, which point to locals.
    unsafe {
        cu::cuGetErrorName(r, &mut name);
        cu::cuGetErrorString(r, &mut text);
    }
    let mut e = err(Status::Device, what).s(": ");
    for (p, sep) in [(name, ": "), (text, " ")] {
        if !p.is_null() {
            // SAFETY: non-NULL pointers from the driver are static C strings.
            let s = unsafe { CStr::from_ptr(p) };
            e = e.s(&s.to_string_lossy()).s(sep);
        }
    }
    Err(e.s("(CUresult ").n(r as usize).s(")"))
}

/// A device allocation of `len` bytes (zero-filled); `ptr()` is its address
/// (0 for an empty buffer).
pub(crate) struct DevBuf {
    buf: Option<DeviceBuffer<u8>>,
    len: usize,
}

impl DevBuf {
    /// `bytes` zero-filled bytes.
    pub(crate) fn zeroed(what: &str, bytes: usize) -> Result<DevBuf> {
        if bytes == 0 {
            return Ok(DevBuf { buf: None, len: 0 });
        }
        let buf = DeviceBuffer::<u8>::zeroed(bytes).map_err(|e| dev_err(what, e))?;
        Ok(DevBuf {
            buf: Some(buf),
            len: bytes,
        })
    }

    /// A copy of `data` (synchronous upload).
    pub(crate) fn from_bytes(what: &str, data: &[u8]) -> Result<DevBuf> {
        if data.is_empty() {
            return Ok(DevBuf { buf: None, len: 0 });
        }
        let buf = DeviceBuffer::from_slice(data).map_err(|e| dev_err(what, e))?;
        Ok(DevBuf {
            buf: Some(buf),
            len: data.len(),
        })
    }

    /// A copy of `data` as f32 bytes.
    pub(crate) fn from_f32(what: &str, data: &[f32]) -> Result<DevBuf> {
        DevBuf::from_bytes(what, bytemuck::cast_slice(data))
    }

    /// Device address (0 when empty).
    pub(crate) fn ptr(&self) -> u64 {
        self.buf.as_ref().map_or(0, |b| b.as_device_ptr().as_raw())
    }

    /// Size in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

/// Most parameters any kernel takes.
const MAX_ARGS: usize = 20;

/// Kernel parameters, each in its own 8-byte slot (pointers 8 bytes, `u32` and
/// `f32` 4 bytes at the start of the slot, in native byte order), in the order
/// of the kernel's C signature in kernels/mla.cu.
pub(crate) struct Args {
    slots: [[u8; 8]; MAX_ARGS],
    n: usize,
    overflow: bool,
}

impl Args {
    /// No parameters yet.
    pub(crate) fn new() -> Args {
        Args {
            slots: [[0; 8]; MAX_ARGS],
            n: 0,
            overflow: false,
        }
    }

    fn push(mut self, bytes: &[u8]) -> Args {
        match self.slots.get_mut(self.n) {
            Some(slot) => {
                slot.iter_mut().zip(bytes).for_each(|(d, s)| *d = *s);
                self.n += 1;
            }
            None => self.overflow = true,
        }
        self
    }

    /// A device pointer.
    pub(crate) fn p(self, dev_ptr: u64) -> Args {
        self.push(&dev_ptr.to_ne_bytes())
    }

    /// An `unsigned int`.
    pub(crate) fn u(self, v: u32) -> Args {
        self.push(&v.to_ne_bytes())
    }

    /// A `float`.
    pub(crate) fn f(self, v: f32) -> Args {
        self.push(&v.to_ne_bytes())
    }
}

/// Launches `f` with `grid` blocks of 256 threads on `stream`.
pub(crate) fn launch(
    what: &str,
    f: cu::CUfunction,
    stream: cu::CUstream,
    grid: [u32; 3],
    smem: u32,
    mut args: Args,
) -> Result<()> {
    if args.overflow {
        return Err(err(Status::Internal, what).s(": too many kernel arguments"));
    }
    if grid.contains(&0) {
        return Ok(()); // nothing to do
    }
    let mut ptrs: [*mut c_void; MAX_ARGS] = [ptr::null_mut(); MAX_ARGS];
    for (p, slot) in ptrs.iter_mut().zip(args.slots.iter_mut()) {
        *p = slot.as_mut_ptr().cast();
    }
    // SAFETY: `f` is a function of the loaded module; `ptrs` holds one pointer per
    // kernel parameter, each to an 8-byte slot holding the value in the size the
    // kernel expects (Args' contract with kernels/mla.cu); the driver copies the
    // values before returning. Device pointers in the slots are allocations of
    // this engine (or the caller's, for forward_device) large enough for the
    // launch's shapes, as computed by the engine.
    let r = unsafe {
        cu::cuLaunchKernel(
            f,
            grid[0],
            grid[1],
            grid[2],
            THREADS,
            1,
            1,
            smem,
            stream,
            ptrs.as_mut_ptr(),
            ptr::null_mut(),
        )
    };
    check(what, r)
}

/// Threads per block of every kernel (`MLA_THREADS` in kernels/mla.cu).
pub(crate) const THREADS: u32 = 256;
