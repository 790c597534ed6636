// testutil.c — see testutil.h.
#include "tests/testutil.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "model/common.h"

const char *shared_path(const char *rel) {
    static char buf[8][4096];
    static int k = 0;
    const char *base = getenv("FTK_SHARED");
    if (!base || !*base) base = "../shared";
    char *out = buf[k++ % 8];
    snprintf(out, 4096, "%s/%s", base, rel);
    return out;
}

float *npy_read_f32(const char *path, int *ndim, int shape[4]) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char pre[10];
    if (fread(pre, 1, 10, f) != 10 || memcmp(pre, "\x93NUMPY", 6) != 0) { fclose(f); return NULL; }
    size_t hlen;
    if (pre[6] == 1) {
        hlen = pre[8] | (pre[9] << 8);
    } else {
        unsigned char b[2];
        if (fread(b, 1, 2, f) != 2) { fclose(f); return NULL; }
        hlen = pre[8] | (pre[9] << 8) | ((size_t)b[0] << 16) | ((size_t)b[1] << 24);
    }
    char *hdr = calloc(1, hlen + 1);
    if (fread(hdr, 1, hlen, f) != hlen) { free(hdr); fclose(f); return NULL; }
    if (!strstr(hdr, "'<f4'") || strstr(hdr, "'fortran_order': True")) { free(hdr); fclose(f); return NULL; }
    char *s = strstr(hdr, "'shape': (");
    *ndim = 0;
    size_t count = 1;
    if (s) {
        s += 10;
        while (*s && *s != ')' && *ndim < 4) {
            long v = strtol(s, &s, 10);
            shape[(*ndim)++] = (int)v;
            count *= (size_t)v;
            while (*s == ',' || *s == ' ') s++;
        }
    }
    free(hdr);
    float *data = malloc(count * sizeof(float) + 1);
    if (fread(data, sizeof(float), count, f) != count) { free(data); fclose(f); return NULL; }
    fclose(f);
    return data;
}

double max_abs_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > m || isnan(d)) m = isnan(d) ? INFINITY : d;
    }
    return m;
}

const char *test_tmpdir(const char *tag) {
    static char buf[4][512];
    static int k = 0;
    char *out = buf[k++ % 4];
    const char *t = getenv("TMPDIR");
    snprintf(out, 512, "%s/ftk-test-%s-XXXXXX", t && *t ? t : "/tmp", tag);
    if (!mkdtemp(out)) return NULL;
    return out;
}

void test_rmtree(const char *dir) {
    if (!dir || strncmp(dir, "/tmp/", 5) != 0) return;
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) { /* best effort */ }
}

double test_time_scale(void) {
    const char *s = getenv("FTK_TEST_TIME_SCALE");
    double v = s ? strtod(s, NULL) : 1.0;
    return v >= 1.0 ? v : 1.0;
}

const char *ftk_bin(void) {
    const char *b = getenv("FTK_BIN");
    return b && *b ? b : "./ftk";
}

int run_cmd(const char *cmd, char **out) {
    char full[8192];
    snprintf(full, sizeof full, "%s 2>&1", cmd);
    FILE *p = popen(full, "r");
    if (!p) return -1;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    size_t n;
    while ((n = fread(buf + len, 1, cap - len - 1, p)) > 0) {
        len += n;
        if (cap - len < 1024) { cap *= 2; buf = realloc(buf, cap); }
    }
    buf[len] = 0;
    int st = pclose(p);
    if (out) *out = buf; else free(buf);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 255;
}

const char *test_write_bytes(const char *dir, const char *name, const void *data, size_t len) {
    static char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (len) assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
    return path;
}

float *test_st_tensor_f32(const char *path, const char *name, size_t n) {
    char *data;
    size_t len;
    char err[FTK_ERR_LEN];
    if (ftk_read_file(path, &data, &len, err)) return NULL;
    uint64_t hlen;
    memcpy(&hlen, data, 8);
    cJSON *hdr = cJSON_ParseWithLength(data + 8, (size_t)hlen);
    float *out = NULL;
    cJSON *t = hdr ? cJSON_GetObjectItemCaseSensitive(hdr, name) : NULL;
    cJSON *dt = t ? cJSON_GetObjectItemCaseSensitive(t, "dtype") : NULL;
    cJSON *offs = t ? cJSON_GetObjectItemCaseSensitive(t, "data_offsets") : NULL;
    if (dt && cJSON_IsString(dt) && strcmp(dt->valuestring, "F32") == 0 && cJSON_GetArraySize(offs) == 2) {
        size_t b = (size_t)cJSON_GetArrayItem(offs, 0)->valuedouble, e = (size_t)cJSON_GetArrayItem(offs, 1)->valuedouble;
        if (e - b == n * 4 && 8 + hlen + e <= len) {
            out = malloc(n * 4);
            memcpy(out, data + 8 + hlen + b, n * 4);
        }
    }
    cJSON_Delete(hdr);
    free(data);
    return out;
}

void assert_equal_st_tensor(const char *st, const char *name, const float *ours, size_t n, int transpose_in) {
    float *ref = test_st_tensor_f32(st, name, n);
    if (!ref) fail_msg("cannot read %s from %s", name, st);
    if (transpose_in) {   // HF Conv1D (in, out) -> Linear (out, in)
        size_t in = (size_t)transpose_in, out = n / in;
        float *t = malloc(n * sizeof(float));
        for (size_t i = 0; i < in; i++)
            for (size_t o = 0; o < out; o++) t[o * in + i] = ref[i * out + o];
        free(ref);
        ref = t;
    }
    if (memcmp(ref, ours, n * sizeof(float)) != 0) fail_msg("%s differs (max abs diff %g)", name, max_abs_diff(ref, ours, n));
    free(ref);
}
