// npy.c — see npy.h. Header: magic "\x93NUMPY", version 1.0, u16 header length, a Python dict
// literal padded with spaces and ended by '\n' so that the data starts at a multiple of 64 bytes.
#include "model/npy.h"

#include <stdio.h>
#include <string.h>

#include "model/common.h"

int npy_write_f32(const char *path, const float *data, int ndim, const long *shape, char *err) {
    if (ndim < 1 || ndim > 8) return ftk_err(err, "%s: bad number of dimensions %d", path, ndim);
    char dict[512];
    int k = snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (");
    size_t count = 1;
    for (int i = 0; i < ndim; i++) {
        k += snprintf(dict + k, sizeof dict - (size_t)k, "%ld%s", shape[i], ndim == 1 ? "," : (i + 1 < ndim ? ", " : ""));
        if (shape[i] < 0 || ftk_mul(count, (size_t)shape[i], &count)) return ftk_err(err, "%s: bad shape", path);
    }
    k += snprintf(dict + k, sizeof dict - (size_t)k, "), }");
    size_t total = 10 + (size_t)k + 1;
    size_t pad = (64 - total % 64) % 64;
    unsigned char head[600];
    memcpy(head, "\x93NUMPY\x01\x00", 8);
    size_t hlen = (size_t)k + pad + 1;
    head[8] = (unsigned char)(hlen & 0xff);
    head[9] = (unsigned char)(hlen >> 8);
    memcpy(head + 10, dict, (size_t)k);
    memset(head + 10 + k, ' ', pad);
    head[10 + k + pad] = '\n';
    AtomicFile af;
    if (atomic_open(&af, path, err)) return -1;
    if (atomic_write(&af, head, 10 + hlen, err)) return -1;
    if (atomic_write(&af, data, count * sizeof(float), err)) return -1;
    return atomic_commit(&af, err);
}
