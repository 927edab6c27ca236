//! Numbers: [`Number`], a grammar-checked number as written, and its exact conversions.

/// A number as written, grammar-checked (`-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Number<'a> {
    pub(super) text: &'a str,
}

impl<'a> Number<'a> {
    /// The number's text.
    pub fn text(&self) -> &'a str {
        self.text
    }

    /// True when written without fraction and exponent (`-3`, `0`, `42`).
    pub fn is_integer(&self) -> bool {
        !self.text.bytes().any(|b| matches!(b, b'.' | b'e' | b'E'))
    }

    /// The value, when written as a non-negative integer that fits a `u64`
    /// (`1.0`, `1e3` and `-0` are not).
    pub fn as_u64(&self) -> Option<u64> {
        if !self.is_integer() || self.text.starts_with('-') {
            return None;
        }
        self.text.bytes().try_fold(0u64, |acc, b| {
            acc.checked_mul(10)?
                .checked_add(u64::from(b.wrapping_sub(b'0')))
        })
    }

    /// The value, when written as an integer that fits an `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        if !self.is_integer() {
            return None;
        }
        let (neg, digits) = match self.text.strip_prefix('-') {
            Some(d) => (true, d),
            None => (false, self.text),
        };
        let mag = digits.bytes().try_fold(0u64, |acc, b| {
            acc.checked_mul(10)?
                .checked_add(u64::from(b.wrapping_sub(b'0')))
        })?;
        if neg {
            0i64.checked_sub_unsigned(mag)
        } else {
            i64::try_from(mag).ok()
        }
    }

    /// The value correctly rounded to `f64`; `None` when it overflows to infinity
    /// or has more than 19 significant digits (values below the smallest
    /// subnormal round to zero, as IEEE 754 says). No panic path: the conversion
    /// is the crate's own, exact, in fixed memory.
    pub fn as_f64(&self) -> Option<f64> {
        crate::decimal::to_f64(self.text)
    }

    /// The value correctly rounded to `f32` (directly, not through `f64`); `None`
    /// as [`Number::as_f64`].
    pub fn as_f32(&self) -> Option<f32> {
        crate::decimal::to_f32(self.text)
    }
}
