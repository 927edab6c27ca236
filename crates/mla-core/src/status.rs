//! Status codes and errors.
//!
//! Every fallible operation returns [`Result`]; the error carries a [`Status`]
//! (the numeric code of the C ABI) and a short message
//! naming what was wrong. Messages are built without `core::fmt` so that no
//! formatting machinery (and none of its panic paths) is linked into firmware.

/// Numeric status of every C entry point (`mla_status`). Values are the ABI.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Success.
    Ok = 0,
    /// A required pointer argument was NULL.
    NullPointer = 1,
    /// A configuration field is out of range or inconsistent.
    InvalidConfig = 2,
    /// A weight tensor has the wrong shape (or is missing / unexpected).
    WeightShape = 3,
    /// A weight tensor has an unknown or unsupported dtype.
    WeightDtype = 4,
    /// Memory or weight data is not aligned as required.
    Misaligned = 5,
    /// The memory given is smaller than required.
    BufferTooSmall = 6,
    /// The call would pass the cache capacity `max_seq_len`.
    CacheFull = 7,
    /// An argument is out of range (token count, truncate length, ...).
    InvalidArgument = 8,
    /// The input holds NaN or infinity.
    NonFinite = 9,
    /// The operation or format is not supported by this build.
    Unsupported = 10,
    /// A device (CUDA) call failed.
    Device = 11,
    /// The caller was built against another ABI (`struct_size` mismatch).
    AbiMismatch = 12,
    /// An internal error (a caught panic); the engine state is unchanged.
    Internal = 13,
}

impl Status {
    /// A fixed, human-readable description of the status.
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::NullPointer => "null pointer",
            Status::InvalidConfig => "invalid configuration",
            Status::WeightShape => "weight shape mismatch",
            Status::WeightDtype => "weight dtype mismatch",
            Status::Misaligned => "misaligned memory",
            Status::BufferTooSmall => "buffer too small",
            Status::CacheFull => "latent cache full",
            Status::InvalidArgument => "invalid argument",
            Status::NonFinite => "non-finite input",
            Status::Unsupported => "unsupported",
            Status::Device => "device error",
            Status::AbiMismatch => "ABI mismatch",
            Status::Internal => "internal error",
        }
    }

    /// The status for a raw code, or `None` for an unknown value.
    pub const fn from_u32(v: u32) -> Option<Status> {
        Some(match v {
            0 => Status::Ok,
            1 => Status::NullPointer,
            2 => Status::InvalidConfig,
            3 => Status::WeightShape,
            4 => Status::WeightDtype,
            5 => Status::Misaligned,
            6 => Status::BufferTooSmall,
            7 => Status::CacheFull,
            8 => Status::InvalidArgument,
            9 => Status::NonFinite,
            10 => Status::Unsupported,
            11 => Status::Device,
            12 => Status::AbiMismatch,
            13 => Status::Internal,
            _ => return None,
        })
    }
}

/// Capacity of an error message in bytes (longer text is cut).
pub const MESSAGE_CAPACITY: usize = 191;

/// A failure: its status and a message saying what was wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    status: Status,
    message: heapless::String<MESSAGE_CAPACITY>,
}

/// Result of the core.
pub type Result<T> = core::result::Result<T, Error>;

impl Error {
    /// An error with `status` and the message `msg`.
    pub fn new(status: Status, msg: &str) -> Error {
        let mut e = Error {
            status,
            message: heapless::String::new(),
        };
        e.push_str(msg);
        e
    }

    /// The status code.
    pub fn status(&self) -> Status {
        self.status
    }

    /// The message (UTF-8, never longer than [`MESSAGE_CAPACITY`]).
    pub fn message(&self) -> &str {
        self.message.as_str()
    }

    /// Appends text, cutting at the capacity (on a char boundary).
    pub fn push_str(&mut self, s: &str) -> &mut Error {
        for ch in s.chars() {
            if self.message.push(ch).is_err() {
                break;
            }
        }
        self
    }

    /// Appends a decimal number.
    pub fn push_num(&mut self, v: u64) -> &mut Error {
        let mut digits = [0u8; 20];
        let mut n = v;
        let mut i = digits.len();
        loop {
            i -= 1;
            // `i` stays within 0..20: a u64 has at most 20 decimal digits.
            if let Some(d) = digits.get_mut(i) {
                *d = b'0' + (n % 10) as u8;
            }
            n /= 10;
            if n == 0 || i == 0 {
                break;
            }
        }
        for &d in digits.get(i..).unwrap_or(&[]) {
            if self.message.push(d as char).is_err() {
                break;
            }
        }
        self
    }

    /// Builder form of [`Error::push_str`].
    pub fn s(mut self, s: &str) -> Error {
        self.push_str(s);
        self
    }

    /// Builder form of [`Error::push_num`].
    pub fn n(mut self, v: usize) -> Error {
        self.push_num(v as u64);
        self
    }
}

impl core::fmt::Display for Status {
    /// The fixed description ([`Status::as_str`]).
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `"<status description>: <message>"`, e.g. `"invalid configuration:
/// hidden_size: must be > 0"`. (Only a host that formats an error links the
/// formatting machinery; the core itself never does.)
impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.status.as_str())?;
        f.write_str(": ")?;
        f.write_str(self.message())
    }
}

/// `Error` is a standard error: `?` turns it into `Box<dyn std::error::Error>`
/// (or `anyhow::Error`, ...) in a host program.
///
/// ```
/// use mla_core::{Config, Engine};
///
/// fn engine_bytes(cfg: &Config) -> Result<usize, Box<dyn std::error::Error>> {
///     cfg.validate()?;
///     Ok(Engine::memory_bytes(cfg)?)
/// }
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     assert!(engine_bytes(&Config::tutorial())? > 0);
///     let bad = Config { hidden_size: 0, ..Config::tutorial() };
///     let e = engine_bytes(&bad).unwrap_err();
///     assert_eq!(e.to_string(), "invalid configuration: hidden_size: must be > 0");
///     Ok(())
/// }
/// ```
impl core::error::Error for Error {}

/// Shorthand: an error with `status` and message `msg`.
pub fn err(status: Status, msg: &str) -> Error {
    Error::new(status, msg)
}

/// A piece of an error message: text or a number.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Piece<'a> {
    /// Text.
    S(&'a str),
    /// A decimal number.
    N(u64),
}

/// An error whose message is `prefix` then `pieces`. Built out of line, once: an
/// inlined chain of `Error::s` / `Error::n` calls costs about a hundred bytes of
/// code per call, which adds up in firmware.
#[cold]
#[inline(never)]
pub(crate) fn error(status: Status, prefix: &str, pieces: &[Piece]) -> Error {
    let mut e = Error::new(status, prefix);
    push(&mut e, pieces);
    e
}

/// Appends `pieces` to a message.
#[inline(never)]
pub(crate) fn push(e: &mut Error, pieces: &[Piece]) {
    for p in pieces {
        match *p {
            Piece::S(s) => {
                e.push_str(s);
            }
            Piece::N(n) => {
                e.push_num(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for v in 0..14u32 {
            assert_eq!(Status::from_u32(v).map(|s| s as u32), Some(v));
        }
        assert_eq!(Status::from_u32(14), None);
        assert_eq!(Status::CacheFull as u32, 7);
    }

    #[test]
    fn message_builder() {
        let e = err(Status::WeightShape, "q_b_proj: expected ")
            .n(128)
            .s(" x ")
            .n(0)
            .s(", max ")
            .n(usize::MAX);
        assert_eq!(e.status(), Status::WeightShape);
        assert_eq!(
            e.message(),
            "q_b_proj: expected 128 x 0, max 18446744073709551615"
        );
    }

    #[test]
    fn display_and_std_error() {
        let e = err(
            Status::CacheFull,
            "cache: 3 + 2 tokens would pass max_seq_len 4",
        );
        assert_eq!(
            e.to_string(),
            "latent cache full: cache: 3 + 2 tokens would pass max_seq_len 4"
        );
        assert_eq!(Status::NonFinite.to_string(), "non-finite input");
        // `?` into a boxed standard error, as a host's main() would use it.
        fn host(fail: bool) -> core::result::Result<u32, Box<dyn std::error::Error>> {
            if fail {
                Err(err(Status::Misaligned, "mem: must be aligned to 64 bytes"))?;
            }
            Ok(7)
        }
        assert_eq!(host(false).unwrap(), 7);
        let boxed = host(true).unwrap_err();
        assert_eq!(
            boxed.to_string(),
            "misaligned memory: mem: must be aligned to 64 bytes"
        );
        let back = boxed
            .downcast_ref::<Error>()
            .expect("the mla_core::Error inside");
        assert_eq!(back.status(), Status::Misaligned);
        assert!(std::error::Error::source(back).is_none());
    }

    #[test]
    fn message_is_cut_not_overflowed() {
        let mut e = err(Status::Internal, "");
        for _ in 0..100 {
            e.push_str("abc");
        }
        assert_eq!(e.message().len(), MESSAGE_CAPACITY);
    }
}
