/* checkpoint.c: one attention layer of a Hugging Face checkpoint, configured from
 * its own config.json and bound to its own model.safetensors.
 *
 *   checkpoint DIR LAYER [TOKENS]
 *
 * DIR holds config.json and model.safetensors (as save_pretrained writes them).
 * The layer runs TOKENS (default 24) deterministic input tokens twice, with the
 * same calls (a prefill of all but the last 4 tokens, then 4 decode steps): once
 * through the naive path, once through the absorbed path over the latent cache.
 * The two must agree within 1e-5 (relative: max-abs difference / max-abs
 * output). (Same calls, because some RoPE types, longrope, choose their
 * factors per call.) A layer the engine does not run (a
 * linear-attention layer of a hybrid model, a mechanism not built) is reported
 * with its status and message, exit 2. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mla.h"

/* The whole file in a 64-byte aligned buffer (safetensors data is borrowed in
 * place, so its alignment matters); NULL on failure, with a message. */
static void *read_file(const char *dir, const char *name, size_t *len) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "checkpoint: %s: %s\n", path, strerror(errno));
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    void *buf = n >= 0 ? aligned_alloc(64, ((size_t)n + 64) / 64 * 64) : NULL;
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "checkpoint: %s: cannot read %ld bytes\n", path, n);
        fclose(f);
        free(buf);
        return NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* An engine for `cfg` with attention mode `mode`, in memory it allocates. */
static mla_engine *make_engine(mla_config cfg, const mla_weights *w, mla_attn_mode mode,
                               void **mem, mla_status *status) {
    cfg.attn_mode = mode;
    size_t bytes;
    mla_engine *e = NULL;
    mla_status s = mla_engine_size(&cfg, &bytes);
    *status = s;
    *mem = s == MLA_OK ? aligned_alloc(64, (bytes + 63) / 64 * 64) : NULL;
    if (s == MLA_OK && *mem) s = mla_engine_init(&cfg, w, *mem, bytes, &e);
    *status = s;
    if (s != MLA_OK || !e) {
        printf("engine: %s: %s\n", mla_status_str(s), mla_last_error(NULL));
        return NULL;
    }
    return e;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: checkpoint DIR LAYER [TOKENS]\n");
        return 1;
    }
    const char *dir = argv[1];
    unsigned layer = (unsigned)strtoul(argv[2], NULL, 10);
    unsigned tokens = argc > 3 ? (unsigned)strtoul(argv[3], NULL, 10) : 24;
    if (tokens == 0 || tokens > 4096) {
        fprintf(stderr, "checkpoint: TOKENS must be 1..4096\n");
        return 1;
    }
    size_t json_len, st_len;
    char *json = read_file(dir, "config.json", &json_len);
    void *st = json ? read_file(dir, "model.safetensors", &st_len) : NULL;
    if (!json || !st) return 1;

    /* 1. The layer's config from config.json: every field, for this layer. */
    mla_config cfg;
    mla_status s = mla_config_from_hf_json(json, json_len, layer, tokens, tokens, &cfg);
    if (s != MLA_OK) {
        printf("layer %u: %s: %s\n", layer, mla_status_str(s), mla_last_error(NULL));
        return s == MLA_ERR_UNSUPPORTED ? 2 : 1;
    }
    /* 2. Its weights under the checkpoint's own names, zero-copy. */
    mla_weights w;
    s = mla_weights_from_checkpoint(st, st_len, json, json_len, layer, &cfg, &w);
    if (s != MLA_OK) {
        printf("layer %u: weights: %s: %s\n", layer, mla_status_str(s), mla_last_error(NULL));
        return s == MLA_ERR_UNSUPPORTED ? 2 : 1;
    }
    printf("layer %u: hidden %u, heads %u, q_lora_rank %u, kv_lora_rank %u, nope %u, rope %u, v %u\n",
           layer, cfg.hidden_size, cfg.num_heads, cfg.q_lora_rank, cfg.kv_lora_rank,
           cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim);

    /* 3. Two engines: naive prefill, absorbed decode. */
    void *mem_a, *mem_b;
    mla_engine *a = make_engine(cfg, &w, MLA_ATTN_NAIVE, &mem_a, &s);
    mla_engine *b = a ? make_engine(cfg, &w, MLA_ATTN_ABSORB, &mem_b, &s) : NULL;
    if (!a || !b) {
        /* A layer that reads another layer's cache or top-k is refused here. */
        return s == MLA_ERR_UNSUPPORTED ? 2 : 1;
    }
    size_t d = cfg.hidden_size, n = (size_t)tokens * d;
    float *x = malloc(n * sizeof *x), *ya = malloc(n * sizeof *ya), *yb = malloc(n * sizeof *yb);
    if (!x || !ya || !yb) return 1;
    unsigned state = 12345u;
    for (size_t i = 0; i < n; i++) {
        state = state * 1664525u + 1013904223u;
        x[i] = (float)((state >> 8) & 0xffff) / 65536.0f - 0.5f;
    }
    unsigned prefill = tokens > 4 ? tokens - 4 : 1;
    mla_engine *both[2] = {a, b};
    float *outs[2] = {ya, yb};
    int k = 0;
    for (; k < 2; k++) {
        s = mla_forward(both[k], x, prefill, outs[k]);
        for (unsigned t = prefill; s == MLA_OK && t < tokens; t++)
            s = mla_forward(both[k], x + t * d, 1, outs[k] + t * d);
        if (s != MLA_OK) break;
    }
    if (s != MLA_OK) {
        printf("layer %u: forward: %s: %s\n", layer, mla_status_str(s), mla_last_error(both[k]));
        return s == MLA_ERR_UNSUPPORTED ? 2 : 1;
    }
    double diff = 0, ref = 0;
    for (size_t i = 0; i < n; i++) {
        diff = fmax(diff, fabs((double)ya[i] - (double)yb[i]));
        ref = fmax(ref, fabs((double)ya[i]));
    }
    double rel = ref > 0 ? diff / ref : diff;
    printf("layer %u: %u tokens, naive vs absorbed: rel diff %.2e (bound 1e-5) %s\n",
           layer, tokens, rel, rel <= 1e-5 ? "ok" : "FAIL");
    free(x);
    free(ya);
    free(yb);
    free(mem_a);
    free(mem_b);
    free(st);
    free(json);
    return rel <= 1e-5 ? 0 : 1;
}
