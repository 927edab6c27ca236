// CPU emulator of the CUDA driver API, built as a libcuda.so.1 that runs
// mla-rt's real kernels (crates/mla-cuda/kernels/mla.cu compiled as host C++,
// emu_kernels.cpp) on the CPU.
//
// Purpose: exercise the Rust CUDA engine (crates/mla-cuda) end to end without a
// GPU: buffer sizes, kernel argument lists, launch geometry, shared-memory sizes,
// the kernels' indexing and synchronisation, and the engine's error handling.
// It is a test tool, slow and single-threaded: every CUDA thread of a block is a
// fiber, blocks run one after another, and __syncthreads, __syncwarp and the
// warp collectives (shuffles, reductions, mma.sync) are barriers between fibers.
//
// What it catches:
//   - __syncthreads reached by only part of a block, a warp collective by only
//     part of a warp, or lanes of a warp at different collectives;
//   - reads or writes past the end of a device allocation (each allocation ends
//     at a PROT_NONE guard page) and accesses to unmapped addresses: the
//     SIGSEGV is caught and becomes CUDA_ERROR_ILLEGAL_ADDRESS;
//   - misaligned vector loads and cp.async (CUDA_ERROR_MISALIGNED_ADDRESS);
//   - reads of memory nothing wrote: fresh device allocations, dynamic and
//     static shared memory (poisoned at every block start) and the target of a
//     cp.async until its wait hold 0xff bytes, a NaN in f32, f16 and bf16;
//   - dynamic shared memory above 48 KiB without cuFuncSetAttribute, or above
//     the device's opt-in limit;
//   - a kernel name missing from the module the engine loaded.
//
// Faults are reported the way a GPU reports them: asynchronously. The launch
// that faulted returns CUDA_SUCCESS; the error is sticky and comes back from the
// next synchronising call (cuStreamSynchronize, cuCtxSynchronize, a copy, ...)
// and from every call after it, like a real context after a kernel fault. The
// emulator prints the kernel, block, thread and address to stderr when it
// happens. MLA_EMU_SYNC_ERRORS=1 makes cuLaunchKernel itself return the error
// (still sticky), like CUDA_LAUNCH_BLOCKING=1 on a GPU.
//
// Device model (environment, read at cuInit):
//   MLA_EMU_CC=7.2|8.0 (default 8.0)   compute capability; the module's PTX
//       `.target` picks the kernels compiled for sm_72 or sm_80 (emu_kernels.cpp);
//   MLA_EMU_SMS=<n> (default 4)        multiprocessors;
//   MLA_EMU_SMEM_OPTIN=<bytes>         opt-in shared memory per block (default
//       98304 for 7.x, as Xavier; 166912 for 8.x, as A100 and Orin).
//
// Everything in the driver API it does not implement returns
// CUDA_ERROR_NOT_SUPPORTED (emu_rest.c).
//
// Build: tools/cuda-stub/make-fake-cuda.sh.

#include "emu.h"

#include <csignal>
#include <pthread.h>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <mutex>
#include <string>
#include <sys/mman.h>
#include <unistd.h>
#include <utility>
#include <vector>
#if !defined(__x86_64__)
#include <ucontext.h>
#endif

// Kernel tables of emu_kernels.cpp, compiled for sm_72 and sm_80.
extern "C" const mla_emu_kernel mla_emu_kernels_720[];
extern "C" const mla_emu_kernel mla_emu_kernels_800[];

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
enum {
  CUDA_SUCCESS = 0,
  CUDA_ERROR_INVALID_VALUE = 1,
  CUDA_ERROR_OUT_OF_MEMORY = 2,
  CUDA_ERROR_INVALID_DEVICE = 101,
  CUDA_ERROR_INVALID_IMAGE = 200,
  CUDA_ERROR_INVALID_PTX = 218,
  CUDA_ERROR_INVALID_HANDLE = 400,
  CUDA_ERROR_NOT_FOUND = 500,
  CUDA_ERROR_ILLEGAL_ADDRESS = 700,
  CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES = 701,
  CUDA_ERROR_MISALIGNED_ADDRESS = 716,
  CUDA_ERROR_LAUNCH_FAILED = 719,
  CUDA_ERROR_NOT_SUPPORTED = 801,
};

// ---------------------------------------------------------------------------
// Fibers: one per CUDA thread of the running block.

namespace emu {

Dim g_tid;
unsigned g_lin;
Dim g_block_idx, g_block_dim, g_grid_dim;

enum State { RUN = 0, WAIT_BLOCK = 1, WAIT_WARP = 2, DONE = 3, FAULT = 4 };

// Which warp collective a lane waits at (all lanes of a warp must agree).
enum Coll { C_NONE = 0, C_SYNCWARP, C_SHFL, C_SUM, C_MAX, C_MMA };

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
void (*g_invoke)(void **) = nullptr;
void **g_params = nullptr;

// A fault of the running block: code, text, address.
struct FaultInfo {
  int code;
  std::string what;
  const void *addr;
  Dim tid;
};
bool g_faulted = false;
FaultInfo g_fault;
bool g_in_kernel = false;
pthread_t g_kernel_thread; // the thread running the launch

// Warp collectives: each lane deposits its operands in slot [parity][lane],
// waits at the warp barrier, then reads the whole warp's deposits. The parity
// alternates per lane, so a lane that runs ahead to the next collective never
// overwrites a slot another lane still has to read.
struct Slot {
  Coll coll;
  float f;
  unsigned u;
  unsigned a[4], b[2];
  float c[4];
  int dtype;
};
Slot g_slot[2][kMaxThreads];
unsigned g_coll_n[kMaxThreads];
// Results of a warp reduction, computed once per warp by its first lane to run
// after the barrier: for collective number `seq` (per parity and warp).
float g_red[2][kMaxThreads];
unsigned g_red_seq[2][kMaxThreads / 32];
// Results of an mma.sync likewise: each lane's four outputs.
float g_mma_d[2][kMaxThreads][4];
unsigned g_mma_seq[2][kMaxThreads / 32];

// cp.async in flight, per thread: lands at the thread's wait.
struct Pending {
  void *dst;
  unsigned group;
  unsigned char data[16];
};
std::vector<Pending> g_pending[kMaxThreads];
unsigned g_commits[kMaxThreads];

// Shared memory: dynamic (per launch size) and the static arena.
unsigned char *g_dyn_smem = nullptr;
size_t g_dyn_cap = 0, g_dyn_len = 0;
const size_t kStaticSmem = 1024 * 1024;
alignas(16) unsigned char g_static_smem[kStaticSmem];
size_t g_static_used = 0;
// The static __shared__ arrays the running launch used: (call site, bytes).
std::vector<std::pair<size_t *, size_t>> g_launch_static;

#if defined(__x86_64__)
void *g_sched_sp = nullptr;
extern "C" void mla_emu_switch(void **save_sp, void *new_sp);
// Saves the callee-saved registers on the current stack, stores the stack
// pointer in *save_sp, switches to new_sp and restores the registers there.
asm(R"(
  .text
  .globl mla_emu_switch
  .hidden mla_emu_switch
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

// Back to the scheduler, never to return (the fiber's stack is reused later).
[[noreturn]] void leave_for_good() {
#if defined(__x86_64__)
  void *dummy;
  mla_emu_switch(&dummy, g_sched_sp);
#else
  setcontext(&g_sched);
#endif
  abort();
}

#if defined(__x86_64__)
[[noreturn]] void fiber_start() {
  fiber_body();
  leave_for_good();
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
  g_tid = f->tid;
  g_lin = f->lin;
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

// Records a fault of the running fiber and leaves it for good.
[[noreturn]] void fault(int code, const std::string &what, const void *addr) {
  if (!g_faulted) {
    g_faulted = true;
    g_fault = FaultInfo{code, what, addr, g_tid};
  }
  g_cur->state = FAULT;
  leave_for_good();
}

// SIGSEGV / SIGBUS inside a kernel: an illegal address. Outside a kernel the
// previous handler (or the default action) runs.
struct sigaction g_old_segv, g_old_bus;

void on_signal(int sig, siginfo_t *info, void *) {
  if (g_in_kernel && pthread_equal(pthread_self(), g_kernel_thread) && g_cur &&
      g_cur->state == RUN) {
    // SA_NODEFER: the signal is not blocked here, so leaving the handler by a
    // stack switch (never returning) is fine.
    fault(CUDA_ERROR_ILLEGAL_ADDRESS,
          sig == SIGSEGV ? "illegal address (unmapped memory or past the end of an allocation)"
                         : "bus error",
          info ? info->si_addr : nullptr);
  }
  sigaction(sig, sig == SIGSEGV ? &g_old_segv : &g_old_bus, nullptr);
  // Returning re-executes the faulting access under the previous handler.
}

void install_signal_handlers() {
  static bool done = false;
  if (done) return;
  done = true;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_signal;
  sa.sa_flags = SA_SIGINFO | SA_NODEFER;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, &g_old_segv);
  sigaction(SIGBUS, &sa, &g_old_bus);
}

const char *coll_name(Coll c) {
  switch (c) {
  case C_SYNCWARP: return "__syncwarp";
  case C_SHFL: return "a shuffle";
  case C_SUM: return "a warp sum";
  case C_MAX: return "a warp max";
  case C_MMA: return "mma.sync";
  default: return "?";
  }
}

// Runs one block to completion; false (and g_fault set) on a fault.
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
        g_coll_n[idx] = 0;
        if (idx % 32 == 0) {
          g_red_seq[0][idx / 32] = g_red_seq[1][idx / 32] = ~0u;
          g_mma_seq[0][idx / 32] = g_mma_seq[1][idx / 32] = ~0u;
        }
        g_pending[idx].clear();
        g_commits[idx] = 0;
      }
  // Fresh shared memory holds garbage on a GPU: poison it.
  if (g_dyn_len) memset(g_dyn_smem, 0xff, g_dyn_len);
  for (const auto &e : g_launch_static) memset(g_static_smem + *e.first, 0xff, e.second);
  unsigned n_warps = (n + 31) / 32;
  auto stop = [&](const char *why) {
    g_faulted = true;
    g_fault = FaultInfo{CUDA_ERROR_LAUNCH_FAILED, why, nullptr, Dim{0, 0, 0}};
    return false;
  };
  for (;;) {
    bool ran = false;
    for (unsigned i = 0; i < n; i++) {
      if (g_fibers[i].state == RUN) {
        resume(&g_fibers[i]);
        ran = true;
        if (g_faulted) return false;
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
      if (at_block + done == n && done > 0)
        return stop("__syncthreads() after some threads of the block exited");
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
        // Every lane must be at the same kind of collective.
        Coll c0 = g_slot[(g_coll_n[lo] - 1) & 1][lo].coll;
        for (unsigned i = lo; i < hi; i++) {
          Coll c = g_slot[(g_coll_n[i] - 1) & 1][i].coll;
          if (c != c0) {
            static char msg[160];
            snprintf(msg, sizeof msg, "lanes of warp %u wait at different warp collectives (%s, %s)",
                     w, coll_name(c0), coll_name(c));
            return stop(msg);
          }
        }
        for (unsigned i = lo; i < hi; i++) g_fibers[i].state = RUN;
        released = true;
      } else if (at_warp + wdone == hi - lo) {
        return stop("a warp collective (shuffle, __syncwarp, mma) after some lanes of the warp exited");
      }
    }
    if (!released && !ran)
      return stop("deadlock: threads wait at different barriers (__syncthreads in divergent "
                  "code, or a warp collective not reached by the whole warp)");
  }
}

// The lane's slot for its next collective.
Slot &deposit(Coll c) {
  unsigned lin = g_lin;
  Slot &s = g_slot[g_coll_n[lin] & 1][lin];
  g_coll_n[lin]++;
  s.coll = c;
  return s;
}

// The warp's slots of the collective the lane just passed.
Slot *warp_slots() {
  unsigned lin = g_lin;
  return &g_slot[(g_coll_n[lin] - 1) & 1][lin & ~31u];
}

unsigned warp_width() {
  unsigned lo = g_lin & ~31u;
  return g_nthreads - lo < 32 ? g_nthreads - lo : 32;
}

// --- mma.sync m16n8k16 fragment layout -------------------------------------
//
// From the PTX ISA, section "Matrix Fragments for mma.m16n8k16 with floating
// point type" (Figures "MMA .m16n8k16 fragment layout for matrix A / B /
// accumulator matrix C/D with .f16 / .bf16 type"):
//   groupID = %laneid >> 2, threadID_in_group = %laneid % 4;
//   A (16x16, four .f16x2 registers, elements a0..a7 low to high):
//     row = groupID      for ai where 0 <= i < 2 || 4 <= i < 6, else groupID + 8
//     col = threadID_in_group * 2 + (i & 1)       for i < 4
//           threadID_in_group * 2 + (i & 1) + 8   for i >= 4
//   B (16x8, two .f16x2 registers, b0..b3):
//     row = threadID_in_group * 2 + (i & 1)       for i < 2
//           threadID_in_group * 2 + (i & 1) + 8   for i >= 2
//     col = groupID
//   C, D (16x8, four .f32 registers, c0..c3):
//     row = groupID for i < 2, groupID + 8 for i >= 2
//     col = threadID_in_group * 2 + (i & 1)
// Written here from those formulas, independently of the kernels' own index
// arithmetic (kernels/mla.cu), so that a mistake in one shows against the
// other; a tiny kernel (mla_selftest_mma) checks the kernels' side against a
// plain matrix product on a real GPU.

struct MmaLayout {
  unsigned char a_lane[16][16], a_elem[16][16]; // A[row][col] held by lane, element
  unsigned char b_lane[16][8], b_elem[16][8];
  MmaLayout() {
    for (unsigned lane = 0; lane < 32; lane++) {
      unsigned gid = lane >> 2, tig = lane % 4;
      for (unsigned i = 0; i < 8; i++) {
        unsigned row = ((i < 2) || (i >= 4 && i < 6)) ? gid : gid + 8;
        unsigned col = i < 4 ? tig * 2 + (i & 1) : tig * 2 + (i & 1) + 8;
        a_lane[row][col] = (unsigned char)lane;
        a_elem[row][col] = (unsigned char)i;
      }
      for (unsigned i = 0; i < 4; i++) {
        unsigned row = i < 2 ? tig * 2 + (i & 1) : tig * 2 + (i & 1) + 8;
        unsigned col = gid;
        b_lane[row][col] = (unsigned char)lane;
        b_elem[row][col] = (unsigned char)i;
      }
    }
  }
};
const MmaLayout g_mma;

float half_to_f32(unsigned h, int dtype) {
  if (dtype == 2) {
    unsigned u = h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
  }
  unsigned sign = (h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu, u;
  if (e == 0) {
    float f = (float)m * 5.9604644775390625e-8f;
    memcpy(&u, &f, 4);
    u |= sign;
  } else if (e == 31) {
    u = sign | 0x7f800000u | (m << 13);
  } else {
    u = sign | ((e + 112u) << 23) | (m << 13);
  }
  float f;
  memcpy(&f, &u, 4);
  return f;
}

// Element i (0..7 for A, 0..3 for B) of a lane's fragment: register i / 2,
// low half first.
unsigned frag_half(const unsigned *regs, unsigned i) {
  unsigned r = regs[i >> 1];
  return (i & 1) ? r >> 16 : r & 0xffffu;
}

} // namespace emu

// ---------------------------------------------------------------------------
// The runtime the kernels call (emu.h).

extern "C" {

void mla_emu_syncthreads() { emu::yield(emu::WAIT_BLOCK); }

void mla_emu_syncwarp() {
  emu::deposit(emu::C_SYNCWARP);
  emu::yield(emu::WAIT_WARP);
}

float mla_emu_shfl_xor(float v, int m) {
  emu::deposit(emu::C_SHFL).f = v;
  emu::yield(emu::WAIT_WARP);
  unsigned src = (emu::g_lin & 31u) ^ (unsigned)m;
  return src < emu::warp_width() ? emu::warp_slots()[src].f : v;
}

unsigned mla_emu_shfl_xor_u(unsigned v, int m) {
  emu::deposit(emu::C_SHFL).u = v;
  emu::yield(emu::WAIT_WARP);
  unsigned src = (emu::g_lin & 31u) ^ (unsigned)m;
  return src < emu::warp_width() ? emu::warp_slots()[src].u : v;
}

} // extern "C"

// What every lane of the warp holds after the xor butterfly (offsets 16, 8, 4,
// 2, 1) over the deposited values, combined with `op` in the order a GPU's
// shuffles give (own value first); computed once per warp and collective.
template <typename Op> static float butterfly(Op op) {
  unsigned lin = emu::g_lin, w = lin >> 5, seq = emu::g_coll_n[lin], p = (seq - 1) & 1;
  float *res = &emu::g_red[p][w * 32];
  if (emu::g_red_seq[p][w] != seq) {
    const emu::Slot *s = emu::warp_slots();
    unsigned n = emu::warp_width();
    float v[32];
    for (unsigned i = 0; i < 32; i++) v[i] = i < n ? s[i].f : 0.0f;
    for (unsigned o = 16; o > 0; o >>= 1) {
      float nv[32];
      for (unsigned i = 0; i < 32; i++) nv[i] = (i ^ o) < n ? op(v[i], v[i ^ o]) : v[i];
      memcpy(v, nv, sizeof v);
    }
    memcpy(res, v, sizeof v);
    emu::g_red_seq[p][w] = seq;
  }
  return res[lin & 31u];
}

extern "C" {

float mla_emu_warp_sum(float v) {
  emu::deposit(emu::C_SUM).f = v;
  emu::yield(emu::WAIT_WARP);
  return butterfly([](float a, float b) { return a + b; });
}

float mla_emu_warp_max(float v) {
  emu::deposit(emu::C_MAX).f = v;
  emu::yield(emu::WAIT_WARP);
  return butterfly([](float a, float b) { return a > b ? a : b; });
}

void *mla_emu_dyn_smem() { return emu::g_dyn_smem; }

void *mla_emu_static_smem(size_t *slot, size_t bytes) {
  bool seen = false;
  for (const auto &e : emu::g_launch_static) seen |= e.first == slot;
  if (!seen) emu::g_launch_static.push_back({slot, bytes});
  // A kernel's static arrays: at most 48 KiB (each array site of every kernel
  // keeps its own place in the arena, which is larger).
  size_t launch = 0;
  for (const auto &e : emu::g_launch_static) launch += e.second;
  if (launch > 48 * 1024)
    emu::fault(CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES, "static __shared__ arrays above 48 KiB", nullptr);
  if (*slot == (size_t)-1) {
    size_t off = (emu::g_static_used + 15) & ~(size_t)15;
    if (off + bytes > emu::kStaticSmem)
      emu::fault(CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES, "the emulator's static shared arena is full", nullptr);
    *slot = off;
    emu::g_static_used = off + bytes;
  }
  // First use in this launch: garbage, as on a GPU (later blocks of the launch
  // get it at their start).
  if (!seen) memset(emu::g_static_smem + *slot, 0xff, bytes);
  return emu::g_static_smem + *slot;
}

void mla_emu_fault(int code, const char *what, const void *addr) { emu::fault(code, what, addr); }

void mla_emu_mma_m16n8k16(float d[4], const unsigned a[4], const unsigned b[2], const float c[4],
                          int dtype) {
  emu::Slot &s = emu::deposit(emu::C_MMA);
  memcpy(s.a, a, sizeof s.a);
  memcpy(s.b, b, sizeof s.b);
  memcpy(s.c, c, sizeof s.c);
  s.dtype = dtype;
  emu::yield(emu::WAIT_WARP);
  const emu::Slot *w = emu::warp_slots();
  unsigned lin = emu::g_lin, wi = lin >> 5, seq = emu::g_coll_n[lin], par = (seq - 1) & 1;
  if (emu::g_mma_seq[par][wi] != seq) {
    // First lane of the warp to run: the whole product, from every lane's fragments.
    if (emu::warp_width() != 32) emu::fault(CUDA_ERROR_LAUNCH_FAILED, "mma.sync in a partial warp", nullptr);
    for (unsigned i = 0; i < 32; i++)
      if (w[i].dtype != dtype) emu::fault(CUDA_ERROR_LAUNCH_FAILED, "mma.sync lanes disagree on the type", nullptr);
    float A[16][16], B[16][8];
    for (unsigned r = 0; r < 16; r++)
      for (unsigned k = 0; k < 16; k++)
        A[r][k] = emu::half_to_f32(emu::frag_half(w[emu::g_mma.a_lane[r][k]].a, emu::g_mma.a_elem[r][k]), dtype);
    for (unsigned k = 0; k < 16; k++)
      for (unsigned n = 0; n < 8; n++)
        B[k][n] = emu::half_to_f32(emu::frag_half(w[emu::g_mma.b_lane[k][n]].b, emu::g_mma.b_elem[k][n]), dtype);
    for (unsigned lane = 0; lane < 32; lane++) {
      unsigned gid = lane >> 2, tig = lane % 4;
      for (unsigned i = 0; i < 4; i++) {
        unsigned row = i < 2 ? gid : gid + 8, col = tig * 2 + (i & 1);
        float acc = w[lane].c[i];
        for (unsigned k = 0; k < 16; k++) acc += A[row][k] * B[k][col];
        emu::g_mma_d[par][wi * 32 + lane][i] = acc;
      }
    }
    emu::g_mma_seq[par][wi] = seq;
  }
  memcpy(d, emu::g_mma_d[par][lin], 4 * sizeof(float));
}

void mla_emu_cp_async16(void *dst, const void *src, unsigned src_bytes) {
  mla_emu_check_align(dst, 16);
  if (src_bytes > 16) emu::fault(CUDA_ERROR_LAUNCH_FAILED, "cp.async src-size above 16", src);
  if (src_bytes) mla_emu_check_align(src, 16);
  emu::Pending p;
  p.dst = dst;
  p.group = emu::g_commits[emu::g_lin];
  memset(p.data, 0, 16);
  if (src_bytes) memcpy(p.data, src, src_bytes); // faults here if src is bad
  memset(dst, 0xff, 16);                         // not there yet
  emu::g_pending[emu::g_lin].push_back(p);
}

void mla_emu_cp_async_commit() { emu::g_commits[emu::g_lin]++; }

void mla_emu_cp_async_wait(unsigned allowed) {
  unsigned lin = emu::g_lin, commits = emu::g_commits[lin];
  std::vector<emu::Pending> &v = emu::g_pending[lin];
  size_t keep = 0;
  for (size_t i = 0; i < v.size(); i++) {
    // Group g is complete once at most `allowed` newer committed groups remain.
    if (v[i].group < commits && commits - v[i].group > allowed) {
      memcpy(v[i].dst, v[i].data, 16);
    } else {
      v[keep++] = v[i];
    }
  }
  v.resize(keep);
}

unsigned mla_emu_atomic_add_u32(unsigned *p, unsigned v) {
  unsigned old = *p;
  *p = old + v;
  return old;
}

} // extern "C"

// ---------------------------------------------------------------------------
// Driver API (the subset the engine, its tests and its benchmark use).

namespace emu {

struct Function {
  const mla_emu_kernel *k;
  int max_dyn_smem;
  bool raised;      // cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES) was called
  int static_bytes; // static shared memory, known after its first launch
};

struct Module {
  std::string image;
  bool is_ptx;
  const mla_emu_kernel *table;
  std::vector<Function *> funcs;
};

const int kSmemDefault = 48 * 1024;
int g_cc_major = 8, g_cc_minor = 0, g_sms = 4, g_smem_optin = 166912;
bool g_sync_errors = false;

std::recursive_mutex g_lock;

// The sticky error of the context (0: none) and what caused it.
int g_sticky = 0;

struct Alloc {
  uintptr_t user;
  size_t bytes;
  void *map;
  size_t map_len;
};
std::vector<Alloc> g_allocs;

// True when [p, p + n) lies inside one allocation.
bool in_alloc(uintptr_t p, size_t n) {
  for (const Alloc &a : g_allocs)
    if (p >= a.user && p - a.user <= a.bytes && n <= a.bytes - (p - a.user)) return true;
  return false;
}

int env_int(const char *name, int dflt) {
  const char *v = getenv(name);
  return v && *v ? atoi(v) : dflt;
}

} // namespace emu

#define EMU_API extern "C" __attribute__((visibility("default")))
#define LOCK std::lock_guard<std::recursive_mutex> guard(emu::g_lock)
#define STICKY                                                                                  \
  do {                                                                                          \
    if (emu::g_sticky) return emu::g_sticky;                                                    \
  } while (0)

static int g_ctx_dummy, g_stream_dummy;

EMU_API CUresult cuInit(unsigned) {
  LOCK;
  const char *cc = getenv("MLA_EMU_CC");
  if (cc && *cc) {
    int ma = 0, mi = 0;
    if (sscanf(cc, "%d.%d", &ma, &mi) < 1 || ma < 1) return CUDA_ERROR_INVALID_VALUE;
    emu::g_cc_major = ma;
    emu::g_cc_minor = mi;
  }
  emu::g_sms = emu::env_int("MLA_EMU_SMS", 4);
  if (emu::g_sms < 1) emu::g_sms = 1;
  emu::g_smem_optin = emu::env_int("MLA_EMU_SMEM_OPTIN", emu::g_cc_major >= 8 ? 166912 : 98304);
  emu::g_sync_errors = emu::env_int("MLA_EMU_SYNC_ERRORS", 0) != 0;
  return CUDA_SUCCESS;
}
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
  snprintf(name, (size_t)len, "mla-rt CPU emulator (tools/cuda-stub, sm_%d%d)", emu::g_cc_major,
           emu::g_cc_minor);
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
  case 1: *v = 1024; break;                          // MAX_THREADS_PER_BLOCK
  case 8: *v = emu::kSmemDefault; break;             // MAX_SHARED_MEMORY_PER_BLOCK
  case 10: *v = 32; break;                           // WARP_SIZE
  case 16: *v = emu::g_sms; break;                   // MULTIPROCESSOR_COUNT
  case 39: *v = 2048; break;                         // MAX_THREADS_PER_MULTIPROCESSOR
  case 75: *v = emu::g_cc_major; break;              // COMPUTE_CAPABILITY_MAJOR
  case 76: *v = emu::g_cc_minor; break;              // COMPUTE_CAPABILITY_MINOR
  case 81: *v = emu::g_smem_optin + 1024; break;     // MAX_SHARED_MEMORY_PER_MULTIPROCESSOR
  case 97: *v = emu::g_smem_optin; break;            // MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
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
EMU_API CUresult cuCtxSynchronize() {
  LOCK;
  STICKY;
  return CUDA_SUCCESS;
}

// Writes `text` into a JIT log buffer option pair, if the caller gave one.
static void jit_log(unsigned n, int *opts, void **vals, int buf_opt, int size_opt, const char *text) {
  char *buf = nullptr;
  int size_i = -1;
  for (unsigned i = 0; i < n; i++) {
    if (opts[i] == buf_opt) buf = static_cast<char *>(vals[i]);
    if (opts[i] == size_opt) size_i = (int)i;
  }
  if (!buf || size_i < 0) return;
  size_t cap = (size_t)(uintptr_t)vals[size_i];
  if (cap == 0) return;
  size_t len = strlen(text);
  if (len >= cap) len = cap - 1;
  memcpy(buf, text, len);
  buf[len] = 0;
  vals[size_i] = reinterpret_cast<void *>((uintptr_t)len + 1);
}

EMU_API CUresult cuModuleLoadDataEx(void **mod, const void *image, unsigned n_opts, int *opts,
                                    void **vals) {
  if (!mod || !image || (n_opts && (!opts || !vals))) return CUDA_ERROR_INVALID_VALUE;
  LOCK;
  STICKY;
  const unsigned char *b = static_cast<const unsigned char *>(image);
  // A fatbin (nvcc -fatbin) starts with its magic 0xBA55ED50 (little-endian).
  bool fatbin = b[0] == 0x50 && b[1] == 0xed && b[2] == 0x55 && b[3] == 0xba;
  emu::Module *m = new emu::Module;
  m->is_ptx = !fatbin;
  int arch = emu::g_cc_major * 10 + emu::g_cc_minor;
  char info[256];
  if (!fatbin) {
    m->image = static_cast<const char *>(image);
    size_t v = m->image.find(".version");
    size_t t = m->image.find(".target sm_");
    // The emulator does not parse PTX: it accepts text with the directives and
    // kernel entries PTX has (and looks the entries up by name).
    if (v == std::string::npos || t == std::string::npos ||
        m->image.find(".entry ") == std::string::npos) {
      jit_log(n_opts, opts, vals, 5, 6,
              "mla-rt emulator: ptxas fatal: no .version / .target directive or no "
              ".entry: not PTX the emulator can run");
      delete m;
      return CUDA_ERROR_INVALID_PTX;
    }
    int target = atoi(m->image.c_str() + t + strlen(".target sm_"));
    if (target > arch) {
      snprintf(info, sizeof info,
               "mla-rt emulator: ptxas fatal: PTX .target sm_%d is newer than the device (sm_%d)",
               target, arch);
      jit_log(n_opts, opts, vals, 5, 6, info);
      delete m;
      return CUDA_ERROR_INVALID_PTX;
    }
    arch = target;
  }
  m->table = arch >= 80 ? mla_emu_kernels_800 : mla_emu_kernels_720;
  snprintf(info, sizeof info, "mla-rt emulator: loaded %s as the kernels compiled for sm_%d",
           fatbin ? "a fatbin" : "PTX", arch >= 80 ? 80 : 72);
  jit_log(n_opts, opts, vals, 3, 4, info);
  *mod = m;
  return CUDA_SUCCESS;
}
EMU_API CUresult cuModuleLoadData(void **mod, const void *image) {
  return cuModuleLoadDataEx(mod, image, 0, nullptr, nullptr);
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
  if (m->is_ptx) {
    std::string entry = std::string(".entry ") + name + "(";
    if (m->image.find(entry) == std::string::npos) return CUDA_ERROR_NOT_FOUND;
  }
  for (const mla_emu_kernel *k = m->table; k->name; k++) {
    if (strcmp(k->name, name) == 0) {
      emu::Function *f = new emu::Function{k, emu::kSmemDefault, false, 0};
      m->funcs.push_back(f);
      *fn = f;
      return CUDA_SUCCESS;
    }
  }
  if (m->is_ptx)
    fprintf(stderr, "mla-rt emulator: kernel %s is in the PTX but not in the emulator's table\n",
            name);
  return CUDA_ERROR_NOT_FOUND;
}
EMU_API CUresult cuFuncSetAttribute(void *fn, int attr, int value) {
  LOCK;
  emu::Function *f = static_cast<emu::Function *>(fn);
  if (!f) return CUDA_ERROR_INVALID_VALUE;
  if (attr == 8) { // MAX_DYNAMIC_SHARED_SIZE_BYTES: static + dynamic <= opt-in
    if (value < 0 || value + f->static_bytes > emu::g_smem_optin) return CUDA_ERROR_INVALID_VALUE;
    f->max_dyn_smem = value;
    f->raised = true;
  }
  return CUDA_SUCCESS;
}
// SHARED_SIZE_BYTES (1): the static shared memory seen in the function's
// launches so far (0 before the first; a driver knows it from the binary).
EMU_API CUresult cuFuncGetAttribute(int *v, int attr, void *fn) {
  if (!v || !fn) return CUDA_ERROR_INVALID_VALUE;
  LOCK;
  *v = attr == 1 ? static_cast<emu::Function *>(fn)->static_bytes : 0;
  return CUDA_SUCCESS;
}
// A model: at most 2048 threads and the shared memory of one multiprocessor.
EMU_API CUresult cuOccupancyMaxActiveBlocksPerMultiprocessor(int *n, void *fn, int block,
                                                             size_t dyn_smem) {
  if (!n || !fn || block <= 0) return CUDA_ERROR_INVALID_VALUE;
  int by_threads = 2048 / block;
  size_t per_block = dyn_smem + 1024;
  int by_smem = (int)((size_t)(emu::g_smem_optin + 1024) / per_block);
  *n = by_threads < by_smem ? by_threads : by_smem;
  return CUDA_SUCCESS;
}

EMU_API CUresult cuStreamCreate(void **s, unsigned) {
  if (!s) return CUDA_ERROR_INVALID_VALUE;
  LOCK;
  STICKY;
  *s = &g_stream_dummy;
  return CUDA_SUCCESS;
}
EMU_API CUresult cuStreamCreateWithPriority(void **s, unsigned flags, int) {
  return cuStreamCreate(s, flags);
}
EMU_API CUresult cuStreamDestroy_v2(void *) { return CUDA_SUCCESS; }
EMU_API CUresult cuStreamSynchronize(void *) {
  LOCK;
  STICKY;
  return CUDA_SUCCESS;
}
EMU_API CUresult cuStreamQuery(void *) {
  LOCK;
  STICKY;
  return CUDA_SUCCESS;
}

// Device memory: each allocation ends exactly (16-byte granularity) at a
// PROT_NONE guard page; fresh memory holds 0xff bytes (NaN as f32, f16, bf16).
EMU_API CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t bytes) {
  if (!p || bytes == 0) return CUDA_ERROR_INVALID_VALUE;
  LOCK;
  STICKY;
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
  emu::g_allocs.push_back(emu::Alloc{reinterpret_cast<uintptr_t>(user), bytes, map, len});
  *p = reinterpret_cast<uintptr_t>(user);
  return CUDA_SUCCESS;
}
EMU_API CUresult cuMemFree_v2(CUdeviceptr p) {
  LOCK;
  for (size_t i = 0; i < emu::g_allocs.size(); i++) {
    if (emu::g_allocs[i].user == p) {
      munmap(emu::g_allocs[i].map, emu::g_allocs[i].map_len);
      emu::g_allocs.erase(emu::g_allocs.begin() + (long)i);
      return emu::g_sticky ? emu::g_sticky : CUDA_SUCCESS;
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
// Copies and sets check their device ranges (a GPU would fault on a bad one).
#define RANGE(p, n)                                                                            \
  do {                                                                                         \
    if ((n) != 0 && !emu::in_alloc((uintptr_t)(p), (n))) return CUDA_ERROR_INVALID_VALUE;          \
  } while (0)
EMU_API CUresult cuMemcpyHtoD_v2(CUdeviceptr d, const void *s, size_t n) {
  LOCK;
  STICKY;
  RANGE(d, n);
  if (n) memcpy(DEV(d), s, n);
  return CUDA_SUCCESS;
}
EMU_API CUresult cuMemcpyDtoH_v2(void *d, CUdeviceptr s, size_t n) {
  LOCK;
  STICKY;
  RANGE(s, n);
  if (n) memcpy(d, DEV(s), n);
  return CUDA_SUCCESS;
}
EMU_API CUresult cuMemcpyDtoD_v2(CUdeviceptr d, CUdeviceptr s, size_t n) {
  LOCK;
  STICKY;
  RANGE(d, n);
  RANGE(s, n);
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
  LOCK;
  STICKY;
  RANGE(d, n);
  if (n) memset(DEV(d), v, n);
  return CUDA_SUCCESS;
}
EMU_API CUresult cuMemsetD8Async(CUdeviceptr d, unsigned char v, size_t n, void *) {
  return cuMemsetD8_v2(d, v, n);
}
EMU_API CUresult cuMemsetD32_v2(CUdeviceptr d, unsigned v, size_t n) {
  LOCK;
  STICKY;
  RANGE(d, n * 4);
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
  STICKY;
  emu::Function *f = static_cast<emu::Function *>(fn);
  if (!f || extra || !params) return CUDA_ERROR_INVALID_VALUE;
  unsigned long long threads = (unsigned long long)bx * by * bz;
  if (threads == 0 || threads > emu::kMaxThreads || gx == 0 || gy == 0 || gz == 0 ||
      gx > 0x7fffffffu || gy > 65535 || gz > 65535) {
    fprintf(stderr, "mla-rt emulator: %s: bad launch geometry (%u,%u,%u) x (%u,%u,%u)\n",
            f->k->name, gx, gy, gz, bx, by, bz);
    return CUDA_ERROR_INVALID_VALUE;
  }
  if ((int)smem > f->max_dyn_smem) {
    fprintf(stderr,
            "mla-rt emulator: %s: %u bytes of dynamic shared memory, limit %d "
            "(cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES) raises it up to %d)\n",
            f->k->name, smem, f->max_dyn_smem, emu::g_smem_optin);
    return CUDA_ERROR_INVALID_VALUE;
  }
  emu::install_signal_handlers();
  emu::g_nthreads = (unsigned)threads;
  emu::g_block_dim = emu::Dim{bx, by, bz};
  emu::g_grid_dim = emu::Dim{gx, gy, gz};
  if (smem + 16 > emu::g_dyn_cap) {
    free(emu::g_dyn_smem);
    emu::g_dyn_cap = smem + 16;
    emu::g_dyn_smem = static_cast<unsigned char *>(aligned_alloc(128, (emu::g_dyn_cap + 127) & ~(size_t)127));
  }
  emu::g_dyn_len = smem;
  emu::g_invoke = f->k->invoke;
  emu::g_params = params;
  emu::g_faulted = false;
  emu::g_launch_static.clear();
  emu::g_kernel_thread = pthread_self();
  emu::g_in_kernel = true;
  bool ok = true;
  emu::Dim bad{0, 0, 0};
  for (unsigned z = 0; z < gz && ok; z++)
    for (unsigned y = 0; y < gy && ok; y++)
      for (unsigned x = 0; x < gx && ok; x++) {
        emu::g_block_idx = emu::Dim{x, y, z};
        if (!emu::run_block()) {
          ok = false;
          bad = emu::Dim{x, y, z};
        }
      }
  emu::g_in_kernel = false;
  emu::g_cur = nullptr;
  // What a driver checks at cuFuncSetAttribute and launch: the function's
  // static shared memory plus its dynamic limit (or this launch's dynamic
  // shared memory) within the opt-in limit.
  size_t st = 0;
  for (const auto &e : emu::g_launch_static) st += e.second;
  emu::g_launch_static.clear();
  f->static_bytes = (int)st;
  if (ok && ((f->raised && f->max_dyn_smem + (int)st > emu::g_smem_optin) ||
             (int)(smem + st) > emu::g_smem_optin)) {
    fprintf(stderr,
            "mla-rt emulator: %s: %zu bytes of static shared memory plus a dynamic limit of %d "
            "(this launch: %u) pass the opt-in limit %d: a driver refuses that "
            "(cuFuncSetAttribute or cuLaunchKernel: CUDA_ERROR_INVALID_VALUE)\n",
            f->k->name, st, f->max_dyn_smem, smem, emu::g_smem_optin);
    return CUDA_ERROR_INVALID_VALUE;
  }
  if (ok) return CUDA_SUCCESS;
  const emu::FaultInfo &fi = emu::g_fault;
  fprintf(stderr,
          "mla-rt emulator: kernel %s faulted in block (%u,%u,%u) thread (%u,%u,%u): %s "
          "(address %p); CUDA error %d, sticky, %s\n",
          f->k->name, bad.x, bad.y, bad.z, fi.tid.x, fi.tid.y, fi.tid.z, fi.what.c_str(), fi.addr,
          fi.code,
          emu::g_sync_errors ? "returned by this launch (MLA_EMU_SYNC_ERRORS)"
                             : "reported at the next synchronisation, as on a GPU");
  emu::g_sticky = fi.code;
  return emu::g_sync_errors ? fi.code : CUDA_SUCCESS;
}

// Events: host timestamps (everything is synchronous here).
struct EmuEvent {
  double ms;
  bool recorded;
};
static double now_ms() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}
EMU_API CUresult cuEventCreate(void **e, unsigned) {
  if (!e) return CUDA_ERROR_INVALID_VALUE;
  *e = new EmuEvent{0.0, false};
  return CUDA_SUCCESS;
}
EMU_API CUresult cuEventDestroy_v2(void *e) {
  delete static_cast<EmuEvent *>(e);
  return CUDA_SUCCESS;
}
EMU_API CUresult cuEventRecord(void *e, void *) {
  if (!e) return CUDA_ERROR_INVALID_VALUE;
  LOCK;
  STICKY;
  static_cast<EmuEvent *>(e)->ms = now_ms();
  static_cast<EmuEvent *>(e)->recorded = true;
  return CUDA_SUCCESS;
}
EMU_API CUresult cuEventSynchronize(void *) {
  LOCK;
  STICKY;
  return CUDA_SUCCESS;
}
EMU_API CUresult cuEventQuery(void *) {
  LOCK;
  STICKY;
  return CUDA_SUCCESS;
}
EMU_API CUresult cuEventElapsedTime(float *ms, void *a, void *b) {
  if (!ms || !a || !b) return CUDA_ERROR_INVALID_VALUE;
  // As the driver: an event never recorded has no time (seen on an H200).
  if (!static_cast<EmuEvent *>(a)->recorded || !static_cast<EmuEvent *>(b)->recorded)
    return CUDA_ERROR_INVALID_HANDLE;
  *ms = (float)(static_cast<EmuEvent *>(b)->ms - static_cast<EmuEvent *>(a)->ms);
  return CUDA_SUCCESS;
}

static const char *err_name(int e) {
  switch (e) {
  case 0: return "CUDA_SUCCESS";
  case 1: return "CUDA_ERROR_INVALID_VALUE";
  case 2: return "CUDA_ERROR_OUT_OF_MEMORY";
  case 101: return "CUDA_ERROR_INVALID_DEVICE";
  case 200: return "CUDA_ERROR_INVALID_IMAGE";
  case 218: return "CUDA_ERROR_INVALID_PTX";
  case 400: return "CUDA_ERROR_INVALID_HANDLE";
  case 500: return "CUDA_ERROR_NOT_FOUND";
  case 700: return "CUDA_ERROR_ILLEGAL_ADDRESS";
  case 701: return "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES";
  case 716: return "CUDA_ERROR_MISALIGNED_ADDRESS";
  case 719: return "CUDA_ERROR_LAUNCH_FAILED";
  case 801: return "CUDA_ERROR_NOT_SUPPORTED";
  default: return "CUDA_ERROR_UNKNOWN";
  }
}
static const char *err_text(int e) {
  switch (e) {
  case 700: return "an illegal memory access was encountered";
  case 716: return "misaligned address";
  case 719: return "unspecified launch failure";
  case 218: return "a PTX JIT compilation failed";
  case 801: return "operation not supported by the mla-rt CPU emulator";
  default: return err_name(e);
  }
}
EMU_API CUresult cuGetErrorName(int e, const char **p) {
  if (!p) return CUDA_ERROR_INVALID_VALUE;
  *p = err_name(e);
  return CUDA_SUCCESS;
}
EMU_API CUresult cuGetErrorString(int e, const char **p) {
  if (!p) return CUDA_ERROR_INVALID_VALUE;
  *p = err_text(e);
  return CUDA_SUCCESS;
}
