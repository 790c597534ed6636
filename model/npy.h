// npy.h — writes NumPy .npy files (format 1.0, little-endian float32, C order), atomically.
#ifndef FTK_NPY_H
#define FTK_NPY_H

int npy_write_f32(const char *path, const float *data, int ndim, const long *shape, char *err);

#endif
