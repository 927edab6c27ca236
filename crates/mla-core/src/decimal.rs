//! Exact decimal-to-binary conversion without panics: a JSON number's text to
//! the correctly rounded `f64` or `f32` (round half to even), in fixed memory.
//!
//! `core`'s `str::parse::<f64>` is correct too, but its slow path (long
//! decimals) holds panic paths, which the C firmware's no-panic link check
//! cannot accept. Here the value `w * 10^q` (`w` at most 40 significant digits;
//! a shortest round-trip form, as Python writes floats, has at most 17) is
//! divided out exactly with a small fixed-size big integer: `P + 2` quotient
//! bits by shift-and-subtract, the remainder as the sticky bit, then one
//! rounding, subnormals included. Numbers with more significant digits are
//! refused (`None`), as are values that overflow to infinity.

/// Limbs of [`Big`]: 1536 bits, enough for the largest operand: a divisor
/// `10^(326 + MAX_DIGITS)` shifted left by `2 (p + 2)` bits (about 1440 bits).
const LIMBS: usize = 48;

/// A non-negative integer below `2^(32 * LIMBS)`, little-endian `u32` limbs.
/// Every operation reports overflow instead of wrapping or panicking.
#[derive(Clone, Copy)]
struct Big {
    limbs: [u32; LIMBS],
}

impl Big {
    fn from_u64(v: u64) -> Big {
        let mut limbs = [0u32; LIMBS];
        let [lo, hi, ..] = &mut limbs;
        *lo = v as u32;
        *hi = (v >> 32) as u32;
        Big { limbs }
    }

    /// `self *= m`; `None` on overflow.
    fn mul_small(&mut self, m: u32) -> Option<()> {
        let mut carry = 0u64;
        for l in self.limbs.iter_mut() {
            let v = u64::from(*l) * u64::from(m) + carry;
            *l = v as u32;
            carry = v >> 32;
        }
        (carry == 0).then_some(())
    }

    /// `self += v`; `None` on overflow.
    fn add_small(&mut self, v: u32) -> Option<()> {
        let mut carry = u64::from(v);
        for l in self.limbs.iter_mut() {
            if carry == 0 {
                break;
            }
            let x = u64::from(*l) + carry;
            *l = x as u32;
            carry = x >> 32;
        }
        (carry == 0).then_some(())
    }

    /// `self *= 10^k`; `None` on overflow.
    fn mul_pow10(&mut self, mut k: u32) -> Option<()> {
        while k >= 9 {
            self.mul_small(1_000_000_000)?;
            k -= 9;
        }
        let mut m = 1u32;
        for _ in 0..k {
            m *= 10;
        }
        self.mul_small(m)
    }

    /// Bits needed (0 for zero).
    fn bit_len(&self) -> u32 {
        for (i, l) in self.limbs.iter().enumerate().rev() {
            if *l != 0 {
                return (i as u32) * 32 + (32 - l.leading_zeros());
            }
        }
        0
    }

    /// `self <<= n`; `None` when bits would be lost.
    fn shl(&mut self, n: u32) -> Option<()> {
        if self.bit_len().saturating_add(n) > (LIMBS as u32) * 32 {
            return None;
        }
        let (words, bits) = ((n / 32) as usize, n % 32);
        let mut out = [0u32; LIMBS];
        for (i, o) in out.iter_mut().enumerate() {
            let Some(src) = i.checked_sub(words) else {
                continue;
            };
            let lo = self.limbs.get(src).copied().unwrap_or(0);
            let below = src
                .checked_sub(1)
                .and_then(|j| self.limbs.get(j))
                .copied()
                .unwrap_or(0);
            *o = if bits == 0 {
                lo
            } else {
                (lo << bits) | (below >> (32 - bits))
            };
        }
        self.limbs = out;
        Some(())
    }

    /// `self >>= 1`.
    fn shr1(&mut self) {
        let mut carry = 0u32;
        for l in self.limbs.iter_mut().rev() {
            let v = *l;
            *l = (v >> 1) | (carry << 31);
            carry = v & 1;
        }
    }

    fn ge(&self, other: &Big) -> bool {
        for (a, b) in self.limbs.iter().zip(other.limbs.iter()).rev() {
            if a != b {
                return a > b;
            }
        }
        true
    }

    /// `self -= other` (`self >= other`).
    fn sub(&mut self, other: &Big) {
        let mut borrow = 0u64;
        for (a, b) in self.limbs.iter_mut().zip(other.limbs.iter()) {
            let v = u64::from(*a)
                .wrapping_sub(u64::from(*b))
                .wrapping_sub(borrow);
            *a = v as u32;
            borrow = (v >> 63) & 1;
        }
    }

    fn is_zero(&self) -> bool {
        self.limbs.iter().all(|&l| l == 0)
    }
}

/// A binary floating-point format: `P` significand bits (hidden bit
/// included), the exponent of the smallest subnormal's unit, and the largest
/// exponent of a finite value's unit.
struct Format {
    p: u32,
    min_unit: i32,
    max_unit: i32,
}

const F64: Format = Format {
    p: 53,
    min_unit: -1074,
    max_unit: 971,
};
const F32: Format = Format {
    p: 24,
    min_unit: -149,
    max_unit: 104,
};

/// Most significant digits taken (trailing zeros do not count).
const MAX_DIGITS: u32 = 40;

/// A decimal: sign, significand `w` (`digits` significant digits, no trailing
/// zero) and exponent `q`: the value `w * 10^q`.
struct Decimal {
    neg: bool,
    w: Big,
    digits: u32,
    q: i64,
}

/// The decimal of grammar-checked JSON number text; `None` for more than
/// [`MAX_DIGITS`] significant digits.
fn split(text: &str) -> Option<Decimal> {
    let b = text.as_bytes();
    let (neg, rest) = match b.split_first() {
        Some((b'-', r)) => (true, r),
        _ => (false, b),
    };
    let mut w = Big::from_u64(0);
    let (mut digits, mut zeros) = (0u32, 0u32);
    let mut q = 0i64;
    let mut frac = false;
    let mut i = 0usize;
    while let Some(&c) = rest.get(i) {
        match c {
            b'0' => {
                // Leading zeros are nothing; later ones wait for a nonzero digit.
                if digits > 0 {
                    zeros = zeros.saturating_add(1);
                }
                if frac {
                    q = q.saturating_sub(1);
                }
            }
            b'1'..=b'9' => {
                digits = digits.saturating_add(zeros).saturating_add(1);
                if digits > MAX_DIGITS {
                    return None;
                }
                w.mul_pow10(zeros.saturating_add(1))?;
                w.add_small(u32::from(c - b'0'))?;
                zeros = 0;
                if frac {
                    q = q.saturating_sub(1);
                }
            }
            b'.' => frac = true,
            b'e' | b'E' => break,
            _ => return None,
        }
        i = i.saturating_add(1);
    }
    // Zeros after the last nonzero digit scale the value by 10 each.
    q = q.saturating_add(i64::from(zeros));
    if let Some(exp) = rest.get(i.saturating_add(1)..) {
        let (eneg, edigits) = match exp.split_first() {
            Some((b'-', r)) => (true, r),
            Some((b'+', r)) => (false, r),
            _ => (false, exp),
        };
        let mut e = 0i64;
        for &c in edigits {
            if !c.is_ascii_digit() {
                return None;
            }
            // Saturating: a huge exponent is over- or underflow below.
            e = e.saturating_mul(10).saturating_add(i64::from(c - b'0'));
        }
        q = q.saturating_add(if eneg { -e } else { e });
    }
    Some(Decimal { neg, w, digits, q })
}

/// True when the text has more significant digits than this conversion takes.
pub(crate) fn too_long(text: &str) -> bool {
    split(text).is_none()
}

/// `w * 10^q` (`w` nonzero, `digits` digits) rounded to `fmt`: `(m, e)` with
/// the value `m * 2^e`, `m <= 2^p`; `None` on overflow.
fn round(w: Big, digits: u32, q: i64, fmt: &Format) -> Option<(u64, i32)> {
    // The value lies in [10^(digits - 1 + q), 10^(digits + q)). Past 10^310 it
    // is surely infinite, below 10^-326 (under half the smallest subnormal) it
    // surely rounds to zero.
    let top = q.saturating_add(i64::from(digits));
    if top > 310 {
        return None;
    }
    if top < -326 {
        return Some((0, 0));
    }
    let (mut a, mut b) = (w, Big::from_u64(1));
    if q >= 0 {
        a.mul_pow10(u32::try_from(q).ok()?)?;
    } else {
        b.mul_pow10(u32::try_from(q.unsigned_abs()).ok()?)?;
    }
    // Scale so that the quotient a / b has p + 1 or p + 2 bits:
    // value = (a / b) * 2^-s.
    let s = (fmt.p as i32 + 1) - (a.bit_len() as i32 - b.bit_len() as i32);
    if s > 0 {
        a.shl(s.unsigned_abs())?;
    } else {
        b.shl(s.unsigned_abs())?;
    }
    // Shift-and-subtract: the quotient is below 2^(p + 2).
    let bits = fmt.p + 2;
    b.shl(bits - 1)?;
    let mut quot = 0u64;
    for _ in 0..bits {
        quot <<= 1;
        if a.ge(&b) {
            a.sub(&b);
            quot |= 1;
        }
        b.shr1();
    }
    let mut sticky = !a.is_zero();
    // value = quot * 2^e_q; keep p + 1 bits (p plus one guard bit).
    let mut e_q = -s;
    while quot >= 1u64 << (fmt.p + 1) {
        sticky |= quot & 1 != 0;
        quot >>= 1;
        e_q += 1;
    }
    // Subnormals: the guard bit's unit may not go below min_unit - 1.
    while e_q < fmt.min_unit - 1 {
        sticky |= quot & 1 != 0;
        quot >>= 1;
        e_q += 1;
        if quot == 0 {
            return Some((0, 0));
        }
    }
    let (mut m, guard) = (quot >> 1, quot & 1 != 0);
    if guard && (sticky || m & 1 != 0) {
        m += 1;
    }
    let e = e_q + 1;
    // Normalise m = 2^p (a carry out of rounding) to keep m * 2^e the same.
    let (m, e) = if m == 1u64 << fmt.p {
        (m >> 1, e + 1)
    } else {
        (m, e)
    };
    if e > fmt.max_unit {
        return None;
    }
    Some((m, e))
}

/// `2^e` as an f64 for `e` in `-1074..=1023`.
fn pow2_f64(e: i32) -> f64 {
    if e >= -1022 {
        f64::from_bits(((e + 1023) as u64) << 52)
    } else {
        f64::from_bits(1u64 << ((e + 1074).clamp(0, 51) as u32))
    }
}

/// `2^e` as an f32 for `e` in `-149..=127`.
fn pow2_f32(e: i32) -> f32 {
    if e >= -126 {
        f32::from_bits(((e + 127) as u32) << 23)
    } else {
        f32::from_bits(1u32 << ((e + 149).clamp(0, 22) as u32))
    }
}

/// The correctly rounded f64 of grammar-checked JSON number text; `None` when
/// it overflows or has more than 19 significant digits.
pub(crate) fn to_f64(text: &str) -> Option<f64> {
    let Decimal { neg, w, digits, q } = split(text)?;
    let v = if digits == 0 {
        0.0
    } else {
        let (m, e) = round(w, digits, q, &F64)?;
        // m <= 2^53 and e in [min_unit, max_unit]: both factors are exact and
        // their product m * 2^e is representable, so the multiplication is exact.
        m as f64 * pow2_f64(e)
    };
    Some(if neg { -v } else { v })
}

/// The correctly rounded f32 of grammar-checked JSON number text (directly, not
/// through f64); `None` as [`to_f64`].
pub(crate) fn to_f32(text: &str) -> Option<f32> {
    let Decimal { neg, w, digits, q } = split(text)?;
    let v = if digits == 0 {
        0.0
    } else {
        let (m, e) = round(w, digits, q, &F32)?;
        m as f32 * pow2_f32(e)
    };
    Some(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::format;

    #[test]
    fn agrees_with_core_parsing() {
        let cases = [
            "0",
            "-0",
            "1",
            "-1",
            "0.5",
            "1e-06",
            "1e-6",
            "0.01",
            "10000.0",
            "0.707",
            "32",
            "1.0299999713897705",
            "0.1",
            "0.2",
            "0.3",
            "123456789012345678",
            "9007199254740993",
            "1e22",
            "1e23",
            "8.98846567431158e307",
            "1.7976931348623157e308",
            "2.2250738585072014e-308",
            "2.2250738585072011e-308",
            "4.9406564584124654e-324",
            "2.4703282292062328e-324",
            "5e-324",
            "1e-320",
            "3.4028234663852886e38",
            "1.401298464324817e-45",
            "7.006492321624085e-46",
            "1.1754943508222875e-38",
            "0.000001",
            "1000000.0",
            "6.103515625e-05",
            "0.30000000000000004",
            "1.5e-5",
            "4096",
            "1e-2",
            "0.0",
            "100000000000000000000",
            "2.5e-324",
            "1.0000000000000000000",
        ];
        for t in cases {
            let want = t.parse::<f64>().unwrap();
            assert_eq!(to_f64(t).map(f64::to_bits), Some(want.to_bits()), "f64 {t}");
            let want = t.parse::<f32>().unwrap();
            if want.is_finite() {
                assert_eq!(to_f32(t).map(f32::to_bits), Some(want.to_bits()), "f32 {t}");
            } else {
                assert_eq!(to_f32(t), None, "f32 {t}");
            }
        }
        // Overflow; too many significant digits.
        assert_eq!(to_f64("1e309"), None);
        assert_eq!(to_f64("1.8e308"), None);
        assert_eq!(to_f32("3.5e38"), None);
        let forty = format!("1.{}1", "0".repeat(38)); // 40 significant digits
        let forty_one = format!("1.{}1", "0".repeat(39));
        assert_eq!(to_f64(&forty), Some(1.0));
        assert_eq!(to_f64(&forty_one), None);
        assert!(too_long(&forty_one) && !too_long(&forty));
        assert!(!too_long("1e999"));
        assert_eq!(to_f64("1e-400"), Some(0.0));
        assert_eq!(to_f64("1e99999999999999999999"), None);
        assert_eq!(to_f64("-1e-99999999999999999999"), Some(-0.0));
    }

    #[test]
    #[cfg_attr(miri, ignore)] // tens of thousands of conversions
    fn random_decimals_round_like_core() {
        // Random significands and exponents over the whole range, both formats.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let digits = 1 + next() % 19;
            let w = next() % 10u64.pow(digits as u32);
            // Sometimes a long tail of digits (up to 40 significant in all).
            let tail = if next() % 4 == 0 {
                format!("{}{}", next() % 1_000_000_000_000_000, next() % 10_000)
            } else {
                std::string::String::new()
            };
            let e = (next() % 700) as i64 - 350;
            let t = format!("{w}{tail}e{e}");
            let want = t.parse::<f64>().unwrap();
            if want.is_finite() {
                assert_eq!(to_f64(&t).map(f64::to_bits), Some(want.to_bits()), "{t}");
            } else {
                assert_eq!(to_f64(&t), None, "{t}");
            }
            let e = (next() % 100) as i64 - 55;
            let t = format!("{w}{tail}e{e}");
            let want = t.parse::<f32>().unwrap();
            if want.is_finite() {
                assert_eq!(to_f32(&t).map(f32::to_bits), Some(want.to_bits()), "{t}");
            } else {
                assert_eq!(to_f32(&t), None, "{t}");
            }
        }
    }
}
