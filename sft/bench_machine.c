// bench_machine.c — sgemm peak, streaming-read bandwidth, foreign CPU load (see bench_machine.h).
#include "sft/bench_machine.h"

#include <cblas.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include "model/common.h"
#include "model/parallel.h"

// Best of reps timed calls of C = A B (n x n), after one untimed call; pool 0: one OpenBLAS call
// at the thread count OpenBLAS is set to, 1: par_sgemm over ftk's pool.
static double sgemm_best(const float *a, const float *b, float *c, int n, int reps, int pool) {
    double best = 1e300;
    for (int r = 0; r <= reps; r++) {
        const double t0 = ftk_now();
        // (n, n) @ (n, n) -> (n, n)
        if (pool) par_sgemm(CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        else cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        const double dt = ftk_now() - t0;
        if (r > 0 && dt < best) best = dt;   // r = 0 warms the threads and the caches
    }
    return 2.0 * (double)n * n * n / best * 1e-9;
}

// The probe's matrices are mapped and unmapped directly, so that freeing them really returns their
// pages (the caller may then reset the peak-RSS mark and not count them as the step's memory).
static float *probe_map(size_t floats) {
    void *p = mmap(NULL, floats * sizeof(float), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

int sgemm_probe_init(SgemmProbe *p, int n, char *err) {
    memset(p, 0, sizeof *p);
    if (n < 16 || n > 16384) return ftk_err(err, "sgemm peak: bad size %d", n);
    const size_t nn = (size_t)n * n;
    p->n = n;
    p->a = probe_map(nn);
    p->b = probe_map(nn);
    p->c = probe_map(nn);
    if (!p->a || !p->b || !p->c) {
        sgemm_probe_free(p);
        return ftk_err(err, "sgemm peak: out of memory for three %d x %d matrices", n, n);
    }
    uint64_t rng = 12345;
    for (size_t i = 0; i < nn; i++) {
        p->a[i] = ftk_rand_uniform(&rng) - 0.5f;
        p->b[i] = ftk_rand_uniform(&rng) - 0.5f;
        p->c[i] = 0.0f;
    }
    return 0;
}

double sgemm_probe_peak(SgemmProbe *p, int reps, double *openblas_gflops, double *pool_gflops) {
    if (reps < 1) reps = 1;
    // OpenBLAS's own threading at the pool's thread count, then back to one thread (the pool's setting)
    openblas_set_num_threads(par_threads());
    const double openblas = sgemm_best(p->a, p->b, p->c, p->n, reps, 0);
    openblas_set_num_threads(1);
    const double pool = sgemm_best(p->a, p->b, p->c, p->n, reps, 1);
    if (openblas_gflops) *openblas_gflops = openblas;
    if (pool_gflops) *pool_gflops = pool;
    return openblas > pool ? openblas : pool;
}

void sgemm_probe_free(SgemmProbe *p) {
    const size_t bytes = (size_t)p->n * p->n * sizeof(float);
    if (p->a) munmap(p->a, bytes);
    if (p->b) munmap(p->b, bytes);
    if (p->c) munmap(p->c, bytes);
    memset(p, 0, sizeof *p);
}

int bench_sgemm_peaks(int n, int reps, double *openblas_gflops, double *pool_gflops, char *err) {
    *openblas_gflops = *pool_gflops = 0.0;
    if (reps < 1) return ftk_err(err, "sgemm peak: bad repetitions %d", reps);
    SgemmProbe p;
    if (sgemm_probe_init(&p, n, err)) return -1;
    sgemm_probe_peak(&p, reps, openblas_gflops, pool_gflops);
    sgemm_probe_free(&p);
    return 0;
}

int bench_sgemm_peak(int n, int reps, double *gflops, char *err) {
    double openblas, pool;
    *gflops = 0.0;
    if (bench_sgemm_peaks(n, reps, &openblas, &pool, err)) return -1;
    *gflops = openblas > pool ? openblas : pool;
    return 0;
}

typedef struct {
    const float *p;
    size_t n;
    float sum;
} ReadJob;

// Sums n floats with 64 independent accumulators (several vector add chains) so the loop is bound by
// the loads, not by the latency of the adds.
#define READ_LANES 64
static void *read_job(void *arg) {
    ReadJob *j = arg;
    float acc[READ_LANES] = {0};
    size_t i = 0;
    for (; i + READ_LANES <= j->n; i += READ_LANES)
        for (int k = 0; k < READ_LANES; k++) acc[k] += j->p[i + k];
    for (; i < j->n; i++) acc[0] += j->p[i];
    float s = 0.0f;
    for (int k = 0; k < READ_LANES; k++) s += acc[k];
    j->sum = s;
    return NULL;
}

// One read of buf split into `threads` contiguous parts; the calling thread takes the first.
static int read_once(const float *buf, size_t n, int threads, float *sum) {
    ReadJob jobs[64];
    pthread_t tid[64];
    const size_t per = n / threads;
    for (int t = 0; t < threads; t++) {
        jobs[t].p = buf + (size_t)t * per;
        jobs[t].n = t == threads - 1 ? n - (size_t)t * per : per;
    }
    int started = 1;
    for (int t = 1; t < threads; t++, started++)
        if (pthread_create(&tid[t], NULL, read_job, &jobs[t])) break;
    read_job(&jobs[0]);
    for (int t = 1; t < started; t++) pthread_join(tid[t], NULL);
    if (started < threads) return -1;
    float s = 0.0f;
    for (int t = 0; t < threads; t++) s += jobs[t].sum;
    *sum = s;
    return 0;
}

int bench_stream_read(const float *buf, size_t n, int threads, int reps, double *bytes_per_s, char *err) {
    *bytes_per_s = 0.0;
    if (!buf || n == 0) return ftk_err(err, "stream read: empty buffer");
    if (threads < 1 || threads > 64 || reps < 1) return ftk_err(err, "stream read: bad threads %d or reps %d", threads, reps);
    double best = 1e300;
    volatile float sink = 0.0f;   // keeps the sums alive
    for (int r = 0; r <= reps; r++) {
        float s;
        const double t0 = ftk_now();
        if (read_once(buf, n, threads, &s)) return ftk_err(err, "stream read: cannot start %d threads", threads);
        const double dt = ftk_now() - t0;
        sink += s;
        if (r > 0 && dt < best) best = dt;
    }
    (void)sink;
    *bytes_per_s = (double)n * sizeof(float) / best;
    return 0;
}

// Busy seconds of all CPUs: user + nice + system + irq + softirq + steal from the first line of /proc/stat.
static int cpu_busy_s(double *out) {
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return -1;
    unsigned long long v[8] = {0};
    int got = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
                     &v[6], &v[7]);
    fclose(f);
    if (got != 8) return -1;
    const long hz = sysconf(_SC_CLK_TCK);
    *out = (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / (double)(hz > 0 ? hz : 100);
    return 0;
}

static double own_cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec * 1e-6;
}

void cpu_meter_start(CpuMeter *cm) {
    cm->ok = cpu_busy_s(&cm->busy0) == 0;
    cm->own0 = own_cpu_s();
    cm->wall0 = ftk_now();
}

double cpu_meter_foreign(const CpuMeter *cm) {
    double busy;
    if (!cm->ok || cpu_busy_s(&busy)) return 0.0;
    const double wall = ftk_now() - cm->wall0;
    const double foreign = (busy - cm->busy0 - (own_cpu_s() - cm->own0)) / (wall > 1e-9 ? wall : 1e-9);
    return foreign > 0.0 ? foreign : 0.0;
}

int bench_wait_quiet(double max_s, double cores) {
    const double t_end = ftk_now() + max_s;
    while (ftk_now() < t_end) {
        CpuMeter cm;
        cpu_meter_start(&cm);
        if (!cm.ok) return 1;
        usleep(500000);
        if (cpu_meter_foreign(&cm) < cores) return 1;
    }
    return 0;
}

size_t bench_peak_rss(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (f) {
        char line[256];
        unsigned long long kib = 0;
        int found = 0;
        while (!found && fgets(line, sizeof line, f)) found = sscanf(line, "VmHWM: %llu kB", &kib) == 1;
        fclose(f);
        if (found) return (size_t)kib * 1024;
    }
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru)) return 0;
    return (size_t)ru.ru_maxrss * 1024;   // Linux reports KiB
}

int bench_reset_peak_rss(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f) return -1;
    int ok = fputs("5", f) >= 0;
    return fclose(f) == 0 && ok ? 0 : -1;
}
