//! Running a call: [`CudaEngine::forward`] and [`CudaEngine::forward_device`], the
//! launch bookkeeping and error reporting, and the kernels each call enqueues.

// crate::Error carries its message inline (no allocation in the core), so every
// Result is large by design.
#![allow(clippy::result_large_err)]

use super::*;

impl CudaEngine {
    /// Appends the tokens `x` (`[n_tokens][hidden_size]`, host memory) at
    /// positions `len()..`, attends causally over everything cached and writes
    /// `[n_tokens][hidden_size]` to `out`. Same checks and statuses as
    /// [`mla_core::Engine::forward`] (`InvalidArgument`, `CacheFull`, `NonFinite`),
    /// plus `Device`; on any error nothing is appended.
    pub fn forward(&mut self, x: &[f32], out: &mut [f32]) -> Result<()> {
        let d = self.dm.d;
        if x.is_empty() || !x.len().is_multiple_of(d) {
            return Err(err(Status::InvalidArgument, "x: length ")
                .n(x.len())
                .s(" is not a positive multiple of hidden_size ")
                .n(d));
        }
        let t = x.len() / d;
        self.check_tokens(t)?;
        if out.len() != x.len() {
            return Err(err(Status::InvalidArgument, "out: length ")
                .n(out.len())
                .s(" differs from x's ")
                .n(x.len()));
        }
        let end = self.check_room(t)?;
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            return Err(err(Status::NonFinite, "x: token ")
                .n(i / d)
                .s(", column ")
                .n(i % d)
                .s(" is NaN or infinite"));
        }
        self.dev.check_usable()?;
        self.dev.make_current()?;
        let stream = self.stream.0;
        let bytes = core::mem::size_of_val(x);
        let mut l = Launches { n: 0, last: "" };
        self.record(0, &l)?;
        // SAFETY: `x` is `bytes` readable host bytes and the scratch `x` holds
        // max_tok * d floats >= t * d; the copy is complete when the stream syncs
        // below, before `x` can be released by the caller.
        self.dev.check("cuMemcpyHtoDAsync(x)", unsafe {
            cu::cuMemcpyHtoDAsync_v2(self.s.x.ptr(), x.as_ptr().cast(), bytes, stream)
        })?;
        self.enqueue(self.s.x.ptr(), t, None, self.s.out.ptr(), &mut l)?;
        // SAFETY: `out` is `bytes` writable host bytes (same length as x), the
        // scratch output holds them; the stream is synchronised before return.
        let r = unsafe {
            cu::cuMemcpyDtoHAsync_v2(out.as_mut_ptr().cast(), self.s.out.ptr(), bytes, stream)
        };
        self.check_in_call("cuMemcpyDtoHAsync(out)", r, &l)?;
        self.record(1, &l)?;
        self.finish(&l)?;
        self.len = end;
        Ok(())
    }

    /// [`CudaEngine::forward`] with the input and output in device memory:
    /// `x_dev` and `out_dev` are device addresses (in the device's primary
    /// context) of `n_tokens * hidden_size` floats each (row-major
    /// `[n_tokens][hidden_size]`), 4-byte aligned (`Misaligned` otherwise). The
    /// call is synchronous: when it returns, `out_dev` is written (on success
    /// only). It is ordered after the legacy default stream only: work on other
    /// streams that produces `x_dev` must be complete before the call.
    /// Non-finite input is detected on the device: `NonFinite`, nothing appended,
    /// `out_dev` untouched.
    ///
    /// # Safety
    /// `x_dev` must be readable and `out_dev` writable device memory of the
    /// engine's device (or unified/mapped memory) holding `n_tokens * hidden_size`
    /// floats, and must not overlap each other.
    pub unsafe fn forward_device(
        &mut self,
        x_dev: u64,
        out_dev: u64,
        n_tokens: usize,
    ) -> Result<()> {
        if x_dev == 0 || out_dev == 0 {
            return Err(err(Status::NullPointer, "forward_device: x or out is NULL"));
        }
        if !x_dev.is_multiple_of(4) || !out_dev.is_multiple_of(4) {
            return Err(err(
                Status::Misaligned,
                "forward_device: x and out must be 4-byte aligned",
            ));
        }
        self.check_tokens(n_tokens)?;
        let end = self.check_room(n_tokens)?;
        self.dev.check_usable()?;
        self.dev.make_current()?;
        let gen = match self.gen.wrapping_add(1) {
            0 => 1,
            g => g,
        };
        self.gen = gen;
        let mut l = Launches { n: 0, last: "" };
        self.record(0, &l)?;
        self.enqueue(x_dev, n_tokens, Some(gen), out_dev, &mut l)?;
        let mut flag: u32 = 0;
        // SAFETY: copies 4 bytes into a local u32; the stream is synchronised
        // before `flag` is read.
        let r = unsafe {
            cu::cuMemcpyDtoHAsync_v2(
                (&mut flag as *mut u32).cast::<c_void>(),
                self.s.flag.ptr(),
                4,
                self.stream.0,
            )
        };
        self.check_in_call("cuMemcpyDtoHAsync(flag)", r, &l)?;
        self.record(1, &l)?;
        self.finish(&l)?;
        if flag == gen {
            self.last_ms = None;
            return Err(err(
                Status::NonFinite,
                "x: the input holds NaN or infinite values",
            ));
        }
        self.len = end;
        Ok(())
    }

    /// Records timing event `i` (0 before, 1 after) when timing is on.
    fn record(&self, i: usize, l: &Launches) -> Result<()> {
        if let Some(ev) = &self.events {
            let e = if i == 0 { ev.0 } else { ev.1 };
            // SAFETY: the event and stream belong to this engine.
            let r = unsafe { cu::cuEventRecord(e, self.stream.0) };
            self.check_in_call("cuEventRecord", r, l)?;
        }
        Ok(())
    }

    /// The error of a driver call made after this call's launches (`at`): a
    /// sticky error there is a kernel fault of the call, which the driver does
    /// not name.
    fn call_error(&self, at: &str, r: cu::CUresult, l: &Launches) -> mla_core::Error {
        let e = if device::is_sticky(r) && l.n > 0 {
            err(Status::Device, at)
                .s(": ")
                .s(&device::error_name(r))
                .s(": a kernel fault in one of this call's ")
                .n(l.n)
                .s(" kernels (last ")
                .s(l.last)
                .s("); MLA_CUDA_SYNC=1 names it")
        } else {
            device::dev_error(at, r)
        };
        self.dev.note(r, &e);
        e
    }

    /// `check` for driver calls after the call's first launch.
    fn check_in_call(&self, at: &str, r: cu::CUresult, l: &Launches) -> Result<()> {
        if r == cu::CUresult::CUDA_SUCCESS {
            Ok(())
        } else {
            Err(self.call_error(at, r, l))
        }
    }

    /// Waits for the engine's stream; a failure names what was launched.
    /// Leaves the timing of the last forward call unset.
    pub(super) fn wait(&mut self, l: &Launches) -> Result<()> {
        // SAFETY: the stream belongs to this engine.
        let r = unsafe { cu::cuStreamSynchronize(self.stream.0) };
        self.check_in_call("cuStreamSynchronize", r, l)?;
        self.last_ms = None;
        Ok(())
    }

    /// Waits for a forward call's work (`wait`), then reads its two timing
    /// events, which `record` put around it (the driver refuses the elapsed
    /// time of an event never recorded, so only forward calls come here).
    fn finish(&mut self, l: &Launches) -> Result<()> {
        self.wait(l)?;
        if let Some(ev) = &self.events {
            let mut ms = 0f32;
            // SAFETY: both events were recorded on this engine's stream, which
            // has completed.
            self.dev.check("cuEventElapsedTime", unsafe {
                cu::cuEventElapsedTime(&mut ms, ev.0, ev.1)
            })?;
            self.last_ms = Some(ms);
        }
        Ok(())
    }

    /// One kernel launch of a call; with `sync_after_launch`, waits for it and
    /// names it when it failed.
    fn run<T: Copy>(
        &self,
        l: &mut Launches,
        what: &'static str,
        f: cu::CUfunction,
        grid: [u32; 3],
        smem: usize,
        p: &T,
    ) -> Result<()> {
        let smem = u32_of("shared memory", smem)?;
        let r = device::launch(f, self.stream.0, grid, smem, p);
        if r != cu::CUresult::CUDA_SUCCESS {
            // A sticky error here comes from an earlier kernel of the call.
            let e = if device::is_sticky(r) && l.n > 0 {
                self.call_error("cuLaunchKernel", r, l)
            } else {
                err(Status::Device, what)
                    .s(": launch failed: ")
                    .s(&device::error_name(r))
            };
            self.dev.note(r, &e);
            return Err(e);
        }
        l.n += 1;
        l.last = what;
        if self.opts.sync_after_launch {
            // SAFETY: the stream belongs to this engine.
            let r = unsafe { cu::cuStreamSynchronize(self.stream.0) };
            if r != cu::CUresult::CUDA_SUCCESS {
                let e = err(Status::Device, what)
                    .s(" failed (kernel ")
                    .n(l.n)
                    .s(" of the call): ")
                    .s(&device::error_name(r));
                self.dev.note(r, &e);
                return Err(e);
            }
        }
        Ok(())
    }

    /// A linear-kernel launch.
    fn linear(&self, l: &mut Launches, what: &'static str, dt: DType, p: &LinP) -> Result<()> {
        let rows = p.rows as usize + p.rows2 as usize;
        let grid = [
            u32_of(what, div_ceil(rows, WARPS))?,
            u32_of(what, div_ceil(p.n_tok as usize, TT))?,
            1,
        ];
        self.run(l, what, self.k.linear[dt_index(dt)], grid, 0, p)
    }

    /// Queues the forward pass of `t` tokens at positions `len()..` reading `x`
    /// (device) and writing `out` (device). `gate`: the generation number of a
    /// `forward_device` call (x is checked for NaN/inf on the device and `out` is
    /// written only when it is finite).
    fn enqueue(
        &self,
        x: u64,
        t: usize,
        gate: Option<u32>,
        out: u64,
        l: &mut Launches,
    ) -> Result<()> {
        let dm = &self.dm;
        let (w, s) = (&self.w, &self.s);
        let u = |what: &str, v: usize| u32_of(what, v);
        let t32 = u("n_tokens", t)?;
        let start = u("position", self.len)?;
        let eps = self.cfg.rms_norm_eps;
        let layout = match self.cfg.rope_layout {
            RopeLayout::Interleaved => 0,
            RopeLayout::Half => 1,
        };
        let opt = |b: &Option<DevBuf>| b.as_ref().map_or(0, |b| b.ptr());
        let gen = gate.unwrap_or(0);
        let flag_set = if gate.is_some() { s.flag.ptr() } else { 0 };
        let d = dm.d;
        let lin =
            |wm: &DevMat, bias: u64, x: u64, y: u64, rows: usize, cols: usize| -> Result<LinP> {
                Ok(LinP {
                    x,
                    w: wm.buf.ptr(),
                    bias,
                    y,
                    n_tok: t32,
                    rows: u("rows", rows)?,
                    cols: u("cols", cols)?,
                    x_stride: u("cols", cols)?,
                    y_stride: u("rows", rows)?,
                    grp_rows: u("rows", rows)?,
                    vec: vec_mode(wm.dtype, cols, cols, 0, x),
                    gen,
                    eps,
                    ..LinP::default()
                })
            };

        // 1. The query projection and kv_a_proj_with_mqa (one launch when their
        //    weights share a dtype); x is checked for NaN/inf here (forward_device).
        let (q_first, q_first_bias, q_first_out, q_first_rows) = match (&w.q_a_proj, &w.q_proj) {
            (Some(qa), _) => (qa, opt(&w.q_a_bias), s.qa.ptr(), dm.rq),
            (None, Some(qp)) => (qp, 0, s.q.ptr(), dm.q_width),
            _ => return Err(err(Status::Internal, "query weights missing")),
        };
        let mut p1 = lin(q_first, q_first_bias, x, q_first_out, q_first_rows, d)?;
        p1.flag_set = flag_set;
        let kva = &w.kv_a_proj;
        if kva.dtype == q_first.dtype {
            p1.w2 = kva.buf.ptr();
            p1.bias2 = opt(&w.kv_a_bias);
            p1.y2 = s.kva.ptr();
            p1.rows2 = u("kv_a rows", dm.kv_a_rows)?;
            p1.y2_stride = p1.rows2;
            self.linear(l, "q + kv_a projections [mla_linear]", q_first.dtype, &p1)?;
        } else {
            self.linear(l, "query projection [mla_linear]", q_first.dtype, &p1)?;
            let p2 = lin(kva, opt(&w.kv_a_bias), x, s.kva.ptr(), dm.kv_a_rows, d)?;
            self.linear(l, "kv_a_proj_with_mqa [mla_linear]", kva.dtype, &p2)?;
        }
        if let Some(qb) = &w.q_b_proj {
            let mut p = lin(qb, 0, s.qa.ptr(), s.q.ptr(), dm.q_width, dm.rq)?;
            if let Some(norm) = &w.q_a_norm {
                p.xnorm = norm.ptr();
            }
            self.linear(l, "q_b_proj (+ q_a_layernorm) [mla_linear]", qb.dtype, &p)?;
        }

        // 2. Cache rows (RMSNorm, rope keys) and absorbed queries, one launch.
        let h32 = u("num_heads", dm.h)?;
        let absorb_blocks = div_ceil(dm.r, 256) * dm.h * div_ceil(t, TT);
        let n_rope = if self.cfg.rope_key == RopeKey::PerHead {
            dm.h
        } else {
            1
        };
        let pp = PrepP {
            kva: s.kva.ptr(),
            norm_w: w.kv_a_norm.ptr(),
            cache: self.cache.ptr(),
            cos_t: w.cos.ptr(),
            sin_t: w.sin.ptr(),
            q: s.q.ptr(),
            kvb: w.kv_b_proj.buf.ptr(),
            qt: s.qt.ptr(),
            n_tok: t32,
            kva_stride: u("kv_a rows", dm.kv_a_rows)?,
            cache_row: u("cache row", dm.cache_row)?,
            r: u("kv_lora_rank", dm.r)?,
            p: u("qk_rope_head_dim", dm.p)?,
            n_rope: u("rope keys", n_rope)?,
            start,
            layout,
            n_heads: h32,
            n: u("qk_nope_head_dim", dm.n)?,
            v: u("v_head_dim", dm.v)?,
            qk: u("n + p", dm.qk)?,
            absorb_blocks: u("prep grid", absorb_blocks)?,
            eps,
        };
        let grid = [u("prep grid", absorb_blocks + t)?, 1, 1];
        self.run(
            l,
            "cache append + absorbed queries [mla_prep]",
            self.k.prep,
            grid,
            0,
            &pp,
        )?;

        // 3. Attention over the cache, split over the context.
        let (n_split, split_len) = self.splits_for(self.len, t);
        let ns32 = u("splits", n_split)?;
        let ap = AttnP {
            qt: s.qt.ptr(),
            q: s.q.ptr(),
            cache: self.cache.ptr(),
            part_acc: s.part_acc.ptr(),
            part_ml: s.part_ml.ptr(),
            cos_t: w.cos.ptr(),
            sin_t: w.sin.ptr(),
            n_tok: t32,
            n_heads: h32,
            r: u("kv_lora_rank", dm.r)?,
            p: u("qk_rope_head_dim", dm.p)?,
            qk: u("n + p", dm.qk)?,
            n: u("qk_nope_head_dim", dm.n)?,
            cache_row: u("cache row", dm.cache_row)?,
            per_head: (self.cfg.rope_key == RopeKey::PerHead) as u32,
            start,
            split_len: u("split length", split_len)?,
            n_split: ns32,
            // The tensor-core kernel always computes 16 heads (zero rows past H);
            // `g` sizes its per-head rope-key area: the heads a group can have.
            g: u(
                "heads per block",
                if self.plan.tensor_cores {
                    self.plan.heads_per_block.min(dm.h)
                } else {
                    self.plan.heads_per_block
                },
            )?,
            layout,
            tile_rows: u("tile rows", self.plan.tile_rows)?,
            mode: self.plan.copy as u32,
            scale: self.scale,
            ..AttnP::default()
        };
        let grid = [u("head groups", self.plan.groups)?, ns32, t32];
        self.run(
            l,
            "attention [mla_attn]",
            self.k.attn,
            grid,
            self.plan.smem,
            &ap,
        )?;
        let cp = CombineP {
            part_acc: s.part_acc.ptr(),
            part_ml: s.part_ml.ptr(),
            ctx: s.ctx.ptr(),
            n_tok: t32,
            n_heads: h32,
            r: u("kv_lora_rank", dm.r)?,
            n_split: ns32,
        };
        let grid = [h32, t32, u("combine grid", div_ceil(dm.r, 32))?];
        self.run(
            l,
            "split combine [mla_attn_combine]",
            self.k.combine,
            grid,
            n_split * 4,
            &cp,
        )?;

        // 4. Up-projection o[t][h][..v] = W_UV_h ctx[t][h] (a grouped linear).
        let kvb = &w.kv_b_proj;
        let mut p = lin(kvb, 0, s.ctx.ptr(), s.o.ptr(), dm.o_cols, dm.r)?;
        p.x_stride = u("num_heads * kv_lora_rank", dm.h * dm.r)?;
        p.grp_rows = u("v_head_dim", dm.v)?;
        p.w_grp_stride = u("n + v", dm.n + dm.v)?;
        p.w_row_off = u("qk_nope_head_dim", dm.n)?;
        p.x_grp_off = u("kv_lora_rank", dm.r)?;
        p.vec = vec_mode(kvb.dtype, dm.r, dm.h * dm.r, dm.r, s.ctx.ptr());
        self.linear(l, "kv_b_proj (W_UV) [mla_linear]", kvb.dtype, &p)?;

        // 5. out = o_proj o (+ b), written only for finite input (forward_device).
        let op = &w.o_proj;
        let mut p = lin(op, opt(&w.o_bias), s.o.ptr(), out, d, dm.o_cols)?;
        if gate.is_some() {
            p.flag_gate = s.flag.ptr();
        }
        self.linear(l, "o_proj [mla_linear]", op.dtype, &p)
    }
}
