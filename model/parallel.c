// parallel.c — the worker pool and the blocked sgemm of parallel.h.
//
// A job is published by bumping `generation`; workers spin briefly on it (jobs come in quick
// succession inside a training step), then sleep on a condition variable. Tasks are claimed in
// chunks from a shared counter, by the caller and by every worker that joined the job while it
// was open: a worker that is descheduled or still asleep never holds the others up (the caller
// then does its share), and no task's result depends on which thread ran it. The caller closes
// the job once every task is claimed and waits only for the workers that joined.
#include "model/parallel.h"

#include <pthread.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

void openblas_set_num_threads(int num_threads);   // OpenBLAS extension (cblas.h declares it too)

#define SPIN_ROUNDS 20000   // ~50-100 us of polling before a thread goes to sleep
#define CHUNKS_PER_THREAD 8 // a job's tasks are claimed in about this many chunks per thread

typedef struct {
    int n_threads;                   // including the caller
    pthread_t tid[PAR_MAX_THREADS];
    pthread_mutex_t mu;              // guards open/stop and the sleeps
    pthread_cond_t wake, done;
    atomic_ulong generation;         // bumped once per job
    unsigned long start_generation;  // generation when the workers were created
    int open;                        // 1 while workers may still join the current job
    int stop;
    atomic_int active;               // workers that joined the current job and have not left it
    atomic_int next;                 // first unclaimed task
    ParTaskFn fn;                    // the current job (written before it opens)
    void *ctx;
    int n_tasks, chunk;
} Pool;

static Pool pool = {.n_threads = 1, .mu = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER,
                    .done = PTHREAD_COND_INITIALIZER};
static _Thread_local int tls_thread_id = 0;
static float *scratch_mem[PAR_MAX_THREADS];
static size_t scratch_floats[PAR_MAX_THREADS];
static _Thread_local int tls_in_task = 0;

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

// Claims and runs chunks of the current job until none is left.
static void run_claims(void) {
    const int n = pool.n_tasks, chunk = pool.chunk;
    tls_in_task = 1;
    for (;;) {
        const int lo = atomic_fetch_add_explicit(&pool.next, chunk, memory_order_relaxed);
        if (lo >= n) break;
        const int hi = n - lo < chunk ? n : lo + chunk;
        for (int i = lo; i < hi; i++) pool.fn(pool.ctx, i);
    }
    tls_in_task = 0;
}

static void *worker_main(void *arg) {
    const int t = (int)(long)arg;
    tls_thread_id = t;
    // The generation when the pool was started, not the current one: a job published before this
    // thread first runs must not be taken for one already seen.
    unsigned long seen = pool.start_generation;
    for (;;) {
        unsigned long g;
        int spins = 0;
        while ((g = atomic_load_explicit(&pool.generation, memory_order_acquire)) == seen && spins < SPIN_ROUNDS) {
            cpu_relax();
            spins++;
        }
        pthread_mutex_lock(&pool.mu);
        while ((g = atomic_load(&pool.generation)) == seen && !pool.stop) pthread_cond_wait(&pool.wake, &pool.mu);
        seen = g;
        if (pool.stop) {
            pthread_mutex_unlock(&pool.mu);
            return NULL;
        }
        const int join = pool.open;   // a closed job is finished or being finished by the others
        if (join) atomic_fetch_add(&pool.active, 1);
        pthread_mutex_unlock(&pool.mu);
        if (!join) continue;
        run_claims();
        if (atomic_fetch_sub(&pool.active, 1) == 1) {
            pthread_mutex_lock(&pool.mu);
            pthread_cond_signal(&pool.done);
            pthread_mutex_unlock(&pool.mu);
        }
    }
}

static void stop_workers(void) {
    pthread_mutex_lock(&pool.mu);
    pool.stop = 1;
    atomic_fetch_add(&pool.generation, 1);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.mu);
    for (int t = 1; t < pool.n_threads; t++) pthread_join(pool.tid[t], NULL);
    pool.stop = 0;
    pool.n_threads = 1;
}

int par_set_threads(int n) {
    if (n <= 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        n = cpus > 0 ? (int)cpus : 1;
    }
    if (n > PAR_MAX_THREADS) n = PAR_MAX_THREADS;
    openblas_set_num_threads(1);
    if (n == pool.n_threads) return n;
    if (pool.n_threads > 1) stop_workers();
    int started = 1;
    pool.start_generation = atomic_load(&pool.generation);
    for (int t = 1; t < n; t++, started++)
        if (pthread_create(&pool.tid[t], NULL, worker_main, (void *)(long)t)) break;
    pool.n_threads = started;   // fewer if the system refused threads: still correct, only slower
    return started;
}

int par_threads(void) { return pool.n_threads; }
int par_thread_id(void) { return tls_thread_id; }

void par_for(int n_tasks, ParTaskFn fn, void *ctx) {
    if (n_tasks <= 0) return;
    if (pool.n_threads == 1 || tls_in_task || n_tasks == 1) {
        const int was = tls_in_task;
        tls_in_task = 1;
        for (int i = 0; i < n_tasks; i++) fn(ctx, i);
        tls_in_task = was;
        return;
    }
    pool.fn = fn;
    pool.ctx = ctx;
    pool.n_tasks = n_tasks;
    pool.chunk = n_tasks / (pool.n_threads * CHUNKS_PER_THREAD);
    if (pool.chunk < 1) pool.chunk = 1;
    atomic_store(&pool.next, 0);
    pthread_mutex_lock(&pool.mu);
    pool.open = 1;
    atomic_fetch_add_explicit(&pool.generation, 1, memory_order_release);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.mu);
    run_claims();
    pthread_mutex_lock(&pool.mu);   // every task is claimed: no one may join any more
    pool.open = 0;
    pthread_mutex_unlock(&pool.mu);
    int spins = 0;
    while (atomic_load(&pool.active) > 0 && spins < SPIN_ROUNDS) {
        cpu_relax();
        spins++;
    }
    if (atomic_load(&pool.active) > 0) {
        pthread_mutex_lock(&pool.mu);
        while (atomic_load(&pool.active) > 0) pthread_cond_wait(&pool.done, &pool.mu);
        pthread_mutex_unlock(&pool.mu);
    }
}

static int scratch_grow(int t, size_t floats) {
    if (scratch_floats[t] >= floats && scratch_mem[t]) return 0;
    free(scratch_mem[t]);
    scratch_mem[t] = NULL;
    scratch_floats[t] = 0;
    if (floats > (PTRDIFF_MAX - 64) / sizeof(float)) return -1;   // more than any allocator gives
    size_t bytes = ((floats ? floats : 1) * sizeof(float) + 63) & ~(size_t)63;
    scratch_mem[t] = aligned_alloc(64, bytes);
    if (!scratch_mem[t]) return -1;
    scratch_floats[t] = bytes / sizeof(float);
    return 0;
}

float *par_scratch(size_t floats) {
    const int t = tls_thread_id;
    return scratch_grow(t, floats) ? NULL : scratch_mem[t];
}

int par_scratch_reserve(size_t floats) {
    for (int t = 0; t < pool.n_threads; t++)
        if (scratch_grow(t, floats)) return -1;
    return 0;
}

void par_free_scratch(void) {
    for (int t = 0; t < PAR_MAX_THREADS; t++) {
        free(scratch_mem[t]);
        scratch_mem[t] = NULL;
        scratch_floats[t] = 0;
    }
}

// ---------------------------------------------------------------------------------------------
// blocked sgemm

// The cut: blocks of rows of C when M >= N, else of columns (the longer side, so each block still
// sees whole panels of the other operand), never along K. Every block re-packs the other operand
// inside OpenBLAS, so there are as few blocks as the machine's cores need: at most the cut width
// (the number of online CPUs, not --threads: a run with fewer threads cuts the same way and gets
// the same bits), with at least SGEMM_MIN_BLOCK rows/columns and SGEMM_MIN_FLOPS per block so
// small products (LoRA, attention tiles) stay whole. Measured, one thread, Haswell kernels, the
// step's 1024-row linears: uncut 91-96 GFLOP/s, 2 blocks 87-94, 8 blocks 78-89.
#define SGEMM_MIN_BLOCK 128
#define SGEMM_MIN_FLOPS 4e6
#define GEMV_MIN_BLOCK 256    // gemv (M == 1): output columns per block

static int cut_width = 0;     // 0 = not set yet: the number of online CPUs

void par_set_cut_width(int n) {
    if (n <= 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        n = cpus > 0 ? (int)cpus : 1;
    }
    cut_width = n > PAR_MAX_THREADS ? PAR_MAX_THREADS : n;
}

void par_sgemm_blocks(int M, int N, int K, int *by_rows, int *n_blocks, int *block) {
    if (cut_width == 0) par_set_cut_width(0);
    *by_rows = M > 1 && M >= N;
    const int dim = *by_rows ? M : N;
    const double flops = 2.0 * M * N * (double)(K > 0 ? K : 1);
    int nb = cut_width;
    if (M == 1) {
        if (nb > dim / GEMV_MIN_BLOCK) nb = dim / GEMV_MIN_BLOCK;
    } else {
        if (nb > dim / SGEMM_MIN_BLOCK) nb = dim / SGEMM_MIN_BLOCK;
        if (nb > flops / SGEMM_MIN_FLOPS) nb = (int)(flops / SGEMM_MIN_FLOPS);
    }
    if (nb < 1) nb = 1;
    *block = (dim + nb - 1) / nb;
    *n_blocks = (dim + *block - 1) / *block;
}

typedef struct {
    enum CBLAS_TRANSPOSE ta, tb;
    int M, N, K;
    float alpha, beta;
    const float *A, *B;
    int lda, ldb, ldc;
    float *C;
    int by_rows, block;
} SgemmJob;

static void sgemm_block(void *ctx, int i) {
    const SgemmJob *j = ctx;
    const int lo = i * j->block;
    if (j->by_rows) {
        const int rows = j->M - lo < j->block ? j->M - lo : j->block;
        // rows [lo, lo+rows) of op(A): row i of A (NoTrans) or column i of A (Trans)
        const float *A = j->ta == CblasNoTrans ? j->A + (size_t)lo * j->lda : j->A + lo;
        cblas_sgemm(CblasRowMajor, j->ta, j->tb, rows, j->N, j->K, j->alpha, A, j->lda, j->B, j->ldb, j->beta,
                    j->C + (size_t)lo * j->ldc, j->ldc);
        return;
    }
    const int cols = j->N - lo < j->block ? j->N - lo : j->block;
    // columns [lo, lo+cols) of op(B): column j of B (NoTrans) or row j of B (Trans)
    const float *B = j->tb == CblasNoTrans ? j->B + lo : j->B + (size_t)lo * j->ldb;
    if (j->M == 1) {
        // y (1, cols) = alpha x (1, K) @ op(B)[:, lo:lo+cols] + beta y; x = row 0 of op(A)
        const int incx = j->ta == CblasNoTrans ? 1 : j->lda;
        if (j->tb == CblasTrans) {
            // op(B) = B^T, B (N, K): y_n = alpha B[n, :] . x + beta y_n, one contiguous row at a time.
            // OpenBLAS's sdot streams a row at the memory bandwidth; its sgemv reached 70-80% of it
            // (decode at batch 1 reads every weight once per token: this is its whole cost).
            float *y = j->C + lo;
            for (int n = 0; n < cols; n++) {
                const float d = j->alpha * cblas_sdot(j->K, B + (size_t)n * j->ldb, 1, j->A, incx);
                y[n] = j->beta == 0.0f ? d : d + j->beta * y[n];
            }
        } else {                   // B (K, N): y = B[:, lo:lo+cols]^T @ x (strided columns: sgemv)
            cblas_sgemv(CblasRowMajor, CblasTrans, j->K, cols, j->alpha, B, j->ldb, j->A, incx, j->beta, j->C + lo, 1);
        }
        return;
    }
    cblas_sgemm(CblasRowMajor, j->ta, j->tb, j->M, cols, j->K, j->alpha, j->A, j->lda, B, j->ldb, j->beta, j->C + lo,
                j->ldc);
}

static int stats_on;
static double stats_seconds, stats_flops;

void par_sgemm_stats_enable(int on) { stats_on = on; }
void par_sgemm_stats_reset(void) { stats_seconds = stats_flops = 0.0; }
void par_sgemm_stats(double *seconds, double *flops) {
    *seconds = stats_seconds;
    *flops = stats_flops;
}

static double wall_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void sgemm_blocks_run(enum CBLAS_TRANSPOSE transA, enum CBLAS_TRANSPOSE transB, int M, int N, int K,
                             float alpha, const float *A, int lda, const float *B, int ldb, float beta, float *C,
                             int ldc);

void par_sgemm(enum CBLAS_TRANSPOSE transA, enum CBLAS_TRANSPOSE transB, int M, int N, int K, float alpha,
               const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    if (!stats_on || tls_in_task) {
        sgemm_blocks_run(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    const double t0 = wall_now();
    sgemm_blocks_run(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    stats_seconds += wall_now() - t0;
    stats_flops += 2.0 * M * N * (double)K;
}

static void sgemm_blocks_run(enum CBLAS_TRANSPOSE transA, enum CBLAS_TRANSPOSE transB, int M, int N, int K,
                             float alpha, const float *A, int lda, const float *B, int ldb, float beta, float *C,
                             int ldc) {
    SgemmJob j = {transA, transB, M, N, K, alpha, beta, A, B, lda, ldb, ldc, C, 0, 0};
    int n_blocks;
    par_sgemm_blocks(M, N, K, &j.by_rows, &n_blocks, &j.block);
    par_for(n_blocks, sgemm_block, &j);
}
