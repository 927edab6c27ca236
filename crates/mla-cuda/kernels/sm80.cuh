// Part of mla-rt's CUDA kernels: included by mla.cu (in this order), never compiled alone.
// sm_80 instructions (cp.async, mma.sync) and their fragment layouts; host versions in the emulator.

// ---------------------------------------------------------------------------
// sm_80 instructions: cp.async (asynchronous global -> shared copies) and the
// tensor cores' mma.sync. Each has a host version in the emulator (emu.cpp).

#if MLA_ARCH >= 800
// 16 bytes from `src` (global, 16-byte aligned) to `dst` (shared, 16-byte
// aligned), of which the first `src_bytes` (0..16) are read and the rest zero
// filled; the data lands in `dst` after a later cp_async_wait<N>.
MLA_DEV void cp_async16(void *dst, const void *src, u32 src_bytes) {
#if defined(MLA_EMU)
  mla_emu_cp_async16(dst, src, src_bytes);
#else
  u64 s64, g64;
  asm volatile("cvta.to.shared.u64 %0, %1;" : "=l"(s64) : "l"(dst));
  asm volatile("cvta.to.global.u64 %0, %1;" : "=l"(g64) : "l"(src));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"((u32)s64), "l"(g64),
               "r"(src_bytes)
               : "memory");
#endif
}

MLA_DEV void cp_async_commit() {
#if defined(MLA_EMU)
  mla_emu_cp_async_commit();
#else
  asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}

// Waits until at most N of this thread's committed groups are still in flight.
template <int N> MLA_DEV void cp_async_wait() {
#if defined(MLA_EMU)
  mla_emu_cp_async_wait(N);
#else
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
#endif
}

// d = A * B + c on the warp's tensor cores: A 16x16 (row-major fragments), B
// 16x8 (column-major fragments), c and d 16x8 f32; DT 1 = f16, 2 = bf16.
// Fragment layout (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating
// point type"): with g = lane / 4 and q = lane % 4, register j of A holds two
// elements (low half first) at row g + 8 * (j & 1), columns 2q + 8 * (j >> 1)
// and +1; register j of B holds rows (k) 2q + 8j and +1 of column g; element i of
// c / d is row g + 8 * (i >> 1), column 2q + (i & 1). The helpers below
// (frag_*) load and store fragments in exactly this layout.
template <int DT>
MLA_DEV void mma16816(float d[4], const u32 a[4], const u32 b[2], const float c[4]) {
#if defined(MLA_EMU)
  mla_emu_mma_m16n8k16(d, a, b, c, DT);
#else
  if (DT == 2) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]),
                   "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
  } else {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]),
                   "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
  }
#endif
}

// A fragment of a row-major 16x16 tile of 16-bit elements at `s` (row stride
// `ld` elements, even; 4-byte aligned rows), columns k0 .. k0+15.
MLA_DEV void frag_a(u32 a[4], const u16 *s, u32 ld, u32 k0, u32 lane) {
  u32 g = lane >> 2, q = lane & 3u;
  const u16 *r0 = s + (u64)g * ld + k0 + 2u * q;
  const u16 *r8 = r0 + 8u * ld;
  a[0] = *(const u32 *)r0;
  a[1] = *(const u32 *)r8;
  a[2] = *(const u32 *)(r0 + 8);
  a[3] = *(const u32 *)(r8 + 8);
}

// B fragment (16 x 8, k x n) from storage with n major: element (k, n) at
// s[n * ld + k] (the cache tile for scores: row n = cached position, k contiguous).
MLA_DEV void frag_b_nk(u32 b[2], const u16 *s, u32 ld, u32 k0, u32 n0, u32 lane) {
  u32 g = lane >> 2, q = lane & 3u;
  const u16 *r = s + (u64)(n0 + g) * ld + k0 + 2u * q;
  b[0] = *(const u32 *)r;
  b[1] = *(const u32 *)(r + 8);
}

// B fragment (16 x 8, k x n) from storage with k major: element (k, n) at
// s[k * ld + n] (the cache tile for the latent sums: row k = cached position).
MLA_DEV void frag_b_kn(u32 b[2], const u16 *s, u32 ld, u32 k0, u32 n0, u32 lane) {
  u32 g = lane >> 2, q = lane & 3u;
  const u16 *c = s + (u64)(k0 + 2u * q) * ld + n0 + g;
  b[0] = (u32)c[0] | ((u32)c[ld] << 16);
  b[1] = (u32)c[8u * ld] | ((u32)c[9u * ld] << 16);
}

// Row and column of element i (0..3) of a c / d fragment.
MLA_DEV u32 frag_c_row(u32 lane, u32 i) { return (lane >> 2) + 8u * (i >> 1); }
MLA_DEV u32 frag_c_col(u32 lane, u32 i) { return 2u * (lane & 3u) + (i & 1u); }
#endif // MLA_ARCH >= 800
