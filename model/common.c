// common.c — see common.h.
#include "model/common.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int ftk_err(char *err, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, FTK_ERR_LEN, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int ftk_mul(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return -1;
    *out = a * b;
    return 0;
}

int ftk_add(size_t a, size_t b, size_t *out) {
    if (b > SIZE_MAX - a) return -1;
    *out = a + b;
    return 0;
}

int ftk_read_file(const char *path, char **data, size_t *len, char *err) {
    *data = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return ftk_err(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        int e = errno;
        fclose(f);
        return ftk_err(err, "%s: cannot stat: %s", path, strerror(e));
    }
    // A directory opens fine on Linux and "seeks" to LONG_MAX: name it instead of failing a huge malloc.
    if (!S_ISREG(st.st_mode)) {
        fclose(f);
        return ftk_err(err, "%s: %s", path, S_ISDIR(st.st_mode) ? "is a directory, expected a file" : "not a regular file");
    }
    if (fseek(f, 0, SEEK_END) != 0) { fclose(f); return ftk_err(err, "%s: cannot seek", path); }
    long n = ftell(f);
    if (n < 0) { fclose(f); return ftk_err(err, "%s: cannot tell size", path); }
    rewind(f);
    char *buf = malloc((size_t)n + 1);
    if (!buf) { fclose(f); return ftk_err(err, "%s: out of memory (%ld bytes)", path, n); }
    if (n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        fclose(f);
        return ftk_err(err, "%s: read failed", path);
    }
    fclose(f);
    buf[n] = 0;
    *data = buf;
    *len = (size_t)n;
    return 0;
}

void *ftk_alloc_big(size_t bytes) {
    const size_t huge = (size_t)2 << 20;
    if (bytes < huge) return calloc(bytes ? bytes : 1, 1);
    if (bytes > SIZE_MAX - huge) return NULL;
    const size_t rounded = (bytes + huge - 1) & ~(huge - 1);
    void *p = aligned_alloc(huge, rounded);
    if (!p) return NULL;
#ifdef MADV_HUGEPAGE
    madvise(p, rounded, MADV_HUGEPAGE);   // advice only: without THP support it is ignored
#endif
    memset(p, 0, rounded);
    return p;
}

int ftk_map_file(const char *path, void **map, size_t *len, char *err) {
    *map = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return ftk_err(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) { close(fd); return ftk_err(err, "%s: cannot stat", path); }
    if (!S_ISREG(st.st_mode)) { close(fd); return ftk_err(err, "%s: not a regular file", path); }
    if (st.st_size == 0) { close(fd); return 0; }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return ftk_err(err, "%s: mmap failed: %s", path, strerror(errno));
    *map = p;
    *len = (size_t)st.st_size;
    return 0;
}

void ftk_unmap(void *map, size_t len) {
    if (map && len) munmap(map, len);
}

int atomic_open(AtomicFile *af, const char *path, char *err) {
    memset(af, 0, sizeof *af);
    if (strlen(path) + 5 > sizeof af->path) return ftk_err(err, "%s: path too long", path);
    snprintf(af->path, sizeof af->path, "%s", path);
    snprintf(af->tmp, sizeof af->tmp, "%s.tmp", path);
    af->f = fopen(af->tmp, "wb");
    if (!af->f) return ftk_err(err, "%s: cannot create: %s", af->tmp, strerror(errno));
    return 0;
}

int atomic_write(AtomicFile *af, const void *data, size_t len, char *err) {
    if (len && fwrite(data, 1, len, af->f) != len) {
        int e = errno;
        atomic_abort(af);
        return ftk_err(err, "%s: write failed: %s", af->path, strerror(e));
    }
    return 0;
}

int atomic_commit(AtomicFile *af, char *err) {
    if (!af->f) return ftk_err(err, "%s: file not open", af->path);
    int bad = fflush(af->f) != 0 || ferror(af->f);
    int e = errno;
    if (!bad && fsync(fileno(af->f)) != 0) { bad = 1; e = errno; }
    if (fclose(af->f) != 0 && !bad) { bad = 1; e = errno; }
    af->f = NULL;
    if (bad) {
        unlink(af->tmp);
        return ftk_err(err, "%s: write failed: %s", af->path, strerror(e));
    }
    if (rename(af->tmp, af->path) != 0) {
        e = errno;
        unlink(af->tmp);
        return ftk_err(err, "%s: rename failed: %s", af->path, strerror(e));
    }
    return 0;
}

void atomic_abort(AtomicFile *af) {
    if (af->f) fclose(af->f);
    af->f = NULL;
    if (af->tmp[0]) unlink(af->tmp);
}

int ftk_write_file_atomic(const char *path, const void *data, size_t len, char *err) {
    AtomicFile af;
    if (atomic_open(&af, path, err)) return -1;
    if (atomic_write(&af, data, len, err)) return -1;
    return atomic_commit(&af, err);
}

int ftk_mkdirs(const char *path, char *err) {
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf) return ftk_err(err, "%s: bad directory path", path);
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] == '/' || buf[i] == 0) {
            char c = buf[i];
            buf[i] = 0;
            if (mkdir(buf, 0755) != 0 && errno != EEXIST)
                return ftk_err(err, "%s: cannot create directory: %s", buf, strerror(errno));
            if (!ftk_is_dir(buf)) return ftk_err(err, "%s: exists and is not a directory", buf);
            buf[i] = c;
        }
    }
    return 0;
}

int ftk_path_join(char *out, size_t n, const char *dir, const char *name, char *err) {
    int k = snprintf(out, n, "%s/%s", dir, name);
    if (k < 0 || (size_t)k >= n) return ftk_err(err, "%s/%s: path too long", dir, name);
    return 0;
}

int ftk_file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

int ftk_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

float ftk_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else {  // subnormal: normalise
            int e = -1;
            do { e++; mant <<= 1; } while (!(mant & 0x400));
            mant &= 0x3ff;
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | (mant << 13);
        }
    } else if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

float ftk_bf16_to_f32(uint16_t b) {
    uint32_t bits = (uint32_t)b << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t ftk_f32_to_bf16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, 4);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40);  // NaN stays NaN
    bits += 0x7fffu + ((bits >> 16) & 1);  // round to nearest even
    return (uint16_t)(bits >> 16);
}

uint16_t ftk_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t absx = x & 0x7fffffffu;
    if (absx > 0x7f800000u) return (uint16_t)(sign | 0x7e00);           // NaN
    if (absx >= 0x477ff000u) return (uint16_t)(sign | 0x7c00);          // overflow -> inf
    if (absx < 0x38800000u) {                                           // subnormal or zero
        if (absx < 0x33000000u) return (uint16_t)sign;                  // < half of min subnormal
        uint32_t e = absx >> 23;
        uint32_t m = (absx & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e;  // 14..24
        uint32_t half = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t h = ((absx >> 13) - ((127 - 15) << 10));
    uint32_t rem = absx & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
    return (uint16_t)(sign | h);
}

uint32_t ftk_rand_u32(uint64_t *state) {
    // xorshift64* (Vigna); a zero state is remapped so it never sticks at 0.
    if (*state == 0) *state = 0x9E3779B97F4A7C15ull;
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return (uint32_t)((*state * 0x2545F4914F6CDD1Dull) >> 32);
}

float ftk_rand_uniform(uint64_t *state) {
    return (ftk_rand_u32(state) >> 8) / 16777216.0f;
}

float ftk_rand_normal(uint64_t *state) {
    float u1 = ftk_rand_uniform(state), u2 = ftk_rand_uniform(state);
    if (u1 < 1e-12f) u1 = 1e-12f;
    return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853071795864f * u2);
}

double ftk_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}
