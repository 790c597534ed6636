// gguf.h — reader and writer for the GGUF container (v3; v2 is read too), FORMATS §2c.
//   u32 magic "GGUF", u32 version, u64 n_tensors, u64 n_kv, KV pairs, tensor infos,
//   padding to general.alignment (default 32), tensor data (each tensor padded to the alignment).
// Tensor dims are in GGUF/ggml order: ne[0] is the innermost (contiguous) dimension, i.e. the
// REVERSE of the PyTorch shape. A Linear weight W (out, in) has ne = {in, out}.
#ifndef FTK_GGUF_H
#define FTK_GGUF_H

#include <stddef.h>
#include <stdint.h>

#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_DIMS 4
#define GGUF_ABSENT 1   // getter return value: the key is not in the file (err untouched)

typedef enum {
    GGUF_TYPE_UINT8 = 0, GGUF_TYPE_INT8 = 1, GGUF_TYPE_UINT16 = 2, GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4, GGUF_TYPE_INT32 = 5, GGUF_TYPE_FLOAT32 = 6, GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8, GGUF_TYPE_ARRAY = 9, GGUF_TYPE_UINT64 = 10, GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12,
} GgufValueType;

// ggml tensor types. Dequantized by ftk: F32, F16, BF16, Q8_0, I8, I16, I32. The other listed
// quantized types are recognised (their sizes are validated) but not converted.
typedef enum {
    GGML_TYPE_F32 = 0, GGML_TYPE_F16 = 1, GGML_TYPE_Q4_0 = 2, GGML_TYPE_Q4_1 = 3,
    GGML_TYPE_Q5_0 = 6, GGML_TYPE_Q5_1 = 7, GGML_TYPE_Q8_0 = 8, GGML_TYPE_Q8_1 = 9,
    GGML_TYPE_Q2_K = 10, GGML_TYPE_Q3_K = 11, GGML_TYPE_Q4_K = 12, GGML_TYPE_Q5_K = 13,
    GGML_TYPE_Q6_K = 14, GGML_TYPE_Q8_K = 15, GGML_TYPE_I8 = 24, GGML_TYPE_I16 = 25,
    GGML_TYPE_I32 = 26, GGML_TYPE_I64 = 27, GGML_TYPE_F64 = 28, GGML_TYPE_BF16 = 30,
} GgmlType;

#define GGML_QK8_0 32          // Q8_0 block: f16 scale d + 32 int8 q; x = d * q
#define GGML_Q8_0_BLOCK_BYTES 34

typedef struct {
    char *key;                 // NUL-terminated copy
    GgufValueType type;
    const uint8_t *val;        // the value's bytes in the mapping (for STRING: the u64 length)
    size_t val_len;            // bytes of the whole value
    // ARRAY only:
    GgufValueType arr_type;
    uint64_t arr_n;
    const uint8_t *arr_data;   // first element
} GgufKV;

typedef struct {
    char *name;                // NUL-terminated copy
    int n_dims;                // 1..4
    uint64_t ne[GGUF_MAX_DIMS];// GGUF order (ne[0] innermost); unused dims are 1
    GgmlType type;
    uint64_t offset;           // relative to the data section, a multiple of the alignment
    size_t n_elems;
    size_t n_bytes;
    const uint8_t *data;       // in the mapping (validated: inside the file)
} GgufTensor;

typedef struct {
    char path[4096];
    void *map;
    size_t map_len;
    uint32_t version;
    size_t alignment;
    size_t data_offset;        // start of the tensor data section
    GgufKV *kvs;
    size_t n_kv;
    GgufTensor *tensors;
    size_t n_tensors;
} GgufFile;

// ---- reader ----
// Maps and validates the whole header: every length, count, type, shape and offset is checked
// against the file size with overflow-checked arithmetic; tensors are aligned, inside the file and
// do not overlap; duplicate keys / tensor names are errors. Errors name the file.
int gguf_open(GgufFile *f, const char *path, char *err);
void gguf_close(GgufFile *f);

const GgufKV *gguf_find_kv(const GgufFile *f, const char *key);
const GgufTensor *gguf_find_tensor(const GgufFile *f, const char *name);
const char *gguf_type_name(uint32_t ggml_type);         // "F32", "Q8_0", ...; "?" if unknown
const char *gguf_value_type_name(uint32_t value_type);  // "u32", "string", ...

// Typed getters: 0 = ok, GGUF_ABSENT = no such key (err untouched), -1 = present but of an
// incompatible type or out of range (err names file and key). Integer getters accept any integer
// type whose value fits; gguf_get_f32 accepts FLOAT32 and FLOAT64.
int gguf_get_u32(const GgufFile *f, const char *key, uint32_t *out, char *err);
int gguf_get_i32(const GgufFile *f, const char *key, int32_t *out, char *err);
int gguf_get_f32(const GgufFile *f, const char *key, float *out, char *err);
int gguf_get_bool(const GgufFile *f, const char *key, int *out, char *err);
int gguf_get_str(const GgufFile *f, const char *key, char **out, char *err);  // malloc'ed copy
// Arrays, malloc'ed (free with free / gguf_free_str_array). *n gets the element count.
int gguf_get_str_array(const GgufFile *f, const char *key, char ***out, size_t *n, char *err);
int gguf_get_f32_array(const GgufFile *f, const char *key, float **out, size_t *n, char *err);   // FLOAT32/64
int gguf_get_i32_array(const GgufFile *f, const char *key, int32_t **out, size_t *n, char *err); // integers that fit
void gguf_free_str_array(char **a, size_t n);

// Converts a tensor to fp32 into dst (n must equal t->n_elems), in the file's element order.
int gguf_tensor_to_f32(const GgufFile *f, const GgufTensor *t, float *dst, size_t n, char *err);

// Q8_0 block codec (n a multiple of 32). Quantize: d = max|x|/127 stored as f16, q = round(x/d).
void gguf_quantize_q8_0(const float *src, uint8_t *dst, size_t n);
void gguf_dequantize_q8_0(const uint8_t *src, float *dst, size_t n);
// Bytes of n elements of a type (0 with n > 0 means unknown type or n not a whole number of blocks).
size_t gguf_type_nbytes(uint32_t ggml_type, size_t n);

// ---- writer ----
// KVs are kept in insertion order; setting a key again replaces its value. Tensors are added by
// reference (data must stay alive until gguf_writer_write) or through a fill callback that is
// called once, during the write, with a buffer for that one tensor — so a whole model never has
// to be in memory twice. fp32 sources are converted to the requested type while writing
// (F32, F16, BF16, Q8_0; Q8_0 needs ne[0] % 32 == 0). The file is written atomically.
typedef struct GgufWriter GgufWriter;
// fill: write n floats of the tensor (GGUF element order, i.e. row-major PyTorch order) into dst.
typedef int (*GgufFillFn)(void *ctx, float *dst, size_t n, char *err);

int gguf_writer_create(GgufWriter **w, char *err);
void gguf_writer_free(GgufWriter *w);
int gguf_writer_set_u8(GgufWriter *w, const char *key, uint8_t v, char *err);
int gguf_writer_set_i8(GgufWriter *w, const char *key, int8_t v, char *err);
int gguf_writer_set_u16(GgufWriter *w, const char *key, uint16_t v, char *err);
int gguf_writer_set_i16(GgufWriter *w, const char *key, int16_t v, char *err);
int gguf_writer_set_u32(GgufWriter *w, const char *key, uint32_t v, char *err);
int gguf_writer_set_i32(GgufWriter *w, const char *key, int32_t v, char *err);
int gguf_writer_set_u64(GgufWriter *w, const char *key, uint64_t v, char *err);
int gguf_writer_set_i64(GgufWriter *w, const char *key, int64_t v, char *err);
int gguf_writer_set_f32(GgufWriter *w, const char *key, float v, char *err);
int gguf_writer_set_f64(GgufWriter *w, const char *key, double v, char *err);
int gguf_writer_set_bool(GgufWriter *w, const char *key, int v, char *err);
int gguf_writer_set_str(GgufWriter *w, const char *key, const char *v, char *err);
// Array of a fixed-size element type (not STRING/ARRAY); data holds n packed little-endian elements.
int gguf_writer_set_array(GgufWriter *w, const char *key, GgufValueType elem_type, const void *data, size_t n,
                          char *err);
int gguf_writer_set_str_array(GgufWriter *w, const char *key, const char *const *v, size_t n, char *err);
// Copies a KV read by gguf_open (any type, nested arrays included) unchanged.
int gguf_writer_copy_kv(GgufWriter *w, const GgufKV *kv, char *err);
// Sets general.alignment (u32, power of two, multiple of 8). Default 32 (key not written).
int gguf_writer_set_alignment(GgufWriter *w, uint32_t alignment, char *err);

// ne in GGUF order (ne[0] innermost): a PyTorch (out, in) weight is n_dims 2, ne {in, out}.
int gguf_writer_add_tensor_f32(GgufWriter *w, const char *name, int n_dims, const uint64_t *ne, const float *data,
                               GgmlType out_type, char *err);
int gguf_writer_add_tensor_fill(GgufWriter *w, const char *name, int n_dims, const uint64_t *ne, GgufFillFn fill,
                                void *ctx, GgmlType out_type, char *err);
// Data already encoded as `type` (gguf_type_nbytes bytes), written unchanged.
int gguf_writer_add_tensor_raw(GgufWriter *w, const char *name, int n_dims, const uint64_t *ne, GgmlType type,
                               const void *data, char *err);
int gguf_writer_write(GgufWriter *w, const char *path, char *err);

#endif
