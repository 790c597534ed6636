// safetensors.h — reader and writer for the safetensors format (FORMATS §2b): u64 header length,
// JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {...}}, packed little-endian data.
#ifndef FTK_SAFETENSORS_H
#define FTK_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

typedef enum { ST_F32, ST_F16, ST_BF16, ST_F64, ST_I64, ST_I32, ST_I16, ST_I8, ST_U8, ST_U16, ST_U32, ST_U64, ST_BOOL } StDtype;

typedef struct {
    char *name;
    StDtype dtype;
    int ndim;
    int64_t shape[8];
    size_t numel;
    size_t begin, end;       // byte offsets inside the data buffer (validated)
} StTensor;

typedef struct {
    char path[4096];
    void *map;               // the mmapped file
    size_t map_len;
    const uint8_t *data;     // start of the data buffer
    size_t data_len;
    StTensor *tensors;
    int n_tensors;
    char *metadata_json;     // "__metadata__" object as JSON text, or NULL
} StFile;

// Opens and validates (header bounds, offsets inside the file, byte counts == numel * dtype size,
// no overlaps). Errors name the file and the tensor.
int st_open(StFile *f, const char *path, char *err);
void st_close(StFile *f);
const StTensor *st_find(const StFile *f, const char *name);
size_t st_dtype_size(StDtype d);
const char *st_dtype_name(StDtype d);
// Converts tensor data (F32, F16, BF16, F64) to fp32 into dst, which holds n = numel floats.
int st_read_f32(const StFile *f, const StTensor *t, float *dst, size_t n, char *err);
// Converts integer data (I32, I64, ...) to int32 into dst (n = numel).
int st_read_i32(const StFile *f, const StTensor *t, int32_t *dst, size_t n, char *err);

// Writer: tensors are added by reference (the data must stay alive until st_writer_write), stored
// in `out` dtype (fp32 sources are converted while writing). Written atomically (tmp + fsync +
// rename), header padded with spaces to a multiple of 8, __metadata__ {"format":"pt"} (+ extra).
typedef struct StWriter StWriter;
int st_writer_create(StWriter **w, char *err);
int st_writer_add_f32(StWriter *w, const char *name, int ndim, const int64_t *shape, const float *data,
                      StDtype out, char *err);
int st_writer_add_raw(StWriter *w, const char *name, StDtype dtype, int ndim, const int64_t *shape,
                      const void *data, char *err);
int st_writer_set_metadata(StWriter *w, const char *key, const char *value, char *err);
size_t st_writer_data_bytes(const StWriter *w);   // bytes of tensor data added so far
int st_writer_write(StWriter *w, const char *path, char *err);
void st_writer_free(StWriter *w);

#endif
