// The kernels of crates/mla-cuda/kernels/mla.cu compiled for the CPU emulator
// (emu.cpp), once per architecture: make-fake-cuda.sh builds this file twice,
// with -DMLA_EMU_ARCH=720 (what the sm_72 PTX holds) and -DMLA_EMU_ARCH=800
// (the sm_80 PTX: tensor-core and cp.async paths), each defining its own table
// mla_emu_kernels_<arch> of every kernel entry point.
#include "emu.h"

#include <type_traits>
#include <utility>

#if !defined(MLA_EMU_ARCH)
#error "build with -DMLA_EMU_ARCH=720 or 800"
#endif
#define MLA_EMU 1
#include "../../crates/mla-cuda/kernels/mla.cu"

namespace {

template <typename... A, size_t... I>
void call_with(void (*fn)(A...), void **p, std::index_sequence<I...>) {
  fn(*static_cast<std::remove_reference_t<A> *>(p[I])...);
}
template <typename... A> void invoke(void (*fn)(A...), void **p) {
  call_with(fn, p, std::index_sequence_for<A...>{});
}

} // namespace

#define MLA_EMU_CAT2(a, b) a##b
#define MLA_EMU_CAT(a, b) MLA_EMU_CAT2(a, b)
#define MLA_EMU_ENTRY(name) {#name, [](void **p) { invoke(name, p); }},
extern "C" const mla_emu_kernel MLA_EMU_CAT(mla_emu_kernels_, MLA_EMU_ARCH)[] = {
    MLA_KERNEL_LIST(MLA_EMU_ENTRY){nullptr, nullptr}};
