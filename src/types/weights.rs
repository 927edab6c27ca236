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
        let data: *const c_void = match t.data {
            Elems::F32(s) => s.as_ptr().cast(),
            Elems::F16(s) => s.as_ptr().cast(),
            Elems::BF16(s) => s.as_ptr().cast(),
        };
        Ok(mla_tensor {
            data,
            dtype: t.data.dtype() as u32,
            rows: dim(t.rows)?,
            cols: dim(t.cols)?,
            scale: ptr::null(),
            scale_block: 0,
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
        // FP8 is a cache dtype only in this build: refused as a weight dtype.
        let weight_dtype = DType::from_u32(self.dtype).filter(|d| *d != DType::F8E4M3);
        let dtype = weight_dtype.ok_or_else(|| {
            if self.dtype == MLA_DTYPE_F8_E4M3 {
                err(Status::WeightDtype, name)
                    .s(": MLA_DTYPE_F8_E4M3 weights are not supported by this build yet")
            } else {
                err(Status::WeightDtype, name)
                    .s(": unknown dtype ")
                    .n(self.dtype as usize)
            }
        })?;
        if !self.scale.is_null() || self.scale_block != 0 {
            return Err(err(Status::Unsupported, name)
                .s(": block scales (scale, scale_block) are for FP8 weights, not supported by this build yet"));
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
