// CPU emulator of the CUDA driver API, built as a libcuda.so.1 that runs
// mla-rt's real kernels (kernels/mla.cu compiled as host C++) on the CPU.
//
// Purpose: exercise the Rust CUDA engine (src/cuda) end to end without a GPU:
// buffer sizes, kernel argument lists, launch geometry, shared-memory sizes and
// the kernels' indexing and synchronisation. It is a test tool, slow and
// single-threaded: every CUDA thread of a block is a fiber, blocks run one after
// another, and __syncthreads / warp shuffles are barriers between fibers.
// Mistakes it catches:
//   - __syncthreads reached by only part of a block, or a shuffle by only part
//     of a warp (reported as a launch failure, CUDA_ERROR_LAUNCH_FAILED);
//   - reads or writes past the end of a device allocation (each allocation ends
//     at a PROT_NONE guard page: the process faults at the bad access);
//   - reads of memory never written (fresh allocations are filled with 0xff
//     bytes, i.e. NaN floats, so the outputs show it);
//   - dynamic shared memory above 48 KiB without cuFuncSetAttribute, or above
//     the device's opt-in limit;
//   - a kernel name missing from the PTX the engine loaded.
// Everything else in the driver API returns CUDA_ERROR_NOT_SUPPORTED (emu_rest.c).
//
// Build: tools/cuda-stub/make-fake-cuda.sh (c++ -O2 -shared -fPIC emu.cpp + emu_rest.c).

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <mutex>
#include <string>
#include <sys/mman.h>
#include <type_traits>
#include <unistd.h>
#include <utility>
#include <vector>
#if !defined(__x86_64__)
#include <ucontext.h>
#endif

// ---------------------------------------------------------------------------
// Fibers: one per CUDA thread of the running block.

namespace emu {

struct Dim {
  unsigned x, y, z;
};

enum State { RUN = 0, WAIT_BLOCK = 1, WAIT_WARP = 2, DONE = 3 };

struct Fiber {
#if defined(__x86_64__)
  void *sp;
#else
  ucontext_t ctx;
#endif
  Dim tid;
  unsigned lin; // linear thread index
  State state;
  char *stack;
};

const size_t kStack = 128 * 1024;
const unsigned kMaxThreads = 1024;

Fiber g_fibers[kMaxThreads];
unsigned g_nthreads = 0;
Fiber *g_cur = nullptr;
Dim g_block_idx, g_block_dim, g_grid_dim;
float g_shfl[kMaxThreads];
std::vector<unsigned char> g_dyn_smem;
void (*g_invoke)(void **) = nullptr;
void **g_params = nullptr;
const char *g_error = nullptr;

#if defined(__x86_64__)
void *g_sched_sp = nullptr;
extern "C" void mla_emu_switch(void **save_sp, void *new_sp);
// Saves the callee-saved registers on the current stack, stores the stack
// pointer in *save_sp, switches to new_sp and restores the registers there.
asm(R"(
  .text
  .globl mla_emu_switch
  .type mla_emu_switch,@function
mla_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size mla_emu_switch, .-mla_emu_switch
)");
#else
ucontext_t g_sched;
#endif

void fiber_body() {
  g_invoke(g_params);
  g_cur->state = DONE;
}

#if defined(__x86_64__)
[[noreturn]] void fiber_start() {
  fiber_body();
  void *dummy;
  mla_emu_switch(&dummy, g_sched_sp);
  abort(); // never resumed
}
#else
void fiber_start() { fiber_body(); } // returns to uc_link (the scheduler)
#endif

// Back to the scheduler, waiting in state `s`.
void yield(State s) {
  g_cur->state = s;
#if defined(__x86_64__)
  mla_emu_switch(&g_cur->sp, g_sched_sp);
#else
  swapcontext(&g_cur->ctx, &g_sched);
#endif
}

void resume(Fiber *f) {
  g_cur = f;
#if defined(__x86_64__)
  mla_emu_switch(&g_sched_sp, f->sp);
#else
  swapcontext(&g_sched, &f->ctx);
#endif
}

void init_fiber(Fiber *f) {
  if (!f->stack) f->stack = static_cast<char *>(malloc(kStack));
  f->state = RUN;
#if defined(__x86_64__)
  // Initial frame: six zero registers, then the "return address" fiber_start,
  // placed so that fiber_start starts with the stack aligned as after a call.
  uintptr_t top = (reinterpret_cast<uintptr_t>(f->stack) + kStack) & ~uintptr_t(15);
  uintptr_t *ret = reinterpret_cast<uintptr_t *>(top - 16);
  *ret = reinterpret_cast<uintptr_t>(&fiber_start);
  uintptr_t *regs = ret - 6;
  for (int i = 0; i < 6; i++) regs[i] = 0;
  f->sp = regs;
#else
  getcontext(&f->ctx);
  f->ctx.uc_stack.ss_sp = f->stack;
  f->ctx.uc_stack.ss_size = kStack;
  f->ctx.uc_link = &g_sched;
  makecontext(&f->ctx, fiber_start, 0);
#endif
}

// Runs one block to completion; false (and g_error set) on a sync error.
bool run_block() {
  unsigned n = g_nthreads;
  unsigned idx = 0;
  for (unsigned z = 0; z < g_block_dim.z; z++)
    for (unsigned y = 0; y < g_block_dim.y; y++)
      for (unsigned x = 0; x < g_block_dim.x; x++, idx++) {
        Fiber *f = &g_fibers[idx];
        f->tid = Dim{x, y, z};
        f->lin = idx;
        init_fiber(f);
      }
  unsigned n_warps = (n + 31) / 32;
  for (;;) {
    bool ran = false;
    for (unsigned i = 0; i < n; i++) {
      if (g_fibers[i].state == RUN) {
        resume(&g_fibers[i]);
        ran = true;
      }
    }
    unsigned done = 0, at_block = 0;
    for (unsigned i = 0; i < n; i++) {
      done += g_fibers[i].state == DONE;
      at_block += g_fibers[i].state == WAIT_BLOCK;
    }
    if (done == n) return true;
    bool released = false;
    if (at_block > 0) {
      if (at_block + done == n && done > 0) {
        g_error = "__syncthreads() after some threads of the block exited";
        return false;
      }
      if (at_block == n) {
        for (unsigned i = 0; i < n; i++) g_fibers[i].state = RUN;
        released = true;
      }
    }
    for (unsigned w = 0; w < n_warps; w++) {
      unsigned lo = w * 32, hi = lo + 32 < n ? lo + 32 : n, at_warp = 0, wdone = 0;
      for (unsigned i = lo; i < hi; i++) {
        at_warp += g_fibers[i].state == WAIT_WARP;
        wdone += g_fibers[i].state == DONE;
      }
      if (at_warp == 0) continue;
      if (at_warp == hi - lo) {
        for (unsigned i = lo; i < hi; i++) g_fibers[i].state = RUN;
        released = true;
      } else if (at_warp + wdone == hi - lo) {
        g_error = "warp shuffle after some lanes of the warp exited";
        return false;
      }
    }
    if (!released && !ran) {
      g_error = "deadlock: threads wait at different barriers (__syncthreads in divergent "
                "code, or a shuffle not reached by the whole warp)";
      return false;
    }
  }
}

} // namespace emu

// ---------------------------------------------------------------------------
// The kernels, compiled for the host.

#define threadIdx (emu::g_cur->tid)
#define blockIdx (emu::g_block_idx)
#define blockDim (emu::g_block_dim)
#define gridDim (emu::g_grid_dim)
#define __global__
#define __device__
#define __shared__ static

static inline void mla_emu_syncthreads() { emu::yield(emu::WAIT_BLOCK); }
static inline float mla_emu_shfl_xor(float v, int m) {
  unsigned lin = emu::g_cur->lin;
  emu::g_shfl[lin] = v;
  emu::yield(emu::WAIT_WARP);
  unsigned src = (lin & ~31u) | ((lin & 31u) ^ (unsigned)m);
  float r = src < emu::g_nthreads ? emu::g_shfl[src] : v;
  emu::yield(emu::WAIT_WARP); // nobody overwrites a slot before all have read
  return r;
}
static inline void *mla_emu_dyn_smem() { return emu::g_dyn_smem.data(); }
// Vector loads need their natural alignment on a GPU (a misaligned one is a
// sticky "misaligned address" error there): the emulator aborts instead.
static inline void mla_emu_check_align(const void *p, unsigned align) {
  if (reinterpret_cast<uintptr_t>(p) % align != 0) {
    fprintf(stderr, "mla-rt emulator: misaligned %u-byte vector load at %p\n", align, p);
    abort();
  }
}

#define MLA_EMU 1
#include "../../crates/mla-cuda/kernels/mla.cu"

namespace emu {

template <typename... A, size_t... I>
void call_with(void (*fn)(A...), void **p, std::index_sequence<I...>) {
  fn(*static_cast<std::remove_reference_t<A> *>(p[I])...);
}
template <typename... A> void invoke(void (*fn)(A...), void **p) {
  call_with(fn, p, std::index_sequence_for<A...>{});
}

struct KernelEntry {
  const char *name;
  void (*invoke)(void **);
};

#define MLA_EMU_ENTRY(name) {#name, [](void **p) { invoke(name, p); }},
const KernelEntry g_kernels[] = {MLA_KERNEL_LIST(MLA_EMU_ENTRY)};

struct Function {
  const KernelEntry *k;
  int max_dyn_smem;
};

struct Module {
  std::string ptx;
  std::vector<Function *> funcs;
};

const int kSmemDefault = 48 * 1024;
const int kSmemOptin = 99 * 1024;
const int kSmCount = 4;

std::recursive_mutex g_lock;

struct Alloc {
  void *map;
  size_t map_len;
};
std::vector<std::pair<uintptr_t, Alloc>> g_allocs;

} // namespace emu

// ---------------------------------------------------------------------------
// Driver API (the subset the engine, its tests and its benchmark use).

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
enum {
  CUDA_SUCCESS = 0,
  CUDA_ERROR_INVALID_VALUE = 1,
  CUDA_ERROR_OUT_OF_MEMORY = 2,
  CUDA_ERROR_INVALID_DEVICE = 101,
  CUDA_ERROR_NOT_FOUND = 500,
  CUDA_ERROR_LAUNCH_FAILED = 719,
  CUDA_ERROR_NOT_SUPPORTED = 801,
};

#define EMU_API extern "C" __attribute__((visibility("default")))
#define LOCK std::lock_guard<std::recursive_mutex> guard(emu::g_lock)

static int g_ctx_dummy, g_stream_dummy;

EMU_API CUresult cuInit(unsigned) { return CUDA_SUCCESS; }
EMU_API CUresult cuDriverGetVersion(int *v) {
  if (!v) return CUDA_ERROR_INVALID_VALUE;
  *v = 12000;
  return CUDA_SUCCESS;
}
EMU_API CUresult cuDeviceGetCount(int *n) {
  if (!n) return CUDA_ERROR_INVALID_VALUE;
  *n = 1;
  return CUDA_SUCCESS;
}
EMU_API CUresult cuDeviceGet(CUdevice *d, int ordinal) {
  if (!d) return CUDA_ERROR_INVALID_VALUE;
  if (ordinal != 0) return CUDA_ERROR_INVALID_DEVICE;
  *d = 0;
  return CUDA_SUCCESS;
}
EMU_API CUresult cuDeviceGetName(char *name, int len, CUdevice) {
  if (!name || len <= 0) return CUDA_ERROR_INVALID_VALUE;
  snprintf(name, (size_t)len, "mla-rt CPU emulator (tools/cuda-stub)");
  return CUDA_SUCCESS;
}
EMU_API CUresult cuDeviceTotalMem_v2(size_t *b, CUdevice) {
  if (!b) return CUDA_ERROR_INVALID_VALUE;
  *b = (size_t)8 << 30;
  return CUDA_SUCCESS;
}
EMU_API CUresult cuDeviceGetAttribute(int *v, int attr, CUdevice) {
  if (!v) return CUDA_ERROR_INVALID_VALUE;
  switch (attr) {
  case 1: *v = 1024; break;                      // MAX_THREADS_PER_BLOCK
  case 8: *v = emu::kSmemDefault; break;         // MAX_SHARED_MEMORY_PER_BLOCK
  case 10: *v = 32; break;                       // WARP_SIZE
  case 16: *v = emu::kSmCount; break;            // MULTIPROCESSOR_COUNT
  case 75: *v = 7; break;                        // COMPUTE_CAPABILITY_MAJOR
  case 76: *v = 2; break;                        // COMPUTE_CAPABILITY_MINOR
  case 97: *v = emu::kSmemOptin; break;          // MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
  default: *v = 0;
  }
  return CUDA_SUCCESS;
}
EMU_API CUresult cuDevicePrimaryCtxRetain(void **ctx, CUdevice) {
  if (!ctx) return CUDA_ERROR_INVALID_VALUE;
  *ctx = &g_ctx_dummy;
  return CUDA_SUCCESS;
}
EMU_API CUresult cuDevicePrimaryCtxRelease_v2(CUdevice) { return CUDA_SUCCESS; }
EMU_API CUresult cuDevicePrimaryCtxSetFlags_v2(CUdevice, unsigned) { return CUDA_SUCCESS; }
EMU_API CUresult cuDevicePrimaryCtxReset_v2(CUdevice) { return CUDA_SUCCESS; }
EMU_API CUresult cuCtxSetCurrent(void *) { return CUDA_SUCCESS; }
EMU_API CUresult cuCtxGetCurrent(void **ctx) {
  if (!ctx) return CUDA_ERROR_INVALID_VALUE;
  *ctx = &g_ctx_dummy;
  return CUDA_SUCCESS;
}
EMU_API CUresult cuCtxGetDevice(CUdevice *d) {
  if (!d) return CUDA_ERROR_INVALID_VALUE;
  *d = 0;
  return CUDA_SUCCESS;
}
EMU_API CUresult cuCtxSynchronize() { return CUDA_SUCCESS; }

EMU_API CUresult cuModuleLoadData(void **mod, const void *image) {
  if (!mod || !image) return CUDA_ERROR_INVALID_VALUE;
  LOCK;
  emu::Module *m = new emu::Module;
  m->ptx = static_cast<const char *>(image);
  *mod = m;
  return CUDA_SUCCESS;
}
EMU_API CUresult cuModuleLoadDataEx(void **mod, const void *image, unsigned, void *, void **) {
  return cuModuleLoadData(mod, image);
}
EMU_API CUresult cuModuleUnload(void *mod) {
  LOCK;
  emu::Module *m = static_cast<emu::Module *>(mod);
  if (!m) return CUDA_ERROR_INVALID_VALUE;
  for (emu::Function *f : m->funcs) delete f;
  delete m;
  return CUDA_SUCCESS;
}
EMU_API CUresult cuModuleGetFunction(void **fn, void *mod, const char *name) {
  LOCK;
  emu::Module *m = static_cast<emu::Module *>(mod);
  if (!fn || !m || !name) return CUDA_ERROR_INVALID_VALUE;
  // The entry must exist in the PTX the engine loaded, and in this emulator.
  std::string entry = std::string(".entry ") + name + "(";
  if (m->ptx.find(entry) == std::string::npos) {
    fprintf(stderr, "mla-rt emulator: kernel %s is not in the loaded PTX\n", name);
    return CUDA_ERROR_NOT_FOUND;
  }
  for (const emu::KernelEntry &k : emu::g_kernels) {
    if (strcmp(k.name, name) == 0) {
      emu::Function *f = new emu::Function{&k, emu::kSmemDefault};
      m->funcs.push_back(f);
      *fn = f;
      return CUDA_SUCCESS;
    }
  }
  return CUDA_ERROR_NOT_FOUND;
}
EMU_API CUresult cuFuncSetAttribute(void *fn, int attr, int value) {
  LOCK;
  emu::Function *f = static_cast<emu::Function *>(fn);
  if (!f) return CUDA_ERROR_INVALID_VALUE;
  if (attr == 8) { // MAX_DYNAMIC_SHARED_SIZE_BYTES
    if (value < 0 || value > emu::kSmemOptin) return CUDA_ERROR_INVALID_VALUE;
    f->max_dyn_smem = value;
  }
  return CUDA_SUCCESS;
}
EMU_API CUresult cuFuncGetAttribute(int *v, int, void *) {
  if (!v) return CUDA_ERROR_INVALID_VALUE;
  *v = 0;
  return CUDA_SUCCESS;
}

EMU_API CUresult cuStreamCreate(void **s, unsigned) {
  if (!s) return CUDA_ERROR_INVALID_VALUE;
  *s = &g_stream_dummy;
  return CUDA_SUCCESS;
}
EMU_API CUresult cuStreamCreateWithPriority(void **s, unsigned flags, int) {
  return cuStreamCreate(s, flags);
}
EMU_API CUresult cuStreamDestroy_v2(void *) { return CUDA_SUCCESS; }
EMU_API CUresult cuStreamSynchronize(void *) { return CUDA_SUCCESS; }
EMU_API CUresult cuStreamQuery(void *) { return CUDA_SUCCESS; }

// Device memory: each allocation ends exactly (16-byte granularity) at a
// PROT_NONE guard page; fresh memory holds 0xff bytes (NaN as f32).
EMU_API CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t bytes) {
  if (!p || bytes == 0) return CUDA_ERROR_INVALID_VALUE;
  LOCK;
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  size_t used = (bytes + 15) & ~(size_t)15;
  size_t data_pages = (used + page - 1) / page;
  size_t len = (data_pages + 1) * page;
  void *map = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (map == MAP_FAILED) return CUDA_ERROR_OUT_OF_MEMORY;
  char *fence = static_cast<char *>(map) + data_pages * page;
  mprotect(fence, page, PROT_NONE);
  char *user = fence - used;
  memset(user, 0xff, used);
  emu::g_allocs.push_back({reinterpret_cast<uintptr_t>(user), emu::Alloc{map, len}});
  *p = reinterpret_cast<uintptr_t>(user);
  return CUDA_SUCCESS;
}
EMU_API CUresult cuMemFree_v2(CUdeviceptr p) {
  LOCK;
  for (size_t i = 0; i < emu::g_allocs.size(); i++) {
    if (emu::g_allocs[i].first == p) {
      munmap(emu::g_allocs[i].second.map, emu::g_allocs[i].second.map_len);
      emu::g_allocs.erase(emu::g_allocs.begin() + (long)i);
      return CUDA_SUCCESS;
    }
  }
  return CUDA_ERROR_INVALID_VALUE;
}
EMU_API CUresult cuMemGetInfo_v2(size_t *free_b, size_t *total) {
  if (free_b) *free_b = (size_t)7 << 30;
  if (total) *total = (size_t)8 << 30;
  return CUDA_SUCCESS;
}
#define DEV(p) reinterpret_cast<void *>(static_cast<uintptr_t>(p))
EMU_API CUresult cuMemcpyHtoD_v2(CUdeviceptr d, const void *s, size_t n) {
  if (n) memcpy(DEV(d), s, n);
  return CUDA_SUCCESS;
}
EMU_API CUresult cuMemcpyDtoH_v2(void *d, CUdeviceptr s, size_t n) {
  if (n) memcpy(d, DEV(s), n);
  return CUDA_SUCCESS;
}
EMU_API CUresult cuMemcpyDtoD_v2(CUdeviceptr d, CUdeviceptr s, size_t n) {
  if (n) memmove(DEV(d), DEV(s), n);
  return CUDA_SUCCESS;
}
EMU_API CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr d, const void *s, size_t n, void *) {
  return cuMemcpyHtoD_v2(d, s, n);
}
EMU_API CUresult cuMemcpyDtoHAsync_v2(void *d, CUdeviceptr s, size_t n, void *) {
  return cuMemcpyDtoH_v2(d, s, n);
}
EMU_API CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr d, CUdeviceptr s, size_t n, void *) {
  return cuMemcpyDtoD_v2(d, s, n);
}
EMU_API CUresult cuMemsetD8_v2(CUdeviceptr d, unsigned char v, size_t n) {
  if (n) memset(DEV(d), v, n);
  return CUDA_SUCCESS;
}
EMU_API CUresult cuMemsetD8Async(CUdeviceptr d, unsigned char v, size_t n, void *) {
  return cuMemsetD8_v2(d, v, n);
}
EMU_API CUresult cuMemsetD32_v2(CUdeviceptr d, unsigned v, size_t n) {
  unsigned *p = static_cast<unsigned *>(DEV(d));
  for (size_t i = 0; i < n; i++) p[i] = v;
  return CUDA_SUCCESS;
}
EMU_API CUresult cuMemsetD32Async(CUdeviceptr d, unsigned v, size_t n, void *) {
  return cuMemsetD32_v2(d, v, n);
}

EMU_API CUresult cuLaunchKernel(void *fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                                unsigned by, unsigned bz, unsigned smem, void *, void **params,
                                void **extra) {
  LOCK;
  emu::Function *f = static_cast<emu::Function *>(fn);
  if (!f || extra || (!params && f->k)) return CUDA_ERROR_INVALID_VALUE;
  unsigned long long threads = (unsigned long long)bx * by * bz;
  if (threads == 0 || threads > emu::kMaxThreads || gx == 0 || gy == 0 || gz == 0 ||
      gy > 65535 || gz > 65535) {
    fprintf(stderr, "mla-rt emulator: %s: bad launch geometry (%u,%u,%u) x (%u,%u,%u)\n",
            f->k->name, gx, gy, gz, bx, by, bz);
    return CUDA_ERROR_INVALID_VALUE;
  }
  if ((int)smem > f->max_dyn_smem) {
    fprintf(stderr,
            "mla-rt emulator: %s: %u bytes of dynamic shared memory, limit %d "
            "(cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES) raises it up to %d)\n",
            f->k->name, smem, f->max_dyn_smem, emu::kSmemOptin);
    return CUDA_ERROR_INVALID_VALUE;
  }
  emu::g_nthreads = (unsigned)threads;
  emu::g_block_dim = emu::Dim{bx, by, bz};
  emu::g_grid_dim = emu::Dim{gx, gy, gz};
  emu::g_dyn_smem.assign(smem + 16, 0xff); // garbage, like real shared memory
  emu::g_invoke = f->k->invoke;
  emu::g_params = params;
  for (unsigned z = 0; z < gz; z++)
    for (unsigned y = 0; y < gy; y++)
      for (unsigned x = 0; x < gx; x++) {
        emu::g_block_idx = emu::Dim{x, y, z};
        if (!emu::run_block()) {
          fprintf(stderr, "mla-rt emulator: %s block (%u,%u,%u): %s\n", f->k->name, x, y, z,
                  emu::g_error);
          return CUDA_ERROR_LAUNCH_FAILED;
        }
      }
  return CUDA_SUCCESS;
}

// Events: host timestamps (everything is synchronous here).
struct EmuEvent {
  double ms;
};
static double now_ms() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}
EMU_API CUresult cuEventCreate(void **e, unsigned) {
  if (!e) return CUDA_ERROR_INVALID_VALUE;
  *e = new EmuEvent{0.0};
  return CUDA_SUCCESS;
}
EMU_API CUresult cuEventDestroy_v2(void *e) {
  delete static_cast<EmuEvent *>(e);
  return CUDA_SUCCESS;
}
EMU_API CUresult cuEventRecord(void *e, void *) {
  if (!e) return CUDA_ERROR_INVALID_VALUE;
  static_cast<EmuEvent *>(e)->ms = now_ms();
  return CUDA_SUCCESS;
}
EMU_API CUresult cuEventSynchronize(void *) { return CUDA_SUCCESS; }
EMU_API CUresult cuEventQuery(void *) { return CUDA_SUCCESS; }
EMU_API CUresult cuEventElapsedTime(float *ms, void *a, void *b) {
  if (!ms || !a || !b) return CUDA_ERROR_INVALID_VALUE;
  *ms = (float)(static_cast<EmuEvent *>(b)->ms - static_cast<EmuEvent *>(a)->ms);
  return CUDA_SUCCESS;
}

static const char *err_name(int e) {
  switch (e) {
  case 0: return "CUDA_SUCCESS";
  case 1: return "CUDA_ERROR_INVALID_VALUE";
  case 2: return "CUDA_ERROR_OUT_OF_MEMORY";
  case 101: return "CUDA_ERROR_INVALID_DEVICE";
  case 500: return "CUDA_ERROR_NOT_FOUND";
  case 719: return "CUDA_ERROR_LAUNCH_FAILED";
  case 801: return "CUDA_ERROR_NOT_SUPPORTED";
  default: return "CUDA_ERROR_UNKNOWN";
  }
}
EMU_API CUresult cuGetErrorName(int e, const char **p) {
  if (!p) return CUDA_ERROR_INVALID_VALUE;
  *p = err_name(e);
  return CUDA_SUCCESS;
}
EMU_API CUresult cuGetErrorString(int e, const char **p) {
  if (!p) return CUDA_ERROR_INVALID_VALUE;
  *p = e == CUDA_ERROR_NOT_SUPPORTED ? "operation not supported by the mla-rt CPU emulator"
                                     : err_name(e);
  return CUDA_SUCCESS;
}
