/*
 * demo.c: run the tutorial MLA layer through the C ABI and check it against the
 * PyTorch reference stored in the same safetensors file.
 *
 *   demo [path/to/model.safetensors]      (default tests/data/tutorial.safetensors)
 *
 * Steps: map the file, start from the tutorial preset, validate it, size the
 * engine and give it its own 64-byte aligned arena, bind the weights zero-copy
 * (prefix "model.layers.0.self_attn."), prefill the first half of the stored
 * `inputs`, then decode the rest one token per step. Prints per-step latency,
 * the latent cache per token against a full K/V cache, and the max error
 * relative to the reference `outputs`. Exit status 0 only when that error is
 * at most 1e-5.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mla.h"
#include "st_lite.h"

#define PREFIX "model.layers.0.self_attn."
#define TOLERANCE 1e-5

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* Max |a - b| over n values. */
static double max_abs_diff(const float *a, const float *b, size_t n) {
    double m = 0.0;
    size_t i;
    for (i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > m) {
            m = d;
        }
    }
    return m;
}

static double max_abs(const float *a, size_t n) {
    double m = 0.0;
    size_t i;
    for (i = 0; i < n; i++) {
        if (fabs((double)a[i]) > m) {
            m = fabs((double)a[i]);
        }
    }
    return m;
}

/* A reference tensor copied out of the file (its bytes need not be aligned). */
static float *load_f32(const unsigned char *file, size_t len, const char *name, size_t *rows,
                       size_t *cols) {
    st_tensor t;
    float *v;
    if (st_find_f32(file, len, name, &t) != 0) {
        fprintf(stderr, "demo: no F32 tensor '%s' in the file\n", name);
        return NULL;
    }
    v = (float *)malloc(t.rows * t.cols * sizeof(float) + 1);
    if (v == NULL) {
        return NULL;
    }
    memcpy(v, t.data, t.rows * t.cols * sizeof(float));
    *rows = t.rows;
    *cols = t.cols;
    return v;
}

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "tests/data/tutorial.safetensors";
    int rc = 1;
    int fd = -1;
    struct stat st;
    unsigned char *file = NULL;
    size_t file_len = 0;
    mla_config cfg;
    char msg[MLA_MESSAGE_MAX];
    mla_status s;
    size_t engine_bytes = 0, cache_bytes = 0, full_bytes;
    void *arena = NULL;
    mla_weights w;
    mla_engine *e = NULL;
    float *x = NULL, *ref = NULL, *out = NULL;
    size_t T = 0, d = 0, rt = 0, dt = 0, prefill, t;
    double t0, err, scale, worst_step = 0.0;

    if (mla_abi_version() != MLA_ABI_VERSION) {
        fprintf(stderr, "demo: library ABI %u, header ABI %d\n", mla_abi_version(), MLA_ABI_VERSION);
        return 1;
    }
    printf("mla-rt %s (header %s, ABI %u)\n", mla_version(), MLA_VERSION_STRING, mla_abi_version());

    /* 1. Map the safetensors file read-only: the weights stay in the page cache. */
    fd = open(path, O_RDONLY);
    if (fd < 0 || fstat(fd, &st) != 0) {
        fprintf(stderr, "demo: cannot open %s: %s\n", path, strerror(errno));
        goto done;
    }
    if (st.st_size < 8) {
        fprintf(stderr, "demo: %s: %lld bytes, too short for a safetensors file\n", path,
                (long long)st.st_size);
        goto done;
    }
    file_len = (size_t)st.st_size;
    file = (unsigned char *)mmap(NULL, file_len, PROT_READ, MAP_PRIVATE, fd, 0);
    if (file == (unsigned char *)MAP_FAILED) {
        file = NULL;
        fprintf(stderr, "demo: cannot map %s: %s\n", path, strerror(errno));
        goto done;
    }

    /* 2. Configuration: the tutorial preset, validated. */
    mla_config_tutorial(&cfg);
    s = mla_config_validate(&cfg, msg, sizeof msg);
    if (s != MLA_OK) {
        fprintf(stderr, "demo: config: %s: %s\n", mla_status_str(s), msg);
        goto done;
    }

    /* 3. Memory: one aligned arena holds the engine, its latent cache and scratch. */
    s = mla_engine_size(&cfg, &engine_bytes);
    if (s != MLA_OK) {
        fprintf(stderr, "demo: mla_engine_size: %s\n", mla_status_str(s));
        goto done;
    }
    arena = aligned_alloc(64, (engine_bytes + 63) / 64 * 64);
    if (arena == NULL) {
        fprintf(stderr, "demo: out of memory (%zu bytes)\n", engine_bytes);
        goto done;
    }

    /* 4. Weights: zero-copy views into the mapped file. */
    s = mla_weights_from_safetensors(file, file_len, PREFIX, &cfg, &w);
    if (s != MLA_OK) {
        fprintf(stderr, "demo: mla_weights_from_safetensors: %s: %s\n", mla_status_str(s),
                mla_last_error(NULL));
        goto done;
    }
    s = mla_engine_init(&cfg, &w, arena, engine_bytes, &e);
    if (s != MLA_OK) {
        fprintf(stderr, "demo: mla_engine_init: %s: %s\n", mla_status_str(s), mla_last_error(NULL));
        goto done;
    }
    printf("engine: %zu bytes (d %u, H %u, r %u, p %u, capacity %u tokens)\n", engine_bytes,
           cfg.hidden_size, cfg.num_heads, cfg.kv_lora_rank, cfg.qk_rope_head_dim, cfg.max_seq_len);

    /* 5. Cache per token: latent (r + H*p here) against a full K/V cache H*(n+p+v). */
    if (mla_cache_bytes_per_token(&cfg, &cache_bytes) != MLA_OK) {
        goto done;
    }
    full_bytes = (size_t)cfg.num_heads *
                 (cfg.qk_nope_head_dim + cfg.qk_rope_head_dim + cfg.v_head_dim) * sizeof(float);
    printf("cache per token: %zu bytes latent vs %zu bytes full K/V (%.2fx smaller)\n",
           cache_bytes, full_bytes, (double)full_bytes / (double)cache_bytes);
    {
        mla_config v3;
        size_t v3_bytes = 0;
        mla_config_deepseek_v3(&v3);
        if (mla_cache_bytes_per_token(&v3, &v3_bytes) == MLA_OK) {
            size_t v3_full = (size_t)v3.num_heads *
                             (v3.qk_nope_head_dim + v3.qk_rope_head_dim + v3.v_head_dim) *
                             sizeof(float);
            printf("  (DeepSeek-V3 config: %zu vs %zu bytes, %.1fx smaller)\n", v3_bytes, v3_full,
                   (double)v3_full / (double)v3_bytes);
        }
    }

    /* 6. Reference data stored with the weights. */
    x = load_f32(file, file_len, "inputs", &T, &d);
    ref = load_f32(file, file_len, "outputs", &rt, &dt);
    if (x == NULL || ref == NULL || T == 0 || d != cfg.hidden_size || rt != T || dt != d) {
        fprintf(stderr, "demo: inputs/outputs missing or not [T][%u]\n", cfg.hidden_size);
        goto done;
    }
    out = (float *)calloc(T * d, sizeof(float));
    if (out == NULL) {
        goto done;
    }

    /* 7. Prefill the first half in one call, then decode one token per step. */
    prefill = T / 2 > 0 ? T / 2 : 1;
    if (prefill > cfg.max_tokens_per_call) {
        prefill = cfg.max_tokens_per_call;
    }
    t0 = now_us();
    s = mla_forward(e, x, (uint32_t)prefill, out);
    if (s != MLA_OK) {
        fprintf(stderr, "demo: prefill: %s: %s\n", mla_status_str(s), mla_last_error(e));
        goto done;
    }
    scale = max_abs(ref, prefill * d);
    printf("prefill %2zu tokens: %9.1f us   rel err %.3g\n", prefill, now_us() - t0,
           max_abs_diff(out, ref, prefill * d) / (scale > 0 ? scale : 1));
    for (t = prefill; t < T; t++) {
        double step_err, step_scale;
        t0 = now_us();
        s = mla_forward(e, x + t * d, 1, out + t * d);
        if (s != MLA_OK) {
            fprintf(stderr, "demo: decode %zu: %s: %s\n", t, mla_status_str(s), mla_last_error(e));
            goto done;
        }
        step_scale = max_abs(ref + t * d, d);
        step_err = max_abs_diff(out + t * d, ref + t * d, d) / (step_scale > 0 ? step_scale : 1);
        if (step_err > worst_step) {
            worst_step = step_err;
        }
        printf("decode pos %2zu:      %9.1f us   rel err %.3g\n", t, now_us() - t0, step_err);
    }
    printf("cached tokens: %u\n", mla_len(e));

    /* 8. Max error over every output, relative to the largest reference value. */
    scale = max_abs(ref, T * d);
    err = max_abs_diff(out, ref, T * d) / (scale > 0 ? scale : 1);
    printf("max error: %.3g (max-abs error / max-abs reference, %zu x %zu values; tolerance %g)\n",
           err, T, d, TOLERANCE);
    rc = err <= TOLERANCE ? 0 : 1;
    printf("%s\n", rc == 0 ? "PASS" : "FAIL");

done:
    /* The engine lives in the arena and owns nothing: freeing the arena is all. */
    free(out);
    free(ref);
    free(x);
    free(arena);
    if (file != NULL) {
        munmap(file, file_len);
    }
    if (fd >= 0) {
        close(fd);
    }
    return rc;
}
