//! The driver layer: error text, the per-process device state (primary context
//! retained once, kernel module loaded once and shared by every engine on the
//! device, JIT logs, sticky errors), device buffers and kernel launches. Raw
//! driver calls through `cust::sys`.

use core::ffi::{c_char, c_int, c_uint, c_void, CStr};
use core::ptr;
use std::sync::{Arc, Mutex};

use cust::sys as cu;

use mla_core::status::{err, Error, Result, Status};

/// `cuGetErrorName` of a driver result ("CUDA_ERROR_ILLEGAL_ADDRESS").
pub(crate) fn error_name(r: cu::CUresult) -> String {
    let mut name: *const c_char = ptr::null();
    // SAFETY: writes a pointer to a static NUL-terminated string (or nothing)
    // through a pointer to a local.
    unsafe { cu::cuGetErrorName(r, &mut name) };
    if name.is_null() {
        return format!("CUresult {}", r as u32);
    }
    // SAFETY: non-NULL pointers from the driver are static C strings.
    unsafe { CStr::from_ptr(name) }
        .to_string_lossy()
        .into_owned()
}

/// `cuGetErrorString` of a driver result.
fn error_text(r: cu::CUresult) -> String {
    let mut text: *const c_char = ptr::null();
    // SAFETY: as in error_name.
    unsafe { cu::cuGetErrorString(r, &mut text) };
    if text.is_null() {
        return String::new();
    }
    // SAFETY: non-NULL pointers from the driver are static C strings.
    unsafe { CStr::from_ptr(text) }
        .to_string_lossy()
        .into_owned()
}

/// `MLA_ERR_DEVICE`: "`what`: NAME: text".
pub(crate) fn dev_error(what: &str, r: cu::CUresult) -> Error {
    err(Status::Device, what)
        .s(": ")
        .s(&error_name(r))
        .s(": ")
        .s(&error_text(r))
}

/// Checks a raw driver result.
pub(crate) fn check(what: &str, r: cu::CUresult) -> Result<()> {
    if r == cu::CUresult::CUDA_SUCCESS {
        Ok(())
    } else {
        Err(dev_error(what, r))
    }
}

/// True for the errors after which the context is unusable (a kernel fault):
/// every later call in the process fails the same way.
pub(crate) fn is_sticky(r: cu::CUresult) -> bool {
    matches!(r as u32, 700 | 702 | 714..=719)
}

/// A value of a device attribute.
fn attribute(dev: cu::CUdevice, a: cu::CUdevice_attribute, what: &str) -> Result<usize> {
    let mut v: c_int = 0;
    // SAFETY: writes one int through a pointer to a local; `dev` came from cuDeviceGet.
    check(what, unsafe { cu::cuDeviceGetAttribute(&mut v, a, dev) })?;
    Ok(usize::try_from(v).unwrap_or(0))
}

/// The kernel image to load: (bytes ending in NUL for PTX, description).
fn module_image(cc: (u32, u32)) -> Result<(Vec<u8>, String)> {
    for var in ["MLA_CUDA_MODULE_FILE", "MLA_CUDA_PTX_FILE"] {
        if let Some(path) = std::env::var_os(var) {
            let mut bytes = std::fs::read(&path).map_err(|e| {
                err(Status::Device, var)
                    .s(": cannot read ")
                    .s(&path.to_string_lossy())
                    .s(": ")
                    .s(&e.to_string())
            })?;
            bytes.push(0); // PTX must end in NUL; harmless after a fatbin or cubin
            return Ok((bytes, format!("{var}={}", path.to_string_lossy())));
        }
    }
    if !crate::FATBIN.is_empty() {
        return Ok((crate::FATBIN.to_vec(), "embedded fatbin (nvcc)".to_string()));
    }
    let (ptx, which) = if cc.0 >= 8 {
        (crate::PTX_SM80, "sm_80")
    } else {
        (crate::PTX_SM72, "sm_72")
    };
    let mut bytes = ptx.as_bytes().to_vec();
    bytes.push(0);
    Ok((
        bytes,
        format!(
            "embedded {which} PTX ({} bytes), JIT-compiled for sm_{}{}",
            ptx.len(),
            cc.0,
            cc.1
        ),
    ))
}

/// Bytes of each JIT log buffer.
const JIT_LOG_BYTES: usize = 64 * 1024;

/// Text of a NUL-terminated log buffer.
fn log_text(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(buf.get(..end).unwrap_or(&[]))
        .trim_end()
        .to_string()
}

/// Loads a module with the JIT's logs captured: (module, info log) or the error
/// with the start of the error log in its message (the whole log in `full_log`).
fn load_module(image: &[u8], desc: &str, full_log: &mut String) -> Result<(cu::CUmodule, String)> {
    let mut info = vec![0u8; JIT_LOG_BYTES];
    let mut error = vec![0u8; JIT_LOG_BYTES];
    let mut opts = [
        cu::CUjit_option::CU_JIT_INFO_LOG_BUFFER,
        cu::CUjit_option::CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES,
        cu::CUjit_option::CU_JIT_ERROR_LOG_BUFFER,
        cu::CUjit_option::CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
        cu::CUjit_option::CU_JIT_LOG_VERBOSE,
    ];
    // Option values are pointer-sized words: buffers as pointers, sizes and
    // flags as integers in a pointer's place.
    let word = ptr::without_provenance_mut::<c_void>;
    let mut vals: [*mut c_void; 5] = [
        info.as_mut_ptr().cast(),
        word(JIT_LOG_BYTES),
        error.as_mut_ptr().cast(),
        word(JIT_LOG_BYTES),
        word(1),
    ];
    let mut module: cu::CUmodule = ptr::null_mut();
    // SAFETY: `image` is a PTX text ending in NUL (or a fatbin / cubin image);
    // the option arrays have 5 entries each, the log buffers JIT_LOG_BYTES bytes
    // and outlive the call; the driver writes the module handle to a local.
    let r = unsafe {
        cu::cuModuleLoadDataEx(
            &mut module,
            image.as_ptr().cast(),
            opts.len() as c_uint,
            opts.as_mut_ptr(),
            vals.as_mut_ptr(),
        )
    };
    let info = log_text(&info);
    let error = log_text(&error);
    if r != cu::CUresult::CUDA_SUCCESS {
        *full_log = format!("{desc}\n{error}\n{info}");
        let first = error.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        return Err(err(Status::Device, "loading the kernels: ")
            .s(&error_name(r))
            .s(": JIT log: ")
            .s(if first.is_empty() { "(empty)" } else { first })
            .s(" [")
            .s(desc)
            .s("]"));
    }
    Ok((module, info))
}

/// Per-process state of one device: the primary context (retained once, never
/// released: the process keeps it until exit), the kernel module (loaded once,
/// shared by every engine on the device, never unloaded) and what went wrong.
pub(crate) struct DeviceState {
    pub ordinal: u32,
    pub ctx: cu::CUcontext,
    pub module: cu::CUmodule,
    pub name: String,
    pub cc: (u32, u32),
    pub sm_count: usize,
    pub smem_optin: usize,
    pub module_desc: String,
    pub jit_log: String,
    /// The first sticky error seen on the device (its context is then unusable).
    sticky: Mutex<Option<String>>,
}

// SAFETY: the context and module handles are process-wide driver objects that
// any thread may use once the context is current (every user makes it current
// first); the only mutable part is behind a Mutex.
unsafe impl Send for DeviceState {}
// SAFETY: as above; shared references only read the handles.
unsafe impl Sync for DeviceState {}

/// Devices initialised so far (by ordinal).
static DEVICES: Mutex<Vec<Arc<DeviceState>>> = Mutex::new(Vec::new());
/// The JIT log of the last failed module load (the error message holds its start).
static FAILED_JIT_LOG: Mutex<String> = Mutex::new(String::new());

/// The JIT log of the last module load that failed in this process ("" if none).
pub(crate) fn failed_jit_log() -> String {
    FAILED_JIT_LOG.lock().map(|l| l.clone()).unwrap_or_default()
}

/// Initialises the driver (`cuInit`).
pub(crate) fn init() -> Result<()> {
    // SAFETY: cuInit takes flags (must be 0) and no pointers.
    check("cuInit", unsafe { cu::cuInit(0) })
}

impl DeviceState {
    /// The state of device `ordinal`, initialising it (context, module) on first use.
    pub(crate) fn get(ordinal: u32) -> Result<Arc<DeviceState>> {
        let mut devices = DEVICES
            .lock()
            .map_err(|_| err(Status::Internal, "device table lock poisoned"))?;
        if let Some(d) = devices.iter().find(|d| d.ordinal == ordinal) {
            return Ok(d.clone());
        }
        init()?;
        let ord = c_int::try_from(ordinal)
            .map_err(|_| err(Status::InvalidArgument, "device ordinal out of range"))?;
        let mut dev: cu::CUdevice = 0;
        // SAFETY: writes a device handle to a local.
        check("cuDeviceGet", unsafe { cu::cuDeviceGet(&mut dev, ord) })?;
        let mut ctx: cu::CUcontext = ptr::null_mut();
        // SAFETY: writes the primary context's handle to a local; it is retained
        // once per process and deliberately never released.
        check("cuDevicePrimaryCtxRetain", unsafe {
            cu::cuDevicePrimaryCtxRetain(&mut ctx, dev)
        })?;
        // SAFETY: `ctx` is the retained primary context.
        check("cuCtxSetCurrent", unsafe { cu::cuCtxSetCurrent(ctx) })?;
        use cu::CUdevice_attribute as A;
        let cc = (
            attribute(
                dev,
                A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
                "compute capability",
            )? as u32,
            attribute(
                dev,
                A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
                "compute capability",
            )? as u32,
        );
        let sm_count = attribute(
            dev,
            A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
            "MULTIPROCESSOR_COUNT",
        )?
        .max(1);
        let smem_optin = attribute(
            dev,
            A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
            "MAX_SHARED_MEMORY_PER_BLOCK_OPTIN",
        )?
        .max(48 * 1024);
        let mut name_buf = [0 as c_char; 128];
        // SAFETY: the driver writes at most 128 bytes, NUL-terminated.
        let name = if unsafe { cu::cuDeviceGetName(name_buf.as_mut_ptr(), 128, dev) }
            == cu::CUresult::CUDA_SUCCESS
        {
            // SAFETY: NUL-terminated by the driver within the buffer.
            unsafe { CStr::from_ptr(name_buf.as_ptr()) }
                .to_string_lossy()
                .into_owned()
        } else {
            "unknown device".to_string()
        };
        let (image, desc) = module_image(cc)?;
        let mut full_log = String::new();
        let (module, jit_log) = match load_module(&image, &desc, &mut full_log) {
            Ok(m) => m,
            Err(e) => {
                if let Ok(mut l) = FAILED_JIT_LOG.lock() {
                    *l = full_log;
                }
                return Err(e);
            }
        };
        let state = Arc::new(DeviceState {
            ordinal,
            ctx,
            module,
            name,
            cc,
            sm_count,
            smem_optin,
            module_desc: desc,
            jit_log,
            sticky: Mutex::new(None),
        });
        devices.push(state.clone());
        Ok(state)
    }

    /// A kernel of the module, or None when the module does not have it (the
    /// sm_80 kernels in an sm_72 module).
    pub(crate) fn function(&self, name: &str) -> Result<Option<cu::CUfunction>> {
        let cname = std::ffi::CString::new(name)
            .map_err(|_| err(Status::Internal, "kernel name with NUL"))?;
        let mut f: cu::CUfunction = ptr::null_mut();
        // SAFETY: the module is loaded for the process lifetime; the name is a C
        // string; the handle is written to a local.
        let r = unsafe { cu::cuModuleGetFunction(&mut f, self.module, cname.as_ptr()) };
        match r {
            cu::CUresult::CUDA_SUCCESS => Ok(Some(f)),
            cu::CUresult::CUDA_ERROR_NOT_FOUND => Ok(None),
            r => Err(dev_error(name, r)),
        }
    }

    /// A kernel that must exist.
    pub(crate) fn required(&self, name: &str) -> Result<cu::CUfunction> {
        self.function(name)?.ok_or_else(|| {
            err(Status::Device, "kernel ")
                .s(name)
                .s(" is missing from the loaded module [")
                .s(&self.module_desc)
                .s("]")
        })
    }

    /// Makes the device's context current on this thread.
    pub(crate) fn make_current(&self) -> Result<()> {
        // SAFETY: `ctx` is the retained primary context, valid for the process.
        check("cuCtxSetCurrent", unsafe { cu::cuCtxSetCurrent(self.ctx) })
    }

    /// Fails with the sticky error if the device already had one.
    pub(crate) fn check_usable(&self) -> Result<()> {
        let s = self
            .sticky
            .lock()
            .map_err(|_| err(Status::Internal, "device lock poisoned"))?;
        match &*s {
            None => Ok(()),
            Some(m) => Err(err(
                Status::Device,
                "device unusable after an earlier kernel fault (restart the process): ",
            )
            .s(m)),
        }
    }

    /// Records a sticky error (the first one is kept).
    pub(crate) fn note(&self, r: cu::CUresult, e: &Error) {
        if is_sticky(r) {
            if let Ok(mut s) = self.sticky.lock() {
                if s.is_none() {
                    *s = Some(e.message().to_string());
                }
            }
        }
    }

    /// `check` that also records a sticky error.
    pub(crate) fn check(&self, what: &str, r: cu::CUresult) -> Result<()> {
        check(what, r).inspect_err(|e| self.note(r, e))
    }

    /// Static shared memory of a kernel, bytes.
    pub(crate) fn static_smem(&self, f: cu::CUfunction, what: &str) -> Result<usize> {
        let mut v: c_int = 0;
        // SAFETY: writes one int; `f` is a function of the loaded module.
        check(what, unsafe {
            cu::cuFuncGetAttribute(
                &mut v,
                cu::CUfunction_attribute::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES,
                f,
            )
        })?;
        Ok(usize::try_from(v).unwrap_or(0))
    }

    /// Raises a kernel's dynamic shared memory limit to what the device allows
    /// besides its static shared memory (the driver refuses more: static +
    /// dynamic may not pass the opt-in limit). Kernels are shared by engines, so
    /// the limit is only ever raised, to the same value. Returns that value.
    pub(crate) fn allow_smem(&self, f: cu::CUfunction, what: &str) -> Result<usize> {
        let max = self.smem_optin.saturating_sub(self.static_smem(f, what)?);
        let v = c_int::try_from(max).unwrap_or(c_int::MAX);
        // SAFETY: `f` is a function of the loaded module.
        check(what, unsafe {
            cu::cuFuncSetAttribute(
                f,
                cu::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                v,
            )
        })?;
        Ok(max)
    }

    /// Blocks of `f` with `smem` bytes of dynamic shared memory that fit on one
    /// multiprocessor at once (at least 1).
    pub(crate) fn occupancy(&self, f: cu::CUfunction, smem: usize) -> Result<usize> {
        let mut n: c_int = 0;
        // SAFETY: writes one int; `f` is a function of the loaded module.
        check("cuOccupancyMaxActiveBlocksPerMultiprocessor", unsafe {
            cu::cuOccupancyMaxActiveBlocksPerMultiprocessor(&mut n, f, THREADS as c_int, smem)
        })?;
        Ok(usize::try_from(n).unwrap_or(0).max(1))
    }
}

/// A device allocation of `len` bytes; `ptr()` is its address (0 when empty).
/// Freed on drop (the engine makes its context current before dropping).
pub(crate) struct DevBuf {
    ptr: u64,
    len: usize,
}

impl DevBuf {
    /// `bytes` uninitialised bytes (scratch that is written before it is read;
    /// the CPU emulator fills fresh memory with 0xff to catch reads of it).
    pub(crate) fn alloc(what: &str, bytes: usize) -> Result<DevBuf> {
        if bytes == 0 {
            return Ok(DevBuf { ptr: 0, len: 0 });
        }
        let mut p: cu::CUdeviceptr = 0;
        // SAFETY: writes the new allocation's address to a local.
        check(what, unsafe { cu::cuMemAlloc_v2(&mut p, bytes) })?;
        Ok(DevBuf { ptr: p, len: bytes })
    }

    /// A copy of `data` (synchronous upload).
    pub(crate) fn from_bytes(what: &str, data: &[u8]) -> Result<DevBuf> {
        let b = DevBuf::alloc(what, data.len())?;
        if !data.is_empty() {
            // SAFETY: the allocation holds data.len() bytes; `data` is readable.
            check(what, unsafe {
                cu::cuMemcpyHtoD_v2(b.ptr, data.as_ptr().cast(), data.len())
            })?;
        }
        Ok(b)
    }

    /// A copy of `data` as f32 bytes.
    pub(crate) fn from_f32(what: &str, data: &[f32]) -> Result<DevBuf> {
        DevBuf::from_bytes(what, bytemuck::cast_slice(data))
    }

    /// Device address (0 when empty).
    pub(crate) fn ptr(&self) -> u64 {
        self.ptr
    }

    /// Size in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for DevBuf {
    fn drop(&mut self) {
        if self.ptr != 0 {
            // SAFETY: `ptr` came from cuMemAlloc_v2 and is freed once. An error
            // (e.g. after a sticky fault) cannot be reported from drop.
            let _ = unsafe { cu::cuMemFree_v2(self.ptr) };
        }
    }
}

/// A stream of the engine (created on the current context, destroyed on drop).
pub(crate) struct Stream(pub cu::CUstream);

impl Stream {
    /// A new stream ordered after the legacy default stream (flags 0).
    pub(crate) fn new() -> Result<Stream> {
        let mut s: cu::CUstream = ptr::null_mut();
        // SAFETY: writes the stream handle to a local.
        check("cuStreamCreate", unsafe { cu::cuStreamCreate(&mut s, 0) })?;
        Ok(Stream(s))
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        // SAFETY: the stream was created by Stream::new and is destroyed once.
        let _ = unsafe { cu::cuStreamDestroy_v2(self.0) };
    }
}

/// A pair of events around each call (`CudaOptions::timing`).
pub(crate) struct Events(pub cu::CUevent, pub cu::CUevent);

impl Events {
    pub(crate) fn new() -> Result<Events> {
        let (mut a, mut b): (cu::CUevent, cu::CUevent) = (ptr::null_mut(), ptr::null_mut());
        // SAFETY: each call writes an event handle to a local.
        check("cuEventCreate", unsafe { cu::cuEventCreate(&mut a, 0) })?;
        // SAFETY: as above; `a` is destroyed if this fails.
        if let Err(e) = check("cuEventCreate", unsafe { cu::cuEventCreate(&mut b, 0) }) {
            // SAFETY: `a` was created above.
            let _ = unsafe { cu::cuEventDestroy_v2(a) };
            return Err(e);
        }
        Ok(Events(a, b))
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        // SAFETY: both events were created by Events::new and are destroyed once.
        unsafe {
            let _ = cu::cuEventDestroy_v2(self.0);
            let _ = cu::cuEventDestroy_v2(self.1);
        }
    }
}

/// Threads per block of every kernel (`MLA_THREADS` in kernels/mla.cu).
pub(crate) const THREADS: u32 = 256;

/// Launches `f` with `grid` blocks of THREADS threads on `stream`, its one
/// parameter the struct `p` (passed by value: the driver copies its bytes).
/// A grid with a zero dimension launches nothing.
pub(crate) fn launch<T: Copy>(
    f: cu::CUfunction,
    stream: cu::CUstream,
    grid: [u32; 3],
    smem: u32,
    p: &T,
) -> cu::CUresult {
    if grid.contains(&0) {
        return cu::CUresult::CUDA_SUCCESS;
    }
    let mut params: [*mut c_void; 1] = [(p as *const T).cast_mut().cast()];
    // SAFETY: `f` is a function of the loaded module whose single parameter is
    // the C struct mirrored by T (params.rs, sizes asserted on both sides); the
    // driver copies the parameter bytes before returning. The addresses inside
    // are allocations of the engine (or the caller's, for forward_device) large
    // enough for the launch's shapes, as computed by the engine.
    unsafe {
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
            params.as_mut_ptr(),
            ptr::null_mut(),
        )
    }
}
