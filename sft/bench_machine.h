// bench_machine.h — what the machine can do, measured in the same run as the benchmark it judges:
// the sgemm peak (a large square cblas_sgemm), the memory bandwidth of a streaming read, and how
// much CPU other processes took while a step ran (the machine is shared; `ftk bench` drops steps
// that others disturbed, as the PyTorch peer does).
#ifndef FTK_SFT_BENCH_MACHINE_H
#define FTK_SFT_BENCH_MACHINE_H

#include <stddef.h>

// Best of `reps` timings of C = A B for n x n matrices (2 n^3 FLOPs each), after one untimed call,
// measured two ways at the pool's thread count (par_threads()): one cblas_sgemm under OpenBLAS's
// own threading (set to that count for the measurement, then back to 1) and par_sgemm over ftk's
// pool. bench_sgemm_peaks fills both; bench_sgemm_peak fills the larger (the honest peak).
int bench_sgemm_peaks(int n, int reps, double *openblas_gflops, double *pool_gflops, char *err);
int bench_sgemm_peak(int n, int reps, double *gflops, char *err);

// The same measurement with its matrices kept, to repeat it beside every timed step: the speed of a
// shared VM drifts by 10% and more over minutes, so each step is also judged against the peak of
// its own moment. sgemm_probe_peak returns the larger of the two ways, best of reps. The matrices
// are mapped in init and unmapped in free (their pages really go back).
typedef struct {
    int n;
    float *a, *b, *c;
} SgemmProbe;
int sgemm_probe_init(SgemmProbe *p, int n, char *err);
double sgemm_probe_peak(SgemmProbe *p, int reps, double *openblas_gflops, double *pool_gflops);
void sgemm_probe_free(SgemmProbe *p);

// Best of `reps` timings of reading buf (n floats, e.g. the model's weights) once, summing it, split
// over `threads` threads (pthreads; 1 = the calling thread). Fills *bytes_per_s. The first read is
// untimed (it faults the pages in).
int bench_stream_read(const float *buf, size_t n, int threads, int reps, double *bytes_per_s, char *err);

// CPU time used by other processes while an interval ran, in cores: (busy time of all CPUs from
// /proc/stat - this process's CPU time) / wall time. ok = 0 where /proc/stat cannot be read.
typedef struct {
    double busy0, own0, wall0;
    int ok;
} CpuMeter;
void cpu_meter_start(CpuMeter *cm);
double cpu_meter_foreign(const CpuMeter *cm);   // since cpu_meter_start; 0 when !ok
// Waits (sampling 0.5 s at a time, up to max_s seconds) until others use below `cores`; returns 1
// when that happened, 0 on timeout.
int bench_wait_quiet(double max_s, double cores);

// Peak resident set size of this process, in bytes: VmHWM of /proc/self/status (getrusage ru_maxrss
// where that cannot be read). bench_reset_peak_rss sets the mark back to the current RSS (Linux
// /proc/self/clear_refs "5"), so each model of one run gets its own peak; -1 when it cannot.
size_t bench_peak_rss(void);
int bench_reset_peak_rss(void);

#endif
