// safetensors.c — (STUB: to be implemented).
#include "model/common.h"
#include "model/safetensors.h"
int st_open(StFile *f, const char *path, char *err) { (void)f; return ftk_err(err, "%s: not implemented", path); }
void st_close(StFile *f) { (void)f; }
const StTensor *st_find(const StFile *f, const char *name) { (void)f; (void)name; return 0; }
size_t st_dtype_size(StDtype d) { (void)d; return 0; }
const char *st_dtype_name(StDtype d) { (void)d; return "?"; }
int st_read_f32(const StFile *f, const StTensor *t, float *dst, size_t n, char *err) { (void)f; (void)t; (void)dst; (void)n; return ftk_err(err, "not implemented"); }
int st_read_i32(const StFile *f, const StTensor *t, int32_t *dst, size_t n, char *err) { (void)f; (void)t; (void)dst; (void)n; return ftk_err(err, "not implemented"); }
int st_writer_create(StWriter **w, char *err) { (void)w; return ftk_err(err, "not implemented"); }
int st_writer_add_f32(StWriter *w, const char *name, int nd, const int64_t *s, const float *d, StDtype o, char *err) { (void)w; (void)name; (void)nd; (void)s; (void)d; (void)o; return ftk_err(err, "not implemented"); }
int st_writer_add_raw(StWriter *w, const char *name, StDtype dt, int nd, const int64_t *s, const void *d, char *err) { (void)w; (void)name; (void)dt; (void)nd; (void)s; (void)d; return ftk_err(err, "not implemented"); }
int st_writer_set_metadata(StWriter *w, const char *k, const char *v, char *err) { (void)w; (void)k; (void)v; return ftk_err(err, "not implemented"); }
size_t st_writer_data_bytes(const StWriter *w) { (void)w; return 0; }
int st_writer_write(StWriter *w, const char *path, char *err) { (void)w; return ftk_err(err, "%s: not implemented", path); }
void st_writer_free(StWriter *w) { (void)w; }
