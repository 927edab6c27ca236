//! FP8 E4M3 (the OCP "E4M3FN" format DeepSeek's checkpoints and caches use):
//! 1 sign bit, 4 exponent bits (bias 7), 3 mantissa bits, no infinities, NaN
//! only at `0x7f`/`0xff`, largest finite value 448.
//!
//! One conversion for the whole crate: FP8 weights, the FP8 latent cache and the
//! FP8 index cache all decode through [`to_f32`] (exact) and encode through
//! [`from_f32`] (round to nearest even, saturating to ±448).

/// The largest finite E4M3 value.
pub const MAX: f32 = 448.0;

/// Decodes one E4M3 byte exactly (every E4M3 value is an f32 value).
#[inline]
pub const fn to_f32(b: u8) -> f32 {
    let sign = (b as u32 & 0x80) << 24;
    let exp = (b >> 3) & 0x0f;
    let man = (b & 0x07) as u32;
    if exp == 0x0f && man == 0x07 {
        return f32::from_bits(sign | 0x7fc0_0000);
    }
    if exp == 0 {
        // Subnormal: man * 2^-9, exact in f32 (at most 3 significant bits).
        let v = man as f32 * (1.0 / 512.0);
        return if sign != 0 { -v } else { v };
    }
    // Normal: rebias 7 -> 127 and widen the mantissa 3 -> 23 bits.
    f32::from_bits(sign | ((exp as u32 + 120) << 23) | (man << 20))
}

/// The 256 decoded values, for table lookups in kernels.
pub const TABLE: [f32; 256] = {
    let mut t = [0.0f32; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = to_f32(i as u8);
        i += 1;
    }
    t
};

/// Encodes an f32 as E4M3: round to nearest, ties to even; magnitudes above
/// 448 saturate to ±448 (as DeepSeek's quantizers clamp); NaN stays NaN.
#[inline]
pub fn from_f32(v: f32) -> u8 {
    let bits = v.to_bits();
    let sign = ((bits >> 24) & 0x80) as u8;
    let a = f32::from_bits(bits & 0x7fff_ffff);
    if a.is_nan() {
        return sign | 0x7f;
    }
    if a >= MAX {
        return sign | 0x7e;
    }
    // Below 2^-6 every E4M3 value is a multiple of 2^-9 (subnormals): round
    // a * 512 to an integer, ties to even. 2^-6 itself is the first normal and
    // the code for man 8 at exp 0 carries into exp 1 on its own.
    if a < 1.0 / 64.0 {
        let q = a * 512.0; // exact: a power-of-two scaling
        let fl = libm::floorf(q);
        let frac = q - fl;
        let mut n = fl as u32;
        if frac > 0.5 || (frac == 0.5 && n & 1 == 1) {
            n += 1;
        }
        return sign | n as u8;
    }
    // Normal: keep 3 mantissa bits of the f32, round the dropped 20 bits to
    // nearest even; a carry out of the mantissa bumps the exponent (448 at
    // most, since a < 448 rounds to at most 448).
    let e = (a.to_bits() >> 23) as i32 - 127; // -6..=8
    let m = a.to_bits() & 0x007f_ffff;
    let mut code = (((e + 7) as u32) << 3) | (m >> 20);
    let rest = m & 0x000f_ffff;
    if rest > 0x8_0000 || (rest == 0x8_0000 && code & 1 == 1) {
        code += 1;
    }
    sign | code as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert_eq!(to_f32(0x00), 0.0);
        assert_eq!(to_f32(0x80).to_bits(), (-0.0f32).to_bits());
        assert_eq!(to_f32(0x01), 1.0 / 512.0); // smallest subnormal
        assert_eq!(to_f32(0x07), 7.0 / 512.0); // largest subnormal
        assert_eq!(to_f32(0x08), 1.0 / 64.0); // smallest normal
        assert_eq!(to_f32(0x38), 1.0);
        assert_eq!(to_f32(0x3c), 1.5);
        assert_eq!(to_f32(0x7e), 448.0);
        assert_eq!(to_f32(0xfe), -448.0);
        assert!(to_f32(0x7f).is_nan() && to_f32(0xff).is_nan());
    }

    #[test]
    fn every_code_round_trips() {
        for b in 0..=255u8 {
            let v = to_f32(b);
            if v.is_nan() {
                assert!(to_f32(from_f32(v)).is_nan());
                continue;
            }
            assert_eq!(from_f32(v), b, "code {b:#04x} value {v}");
            assert_eq!(TABLE[b as usize].to_bits(), v.to_bits());
        }
    }

    #[test]
    #[cfg_attr(miri, ignore)] // the sweep is ~17M comparisons: minutes under Miri
    fn rounds_to_nearest_even_and_saturates() {
        // Between 1.0 (0x38) and 1.125 (0x39): midpoint ties to even (0x38).
        assert_eq!(from_f32(1.0625), 0x38);
        assert_eq!(from_f32(1.0626), 0x39);
        // Between 1.125 (0x39) and 1.25 (0x3a): tie goes up to even 0x3a.
        assert_eq!(from_f32(1.1875), 0x3a);
        // Subnormal ties: 0.5/512 -> 0, 1.5/512 -> 2/512, 2.5/512 -> 2/512.
        assert_eq!(from_f32(0.5 / 512.0), 0x00);
        assert_eq!(from_f32(1.5 / 512.0), 0x02);
        assert_eq!(from_f32(2.5 / 512.0), 0x02);
        // Largest subnormal rounds up into the first normal.
        assert_eq!(from_f32(7.6 / 512.0), 0x08);
        assert_eq!(from_f32(1e9), 0x7e);
        assert_eq!(from_f32(-1e9), 0xfe);
        assert_eq!(from_f32(f32::INFINITY), 0x7e);
        assert_eq!(from_f32(440.0), 0x7e); // 432 < 440 < 448: nearest is 448
        assert_eq!(from_f32(-0.0), 0x80);
        // Nearest-value property on a dense sweep of finite inputs.
        let finite: [f32; 254] = {
            let mut t = [0.0; 254];
            let mut k = 0;
            for b in 0..=255u8 {
                if !to_f32(b).is_nan() {
                    t[k] = to_f32(b);
                    k += 1;
                }
            }
            t
        };
        let mut x = -460.0f32;
        while x < 460.0 {
            let got = to_f32(from_f32(x));
            let best = finite
                .iter()
                .map(|&c| (c - x.clamp(-MAX, MAX)).abs())
                .fold(f32::INFINITY, f32::min);
            assert_eq!((got - x.clamp(-MAX, MAX)).abs(), best, "x {x}");
            x += 0.0137;
        }
    }
}
