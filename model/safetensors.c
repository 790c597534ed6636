// safetensors.c — reader and writer for the safetensors format (FORMATS §2b).
//
// File layout: u64 N (little-endian) | N bytes of JSON header | data buffer.
// Header: {"__metadata__": {str: str}, name: {"dtype": "F32", "shape": [..], "data_offsets": [b, e]}, ...}
// with offsets relative to the data buffer. The reader makes the checks of the reference reader
// (safetensors/src/tensor.rs): header <= 100 MB, UTF-8, starting with '{', every byte of the
// buffer covered by exactly one tensor (no holes, no overlaps, no trailing bytes), byte counts
// equal to numel * dtype size, no duplicate names. (It is laxer only in JSON number spelling:
// cJSON cannot tell 2.0 from 2.) Dtypes ftk does not convert (fp8, F4/F6, C64) are rejected. The writer produces what the reference writer produces: tensors
// ordered by dtype size (descending) then name, packed, header padded with spaces to 8 bytes.
// All data is little-endian; like the rest of ftk this assumes a little-endian host.
#include "model/safetensors.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/common.h"

#define ST_MAX_HEADER 100000000u   // reference MAX_HEADER_SIZE
#define ST_MAX_NDIM 8
#define ST_MAX_JSON_INT 9007199254740992.0   // 2^53: every integer below is exact in a double

// ---------------------------------------------------------------------------------------------
// dtypes

static const struct {
    StDtype dtype;
    const char *name;
    size_t size;
} DTYPES[] = {
    {ST_F32, "F32", 4}, {ST_F16, "F16", 2}, {ST_BF16, "BF16", 2}, {ST_F64, "F64", 8},
    {ST_I64, "I64", 8}, {ST_I32, "I32", 4}, {ST_I16, "I16", 2},   {ST_I8, "I8", 1},
    {ST_U8, "U8", 1},   {ST_U16, "U16", 2}, {ST_U32, "U32", 4},   {ST_U64, "U64", 8},
    {ST_BOOL, "BOOL", 1},
};
#define N_DTYPES ((int)(sizeof DTYPES / sizeof DTYPES[0]))

// dtypes of the reference format that ftk does not read (sub-byte floats, fp8, complex).
static const char *const UNSUPPORTED_DTYPES[] = {"F4", "F6_E2M3", "F6_E3M2", "F8_E5M2", "F8_E4M3", "F8_E8M0",
                                                 "F8_E4M3FNUZ", "F8_E5M2FNUZ", "C64"};

size_t st_dtype_size(StDtype d) {
    for (int i = 0; i < N_DTYPES; i++)
        if (DTYPES[i].dtype == d) return DTYPES[i].size;
    return 0;
}

const char *st_dtype_name(StDtype d) {
    for (int i = 0; i < N_DTYPES; i++)
        if (DTYPES[i].dtype == d) return DTYPES[i].name;
    return "?";
}

static int dtype_from_name(const char *s, StDtype *out) {
    for (int i = 0; i < N_DTYPES; i++)
        if (strcmp(DTYPES[i].name, s) == 0) {
            *out = DTYPES[i].dtype;
            return 0;
        }
    return -1;
}

static int is_unsupported_dtype(const char *s) {
    for (size_t i = 0; i < sizeof UNSUPPORTED_DTYPES / sizeof UNSUPPORTED_DTYPES[0]; i++)
        if (strcmp(UNSUPPORTED_DTYPES[i], s) == 0) return 1;
    return 0;
}

// ---------------------------------------------------------------------------------------------
// reader

// A JSON number that is an exact non-negative integer below 2^53.
static int json_uint(const cJSON *item, size_t *out) {
    if (!cJSON_IsNumber(item)) return -1;
    double v = item->valuedouble;
    if (!(v >= 0.0) || v >= ST_MAX_JSON_INT || v != floor(v)) return -1;
    if ((double)SIZE_MAX < v) return -1;
    *out = (size_t)v;
    return 0;
}

// Strict UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF), as Rust's from_utf8
// that the reference reader applies to the header. Returns the offset of the first bad byte, or n.
static size_t utf8_valid_prefix(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t len;
        uint32_t cp, min;
        if (c < 0x80) { i++; continue; }
        if ((c & 0xe0) == 0xc0) { len = 2; cp = c & 0x1f; min = 0x80; }
        else if ((c & 0xf0) == 0xe0) { len = 3; cp = c & 0x0f; min = 0x800; }
        else if ((c & 0xf8) == 0xf0) { len = 4; cp = c & 0x07; min = 0x10000; }
        else return i;
        if (n - i < len) return i;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return i;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
        i += len;
    }
    return n;
}

static int cmp_tensor_name(const void *a, const void *b) {
    return strcmp(((const StTensor *)a)->name, ((const StTensor *)b)->name);
}

// Order by (begin, end) for the coverage check.
static int cmp_tensor_ptr_offsets(const void *a, const void *b) {
    const StTensor *x = *(const StTensor *const *)a, *y = *(const StTensor *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

// Formats a shape as "[a, b, c]" into buf.
static void shape_str(char *buf, size_t n, int ndim, const int64_t *shape) {
    size_t k = 0;
    k += (size_t)snprintf(buf + k, n - k, "[");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

// Parses one header entry `name: {dtype, shape, data_offsets}` into t (name already set).
static int parse_tensor_entry(StTensor *t, const cJSON *entry, const char *path, size_t data_len, char *err) {
    if (!cJSON_IsObject(entry)) return ftk_err(err, "%s: tensor '%s': header entry is not a JSON object", path, t->name);
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(entry, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(entry, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(entry, "data_offsets");
    if (!cJSON_IsString(dtype)) return ftk_err(err, "%s: tensor '%s': missing or non-string \"dtype\"", path, t->name);
    if (dtype_from_name(dtype->valuestring, &t->dtype) != 0) {
        if (is_unsupported_dtype(dtype->valuestring))
            return ftk_err(err, "%s: tensor '%s': dtype %s is not supported by ftk", path, t->name, dtype->valuestring);
        return ftk_err(err, "%s: tensor '%s': unknown dtype \"%.40s\"", path, t->name, dtype->valuestring);
    }
    if (!cJSON_IsArray(shape)) return ftk_err(err, "%s: tensor '%s': missing or non-array \"shape\"", path, t->name);
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > ST_MAX_NDIM)
        return ftk_err(err, "%s: tensor '%s': %d dimensions (ftk reads at most %d)", path, t->name, ndim, ST_MAX_NDIM);
    t->ndim = ndim;
    size_t numel = 1;
    int i = 0;
    const cJSON *dim;
    cJSON_ArrayForEach(dim, shape) {
        size_t d;
        if (json_uint(dim, &d) != 0)
            return ftk_err(err, "%s: tensor '%s': shape entry %d is not a non-negative integer", path, t->name, i);
        t->shape[i++] = (int64_t)d;
        if (ftk_mul(numel, d, &numel)) return ftk_err(err, "%s: tensor '%s': shape overflows", path, t->name);
    }
    t->numel = numel;
    size_t nbytes;
    if (ftk_mul(numel, st_dtype_size(t->dtype), &nbytes))
        return ftk_err(err, "%s: tensor '%s': byte size overflows", path, t->name);
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 || json_uint(cJSON_GetArrayItem(offs, 0), &t->begin) ||
        json_uint(cJSON_GetArrayItem(offs, 1), &t->end))
        return ftk_err(err, "%s: tensor '%s': \"data_offsets\" must be two non-negative integers", path, t->name);
    if (t->end < t->begin)
        return ftk_err(err, "%s: tensor '%s': data_offsets [%zu, %zu] end before begin", path, t->name, t->begin, t->end);
    if (t->end > data_len)
        return ftk_err(err, "%s: tensor '%s': data_offsets [%zu, %zu] past the end of the data buffer (%zu bytes)",
                       path, t->name, t->begin, t->end, data_len);
    if (t->end - t->begin != nbytes) {
        char s[256];
        shape_str(s, sizeof s, t->ndim, t->shape);
        return ftk_err(err, "%s: tensor '%s': shape %s of %s needs %zu bytes but data_offsets [%zu, %zu] hold %zu",
                       path, t->name, s, st_dtype_name(t->dtype), nbytes, t->begin, t->end, t->end - t->begin);
    }
    return 0;
}

// "__metadata__" must be a string -> string map (reference: HashMap<String, String>).
static int parse_metadata(StFile *f, const cJSON *meta, char *err) {
    if (!cJSON_IsObject(meta)) return ftk_err(err, "%s: \"__metadata__\" is not a JSON object", f->path);
    const cJSON *kv;
    cJSON_ArrayForEach(kv, meta) {
        if (!cJSON_IsString(kv))
            return ftk_err(err, "%s: \"__metadata__\" value of '%s' is not a string", f->path, kv->string);
    }
    f->metadata_json = cJSON_PrintUnformatted(meta);
    if (!f->metadata_json) return ftk_err(err, "%s: out of memory", f->path);
    return 0;
}

// Every byte of the data buffer belongs to exactly one tensor: sorted by offsets, each tensor
// begins where the previous one ended, and the last one ends at the end of the buffer.
static int check_coverage(const StFile *f, char *err) {
    StTensor **order = malloc((size_t)(f->n_tensors ? f->n_tensors : 1) * sizeof *order);
    if (!order) return ftk_err(err, "%s: out of memory", f->path);
    for (int i = 0; i < f->n_tensors; i++) order[i] = &f->tensors[i];
    qsort(order, (size_t)f->n_tensors, sizeof *order, cmp_tensor_ptr_offsets);
    size_t pos = 0;
    const char *prev = NULL;
    int rc = 0;
    for (int i = 0; i < f->n_tensors && rc == 0; i++) {
        const StTensor *t = order[i];
        if (t->begin < pos)
            rc = ftk_err(err, "%s: tensor '%s': data_offsets [%zu, %zu] overlap tensor '%s' (which ends at %zu)",
                         f->path, t->name, t->begin, t->end, prev, pos);
        else if (t->begin > pos)
            rc = ftk_err(err, "%s: tensor '%s': hole of %zu bytes in the data buffer before it (offset %zu)", f->path,
                         t->name, t->begin - pos, pos);
        pos = t->end;
        prev = t->name;
    }
    free(order);
    if (rc == 0 && pos != f->data_len)
        rc = ftk_err(err, "%s: %zu bytes after the last tensor are not covered by the header (data buffer %zu bytes)",
                     f->path, f->data_len - pos, f->data_len);
    return rc;
}

static int st_parse(StFile *f, char *err) {
    if (f->map_len < 8)
        return ftk_err(err, "%s: file too short (%zu bytes) for the 8-byte header length", f->path, f->map_len);
    const uint8_t *base = f->map;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | base[i];
    if (n > ST_MAX_HEADER)
        return ftk_err(err, "%s: header length %llu exceeds the 100 MB limit", f->path, (unsigned long long)n);
    if (n > f->map_len - 8)
        return ftk_err(err, "%s: header length %llu exceeds the file size (%zu bytes): truncated file?", f->path,
                       (unsigned long long)n, f->map_len);
    if (n == 0 || base[8] != '{') return ftk_err(err, "%s: header does not start with '{'", f->path);
    size_t bad = utf8_valid_prefix(base + 8, (size_t)n);
    if (bad != (size_t)n) return ftk_err(err, "%s: header is not valid UTF-8 (at byte %zu)", f->path, bad);
    f->data = base + 8 + n;
    f->data_len = f->map_len - 8 - (size_t)n;

    // Parse from a NUL-terminated copy so the JSON parser can never read past the header.
    char *text = malloc((size_t)n + 1);
    if (!text) return ftk_err(err, "%s: out of memory for a %llu-byte header", f->path, (unsigned long long)n);
    memcpy(text, base + 8, (size_t)n);
    text[n] = 0;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, (size_t)n, &end, 0);
    if (!root) {
        size_t at = end && end >= text ? (size_t)(end - text) : 0;
        free(text);
        return ftk_err(err, "%s: header is not valid JSON (near byte %zu of %llu)", f->path, at, (unsigned long long)n);
    }
    // Only whitespace (the writer's space padding) may follow the JSON object.
    for (const char *p = end; p < text + n; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            size_t at = (size_t)(p - text);
            cJSON_Delete(root);
            free(text);
            return ftk_err(err, "%s: unexpected bytes after the JSON header (at byte %zu)", f->path, at);
        }
    }
    free(text);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return ftk_err(err, "%s: header is not a JSON object", f->path);
    }

    int count = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, root) count++;
    f->tensors = calloc((size_t)(count ? count : 1), sizeof(StTensor));
    if (!f->tensors) {
        cJSON_Delete(root);
        return ftk_err(err, "%s: out of memory", f->path);
    }
    int rc = 0;
    cJSON_ArrayForEach(item, root) {
        if (strcmp(item->string, "__metadata__") == 0) {
            if (f->metadata_json) {
                rc = ftk_err(err, "%s: duplicate \"__metadata__\"", f->path);
                break;
            }
            if ((rc = parse_metadata(f, item, err)) != 0) break;
            continue;
        }
        StTensor *t = &f->tensors[f->n_tensors];
        t->name = strdup(item->string);
        if (!t->name) {
            rc = ftk_err(err, "%s: out of memory", f->path);
            break;
        }
        f->n_tensors++;
        if ((rc = parse_tensor_entry(t, item, f->path, f->data_len, err)) != 0) break;
    }
    cJSON_Delete(root);
    if (rc) return rc;

    // Sorted by name: st_find is a binary search and duplicates are neighbours.
    qsort(f->tensors, (size_t)f->n_tensors, sizeof(StTensor), cmp_tensor_name);
    for (int i = 1; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i - 1].name, f->tensors[i].name) == 0)
            return ftk_err(err, "%s: tensor '%s' appears twice in the header", f->path, f->tensors[i].name);
    return check_coverage(f, err);
}

int st_open(StFile *f, const char *path, char *err) {
    memset(f, 0, sizeof *f);
    if (strlen(path) >= sizeof f->path) return ftk_err(err, "%s: path too long", path);
    snprintf(f->path, sizeof f->path, "%s", path);
    if (ftk_map_file(path, &f->map, &f->map_len, err)) return -1;
    if (st_parse(f, err) != 0) {
        st_close(f);
        return -1;
    }
    return 0;
}

void st_close(StFile *f) {
    if (!f) return;
    for (int i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->tensors);
    if (f->metadata_json) cJSON_free(f->metadata_json);
    ftk_unmap(f->map, f->map_len);
    memset(f, 0, sizeof *f);
}

const StTensor *st_find(const StFile *f, const char *name) {
    int lo = 0, hi = f->n_tensors - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(name, f->tensors[mid].name);
        if (c == 0) return &f->tensors[mid];
        if (c < 0) hi = mid - 1;
        else lo = mid + 1;
    }
    return NULL;
}

int st_read_f32(const StFile *f, const StTensor *t, float *dst, size_t n, char *err) {
    if (n != t->numel)
        return ftk_err(err, "%s: tensor '%s': has %zu elements, caller expects %zu", f->path, t->name, t->numel, n);
    // Offsets were validated against the buffer in st_open; the data may be unaligned, so
    // elements are fetched with memcpy.
    const uint8_t *src = f->data + t->begin;
    switch (t->dtype) {
    case ST_F32:
        if (n) memcpy(dst, src, n * sizeof(float));
        return 0;
    case ST_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            dst[i] = ftk_f16_to_f32(h);
        }
        return 0;
    case ST_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t b;
            memcpy(&b, src + 2 * i, 2);
            dst[i] = ftk_bf16_to_f32(b);
        }
        return 0;
    case ST_F64:
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, src + 8 * i, 8);
            dst[i] = (float)d;
        }
        return 0;
    default:
        return ftk_err(err, "%s: tensor '%s': dtype %s is not a floating-point type", f->path, t->name,
                       st_dtype_name(t->dtype));
    }
}

int st_read_i32(const StFile *f, const StTensor *t, int32_t *dst, size_t n, char *err) {
    if (n != t->numel)
        return ftk_err(err, "%s: tensor '%s': has %zu elements, caller expects %zu", f->path, t->name, t->numel, n);
    const uint8_t *src = f->data + t->begin;
    const size_t es = st_dtype_size(t->dtype);
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = src + i * es;
        int64_t v;        // signed view, for the range check
        uint64_t u = 0;   // unsigned view (U64)
        switch (t->dtype) {
        case ST_I32: { int32_t x; memcpy(&x, p, 4); v = x; break; }
        case ST_I64: { int64_t x; memcpy(&x, p, 8); v = x; break; }
        case ST_I16: { int16_t x; memcpy(&x, p, 2); v = x; break; }
        case ST_I8: { int8_t x; memcpy(&x, p, 1); v = x; break; }
        case ST_U8: v = p[0]; break;
        case ST_BOOL: v = p[0] != 0; break;
        case ST_U16: { uint16_t x; memcpy(&x, p, 2); v = x; break; }
        case ST_U32: { uint32_t x; memcpy(&x, p, 4); v = x; break; }
        case ST_U64:
            memcpy(&u, p, 8);
            v = u > (uint64_t)INT32_MAX ? (int64_t)INT32_MAX + 1 : (int64_t)u;
            break;
        default:
            return ftk_err(err, "%s: tensor '%s': dtype %s is not an integer type", f->path, t->name,
                           st_dtype_name(t->dtype));
        }
        if (v < INT32_MIN || v > INT32_MAX)
            return ftk_err(err, "%s: tensor '%s': element %zu does not fit in int32", f->path, t->name, i);
        dst[i] = (int32_t)v;
    }
    return 0;
}

// ---------------------------------------------------------------------------------------------
// writer

typedef struct {
    char *name;
    StDtype out;          // dtype in the file
    int from_f32;         // 1: data is fp32 and converted to `out` while writing; 0: raw bytes of `out`
    int ndim;
    int64_t shape[ST_MAX_NDIM];
    size_t numel, nbytes; // nbytes in the file
    const void *data;
    size_t begin;         // assigned at write time
} StEntry;

struct StWriter {
    StEntry *items;
    int n, cap;
    char **meta_keys, **meta_vals;  // extra __metadata__ entries (besides format = pt)
    int n_meta;
    size_t data_bytes;
};

int st_writer_create(StWriter **w, char *err) {
    *w = calloc(1, sizeof(StWriter));
    if (!*w) return ftk_err(err, "safetensors writer: out of memory");
    return 0;
}

void st_writer_free(StWriter *w) {
    if (!w) return;
    for (int i = 0; i < w->n; i++) free(w->items[i].name);
    free(w->items);
    for (int i = 0; i < w->n_meta; i++) {
        free(w->meta_keys[i]);
        free(w->meta_vals[i]);
    }
    free(w->meta_keys);
    free(w->meta_vals);
    free(w);
}

static int writer_add(StWriter *w, const char *name, StDtype out, int from_f32, int ndim, const int64_t *shape,
                      const void *data, char *err) {
    if (!name || !name[0]) return ftk_err(err, "safetensors writer: empty tensor name");
    if (strcmp(name, "__metadata__") == 0) return ftk_err(err, "safetensors writer: '__metadata__' is reserved");
    if (ndim < 0 || ndim > ST_MAX_NDIM)
        return ftk_err(err, "safetensors writer: tensor '%s': %d dimensions (0..%d allowed)", name, ndim, ST_MAX_NDIM);
    if (st_dtype_size(out) == 0) return ftk_err(err, "safetensors writer: tensor '%s': bad dtype", name);
    for (int i = 0; i < w->n; i++)
        if (strcmp(w->items[i].name, name) == 0)
            return ftk_err(err, "safetensors writer: tensor '%s' added twice", name);
    StEntry e = {0};
    e.out = out;
    e.from_f32 = from_f32;
    e.ndim = ndim;
    e.numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return ftk_err(err, "safetensors writer: tensor '%s': negative dimension", name);
        e.shape[i] = shape[i];
        if (ftk_mul(e.numel, (size_t)shape[i], &e.numel))
            return ftk_err(err, "safetensors writer: tensor '%s': shape overflows", name);
    }
    size_t total;
    if (ftk_mul(e.numel, st_dtype_size(out), &e.nbytes) || ftk_add(w->data_bytes, e.nbytes, &total))
        return ftk_err(err, "safetensors writer: tensor '%s': size overflows", name);
    if (e.numel > 0 && !data) return ftk_err(err, "safetensors writer: tensor '%s': no data", name);
    e.data = data;
    if (w->n == w->cap) {
        int cap = w->cap ? 2 * w->cap : 64;
        StEntry *items = realloc(w->items, (size_t)cap * sizeof *items);
        if (!items) return ftk_err(err, "safetensors writer: out of memory");
        w->items = items;
        w->cap = cap;
    }
    e.name = strdup(name);
    if (!e.name) return ftk_err(err, "safetensors writer: out of memory");
    w->items[w->n++] = e;
    w->data_bytes = total;
    return 0;
}

int st_writer_add_f32(StWriter *w, const char *name, int ndim, const int64_t *shape, const float *data, StDtype out,
                      char *err) {
    if (out != ST_F32 && out != ST_F16 && out != ST_BF16)
        return ftk_err(err, "safetensors writer: tensor '%s': fp32 data can be stored as F32, F16 or BF16, not %s",
                       name ? name : "?", st_dtype_name(out));
    return writer_add(w, name, out, 1, ndim, shape, data, err);
}

int st_writer_add_raw(StWriter *w, const char *name, StDtype dtype, int ndim, const int64_t *shape, const void *data,
                      char *err) {
    return writer_add(w, name, dtype, 0, ndim, shape, data, err);
}

int st_writer_set_metadata(StWriter *w, const char *key, const char *value, char *err) {
    if (!key || !value) return ftk_err(err, "safetensors writer: metadata key and value must not be NULL");
    if (strcmp(key, "format") == 0) {
        // transformers refuses other formats; ftk always writes "pt" (FORMATS §2b).
        if (strcmp(value, "pt") != 0) return ftk_err(err, "safetensors writer: metadata format must be \"pt\"");
        return 0;
    }
    for (int i = 0; i < w->n_meta; i++) {
        if (strcmp(w->meta_keys[i], key) == 0) {
            char *v = strdup(value);
            if (!v) return ftk_err(err, "safetensors writer: out of memory");
            free(w->meta_vals[i]);
            w->meta_vals[i] = v;
            return 0;
        }
    }
    char **keys = realloc(w->meta_keys, (size_t)(w->n_meta + 1) * sizeof *keys);
    if (!keys) return ftk_err(err, "safetensors writer: out of memory");
    w->meta_keys = keys;
    char **vals = realloc(w->meta_vals, (size_t)(w->n_meta + 1) * sizeof *vals);
    if (!vals) return ftk_err(err, "safetensors writer: out of memory");
    w->meta_vals = vals;
    keys[w->n_meta] = strdup(key);
    vals[w->n_meta] = strdup(value);
    if (!keys[w->n_meta] || !vals[w->n_meta]) {
        free(keys[w->n_meta]);
        free(vals[w->n_meta]);
        return ftk_err(err, "safetensors writer: out of memory");
    }
    w->n_meta++;
    return 0;
}

size_t st_writer_data_bytes(const StWriter *w) { return w->data_bytes; }

// A growable text buffer for the header.
typedef struct {
    char *buf;
    size_t len, cap;
    int oom;
} StrBuf;

static void sb_put(StrBuf *s, const char *text, size_t n) {
    if (s->oom) return;
    if (s->len + n + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 4096;
        while (s->len + n + 1 > cap) cap *= 2;
        char *b = realloc(s->buf, cap);
        if (!b) {
            s->oom = 1;
            return;
        }
        s->buf = b;
        s->cap = cap;
    }
    memcpy(s->buf + s->len, text, n);
    s->len += n;
    s->buf[s->len] = 0;
}

static void sb_puts(StrBuf *s, const char *text) { sb_put(s, text, strlen(text)); }

// A JSON string literal: quotes, backslashes and control characters escaped; UTF-8 passes through.
static void sb_json_string(StrBuf *s, const char *str) {
    sb_puts(s, "\"");
    for (const unsigned char *p = (const unsigned char *)str; *p; p++) {
        char esc[8];
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            sb_put(s, esc, 2);
        } else if (*p < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", *p);
            sb_puts(s, esc);
        } else {
            sb_put(s, (const char *)p, 1);
        }
    }
    sb_puts(s, "\"");
}

// Reference order: larger dtype first (keeps every tensor aligned to its element size), then name.
static int cmp_entry_ptr(const void *a, const void *b) {
    const StEntry *x = *(const StEntry *const *)a, *y = *(const StEntry *const *)b;
    size_t sx = st_dtype_size(x->out), sy = st_dtype_size(y->out);
    if (sx != sy) return sx > sy ? -1 : 1;
    return strcmp(x->name, y->name);
}

// Writes one tensor's bytes, converting fp32 sources in chunks so no full copy is ever made.
static int write_entry(AtomicFile *af, const StEntry *e, char *err) {
    if (!e->from_f32 || e->out == ST_F32) return atomic_write(af, e->data, e->nbytes, err);
    enum { CHUNK = 16384 };
    uint16_t buf[CHUNK];
    const float *src = e->data;
    for (size_t i = 0; i < e->numel; i += CHUNK) {
        size_t k = e->numel - i < CHUNK ? e->numel - i : CHUNK;
        for (size_t j = 0; j < k; j++)
            buf[j] = e->out == ST_F16 ? ftk_f32_to_f16(src[i + j]) : ftk_f32_to_bf16(src[i + j]);
        if (atomic_write(af, buf, k * sizeof(uint16_t), err)) return -1;
    }
    return 0;
}

int st_writer_write(StWriter *w, const char *path, char *err) {
    StEntry **order = malloc((size_t)(w->n ? w->n : 1) * sizeof *order);
    if (!order) return ftk_err(err, "%s: out of memory", path);
    for (int i = 0; i < w->n; i++) order[i] = &w->items[i];
    qsort(order, (size_t)w->n, sizeof *order, cmp_entry_ptr);

    // Header: __metadata__ first, then the tensors in file order.
    StrBuf h = {0};
    sb_puts(&h, "{\"__metadata__\":{\"format\":\"pt\"");
    for (int i = 0; i < w->n_meta; i++) {
        sb_puts(&h, ",");
        sb_json_string(&h, w->meta_keys[i]);
        sb_puts(&h, ":");
        sb_json_string(&h, w->meta_vals[i]);
    }
    sb_puts(&h, "}");
    size_t pos = 0;
    for (int i = 0; i < w->n; i++) {
        StEntry *e = order[i];
        e->begin = pos;
        char num[64];
        sb_puts(&h, ",");
        sb_json_string(&h, e->name);
        sb_puts(&h, ":{\"dtype\":\"");
        sb_puts(&h, st_dtype_name(e->out));
        sb_puts(&h, "\",\"shape\":[");
        for (int d = 0; d < e->ndim; d++) {
            snprintf(num, sizeof num, "%s%lld", d ? "," : "", (long long)e->shape[d]);
            sb_puts(&h, num);
        }
        snprintf(num, sizeof num, "],\"data_offsets\":[%zu,%zu]}", pos, pos + e->nbytes);
        sb_puts(&h, num);
        pos += e->nbytes;   // cannot overflow: data_bytes was overflow-checked while adding
    }
    sb_puts(&h, "}");
    while (!h.oom && h.len % 8 != 0) sb_puts(&h, " ");   // reference: pad to 8 bytes with spaces
    if (h.oom) {
        free(h.buf);
        free(order);
        return ftk_err(err, "%s: out of memory for the header", path);
    }
    if (h.len > ST_MAX_HEADER) {
        free(h.buf);
        free(order);
        return ftk_err(err, "%s: header of %zu bytes exceeds the 100 MB limit", path, h.len);
    }

    uint8_t len_le[8];
    for (int i = 0; i < 8; i++) len_le[i] = (uint8_t)((uint64_t)h.len >> (8 * i));
    AtomicFile af;
    int rc = atomic_open(&af, path, err);
    if (rc == 0) rc = atomic_write(&af, len_le, 8, err);
    if (rc == 0) rc = atomic_write(&af, h.buf, h.len, err);
    for (int i = 0; i < w->n && rc == 0; i++) rc = write_entry(&af, order[i], err);
    if (rc == 0) rc = atomic_commit(&af, err);   // atomic_write already removed the temp file on failure
    free(h.buf);
    free(order);
    return rc ? -1 : 0;
}
