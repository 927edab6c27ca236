/* tiny.c: one MLA layer, weights from a safetensors file, prefill + decode. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mla.h"

int main(int argc, char **argv) {
    /* 1. The weights: any bytes in memory (read or mmap-ed), borrowed zero-copy. */
    const char *path = argc > 1 ? argv[1] : "tests/data/tutorial.safetensors";
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "tiny: %s: %s\n", path, strerror(errno));
        return 1;
    }
    fseek(f, 0, SEEK_END);
    size_t len = (size_t)ftell(f);
    rewind(f);
    void *file = aligned_alloc(64, (len + 63) / 64 * 64);
    if (!file || fread(file, 1, len, f) != len) {
        fprintf(stderr, "tiny: %s: cannot read %zu bytes\n", path, len);
        return 1;
    }
    fclose(f);

    /* 2. A config: start from a preset, change fields, validate. */
    mla_config cfg;
    mla_config_tutorial(&cfg);          /* sets every field, struct_size included */
    cfg.max_seq_len = 256;              /* cache capacity in tokens */
    char msg[MLA_MESSAGE_MAX];
    if (mla_config_validate(&cfg, msg, sizeof msg) != MLA_OK) {
        fprintf(stderr, "tiny: config: %s\n", msg);
        return 1;
    }

    /* 3. Memory: the engine, its latent cache and all scratch live in one
     *    64-byte aligned buffer that the caller owns. The engine never allocates. */
    size_t bytes;
    mla_status s = mla_engine_size(&cfg, &bytes);
    void *mem = s == MLA_OK ? aligned_alloc(64, (bytes + 63) / 64 * 64) : NULL;
    if (!mem) {
        fprintf(stderr, "tiny: no memory for the engine\n");
        return 1;
    }

    /* 4. Bind the weights (HF names under the prefix) and place the engine. */
    mla_weights w;
    mla_engine *e;
    s = mla_weights_from_safetensors(file, len, "model.layers.0.self_attn.", &cfg, &w);
    if (s == MLA_OK) s = mla_engine_init(&cfg, &w, mem, bytes, &e);
    if (s != MLA_OK) {
        fprintf(stderr, "tiny: %s: %s\n", mla_status_str(s), mla_last_error(NULL));
        return 1;
    }

    /* 5. Prefill 4 tokens in one call, then decode one token per call.
     *    x and out are [n_tokens][hidden_size] floats. */
    enum { D = 256 };
    static float x[4 * D], out[4 * D];
    for (int i = 0; i < 4 * D; i++) x[i] = (float)(i % 17) / 17.0f - 0.5f;
    s = mla_forward(e, x, 4, out);                 /* positions 0..3 */
    for (int t = 0; s == MLA_OK && t < 3; t++)
        s = mla_forward(e, x + t * D, 1, out);     /* positions 4, 5, 6 */
    if (s != MLA_OK) {
        fprintf(stderr, "tiny: %s: %s\n", mla_status_str(s), mla_last_error(e));
        return 1;
    }
    printf("%u tokens cached, out[0] = %f\n", mla_len(e), out[0]);

    /* 6. Nothing to destroy: stop using the engine, then free its memory. */
    free(mem);
    free(file);
    return 0;
}
