// common.h — error messages, checked arithmetic, whole-file reads, atomic writes, float conversions.
// Every library function in ftk returns int (0 = ok, non-zero = failure) and fills `err`
// (a caller-provided buffer of FTK_ERR_LEN bytes). Only cli/ prints and exits.
#ifndef FTK_COMMON_H
#define FTK_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define FTK_ERR_LEN 1024

// Formats a message into err (may be NULL) and returns -1, so `return ftk_err(err, ...)` reads well.
int ftk_err(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// a*b and a+b with overflow detection: return 0 and set *out, or -1 on overflow.
int ftk_mul(size_t a, size_t b, size_t *out);
int ftk_add(size_t a, size_t b, size_t *out);

// Reads a whole file into a malloc'ed buffer (NUL-terminated beyond len for text convenience).
int ftk_read_file(const char *path, char **data, size_t *len, char *err);

// A zero-filled block for big buffers that are streamed every step (weights, the activation
// arena, the KV cache): from 2 MiB on it is 2 MiB aligned and asked for transparent huge pages,
// which cuts TLB misses (measured: the step's products 87% -> 93% of the sgemm peak at 2 threads,
// decode speed steady from run to run). Release with free(). NULL when out of memory.
void *ftk_alloc_big(size_t bytes);

// Maps a file read-only. *map is NULL for an empty file. Unmap with ftk_unmap.
int ftk_map_file(const char *path, void **map, size_t *len, char *err);
void ftk_unmap(void *map, size_t len);

// Atomic output: write to "<path>.tmp", then fflush + fsync + rename over <path>.
// On any failure the .tmp is removed and <path> is untouched.
typedef struct {
    FILE *f;
    char path[4096];
    char tmp[4112];
} AtomicFile;
int atomic_open(AtomicFile *af, const char *path, char *err);
int atomic_write(AtomicFile *af, const void *data, size_t len, char *err);
int atomic_commit(AtomicFile *af, char *err);   // closes; returns error if any write failed
void atomic_abort(AtomicFile *af);              // closes and removes the temp file
// Convenience: the whole of `data` atomically to `path`.
int ftk_write_file_atomic(const char *path, const void *data, size_t len, char *err);

// mkdir -p (mode 0755). Fails if a path component exists and is not a directory.
int ftk_mkdirs(const char *path, char *err);
// path join into a caller buffer of size n; returns -1 (with err) if it does not fit.
int ftk_path_join(char *out, size_t n, const char *dir, const char *name, char *err);
int ftk_file_exists(const char *path);
int ftk_is_dir(const char *path);

// IEEE half / bfloat16 <-> float (round-to-nearest-even on the way down).
float ftk_f16_to_f32(uint16_t h);
float ftk_bf16_to_f32(uint16_t b);
uint16_t ftk_f32_to_f16(float f);
uint16_t ftk_f32_to_bf16(float f);

// Seeded RNG (xorshift64*), used for sampling, shuffling, dropout and init.
// The state is one uint64 so it can be saved in a checkpoint.
uint32_t ftk_rand_u32(uint64_t *state);
float ftk_rand_uniform(uint64_t *state);   // [0, 1)
float ftk_rand_normal(uint64_t *state);    // N(0, 1), Box-Muller

double ftk_now(void);  // monotonic seconds

#endif
