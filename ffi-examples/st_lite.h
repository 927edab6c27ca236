/*
 * st_lite.h: just enough of the safetensors format for the demos and tests: find
 * one F32 tensor by name in a file held in memory. (The library itself binds the
 * model weights with mla_weights_from_safetensors; this only fetches the stored
 * `inputs` and `outputs` reference tensors.) Header-only, C11 and C++17.
 *
 * Format: 8 bytes little-endian N, N bytes of JSON, then the data section. Each
 * tensor is a key "name": {"dtype": "F32", "shape": [..], "data_offsets": [b, e]}
 * with offsets relative to the data section.
 */
#ifndef MLA_ST_LITE_H
#define MLA_ST_LITE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/** A tensor found in the file: `rows * cols` little-endian floats at `data`. */
typedef struct st_tensor {
    const unsigned char *data; /* not necessarily 4-byte aligned: memcpy out */
    size_t rows;               /* 1 for a rank-1 tensor */
    size_t cols;
} st_tensor;

static size_t st_skip_ws(const char *s, size_t i, size_t n) {
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) {
        i++;
    }
    return i;
}

/* Parses a non-negative decimal integer at s[*i]; 0 on success. */
static int st_parse_uint(const char *s, size_t *i, size_t n, uint64_t *v) {
    uint64_t x = 0;
    size_t start = *i;
    while (*i < n && s[*i] >= '0' && s[*i] <= '9') {
        uint64_t d = (uint64_t)(s[*i] - '0');
        if (x > (UINT64_MAX - d) / 10) {
            return -1;
        }
        x = x * 10 + d;
        (*i)++;
    }
    *v = x;
    return *i > start ? 0 : -1;
}

/* Parses "[a, b, ...]" (at most `max` values) at s[*i]; returns the count or -1. */
static int st_parse_list(const char *s, size_t *i, size_t n, uint64_t *vals, int max) {
    int count = 0;
    *i = st_skip_ws(s, *i, n);
    if (*i >= n || s[*i] != '[') {
        return -1;
    }
    (*i)++;
    *i = st_skip_ws(s, *i, n);
    if (*i < n && s[*i] == ']') {
        (*i)++;
        return 0;
    }
    for (;;) {
        *i = st_skip_ws(s, *i, n);
        if (count >= max || st_parse_uint(s, i, n, &vals[count]) != 0) {
            return -1;
        }
        count++;
        *i = st_skip_ws(s, *i, n);
        if (*i < n && s[*i] == ',') {
            (*i)++;
            continue;
        }
        if (*i < n && s[*i] == ']') {
            (*i)++;
            return count;
        }
        return -1;
    }
}

/* Finds the key `"key"` followed by ':' inside s[from, to); returns the index just
 * after the ':' or `to` when absent. */
static size_t st_find_key(const char *s, size_t from, size_t to, const char *key) {
    size_t klen = strlen(key);
    size_t i;
    for (i = from; i + klen + 2 <= to; i++) {
        if (s[i] == '"' && memcmp(s + i + 1, key, klen) == 0 && s[i + 1 + klen] == '"') {
            size_t j = st_skip_ws(s, i + klen + 2, to);
            if (j < to && s[j] == ':') {
                return j + 1;
            }
        }
    }
    return to;
}

/** Looks up F32 tensor `name` (rank 1 or 2); 0 on success, -1 if absent or malformed. */
static int st_find_f32(const unsigned char *file, size_t len, const char *name, st_tensor *out) {
    uint64_t hlen = 0;
    size_t k, obj, end, i;
    const char *h;
    uint64_t shape[2], offs[2];
    int rank;
    if (len < 8) {
        return -1;
    }
    for (k = 0; k < 8; k++) {
        hlen |= (uint64_t)file[k] << (8 * k);
    }
    if (hlen > len - 8) {
        return -1;
    }
    h = (const char *)(file + 8);
    /* The key must be followed by ':' and an object (metadata values are strings). */
    obj = 0;
    for (;;) {
        obj = st_find_key(h, obj, (size_t)hlen, name);
        if (obj >= (size_t)hlen) {
            return -1;
        }
        obj = st_skip_ws(h, obj, (size_t)hlen);
        if (obj < (size_t)hlen && h[obj] == '{') {
            break;
        }
    }
    /* A tensor entry holds no nested object and no '}' inside its strings. */
    for (end = obj; end < (size_t)hlen && h[end] != '}'; end++) {
    }
    if (end >= (size_t)hlen) {
        return -1;
    }
    i = st_find_key(h, obj, end, "dtype");
    i = st_skip_ws(h, i, end);
    if (i + 5 > end || memcmp(h + i, "\"F32\"", 5) != 0) {
        return -1;
    }
    i = st_find_key(h, obj, end, "shape");
    if (i >= end || (rank = st_parse_list(h, &i, end, shape, 2)) < 1) {
        return -1;
    }
    i = st_find_key(h, obj, end, "data_offsets");
    if (i >= end || st_parse_list(h, &i, end, offs, 2) != 2) {
        return -1;
    }
    out->rows = rank == 2 ? (size_t)shape[0] : 1;
    out->cols = (size_t)shape[rank - 1];
    if (offs[0] > offs[1] || offs[1] > len - 8 - hlen ||
        (out->cols != 0 && out->rows > SIZE_MAX / 4 / out->cols) ||
        offs[1] - offs[0] != (uint64_t)out->rows * out->cols * 4) {
        return -1;
    }
    out->data = file + 8 + hlen + offs[0];
    return 0;
}

#endif /* MLA_ST_LITE_H */
