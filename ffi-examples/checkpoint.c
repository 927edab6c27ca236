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
 * factors per call.) A layer that reads another layer's state (a kv_shared
 * layer reads a producer's latent cache, a dsa shared layer its top-k) runs
 * with its producers registered (mla_engine_share_cache / _topk), each the
 * nearest earlier layer the share call accepts (a shared top-k layer passes
 * its own producer's selection on, so this is the checkpoint's source or an
 * equal one); every call runs the producers first on the same tokens. A
 * layer the engine does not run (a linear-attention layer of a hybrid model,
 * a mechanism not built), or whose producer it does not run, is reported with
 * its status and message, exit 2. */
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

#define MAX_LAYERS 64

/* One decoder layer: its config, weights and two engines (naive, absorbed). */
typedef struct {
    int state; /* 0 not opened, 1 open, -1 refused */
    mla_status status;
    char why[512];
    mla_config cfg;
    mla_weights w;
    void *mem[2];
    mla_engine *e[2];
    int cache_from, topk_from; /* producer layers, -1: none */
} layer_t;

static layer_t g_layers[MAX_LAYERS];
static const char *g_json;
static size_t g_json_len;
static const void *g_st;
static size_t g_st_len;
static unsigned g_tokens;

/* Appends to `why` the reason layer `refused` was refused, if any (-1: none). */
static void add_refused(char *why, size_t len, int refused) {
    if (refused >= 0) {
        char tail[sizeof g_layers[0].why + 32];
        size_t at = strlen(why);
        snprintf(tail, sizeof tail, " (layer %d: %s)", refused, g_layers[refused].why);
        snprintf(why + at, len - at, "%s", tail);
    }
}

/* An engine for `cfg` with attention mode `mode`, in memory it allocates. */
static mla_engine *make_engine(mla_config cfg, const mla_weights *w, mla_attn_mode mode,
                               void **mem, mla_status *status) {
    cfg.attn_mode = mode;
    size_t bytes;
    mla_engine *e = NULL;
    mla_status s = mla_engine_size(&cfg, &bytes);
    *mem = s == MLA_OK ? aligned_alloc(64, (bytes + 63) / 64 * 64) : NULL;
    if (s == MLA_OK && *mem) s = mla_engine_init(&cfg, w, *mem, bytes, &e);
    *status = s;
    return s == MLA_OK ? e : NULL;
}

static int open_layer(unsigned l);

/* Registers on both engines of `l` the nearest earlier layer whose engines the
 * share call accepts; returns it, or -1 (then `*refused` is the nearest earlier
 * layer this build refused, or -1). */
static int find_producer(unsigned l, int topk, int *refused) {
    layer_t *c = &g_layers[l];
    *refused = -1;
    for (int j = (int)l - 1; j >= 0; j--) {
        if (open_layer((unsigned)j) != 1) {
            if (*refused < 0) *refused = j;
            continue;
        }
        layer_t *p = &g_layers[j];
        int ok = 1;
        for (int k = 0; k < 2 && ok; k++) {
            mla_status s = topk ? mla_engine_share_topk(c->e[k], p->e[k])
                                : mla_engine_share_cache(c->e[k], p->e[k]);
            ok = s == MLA_OK;
        }
        if (ok) return j;
    }
    return -1;
}

/* Opens layer `l` (config, weights, engines, producers): 1, or -1 refused. */
static int open_layer(unsigned l) {
    layer_t *L = &g_layers[l];
    int refused;
    if (L->state != 0) return L->state;
    L->state = -1;
    L->cache_from = L->topk_from = -1;
    mla_status s = mla_config_from_hf_json(g_json, g_json_len, l, g_tokens, g_tokens, &L->cfg);
    if (s == MLA_OK)
        s = mla_weights_from_checkpoint(g_st, g_st_len, g_json, g_json_len, l, &L->cfg, &L->w);
    if (s == MLA_OK) L->e[0] = make_engine(L->cfg, &L->w, MLA_ATTN_NAIVE, &L->mem[0], &s);
    if (s == MLA_OK) L->e[1] = make_engine(L->cfg, &L->w, MLA_ATTN_ABSORB, &L->mem[1], &s);
    L->status = s;
    if (s != MLA_OK) {
        snprintf(L->why, sizeof L->why, "%s: %s", mla_status_str(s), mla_last_error(NULL));
        return -1;
    }
    L->state = 1;
    if (L->cfg.kv_shared) {
        L->cache_from = find_producer(l, 0, &refused);
        if (L->cache_from < 0) {
            L->state = -1;
            L->status = MLA_ERR_UNSUPPORTED;
            snprintf(L->why, sizeof L->why,
                     "kv_shared: no earlier layer this build runs is accepted by "
                     "mla_engine_share_cache");
            add_refused(L->why, sizeof L->why, refused);
            return -1;
        }
    }
    if (L->cfg.dsa == MLA_DSA_SHARED) {
        L->topk_from = find_producer(l, 1, &refused);
        if (L->topk_from < 0) {
            L->state = -1;
            L->status = MLA_ERR_UNSUPPORTED;
            snprintf(L->why, sizeof L->why,
                     "dsa shared: no earlier layer this build runs is accepted by "
                     "mla_engine_share_topk");
            add_refused(L->why, sizeof L->why, refused);
            return -1;
        }
    }
    return 1;
}

/* Marks `l` and, recursively, its producers in `run`. */
static void mark(int l, int *run) {
    if (l < 0 || run[l]) return;
    run[l] = 1;
    mark(g_layers[l].cache_from, run);
    mark(g_layers[l].topk_from, run);
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
    if (layer >= MAX_LAYERS) {
        fprintf(stderr, "checkpoint: LAYER must be below %d\n", MAX_LAYERS);
        return 1;
    }
    size_t json_len, st_len;
    char *json = read_file(dir, "config.json", &json_len);
    void *st = json ? read_file(dir, "model.safetensors", &st_len) : NULL;
    if (!json || !st) return 1;
    g_json = json;
    g_json_len = json_len;
    g_st = st;
    g_st_len = st_len;
    g_tokens = tokens;

    /* 1. The layer's config from config.json (every field, for this layer), its
     * weights under the checkpoint's own names (zero-copy), two engines (naive
     * prefill, absorbed decode), and the producers it reads, likewise. */
    mla_config cfg;
    mla_status s = mla_config_from_hf_json(json, json_len, layer, tokens, tokens, &cfg);
    if (s != MLA_OK) {
        printf("layer %u: %s: %s\n", layer, mla_status_str(s), mla_last_error(NULL));
        return s == MLA_ERR_UNSUPPORTED ? 2 : 1;
    }
    if (open_layer(layer) != 1) {
        const layer_t *L = &g_layers[layer];
        printf("layer %u: %s\n", layer, L->why);
        return L->status == MLA_ERR_UNSUPPORTED ? 2 : 1;
    }
    printf("layer %u: hidden %u, heads %u, q_lora_rank %u, kv_lora_rank %u, nope %u, rope %u, v %u\n",
           layer, cfg.hidden_size, cfg.num_heads, cfg.q_lora_rank, cfg.kv_lora_rank,
           cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim);
    int run[MAX_LAYERS] = {0};
    mark((int)layer, run);
    for (unsigned j = 0; j < layer; j++) {
        if (g_layers[j].state != 1 || !run[j]) continue;
        if (g_layers[j].cfg.hidden_size != cfg.hidden_size) {
            printf("layer %u: producer layer %u has another hidden_size\n", layer, j);
            return 1;
        }
    }
    if (g_layers[layer].cache_from >= 0)
        printf("layer %u: reads the latent cache of layer %d\n", layer, g_layers[layer].cache_from);
    if (g_layers[layer].topk_from >= 0)
        printf("layer %u: reuses the top-k of layer %d\n", layer, g_layers[layer].topk_from);

    size_t d = cfg.hidden_size, n = (size_t)tokens * d;
    float *x = malloc(n * sizeof *x), *ya = malloc(n * sizeof *ya), *yb = malloc(n * sizeof *yb);
    float *scratch = malloc(n * sizeof *scratch);
    if (!x || !ya || !yb || !scratch) return 1;
    unsigned state = 12345u;
    for (size_t i = 0; i < n; i++) {
        state = state * 1664525u + 1013904223u;
        x[i] = (float)((state >> 8) & 0xffff) / 65536.0f - 0.5f;
    }
    /* 2. The same calls on both paths; each call runs the producers first (in
     * layer order, on the same tokens), then the layer. */
    unsigned prefill = tokens > 4 ? tokens - 4 : 1;
    float *outs[2] = {ya, yb};
    int k = 0;
    unsigned failed = layer;
    s = MLA_OK;
    for (; k < 2 && s == MLA_OK; k++) {
        for (unsigned at = 0; s == MLA_OK && at < tokens; at += at == 0 ? prefill : 1) {
            unsigned count = at == 0 ? prefill : 1;
            for (unsigned j = 0; j <= layer && s == MLA_OK; j++) {
                if (!run[j]) continue;
                float *y = j == layer ? outs[k] : scratch;
                s = mla_forward(g_layers[j].e[k], x + at * d, count, y + at * d);
                failed = j;
            }
        }
    }
    if (s != MLA_OK) {
        printf("layer %u: forward (layer %u): %s: %s\n", layer, failed, mla_status_str(s),
               mla_last_error(g_layers[failed].e[k - 1]));
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
    free(scratch);
    for (unsigned j = 0; j < MAX_LAYERS; j++) {
        free(g_layers[j].mem[0]);
        free(g_layers[j].mem[1]);
    }
    free(st);
    free(json);
    return rel <= 1e-5 ? 0 : 1;
}
