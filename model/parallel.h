// parallel.h — ftk's own worker threads: a fixed pool that runs the step's loops and splits its
// matrix products, so that OpenBLAS itself always runs single-threaded.
//
// Why not OpenBLAS's threads: its idle worker spins in sched_yield while our own single-threaded
// loops run, small products (attention per head) get slower with 2 threads, and its threaded sgemm
// rounds differently from its 1-thread sgemm. Here every product is cut into blocks that depend
// only on its shape (never on the thread count), each block is one single-threaded cblas_sgemm,
// and nothing is ever split along the reduction dimension: results are bit-identical for any
// number of threads.
#ifndef FTK_PARALLEL_H
#define FTK_PARALLEL_H

#include <cblas.h>
#include <stddef.h>

#define PAR_MAX_THREADS 64

// Starts n - 1 workers (n <= 0: one per online CPU; capped at PAR_MAX_THREADS) and sets OpenBLAS
// to one thread. May be called again to change n. Before the first call everything runs on the
// calling thread. Returns the thread count in use.
int par_set_threads(int n);
int par_threads(void);

// Runs fn(ctx, i) for every i in [0, n_tasks) and returns when all are done. The threads claim
// consecutive chunks of tasks as they come free (a busy or descheduled core never stalls the
// job). Called from inside a task it runs the tasks serially on the calling thread. A task's
// result must not depend on which thread runs it or in which order.
typedef void (*ParTaskFn)(void *ctx, int task);
void par_for(int n_tasks, ParTaskFn fn, void *ctx);

// The thread running the current task (0 = the caller of par_for), for per-thread scratch.
int par_thread_id(void);

// Scratch for the calling thread (the one par_thread_id() names): at least `floats` floats,
// 64-byte aligned, kept and reused by the next call on that thread (grown when too small, so a
// step loop allocates only in its first step). NULL when out of memory. par_free_scratch()
// releases every thread's scratch (call it only when no par_for is running).
float *par_scratch(size_t floats);
void par_free_scratch(void);
// Grows the scratch of every thread of the pool to at least `floats` floats up front (call it
// outside par_for), so that tasks asking for no more never allocate and never see NULL. 0, or -1
// when out of memory.
int par_scratch_reserve(size_t floats);

// Row-major C = alpha op(A) op(B) + beta C, exactly the arguments of cblas_sgemm(CblasRowMajor, ...):
// C (M, N), op(A) (M, K), op(B) (K, N). Cut into blocks of rows or columns of C by the shape and
// the cut width alone (par_sgemm_blocks), never by the thread count, and run over the pool;
// M == 1 (decode at batch 1) runs on column blocks as one cblas_sdot per output when the columns
// of op(B) are contiguous rows of B (the weights of a linear), else as cblas_sgemv.
void par_sgemm(enum CBLAS_TRANSPOSE transA, enum CBLAS_TRANSPOSE transB, int M, int N, int K, float alpha,
               const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc);

// Accounting for benchmarks: while on, every par_sgemm called outside a pool task adds its wall
// time and its FLOPs (2 M N K) to running totals (products inside tasks, e.g. attention tiles,
// are not counted). par_sgemm_stats returns the totals since the last reset.
void par_sgemm_stats_enable(int on);
void par_sgemm_stats_reset(void);
void par_sgemm_stats(double *seconds, double *flops);

// How par_sgemm cuts a product: *by_rows 1 = blocks of rows of C (else of columns), n_blocks of
// `block` rows/columns (the last may be shorter), n_blocks <= the cut width.
void par_sgemm_blocks(int M, int N, int K, int *by_rows, int *n_blocks, int *block);
// The cut width: the most blocks a product is cut into. Default (n <= 0): the number of online
// CPUs, whatever --threads says, so every thread count on one machine gives the same bits.
void par_set_cut_width(int n);

#endif
