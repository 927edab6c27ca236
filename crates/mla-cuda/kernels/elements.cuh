// Part of mla-rt's CUDA kernels: included by mla.cu (in this order), never compiled alone.
// Element types of weights and caches (f32, f16, bf16): conversions and loads, widened to f32 in registers.

// ---------------------------------------------------------------------------
// Element types: 0 = f32, 1 = f16 (IEEE binary16), 2 = bf16.

MLA_DEV float f16_to_f32(u32 h) {
  u32 sign = (h & 0x8000u) << 16;
  u32 e = (h >> 10) & 0x1fu;
  u32 m = h & 0x3ffu;
  if (e == 0) {
    // zero or subnormal: m * 2^-24
    float f = (float)m * 5.9604644775390625e-8f;
    return mla_bits_to_f32(mla_f32_to_bits(f) | sign);
  }
  if (e == 31) return mla_bits_to_f32(sign | 0x7f800000u | (m << 13));
  return mla_bits_to_f32(sign | ((e + 112u) << 23) | (m << 13));
}

// Round to nearest even, like the `half` crate's f16::from_f32.
MLA_DEV u32 f32_to_f16(float f) {
  u32 u = mla_f32_to_bits(f);
  u32 sign = (u >> 16) & 0x8000u;
  u &= 0x7fffffffu;
  if (u >= 0x7f800000u) return sign | 0x7c00u | (u > 0x7f800000u ? 0x200u : 0u);
  if (u >= 0x477ff000u) return sign | 0x7c00u; // rounds to infinity
  if (u < 0x38800000u) {                       // below 2^-14: subnormal or zero
    if (u <= 0x33000000u) return sign;         // <= 2^-25 rounds to zero
    u32 e = u >> 23;
    u32 m = (u & 0x7fffffu) | 0x800000u;
    u32 shift = 126u - e; // 14 ..= 24
    u32 r = m >> shift;
    u32 rem = m & ((1u << shift) - 1u);
    u32 half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (r & 1u))) r++;
    return sign | r;
  }
  u += 0xfffu + ((u >> 13) & 1u);
  return sign | ((u - 0x38000000u) >> 13);
}

MLA_DEV float bf16_to_f32(u32 b) { return mla_bits_to_f32(b << 16); }

// Round to nearest even, like the `half` crate's bf16::from_f32.
MLA_DEV u32 f32_to_bf16(float f) {
  u32 u = mla_f32_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u; // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return u >> 16;
}

// A 16-bit element of type DT (1 f16, 2 bf16) to f32 and back.
template <int DT> MLA_DEV float half_to_f32(u32 h) {
  return DT == 1 ? f16_to_f32(h) : bf16_to_f32(h);
}
template <int DT> MLA_DEV u32 f32_to_half(float f) {
  return DT == 1 ? f32_to_f16(f) : f32_to_bf16(f);
}

template <int DT> MLA_DEV float ld(const void *base, u64 i) {
  if (DT == 0) return ((const float *)base)[i];
  if (DT == 1) return f16_to_f32(((const u16 *)base)[i]);
  return bf16_to_f32(((const u16 *)base)[i]);
}

template <int DT> MLA_DEV void st(void *base, u64 i, float v) {
  if (DT == 0) ((float *)base)[i] = v;
  else if (DT == 1) ((u16 *)base)[i] = (u16)f32_to_f16(v);
  else ((u16 *)base)[i] = (u16)f32_to_bf16(v);
}

// Bytes of one element of type DT.
#define MLA_ESIZE(DT) ((DT) == 0 ? 4u : 2u)

struct f4 {
  float a, b, c, d;
};

// Four consecutive elements starting at element 4*i4 (16-byte aligned for f32,
// 8-byte aligned for f16/bf16).
template <int DT> MLA_DEV f4 ld4(const void *base, u64 i4) {
  f4 r;
#if defined(MLA_EMU)
  mla_emu_check_align((const char *)base + i4 * (DT == 0 ? 16u : 8u), DT == 0 ? 16u : 8u);
#endif
  if (DT == 0) {
    mla_v4 v = ((const mla_v4 *)base)[i4];
    r.a = v.x; r.b = v.y; r.c = v.z; r.d = v.w;
  } else {
    mla_u2 v = ((const mla_u2 *)base)[i4];
    u32 lo = v.x, hi = v.y;
    r.a = half_to_f32<DT>(lo & 0xffffu); r.b = half_to_f32<DT>(lo >> 16);
    r.c = half_to_f32<DT>(hi & 0xffffu); r.d = half_to_f32<DT>(hi >> 16);
  }
  return r;
}

MLA_DEV f4 ld4f(const float *base, u64 i4) { return ld4<0>((const void *)base, i4); }

// Eight consecutive 16-bit elements from element 8*i8 (16-byte aligned).
template <int DT> MLA_DEV void ld8h(const void *base, u64 i8, f4 *lo, f4 *hi) {
#if defined(MLA_EMU)
  mla_emu_check_align((const char *)base + i8 * 16u, 16u);
#endif
  mla_u4 v = ((const mla_u4 *)base)[i8];
  lo->a = half_to_f32<DT>(v.x & 0xffffu); lo->b = half_to_f32<DT>(v.x >> 16);
  lo->c = half_to_f32<DT>(v.y & 0xffffu); lo->d = half_to_f32<DT>(v.y >> 16);
  hi->a = half_to_f32<DT>(v.z & 0xffffu); hi->b = half_to_f32<DT>(v.z >> 16);
  hi->c = half_to_f32<DT>(v.w & 0xffffu); hi->d = half_to_f32<DT>(v.w >> 16);
}

MLA_DEV float dot4(f4 a, f4 b) { return a.a * b.a + a.b * b.b + a.c * b.c + a.d * b.d; }

// A 16-byte copy global -> shared (both 16-byte aligned), plain.
MLA_DEV void copy16(void *dst, const void *src) {
#if defined(MLA_EMU)
  mla_emu_check_align(dst, 16u);
  mla_emu_check_align(src, 16u);
#endif
  *(mla_u4 *)dst = *(const mla_u4 *)src;
}
