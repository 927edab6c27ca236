/* host_c: links the installed static library (mla::mla) and runs one token
 * through the tutorial layer whose weights come from argv[1]. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mla.h>

int main(int argc, char **argv) {
    mla_config cfg;
    mla_weights w;
    mla_engine *e = NULL;
    size_t size = 0, len = 0;
    unsigned char *file = NULL;
    void *arena = NULL;
    float x[256], out[256];
    FILE *f;
    int rc = 1, i;
    mla_status s;

    if (argc < 2 || mla_abi_version() != MLA_ABI_VERSION) {
        fprintf(stderr, "usage: host_c tutorial.safetensors\n");
        return 1;
    }
    f = fopen(argv[1], "rb");
    if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (len = (size_t)ftell(f)) == 0 ||
        fseek(f, 0, SEEK_SET) != 0) {
        fprintf(stderr, "host_c: cannot read %s\n", argv[1]);
        goto done;
    }
    file = (unsigned char *)aligned_alloc(64, (len + 63) / 64 * 64);
    if (file == NULL || fread(file, 1, len, f) != len) {
        goto done;
    }
    mla_config_tutorial(&cfg);
    s = mla_engine_size(&cfg, &size);
    if (s == MLA_OK) {
        arena = aligned_alloc(64, (size + 63) / 64 * 64);
        s = arena != NULL ? MLA_OK : MLA_ERR_BUFFER_TOO_SMALL;
    }
    if (s == MLA_OK) {
        s = mla_weights_from_safetensors(file, len, "model.layers.0.self_attn.", &cfg, &w);
    }
    if (s == MLA_OK) {
        s = mla_engine_init(&cfg, &w, arena, size, &e);
    }
    for (i = 0; i < 256; i++) {
        x[i] = (float)((i % 7) - 3) * 0.25f;
    }
    if (s == MLA_OK) {
        s = mla_forward(e, x, 1, out);
    }
    if (s != MLA_OK) {
        fprintf(stderr, "host_c: %s\n", mla_status_str(s));
        goto done;
    }
    printf("host_c: mla %s, engine %zu bytes, len %u, out[0] = %g\n", mla_version(), size,
           mla_len(e), (double)out[0]);
    rc = 0;
done:
    if (f != NULL) {
        fclose(f);
    }
    free(arena);
    free(file);
    return rc;
}
