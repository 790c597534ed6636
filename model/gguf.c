// gguf.c — GGUF container reader (mmap, every read bounds-checked) and streaming writer.
// Byte layout: FORMATS §2c and ggml docs/gguf.md. All integers little-endian.
#include "model/gguf.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/common.h"

#define GGUF_MAGIC "GGUF"
#define GGUF_MAX_NESTING 4        // arrays of arrays: deeper nesting is refused (stack safety)
#define GGUF_READ_MAX_NAME 256    // tensor names longer than this are refused when reading
#define GGUF_WRITE_MAX_NAME 63    // ggml's GGML_MAX_NAME is 64 bytes including the NUL
#define GGUF_MAX_KEY 65535

// ---------------------------------------------------------------------------------------------
// Types

typedef struct {
    uint32_t type;
    const char *name;
    size_t block;   // elements per block
    size_t bytes;   // bytes per block
} TypeInfo;

static const TypeInfo TYPE_INFO[] = {
    {GGML_TYPE_F32, "F32", 1, 4},       {GGML_TYPE_F16, "F16", 1, 2},       {GGML_TYPE_Q4_0, "Q4_0", 32, 18},
    {GGML_TYPE_Q4_1, "Q4_1", 32, 20},   {GGML_TYPE_Q5_0, "Q5_0", 32, 22},   {GGML_TYPE_Q5_1, "Q5_1", 32, 24},
    {GGML_TYPE_Q8_0, "Q8_0", 32, 34},   {GGML_TYPE_Q8_1, "Q8_1", 32, 36},   {GGML_TYPE_Q2_K, "Q2_K", 256, 84},
    {GGML_TYPE_Q3_K, "Q3_K", 256, 110}, {GGML_TYPE_Q4_K, "Q4_K", 256, 144}, {GGML_TYPE_Q5_K, "Q5_K", 256, 176},
    {GGML_TYPE_Q6_K, "Q6_K", 256, 210}, {GGML_TYPE_Q8_K, "Q8_K", 256, 292}, {GGML_TYPE_I8, "I8", 1, 1},
    {GGML_TYPE_I16, "I16", 1, 2},       {GGML_TYPE_I32, "I32", 1, 4},       {GGML_TYPE_I64, "I64", 1, 8},
    {GGML_TYPE_F64, "F64", 1, 8},       {GGML_TYPE_BF16, "BF16", 1, 2},
};

static const TypeInfo *type_info(uint32_t t) {
    for (size_t i = 0; i < sizeof TYPE_INFO / sizeof TYPE_INFO[0]; i++)
        if (TYPE_INFO[i].type == t) return &TYPE_INFO[i];
    return NULL;
}

const char *gguf_type_name(uint32_t t) {
    const TypeInfo *ti = type_info(t);
    return ti ? ti->name : "?";
}

size_t gguf_type_nbytes(uint32_t t, size_t n) {
    const TypeInfo *ti = type_info(t);
    size_t out;
    if (!ti || n % ti->block != 0 || ftk_mul(n / ti->block, ti->bytes, &out)) return 0;
    return out;
}

// Byte size of a fixed-size KV value type; 0 for STRING / ARRAY / unknown.
static size_t value_size(uint32_t t) {
    switch (t) {
    case GGUF_TYPE_UINT8: case GGUF_TYPE_INT8: case GGUF_TYPE_BOOL: return 1;
    case GGUF_TYPE_UINT16: case GGUF_TYPE_INT16: return 2;
    case GGUF_TYPE_UINT32: case GGUF_TYPE_INT32: case GGUF_TYPE_FLOAT32: return 4;
    case GGUF_TYPE_UINT64: case GGUF_TYPE_INT64: case GGUF_TYPE_FLOAT64: return 8;
    default: return 0;
    }
}

const char *gguf_value_type_name(uint32_t t) {
    static const char *names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array",
                                  "u64", "i64", "f64"};
    return t < sizeof names / sizeof names[0] ? names[t] : "?";
}

static uint16_t rd_u16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static uint32_t rd_u32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t rd_u64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

// ---------------------------------------------------------------------------------------------
// Reader: a cursor over the mapping that refuses to step past its end.

typedef struct {
    const uint8_t *p;
    size_t len, pos;
    const char *path;
    char *err;
} Cursor;

static int cur_need(Cursor *c, size_t n, const char *what) {
    if (n > c->len - c->pos)
        return ftk_err(c->err, "%s: truncated: %s needs %zu bytes at offset %zu but only %zu remain", c->path, what, n,
                       c->pos, c->len - c->pos);
    return 0;
}

static int cur_u32(Cursor *c, uint32_t *v, const char *what) {
    if (cur_need(c, 4, what)) return -1;
    *v = rd_u32(c->p + c->pos);
    c->pos += 4;
    return 0;
}

static int cur_u64(Cursor *c, uint64_t *v, const char *what) {
    if (cur_need(c, 8, what)) return -1;
    *v = rd_u64(c->p + c->pos);
    c->pos += 8;
    return 0;
}

// A GGUF string: u64 length + bytes. The length is checked against what is left of the file.
static int cur_str(Cursor *c, const uint8_t **s, size_t *n, const char *what) {
    uint64_t len;
    if (cur_u64(c, &len, what)) return -1;
    if (len > c->len - c->pos)
        return ftk_err(c->err, "%s: %s length %llu at offset %zu runs past the end of the file (%zu bytes)", c->path,
                       what, (unsigned long long)len, c->pos - 8, c->len);
    *s = c->p + c->pos;
    *n = (size_t)len;
    c->pos += (size_t)len;
    return 0;
}

static char *dup_bytes(const uint8_t *s, size_t n) {
    char *o = malloc(n + 1);
    if (!o) return NULL;
    memcpy(o, s, n);
    o[n] = 0;
    return o;
}

// Steps over one value of type t (validating it), recursing into arrays up to GGUF_MAX_NESTING.
static int skip_value(Cursor *c, uint32_t t, int depth, const char *key) {
    size_t sz = value_size(t);
    if (sz) {
        if (cur_need(c, sz, key)) return -1;
        c->pos += sz;
        return 0;
    }
    if (t == GGUF_TYPE_STRING) {
        const uint8_t *s;
        size_t n;
        return cur_str(c, &s, &n, key);
    }
    if (t != GGUF_TYPE_ARRAY) return ftk_err(c->err, "%s: key '%s': unknown value type %u", c->path, key, t);
    if (depth >= GGUF_MAX_NESTING)
        return ftk_err(c->err, "%s: key '%s': arrays nested deeper than %d", c->path, key, GGUF_MAX_NESTING);
    uint32_t et;
    uint64_t count;
    if (cur_u32(c, &et, key) || cur_u64(c, &count, key)) return -1;
    // Every element needs at least min_sz bytes: a count that cannot fit is refused before any loop.
    size_t esz = value_size(et), min_sz = esz;
    if (et == GGUF_TYPE_STRING) min_sz = 8;
    else if (et == GGUF_TYPE_ARRAY) min_sz = 12;
    else if (!esz) return ftk_err(c->err, "%s: key '%s': array of unknown value type %u", c->path, key, et);
    size_t need;
    if (count > SIZE_MAX || ftk_mul((size_t)count, min_sz, &need) || need > c->len - c->pos)
        return ftk_err(c->err, "%s: key '%s': array of %llu %s elements runs past the end of the file", c->path, key,
                       (unsigned long long)count, gguf_value_type_name(et));
    if (esz) {
        c->pos += need;
        return 0;
    }
    for (uint64_t i = 0; i < count; i++)
        if (skip_value(c, et, depth + 1, key)) return -1;
    return 0;
}

// A key or tensor name: a GGUF string of 1..max bytes, returned as a NUL-terminated copy.
static int cur_name(Cursor *c, const char *what, size_t max, char **out) {
    const uint8_t *s = NULL;
    size_t n = 0;
    if (cur_str(c, &s, &n, what)) return -1;
    if (n == 0 || n > max) return ftk_err(c->err, "%s: %s has bad length %zu", c->path, what, n);
    *out = dup_bytes(s, n);
    if (!*out) return ftk_err(c->err, "%s: out of memory", c->path);
    return 0;
}

static int parse_kv(Cursor *c, GgufKV *kv, size_t index) {
    char what[64];
    snprintf(what, sizeof what, "key #%zu", index);
    if (cur_name(c, what, GGUF_MAX_KEY, &kv->key)) return -1;
    uint32_t t;
    if (cur_u32(c, &t, kv->key)) return -1;
    kv->type = (GgufValueType)t;
    size_t start = c->pos;
    if (t == GGUF_TYPE_ARRAY) {
        // peek the element type and count (skip_value validates them again)
        if (cur_need(c, 12, kv->key)) return -1;
        kv->arr_type = (GgufValueType)rd_u32(c->p + c->pos);
        kv->arr_n = rd_u64(c->p + c->pos + 4);
        kv->arr_data = c->p + c->pos + 12;
    }
    if (skip_value(c, t, 0, kv->key)) return -1;
    kv->val = c->p + start;
    kv->val_len = c->pos - start;
    return 0;
}

static int parse_tensor_info(Cursor *c, GgufTensor *t, size_t index) {
    char what[64];
    snprintf(what, sizeof what, "tensor #%zu name", index);
    if (cur_name(c, what, GGUF_READ_MAX_NAME, &t->name)) return -1;
    uint32_t nd, type;
    if (cur_u32(c, &nd, t->name)) return -1;
    if (nd < 1 || nd > GGUF_MAX_DIMS)
        return ftk_err(c->err, "%s: tensor '%s' has %u dimensions (1..%d allowed)", c->path, t->name, nd, GGUF_MAX_DIMS);
    t->n_dims = (int)nd;
    for (int j = 0; j < GGUF_MAX_DIMS; j++) t->ne[j] = 1;
    for (uint32_t j = 0; j < nd; j++) {
        if (cur_u64(c, &t->ne[j], t->name)) return -1;
        if (t->ne[j] > (uint64_t)INT64_MAX)
            return ftk_err(c->err, "%s: tensor '%s' dimension %u is negative", c->path, t->name, j);
    }
    if (cur_u32(c, &type, t->name) || cur_u64(c, &t->offset, t->name)) return -1;
    const TypeInfo *ti = type_info(type);
    if (!ti) return ftk_err(c->err, "%s: tensor '%s' has unknown ggml type %u", c->path, t->name, type);
    t->type = (GgmlType)type;
    size_t ne_all = 1;
    for (int j = 0; j < GGUF_MAX_DIMS; j++)
        if (t->ne[j] > SIZE_MAX || ftk_mul(ne_all, (size_t)t->ne[j], &ne_all))
            return ftk_err(c->err, "%s: tensor '%s' element count overflows", c->path, t->name);
    t->n_elems = ne_all;
    if (t->ne[0] % ti->block != 0)
        return ftk_err(c->err, "%s: tensor '%s' (%s) row length %llu is not a multiple of the block size %zu", c->path,
                       t->name, ti->name, (unsigned long long)t->ne[0], ti->block);
    if (ftk_mul(ne_all / ti->block, ti->bytes, &t->n_bytes))
        return ftk_err(c->err, "%s: tensor '%s' byte size overflows", c->path, t->name);
    return 0;
}

static int cmp_tensor_offset(const void *a, const void *b) {
    const GgufTensor *x = *(const GgufTensor *const *)a, *y = *(const GgufTensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static int validate_layout(GgufFile *f, char *err) {
    for (size_t i = 0; i < f->n_tensors; i++) {
        GgufTensor *t = &f->tensors[i];
        if (t->offset % f->alignment != 0)
            return ftk_err(err, "%s: tensor '%s' offset %llu is not a multiple of the alignment %zu", f->path, t->name,
                           (unsigned long long)t->offset, f->alignment);
        size_t start, end;
        if (t->offset > SIZE_MAX || ftk_add(f->data_offset, (size_t)t->offset, &start) ||
            ftk_add(start, t->n_bytes, &end) || end > f->map_len)
            return ftk_err(err, "%s: tensor '%s' (offset %llu, %zu bytes) runs past the end of the file (%zu bytes)",
                           f->path, t->name, (unsigned long long)t->offset, t->n_bytes, f->map_len);
        t->data = (const uint8_t *)f->map + start;
    }
    // names unique; data ranges disjoint (sorted by offset)
    GgufTensor **byoff = malloc((f->n_tensors ? f->n_tensors : 1) * sizeof *byoff);
    if (!byoff) return ftk_err(err, "%s: out of memory", f->path);
    for (size_t i = 0; i < f->n_tensors; i++) byoff[i] = &f->tensors[i];
    qsort(byoff, f->n_tensors, sizeof *byoff, cmp_tensor_offset);
    int rc = 0;
    for (size_t i = 1; i < f->n_tensors && !rc; i++)
        if (byoff[i - 1]->offset + byoff[i - 1]->n_bytes > byoff[i]->offset)
            rc = ftk_err(err, "%s: tensors '%s' and '%s' overlap", f->path, byoff[i - 1]->name, byoff[i]->name);
    free(byoff);
    return rc;
}

static int check_duplicates(const GgufFile *f, char *err) {
    // O(n^2) string compares: a few hundred tensors at most in the models ftk handles.
    for (size_t i = 0; i < f->n_kv; i++)
        for (size_t j = 0; j < i; j++)
            if (strcmp(f->kvs[i].key, f->kvs[j].key) == 0)
                return ftk_err(err, "%s: duplicate key '%s'", f->path, f->kvs[i].key);
    for (size_t i = 0; i < f->n_tensors; i++)
        for (size_t j = 0; j < i; j++)
            if (strcmp(f->tensors[i].name, f->tensors[j].name) == 0)
                return ftk_err(err, "%s: duplicate tensor '%s'", f->path, f->tensors[i].name);
    return 0;
}

static int gguf_parse(GgufFile *f, char *err) {
    Cursor c = {f->map, f->map_len, 0, f->path, err};
    if (f->map_len < 4 || memcmp(f->map, GGUF_MAGIC, 4) != 0)
        return ftk_err(err, "%s: not a GGUF file (bad magic)", f->path);
    c.pos = 4;
    uint64_t n_tensors, n_kv;
    if (cur_u32(&c, &f->version, "version")) return -1;
    if (f->version != 2 && f->version != 3) {
        if ((f->version & 0xffff) == 0) return ftk_err(err, "%s: big-endian GGUF is not supported", f->path);
        return ftk_err(err, "%s: unsupported GGUF version %u (2 and 3 are read)", f->path, f->version);
    }
    if (cur_u64(&c, &n_tensors, "tensor count") || cur_u64(&c, &n_kv, "KV count")) return -1;
    // Each KV needs >= 13 bytes (key length, 1 key byte, type, 1 value byte), each tensor info >= 29:
    // refuse counts the file cannot hold before allocating for them.
    size_t left = f->map_len - c.pos;
    if (n_kv > left / 13 || n_tensors > left / 29)
        return ftk_err(err, "%s: header claims %llu KVs and %llu tensors, more than the file (%zu bytes) can hold",
                       f->path, (unsigned long long)n_kv, (unsigned long long)n_tensors, f->map_len);
    f->kvs = calloc(n_kv ? n_kv : 1, sizeof *f->kvs);
    f->tensors = calloc(n_tensors ? n_tensors : 1, sizeof *f->tensors);
    if (!f->kvs || !f->tensors) return ftk_err(err, "%s: out of memory", f->path);
    for (size_t i = 0; i < n_kv; i++) {
        f->n_kv = i + 1;   // so gguf_close frees the partial entry
        if (parse_kv(&c, &f->kvs[i], i)) return -1;
    }
    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    const GgufKV *al = gguf_find_kv(f, "general.alignment");
    if (al) {
        if (al->type != GGUF_TYPE_UINT32)
            return ftk_err(err, "%s: general.alignment has type %s, expected u32", f->path, gguf_value_type_name(al->type));
        uint32_t a = rd_u32(al->val);
        if (a == 0 || (a & (a - 1)) != 0 || a > (1u << 24))
            return ftk_err(err, "%s: general.alignment %u is not a power of two (<= 2^24)", f->path, a);
        f->alignment = a;
    }
    for (size_t i = 0; i < n_tensors; i++) {
        f->n_tensors = i + 1;
        if (parse_tensor_info(&c, &f->tensors[i], i)) return -1;
    }
    // Data starts at the next multiple of the alignment. A vocab-only file (no tensors) may end
    // right after its header without padding.
    size_t pad = (f->alignment - c.pos % f->alignment) % f->alignment;
    f->data_offset = c.pos + pad;   // c.pos <= map_len and pad < 2^24: cannot overflow
    if (f->n_tensors > 0 && f->data_offset > f->map_len)
        return ftk_err(err, "%s: truncated: tensor data would start at %zu, past the end of the file (%zu bytes)",
                       f->path, f->data_offset, f->map_len);
    if (check_duplicates(f, err)) return -1;
    return validate_layout(f, err);
}

int gguf_open(GgufFile *f, const char *path, char *err) {
    memset(f, 0, sizeof *f);
    if (strlen(path) >= sizeof f->path) return ftk_err(err, "%s: path too long", path);
    snprintf(f->path, sizeof f->path, "%s", path);
    if (ftk_map_file(path, &f->map, &f->map_len, err)) return -1;
    if (gguf_parse(f, err)) {
        gguf_close(f);
        return -1;
    }
    return 0;
}

void gguf_close(GgufFile *f) {
    if (!f) return;
    for (size_t i = 0; i < f->n_kv; i++) free(f->kvs[i].key);
    for (size_t i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->kvs);
    free(f->tensors);
    ftk_unmap(f->map, f->map_len);
    memset(f, 0, sizeof *f);
}

const GgufKV *gguf_find_kv(const GgufFile *f, const char *key) {
    for (size_t i = 0; i < f->n_kv; i++)
        if (f->kvs[i].key && strcmp(f->kvs[i].key, key) == 0) return &f->kvs[i];
    return NULL;
}

const GgufTensor *gguf_find_tensor(const GgufFile *f, const char *name) {
    for (size_t i = 0; i < f->n_tensors; i++)
        if (f->tensors[i].name && strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

// ---------------------------------------------------------------------------------------------
// Typed getters

// Integer element of type t at p as int64; -1 if t is not an integer type or the u64 value > INT64_MAX.
static int int_elem(uint32_t t, const uint8_t *p, int64_t *out) {
    switch (t) {
    case GGUF_TYPE_UINT8: *out = p[0]; return 0;
    case GGUF_TYPE_INT8: *out = (int8_t)p[0]; return 0;
    case GGUF_TYPE_UINT16: *out = rd_u16(p); return 0;
    case GGUF_TYPE_INT16: *out = (int16_t)rd_u16(p); return 0;
    case GGUF_TYPE_UINT32: *out = rd_u32(p); return 0;
    case GGUF_TYPE_INT32: *out = (int32_t)rd_u32(p); return 0;
    case GGUF_TYPE_INT64: *out = (int64_t)rd_u64(p); return 0;
    case GGUF_TYPE_UINT64: {
        uint64_t v = rd_u64(p);
        if (v > (uint64_t)INT64_MAX) return -1;
        *out = (int64_t)v;
        return 0;
    }
    default: return -1;
    }
}

static int float_elem(uint32_t t, const uint8_t *p, double *out) {
    if (t == GGUF_TYPE_FLOAT32) {
        float v;
        memcpy(&v, p, 4);
        *out = v;
        return 0;
    }
    if (t == GGUF_TYPE_FLOAT64) {
        memcpy(out, p, 8);
        return 0;
    }
    return -1;
}

static int get_int(const GgufFile *f, const char *key, int64_t lo, int64_t hi, int64_t *out, char *err) {
    const GgufKV *kv = gguf_find_kv(f, key);
    if (!kv) return GGUF_ABSENT;
    if (int_elem(kv->type, kv->val, out) || *out < lo || *out > hi)
        return ftk_err(err, "%s: key '%s' has type %s or a value out of range (expected an integer in [%lld, %lld])",
                       f->path, key, gguf_value_type_name(kv->type), (long long)lo, (long long)hi);
    return 0;
}

int gguf_get_u32(const GgufFile *f, const char *key, uint32_t *out, char *err) {
    int64_t v = 0;
    int rc = get_int(f, key, 0, UINT32_MAX, &v, err);
    if (rc == 0) *out = (uint32_t)v;
    return rc;
}

int gguf_get_i32(const GgufFile *f, const char *key, int32_t *out, char *err) {
    int64_t v = 0;
    int rc = get_int(f, key, INT32_MIN, INT32_MAX, &v, err);
    if (rc == 0) *out = (int32_t)v;
    return rc;
}

int gguf_get_f32(const GgufFile *f, const char *key, float *out, char *err) {
    const GgufKV *kv = gguf_find_kv(f, key);
    if (!kv) return GGUF_ABSENT;
    double v;
    if (float_elem(kv->type, kv->val, &v))
        return ftk_err(err, "%s: key '%s' has type %s, expected f32", f->path, key, gguf_value_type_name(kv->type));
    *out = (float)v;
    return 0;
}

int gguf_get_bool(const GgufFile *f, const char *key, int *out, char *err) {
    const GgufKV *kv = gguf_find_kv(f, key);
    if (!kv) return GGUF_ABSENT;
    if (kv->type != GGUF_TYPE_BOOL)
        return ftk_err(err, "%s: key '%s' has type %s, expected bool", f->path, key, gguf_value_type_name(kv->type));
    *out = kv->val[0] != 0;
    return 0;
}

int gguf_get_str(const GgufFile *f, const char *key, char **out, char *err) {
    const GgufKV *kv = gguf_find_kv(f, key);
    if (!kv) return GGUF_ABSENT;
    if (kv->type != GGUF_TYPE_STRING)
        return ftk_err(err, "%s: key '%s' has type %s, expected string", f->path, key, gguf_value_type_name(kv->type));
    *out = dup_bytes(kv->val + 8, kv->val_len - 8);   // validated at open: val = u64 len + bytes
    if (!*out) return ftk_err(err, "%s: out of memory", f->path);
    return 0;
}

static const GgufKV *find_array(const GgufFile *f, const char *key, const char *want, char *err, int *rc) {
    const GgufKV *kv = gguf_find_kv(f, key);
    *rc = 0;
    if (!kv) {
        *rc = GGUF_ABSENT;
        return NULL;
    }
    if (kv->type != GGUF_TYPE_ARRAY) {
        *rc = ftk_err(err, "%s: key '%s' has type %s, expected an array of %s", f->path, key,
                      gguf_value_type_name(kv->type), want);
        return NULL;
    }
    return kv;
}

void gguf_free_str_array(char **a, size_t n) {
    if (!a) return;
    for (size_t i = 0; i < n; i++) free(a[i]);
    free(a);
}

int gguf_get_str_array(const GgufFile *f, const char *key, char ***out, size_t *n, char *err) {
    int rc;
    const GgufKV *kv = find_array(f, key, "string", err, &rc);
    if (!kv) return rc;
    if (kv->arr_type != GGUF_TYPE_STRING)
        return ftk_err(err, "%s: key '%s' is an array of %s, expected string", f->path, key,
                       gguf_value_type_name(kv->arr_type));
    size_t count = (size_t)kv->arr_n;   // validated at open against the file size
    char **a = calloc(count ? count : 1, sizeof *a);
    if (!a) return ftk_err(err, "%s: out of memory", f->path);
    const uint8_t *p = kv->arr_data;
    for (size_t i = 0; i < count; i++) {
        size_t len = (size_t)rd_u64(p);
        a[i] = dup_bytes(p + 8, len);
        if (!a[i]) {
            gguf_free_str_array(a, i);
            return ftk_err(err, "%s: out of memory", f->path);
        }
        p += 8 + len;
    }
    *out = a;
    *n = count;
    return 0;
}

int gguf_get_f32_array(const GgufFile *f, const char *key, float **out, size_t *n, char *err) {
    int rc;
    const GgufKV *kv = find_array(f, key, "f32", err, &rc);
    if (!kv) return rc;
    if (kv->arr_type != GGUF_TYPE_FLOAT32 && kv->arr_type != GGUF_TYPE_FLOAT64)
        return ftk_err(err, "%s: key '%s' is an array of %s, expected f32", f->path, key,
                       gguf_value_type_name(kv->arr_type));
    size_t count = (size_t)kv->arr_n, esz = value_size(kv->arr_type);
    float *a = malloc((count ? count : 1) * sizeof *a);
    if (!a) return ftk_err(err, "%s: out of memory", f->path);
    for (size_t i = 0; i < count; i++) {
        double v;
        float_elem(kv->arr_type, kv->arr_data + i * esz, &v);
        a[i] = (float)v;
    }
    *out = a;
    *n = count;
    return 0;
}

int gguf_get_i32_array(const GgufFile *f, const char *key, int32_t **out, size_t *n, char *err) {
    int rc;
    const GgufKV *kv = find_array(f, key, "integers", err, &rc);
    if (!kv) return rc;
    size_t count = (size_t)kv->arr_n, esz = value_size(kv->arr_type);
    const uint32_t et = kv->arr_type;
    const int is_int = et == GGUF_TYPE_UINT8 || et == GGUF_TYPE_INT8 || et == GGUF_TYPE_UINT16 || et == GGUF_TYPE_INT16 ||
                       et == GGUF_TYPE_UINT32 || et == GGUF_TYPE_INT32 || et == GGUF_TYPE_UINT64 || et == GGUF_TYPE_INT64;
    if (!is_int)
        return ftk_err(err, "%s: key '%s' is an array of %s, expected integers", f->path, key,
                       gguf_value_type_name(kv->arr_type));
    int32_t *a = malloc((count ? count : 1) * sizeof *a);
    if (!a) return ftk_err(err, "%s: out of memory", f->path);
    for (size_t i = 0; i < count; i++) {
        int64_t v;
        if (int_elem(kv->arr_type, kv->arr_data + i * esz, &v) || v < INT32_MIN || v > INT32_MAX) {
            free(a);
            return ftk_err(err, "%s: key '%s' element %zu does not fit in int32", f->path, key, i);
        }
        a[i] = (int32_t)v;
    }
    *out = a;
    *n = count;
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Tensor data -> fp32

void gguf_dequantize_q8_0(const uint8_t *src, float *dst, size_t n) {
    for (size_t b = 0; b < n / GGML_QK8_0; b++) {
        const uint8_t *blk = src + b * GGML_Q8_0_BLOCK_BYTES;
        const float d = ftk_f16_to_f32(rd_u16(blk));
        const int8_t *q = (const int8_t *)(blk + 2);
        for (int i = 0; i < GGML_QK8_0; i++) dst[b * GGML_QK8_0 + i] = d * (float)q[i];
    }
}

void gguf_quantize_q8_0(const float *src, uint8_t *dst, size_t n) {
    for (size_t b = 0; b < n / GGML_QK8_0; b++) {
        const float *x = src + b * GGML_QK8_0;
        float amax = 0.0f;
        for (int i = 0; i < GGML_QK8_0; i++) amax = fmaxf(amax, fabsf(x[i]));
        const float d = amax / 127.0f;            // the scale maps max|x| to 127
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        uint8_t *blk = dst + b * GGML_Q8_0_BLOCK_BYTES;
        uint16_t dh = ftk_f32_to_f16(d);
        memcpy(blk, &dh, 2);
        for (int i = 0; i < GGML_QK8_0; i++) blk[2 + i] = (uint8_t)(int8_t)roundf(x[i] * id);
    }
}

int gguf_tensor_to_f32(const GgufFile *f, const GgufTensor *t, float *dst, size_t n, char *err) {
    if (n != t->n_elems)
        return ftk_err(err, "%s: tensor '%s' has %zu elements, caller expected %zu", f->path, t->name, t->n_elems, n);
    const uint8_t *p = t->data;
    switch (t->type) {
    case GGML_TYPE_F32: memcpy(dst, p, n * sizeof(float)); return 0;
    case GGML_TYPE_F16: for (size_t i = 0; i < n; i++) dst[i] = ftk_f16_to_f32(rd_u16(p + 2 * i)); return 0;
    case GGML_TYPE_BF16: for (size_t i = 0; i < n; i++) dst[i] = ftk_bf16_to_f32(rd_u16(p + 2 * i)); return 0;
    case GGML_TYPE_Q8_0: gguf_dequantize_q8_0(p, dst, n); return 0;
    case GGML_TYPE_I8: for (size_t i = 0; i < n; i++) dst[i] = (float)(int8_t)p[i]; return 0;
    case GGML_TYPE_I16: for (size_t i = 0; i < n; i++) dst[i] = (float)(int16_t)rd_u16(p + 2 * i); return 0;
    case GGML_TYPE_I32: for (size_t i = 0; i < n; i++) dst[i] = (float)(int32_t)rd_u32(p + 4 * i); return 0;
    default:
        return ftk_err(err, "%s: tensor '%s' has ggml type %s, which ftk cannot convert (F32, F16, BF16, Q8_0, I8, "
                            "I16, I32 are supported)", f->path, t->name, gguf_type_name(t->type));
    }
}

// ---------------------------------------------------------------------------------------------
// Writer

typedef struct {
    char *key;
    uint8_t *val;     // u32 type + payload, exactly as written
    size_t val_len;
} WriterKV;

typedef struct {
    char *name;
    int n_dims;
    uint64_t ne[GGUF_MAX_DIMS];
    GgmlType type;
    size_t n_elems, n_bytes;
    uint64_t offset;
    const float *f32;     // one of: fp32 source,
    GgufFillFn fill;      //         fill callback (+ ctx),
    void *ctx;
    const void *raw;      //         or pre-encoded bytes
} WriterTensor;

struct GgufWriter {
    WriterKV *kvs;
    size_t n_kv, cap_kv;
    WriterTensor *ts;
    size_t n_t, cap_t;
    uint32_t alignment;
};

int gguf_writer_create(GgufWriter **w, char *err) {
    *w = calloc(1, sizeof **w);
    if (!*w) return ftk_err(err, "gguf writer: out of memory");
    (*w)->alignment = GGUF_DEFAULT_ALIGNMENT;
    return 0;
}

void gguf_writer_free(GgufWriter *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kvs[i].key);
        free(w->kvs[i].val);
    }
    for (size_t i = 0; i < w->n_t; i++) free(w->ts[i].name);
    free(w->kvs);
    free(w->ts);
    free(w);
}

// Takes ownership of val (type + payload) and stores it under key, replacing an earlier value.
static int writer_put(GgufWriter *w, const char *key, uint8_t *val, size_t val_len, char *err) {
    size_t kn = key ? strlen(key) : 0;
    if (kn == 0 || kn > GGUF_MAX_KEY) {
        free(val);
        return ftk_err(err, "gguf writer: bad key '%s'", key ? key : "(null)");
    }
    if (strcmp(key, "general.alignment") == 0) {
        uint32_t type = rd_u32(val), a = val_len == 8 ? rd_u32(val + 4) : 0;
        if (type != GGUF_TYPE_UINT32 || a < 8 || a % 8 != 0 || (a & (a - 1)) != 0 || a > (1u << 24)) {
            free(val);
            return ftk_err(err, "gguf writer: general.alignment must be a u32 power of two, a multiple of 8");
        }
        w->alignment = a;
    }
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kvs[i].key, key) == 0) {
            free(w->kvs[i].val);
            w->kvs[i].val = val;
            w->kvs[i].val_len = val_len;
            return 0;
        }
    }
    if (w->n_kv == w->cap_kv) {
        size_t cap = w->cap_kv ? 2 * w->cap_kv : 16;
        WriterKV *k = realloc(w->kvs, cap * sizeof *k);
        if (!k) { free(val); return ftk_err(err, "gguf writer: out of memory"); }
        w->kvs = k;
        w->cap_kv = cap;
    }
    char *kc = strdup(key);
    if (!kc) { free(val); return ftk_err(err, "gguf writer: out of memory"); }
    w->kvs[w->n_kv++] = (WriterKV){kc, val, val_len};
    return 0;
}

// type + fixed-size payload
static int put_scalar(GgufWriter *w, const char *key, GgufValueType t, const void *v, char *err) {
    size_t sz = value_size(t);
    uint8_t *val = malloc(4 + sz);
    if (!val) return ftk_err(err, "gguf writer: out of memory");
    uint32_t t32 = t;
    memcpy(val, &t32, 4);
    memcpy(val + 4, v, sz);
    return writer_put(w, key, val, 4 + sz, err);
}

int gguf_writer_set_u8(GgufWriter *w, const char *k, uint8_t v, char *err) { return put_scalar(w, k, GGUF_TYPE_UINT8, &v, err); }
int gguf_writer_set_i8(GgufWriter *w, const char *k, int8_t v, char *err) { return put_scalar(w, k, GGUF_TYPE_INT8, &v, err); }
int gguf_writer_set_u16(GgufWriter *w, const char *k, uint16_t v, char *err) { return put_scalar(w, k, GGUF_TYPE_UINT16, &v, err); }
int gguf_writer_set_i16(GgufWriter *w, const char *k, int16_t v, char *err) { return put_scalar(w, k, GGUF_TYPE_INT16, &v, err); }
int gguf_writer_set_u32(GgufWriter *w, const char *k, uint32_t v, char *err) { return put_scalar(w, k, GGUF_TYPE_UINT32, &v, err); }
int gguf_writer_set_i32(GgufWriter *w, const char *k, int32_t v, char *err) { return put_scalar(w, k, GGUF_TYPE_INT32, &v, err); }
int gguf_writer_set_u64(GgufWriter *w, const char *k, uint64_t v, char *err) { return put_scalar(w, k, GGUF_TYPE_UINT64, &v, err); }
int gguf_writer_set_i64(GgufWriter *w, const char *k, int64_t v, char *err) { return put_scalar(w, k, GGUF_TYPE_INT64, &v, err); }
int gguf_writer_set_f32(GgufWriter *w, const char *k, float v, char *err) { return put_scalar(w, k, GGUF_TYPE_FLOAT32, &v, err); }
int gguf_writer_set_f64(GgufWriter *w, const char *k, double v, char *err) { return put_scalar(w, k, GGUF_TYPE_FLOAT64, &v, err); }

int gguf_writer_set_bool(GgufWriter *w, const char *k, int v, char *err) {
    uint8_t b = v != 0;
    return put_scalar(w, k, GGUF_TYPE_BOOL, &b, err);
}

int gguf_writer_set_alignment(GgufWriter *w, uint32_t a, char *err) {
    return gguf_writer_set_u32(w, "general.alignment", a, err);
}

int gguf_writer_set_str(GgufWriter *w, const char *key, const char *v, char *err) {
    size_t n = strlen(v);
    uint8_t *val = malloc(12 + n);
    if (!val) return ftk_err(err, "gguf writer: out of memory");
    uint32_t t = GGUF_TYPE_STRING;
    uint64_t n64 = n;
    memcpy(val, &t, 4);
    memcpy(val + 4, &n64, 8);
    memcpy(val + 12, v, n);
    return writer_put(w, key, val, 12 + n, err);
}

int gguf_writer_set_array(GgufWriter *w, const char *key, GgufValueType et, const void *data, size_t n, char *err) {
    size_t esz = value_size(et), bytes, total;
    if (!esz) return ftk_err(err, "gguf writer: key '%s': array element type %s not supported here", key,
                             gguf_value_type_name(et));
    if (ftk_mul(n, esz, &bytes) || ftk_add(bytes, 16, &total)) return ftk_err(err, "gguf writer: key '%s' too large", key);
    uint8_t *val = malloc(total);
    if (!val) return ftk_err(err, "gguf writer: out of memory");
    uint32_t t = GGUF_TYPE_ARRAY, e = et;
    uint64_t n64 = n;
    memcpy(val, &t, 4);
    memcpy(val + 4, &e, 4);
    memcpy(val + 8, &n64, 8);
    if (bytes) memcpy(val + 16, data, bytes);
    return writer_put(w, key, val, total, err);
}

int gguf_writer_set_str_array(GgufWriter *w, const char *key, const char *const *v, size_t n, char *err) {
    size_t total = 16;
    for (size_t i = 0; i < n; i++)
        if (ftk_add(total, 8 + strlen(v[i]), &total)) return ftk_err(err, "gguf writer: key '%s' too large", key);
    uint8_t *val = malloc(total);
    if (!val) return ftk_err(err, "gguf writer: out of memory");
    uint32_t t = GGUF_TYPE_ARRAY, e = GGUF_TYPE_STRING;
    uint64_t n64 = n;
    memcpy(val, &t, 4);
    memcpy(val + 4, &e, 4);
    memcpy(val + 8, &n64, 8);
    size_t pos = 16;
    for (size_t i = 0; i < n; i++) {
        uint64_t len = strlen(v[i]);
        memcpy(val + pos, &len, 8);
        memcpy(val + pos + 8, v[i], len);
        pos += 8 + len;
    }
    return writer_put(w, key, val, total, err);
}

int gguf_writer_copy_kv(GgufWriter *w, const GgufKV *kv, char *err) {
    size_t total;
    if (ftk_add(kv->val_len, 4, &total)) return ftk_err(err, "gguf writer: key '%s' too large", kv->key);
    uint8_t *val = malloc(total);
    if (!val) return ftk_err(err, "gguf writer: out of memory");
    uint32_t t = kv->type;
    memcpy(val, &t, 4);
    memcpy(val + 4, kv->val, kv->val_len);
    return writer_put(w, kv->key, val, total, err);
}

static int writer_add(GgufWriter *w, const char *name, int n_dims, const uint64_t *ne, GgmlType type,
                      WriterTensor *src, char *err) {
    size_t nl = name ? strlen(name) : 0;
    if (nl == 0 || nl > GGUF_WRITE_MAX_NAME)
        return ftk_err(err, "gguf writer: tensor name '%s' must have 1..%d bytes", name ? name : "(null)",
                       GGUF_WRITE_MAX_NAME);
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS) return ftk_err(err, "gguf writer: tensor '%s': %d dims", name, n_dims);
    for (size_t i = 0; i < w->n_t; i++)
        if (strcmp(w->ts[i].name, name) == 0) return ftk_err(err, "gguf writer: duplicate tensor '%s'", name);
    const TypeInfo *ti = type_info(type);
    if (!ti) return ftk_err(err, "gguf writer: tensor '%s': unknown ggml type %d", name, (int)type);
    if (!src->raw && type != GGML_TYPE_F32 && type != GGML_TYPE_F16 && type != GGML_TYPE_BF16 && type != GGML_TYPE_Q8_0)
        return ftk_err(err, "gguf writer: tensor '%s': cannot convert fp32 to %s", name, ti->name);
    WriterTensor t = *src;
    t.n_dims = n_dims;
    size_t n = 1;
    for (int j = 0; j < GGUF_MAX_DIMS; j++) {
        t.ne[j] = j < n_dims ? ne[j] : 1;
        if (t.ne[j] > (uint64_t)INT64_MAX || t.ne[j] > SIZE_MAX || ftk_mul(n, (size_t)t.ne[j], &n))
            return ftk_err(err, "gguf writer: tensor '%s' is too large", name);
    }
    if (t.ne[0] % ti->block != 0)
        return ftk_err(err, "gguf writer: tensor '%s': %s needs a row length that is a multiple of %zu, got %llu", name,
                       ti->name, ti->block, (unsigned long long)t.ne[0]);
    if (n > 0 && !t.f32 && !t.fill && !t.raw) return ftk_err(err, "gguf writer: tensor '%s' has no data", name);
    t.type = type;
    t.n_elems = n;
    t.n_bytes = gguf_type_nbytes(type, n);
    if (n > 0 && t.n_bytes == 0) return ftk_err(err, "gguf writer: tensor '%s' is too large", name);
    if (w->n_t == w->cap_t) {
        size_t cap = w->cap_t ? 2 * w->cap_t : 64;
        WriterTensor *p = realloc(w->ts, cap * sizeof *p);
        if (!p) return ftk_err(err, "gguf writer: out of memory");
        w->ts = p;
        w->cap_t = cap;
    }
    t.name = strdup(name);
    if (!t.name) return ftk_err(err, "gguf writer: out of memory");
    w->ts[w->n_t++] = t;
    return 0;
}

int gguf_writer_add_tensor_f32(GgufWriter *w, const char *name, int n_dims, const uint64_t *ne, const float *data,
                               GgmlType out_type, char *err) {
    WriterTensor s = {0};
    s.f32 = data;
    return writer_add(w, name, n_dims, ne, out_type, &s, err);
}

int gguf_writer_add_tensor_fill(GgufWriter *w, const char *name, int n_dims, const uint64_t *ne, GgufFillFn fill,
                                void *ctx, GgmlType out_type, char *err) {
    WriterTensor s = {0};
    s.fill = fill;
    s.ctx = ctx;
    return writer_add(w, name, n_dims, ne, out_type, &s, err);
}

int gguf_writer_add_tensor_raw(GgufWriter *w, const char *name, int n_dims, const uint64_t *ne, GgmlType type,
                               const void *data, char *err) {
    WriterTensor s = {0};
    s.raw = data;
    return writer_add(w, name, n_dims, ne, type, &s, err);
}

static int write_u32(AtomicFile *af, uint32_t v, char *err) { return atomic_write(af, &v, 4, err); }
static int write_u64(AtomicFile *af, uint64_t v, char *err) { return atomic_write(af, &v, 8, err); }

static int write_str(AtomicFile *af, const char *s, char *err) {
    size_t n = strlen(s);
    return write_u64(af, n, err) || atomic_write(af, s, n, err) ? -1 : 0;
}

static int write_zeros(AtomicFile *af, size_t n, char *err) {
    static const uint8_t zeros[256];
    while (n > 0) {
        size_t k = n < sizeof zeros ? n : sizeof zeros;
        if (atomic_write(af, zeros, k, err)) return -1;
        n -= k;
    }
    return 0;
}

// Converts n fp32 values to `type` in chunks (a multiple of the Q8_0 block) and writes them.
static int write_converted(AtomicFile *af, const float *src, size_t n, GgmlType type, char *err) {
    enum { CHUNK = 8192 };       // elements; a multiple of 32
    uint8_t buf[CHUNK * 2];      // F16/BF16: 2 bytes per element; Q8_0: 34/32 bytes per element
    if (type == GGML_TYPE_F32) return atomic_write(af, src, n * sizeof(float), err);
    for (size_t i = 0; i < n; i += CHUNK) {
        size_t k = n - i < CHUNK ? n - i : CHUNK, bytes;
        const float *x = src + i;
        if (type == GGML_TYPE_F16 || type == GGML_TYPE_BF16) {
            for (size_t j = 0; j < k; j++) {
                uint16_t h = type == GGML_TYPE_F16 ? ftk_f32_to_f16(x[j]) : ftk_f32_to_bf16(x[j]);
                memcpy(buf + 2 * j, &h, 2);
            }
            bytes = 2 * k;
        } else {   // Q8_0; n is a multiple of 32 (checked when added), and so is every chunk
            gguf_quantize_q8_0(x, buf, k);
            bytes = k / GGML_QK8_0 * GGML_Q8_0_BLOCK_BYTES;
        }
        if (atomic_write(af, buf, bytes, err)) return -1;
    }
    return 0;
}

static int write_tensor_data(AtomicFile *af, const WriterTensor *t, char *err) {
    if (t->raw) return atomic_write(af, t->raw, t->n_bytes, err);
    if (t->f32) return write_converted(af, t->f32, t->n_elems, t->type, err);
    float *tmp = malloc((t->n_elems ? t->n_elems : 1) * sizeof(float));
    if (!tmp) {
        atomic_abort(af);
        return ftk_err(err, "%s: out of memory for tensor '%s' (%zu floats)", af->path, t->name, t->n_elems);
    }
    int rc = t->fill(t->ctx, tmp, t->n_elems, err);
    if (rc) atomic_abort(af);
    else rc = write_converted(af, tmp, t->n_elems, t->type, err);
    free(tmp);
    return rc;
}

static size_t pad_to(size_t n, size_t a) { return (a - n % a) % a; }

int gguf_writer_write(GgufWriter *w, const char *path, char *err) {
    const size_t A = w->alignment;
    // data offsets: each tensor starts at a multiple of the alignment
    size_t off = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        w->ts[i].offset = off;
        if (ftk_add(off, w->ts[i].n_bytes, &off) || ftk_add(off, pad_to(off, A), &off))
            return ftk_err(err, "%s: tensor data too large", path);
    }
    AtomicFile af;
    if (atomic_open(&af, path, err)) return -1;
    size_t pos = 0;   // bytes written so far in the header part (for the padding before the data)
    int bad = atomic_write(&af, GGUF_MAGIC, 4, err) || write_u32(&af, 3, err) || write_u64(&af, w->n_t, err) ||
              write_u64(&af, w->n_kv, err);
    pos += 24;
    for (size_t i = 0; i < w->n_kv && !bad; i++) {
        bad = write_str(&af, w->kvs[i].key, err) || atomic_write(&af, w->kvs[i].val, w->kvs[i].val_len, err);
        pos += 8 + strlen(w->kvs[i].key) + w->kvs[i].val_len;
    }
    for (size_t i = 0; i < w->n_t && !bad; i++) {
        const WriterTensor *t = &w->ts[i];
        bad = write_str(&af, t->name, err) || write_u32(&af, (uint32_t)t->n_dims, err);
        for (int j = 0; j < t->n_dims && !bad; j++) bad = write_u64(&af, t->ne[j], err);
        bad = bad || write_u32(&af, (uint32_t)t->type, err) || write_u64(&af, t->offset, err);
        pos += 8 + strlen(t->name) + 4 + 8 * (size_t)t->n_dims + 4 + 8;
    }
    // The data section starts aligned. A file without tensors ends right after its header (as
    // gguf-py writes vocab-only files).
    if (!bad && w->n_t > 0) bad = write_zeros(&af, pad_to(pos, A), err);
    for (size_t i = 0; i < w->n_t && !bad; i++) {
        bad = write_tensor_data(&af, &w->ts[i], err) || write_zeros(&af, pad_to(w->ts[i].n_bytes, A), err);
    }
    if (bad) {
        atomic_abort(&af);   // safe when already aborted (f is NULL then)
        return -1;
    }
    return atomic_commit(&af, err);
}
