//! `mla_tensor` and `mla_weights` to the core's borrowed [`Tensor`] and [`Weights`].

use super::*;

impl mla_tensor {
    /// An absent tensor (data NULL, dtype 0, shape 0 x 0).
    pub const ABSENT: mla_tensor = mla_tensor {
        data: ptr::null(),
        dtype: MLA_DTYPE_F32,
        rows: 0,
        cols: 0,
        scale: ptr::null(),
        scale_block: 0,
    };

    /// The C form of a borrowed tensor (`ABSENT` for `None`); `WeightShape` if
    /// a dimension does not fit in 32 bits.
    pub fn from_tensor(name: &str, t: Option<&Tensor<'_>>) -> Result<mla_tensor> {
        let Some(t) = t else {
            return Ok(mla_tensor::ABSENT);
        };
        let dim = |v: usize| {
            u32::try_from(v).map_err(|_| {
                err(Status::WeightShape, name).s(": dimension does not fit in 32 bits")
            })
        };
        let (data, scale, scale_block): (*const c_void, *const f32, u32) = match t.data {
            Elems::F32(s) => (s.as_ptr().cast(), ptr::null(), 0),
            Elems::F16(s) => (s.as_ptr().cast(), ptr::null(), 0),
            Elems::BF16(s) => (s.as_ptr().cast(), ptr::null(), 0),
            Elems::F8(f) => {
                if f.offset() != 0 {
                    return Err(err(Status::WeightShape, name)
                        .s(": an FP8 tensor must start at its first row here"));
                }
                (
                    f.codes().as_ptr().cast(),
                    f.scales().as_ptr(),
                    F8_BLOCK as u32,
                )
            }
        };
        Ok(mla_tensor {
            data,
            dtype: t.data.dtype() as u32,
            rows: dim(t.rows)?,
            cols: dim(t.cols)?,
            scale,
            scale_block,
        })
    }

    /// The core tensor (`None` when data is NULL).
    ///
    /// Errors: unknown dtype (`WeightDtype`), byte size overflowing (`WeightShape`),
    /// data not aligned to the element size (`Misaligned`).
    ///
    /// # Safety
    /// When `data` is not NULL it must point to `rows * cols` readable elements of
    /// `dtype` that stay valid and unmodified for `'a`.
    pub unsafe fn to_tensor<'a>(&self, name: &str) -> Result<Option<Tensor<'a>>> {
        if self.data.is_null() {
            return Ok(None);
        }
        let dtype = DType::from_u32(self.dtype).ok_or_else(|| {
            err(Status::WeightDtype, name)
                .s(": unknown dtype ")
                .n(self.dtype as usize)
        })?;
        if dtype == DType::F8E4M3 {
            // SAFETY: forwarded from this function's contract (and the scales'
            // in `f8_tensor`).
            return unsafe { self.f8_tensor(name) }.map(Some);
        }
        if !self.scale.is_null() || self.scale_block != 0 {
            return Err(err(Status::InvalidArgument, name)
                .s(": block scales (scale, scale_block) are for MLA_DTYPE_F8_E4M3 tensors only"));
        }
        let (rows, cols) = (self.rows as usize, self.cols as usize);
        let bytes = rows
            .checked_mul(cols)
            .and_then(|n| n.checked_mul(dtype.size()))
            .filter(|&b| b <= isize::MAX as usize)
            .ok_or_else(|| err(Status::WeightShape, name).s(": rows * cols overflows"))?;
        if (self.data as usize) & (dtype.size().wrapping_sub(1)) != 0 {
            return Err(err(Status::Misaligned, name)
                .s(": ")
                .s(dtype.name())
                .s(" data must be aligned to ")
                .n(dtype.size())
                .s(" bytes"));
        }
        // SAFETY: data is non-NULL (checked above); the caller guarantees that
        // `rows * cols` elements (`bytes`, which fits in isize) are readable and
        // stay valid for 'a. The slice is of bytes; the element alignment was
        // checked above and is checked again by `Tensor::from_bytes`.
        let raw = unsafe { boundary::slice(self.data.cast::<u8>(), bytes) }
            .ok_or_else(|| err(Status::WeightShape, name).s(": data is not addressable"))?;
        match Tensor::from_bytes(raw, dtype, rows, cols) {
            Ok(t) => Ok(Some(t)),
            Err(e) => Err(err(e.status(), name).s(": ").s(e.message())),
        }
    }
}

impl mla_tensor {
    /// The FP8 tensor: `rows * cols` E4M3 codes at `data` and
    /// `ceil(rows/128) * ceil(cols/128)` f32 scales at `scale`.
    ///
    /// Errors: `scale_block` other than 128 (`Unsupported`), NULL `scale`
    /// (`WeightShape`), misaligned scales (`Misaligned`), sizes overflowing
    /// (`WeightShape`), a scale NaN/inf (`NonFinite`) or not positive
    /// (`WeightShape`).
    ///
    /// # Safety
    /// `data` points to `rows * cols` readable bytes and `scale`, when not
    /// NULL, to `ceil(rows/128) * ceil(cols/128)` readable f32, both valid and
    /// unmodified for `'a`.
    unsafe fn f8_tensor<'a>(&self, name: &str) -> Result<Tensor<'a>> {
        if self.scale_block as usize != F8_BLOCK {
            return Err(err(Status::Unsupported, name)
                .s(": scale_block ")
                .n(self.scale_block as usize)
                .s(" (only 128 x 128 FP8 blocks are supported)"));
        }
        if self.scale.is_null() {
            return Err(err(Status::WeightShape, name)
                .s(": MLA_DTYPE_F8_E4M3 needs its block scales (scale is NULL)"));
        }
        if (self.scale as usize) & 3 != 0 {
            return Err(err(Status::Misaligned, name).s(": scale must be aligned to 4 bytes"));
        }
        let (rows, cols) = (self.rows as usize, self.cols as usize);
        let n = rows
            .checked_mul(cols)
            .filter(|&b| b <= isize::MAX as usize)
            .ok_or_else(|| err(Status::WeightShape, name).s(": rows * cols overflows"))?;
        let n_scales = f8_blocks(rows)
            .checked_mul(f8_blocks(cols))
            .ok_or_else(|| err(Status::WeightShape, name).s(": scale count overflows"))?;
        // SAFETY: both non-NULL and aligned (checked; bytes need no alignment);
        // the caller guarantees n codes and n_scales scales readable and
        // unmodified for 'a; `slice` checks the byte sizes fit in isize.
        let (codes, scales) = unsafe {
            (
                boundary::slice(self.data.cast::<u8>(), n),
                boundary::slice(self.scale, n_scales),
            )
        };
        let (Some(codes), Some(scales)) = (codes, scales) else {
            return Err(err(Status::WeightShape, name).s(": data is not addressable"));
        };
        Tensor::f8(codes, scales, rows, cols)
            .map_err(|e| err(e.status(), name).s(": ").s(e.message()))
    }
}

/// Lists the fields of `mla_weights` (= the core `Weights`) in order, for the
/// conversions below.
macro_rules! weight_fields {
    ($m:ident) => {
        $m!(
            q_proj,
            q_a_proj,
            q_a_layernorm,
            q_b_proj,
            kv_a_proj_with_mqa,
            kv_a_layernorm,
            kv_b_proj,
            o_proj,
            q_a_proj_bias,
            kv_a_proj_bias,
            o_proj_bias,
            gate_proj,
            sinks,
            rope_key_norm,
            query_scale_s,
            query_scale_b,
            rope_freq_alpha,
            index_wq_b,
            index_wk,
            index_k_norm,
            index_k_norm_bias,
            index_weights_proj,
            index_q_norm,
            index_q_norm_bias,
            index_query_scale_s,
            index_query_scale_b,
            index_kpool_ape,
            index_kpool_gate
        )
    };
}

impl mla_weights {
    /// Every tensor absent.
    pub const ABSENT: mla_weights = {
        macro_rules! absent {
            ($($f:ident),*) => { mla_weights { $($f: mla_tensor::ABSENT),* } };
        }
        weight_fields!(absent)
    };

    /// The C form of borrowed weights (pointers into the same data).
    pub fn from_weights(w: &Weights<'_>) -> Result<mla_weights> {
        let named = w.named();
        let mut out = mla_weights::ABSENT;
        for ((name, t), slot) in named.iter().zip(out.tensors_mut()) {
            *slot = mla_tensor::from_tensor(name, t.as_ref())?;
        }
        Ok(out)
    }

    /// The tensors in the order of the fields (and of the core `Weights::named`).
    fn tensors(&self) -> [&mla_tensor; WEIGHT_COUNT] {
        macro_rules! refs {
            ($($f:ident),*) => { [$(&self.$f),*] };
        }
        weight_fields!(refs)
    }

    /// The tensors in the order of the fields (and of the core `Weights::named`).
    fn tensors_mut(&mut self) -> [&mut mla_tensor; WEIGHT_COUNT] {
        macro_rules! refs {
            ($($f:ident),*) => { [$(&mut self.$f),*] };
        }
        weight_fields!(refs)
    }

    /// The core weights. `kv_b_proj` and `o_proj` with NULL data are
    /// `WeightShape` ("missing"); every other tensor may be absent here, and
    /// shapes and presence against the config are checked by the engine
    /// (`Weights::check`).
    ///
    /// # Safety
    /// Every tensor with non-NULL data must satisfy [`mla_tensor::to_tensor`]'s
    /// contract for `'a`.
    pub unsafe fn to_weights<'a>(&self) -> Result<Weights<'a>> {
        let mut tensors = [None; WEIGHT_COUNT];
        for ((slot, t), name) in tensors.iter_mut().zip(self.tensors()).zip(WEIGHT_NAMES) {
            // SAFETY: forwarded from this function's contract.
            *slot = unsafe { t.to_tensor(name) }?;
        }
        Weights::from_tensors(tensors).ok_or_else(|| {
            let name = if self.kv_b_proj.data.is_null() {
                "kv_b_proj"
            } else {
                "o_proj"
            };
            err(Status::WeightShape, name).s(": missing (data is NULL)")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `to_weights` and `from_weights` pair the C fields with the core tensors by
    /// position: the field list must be the core's names, in the core's order.
    #[test]
    fn c_fields_are_the_core_names_in_order() {
        macro_rules! names {
            ($($f:ident),*) => { [$(stringify!($f)),*] };
        }
        let fields: [&str; WEIGHT_COUNT] = weight_fields!(names);
        assert_eq!(fields, WEIGHT_NAMES);
    }
}
