// test_parallel.c — ftk's worker pool (model/parallel.h) and what it promises: par_sgemm equals a
// double-precision product for every transpose combination and odd shape, par_for runs every task
// exactly once, exp_poly stays within 2 ulp, and a whole training step (forward, LM head with its
// gradient, backward; llama and gpt2; LoRA and soft prompt) gives bit-identical results with 1, 2
// and 3 threads.
#include "tests/testutil.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "model/common.h"
#include "model/ops.h"
#include "model/parallel.h"
#include "model/synthetic.h"
#include "model/transformer.h"

static void fill(float *x, size_t n, uint64_t *rng) {
    for (size_t i = 0; i < n; i++) x[i] = ftk_rand_uniform(rng) - 0.5f;
}

// ---------------------------------------------------------------------------------------------
// par_sgemm

// C (M, N) = alpha op(A) op(B) + beta C in double, row-major, the cblas argument convention.
static void ref_gemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
                     int ldb, float beta, const float *C0, int ldc, double *out) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < K; k++) {
                const double a = ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
                const double b = tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
                s += a * b;
            }
            out[(size_t)i * N + j] = alpha * s + (beta != 0.0f ? beta * (double)C0[(size_t)i * ldc + j] : 0.0);
        }
}

static void check_sgemm(int ta, int tb, int M, int N, int K, float beta, int pad) {
    uint64_t rng = 11 + M * 7 + N * 3 + K + ta * 2 + tb;
    const int rows_a = ta ? K : M, cols_a = ta ? M : K, rows_b = tb ? N : K, cols_b = tb ? K : N;
    const int lda = cols_a + pad, ldb = cols_b + pad, ldc = N + pad;
    float *A = malloc((size_t)rows_a * lda * 4), *B = malloc((size_t)rows_b * ldb * 4);
    float *C0 = malloc((size_t)M * ldc * 4), *C = malloc((size_t)M * ldc * 4), *C1 = malloc((size_t)M * ldc * 4);
    double *ref = malloc((size_t)M * N * sizeof(double));
    fill(A, (size_t)rows_a * lda, &rng);
    fill(B, (size_t)rows_b * ldb, &rng);
    fill(C0, (size_t)M * ldc, &rng);
    const float alpha = 0.75f;
    ref_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C0, ldc, ref);
    for (int threads = 1; threads <= 3; threads++) {
        par_set_threads(threads);
        memcpy(C, C0, (size_t)M * ldc * 4);
        par_sgemm(ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb, beta,
                  C, ldc);
        for (int i = 0; i < M; i++) {
            for (int j = 0; j < N; j++) {
                const double d = fabs(C[(size_t)i * ldc + j] - ref[(size_t)i * N + j]);
                if (d > 1e-5 * (1.0 + sqrt((double)K))) fail_msg("sgemm %d%d %dx%dx%d beta %g: C[%d,%d] off by %g", ta, tb, M, N, K, beta, i, j, d);
            }
            for (int j = N; j < ldc; j++) assert_true(C[(size_t)i * ldc + j] == C0[(size_t)i * ldc + j]);  // padding untouched
        }
        if (threads == 1) memcpy(C1, C, (size_t)M * ldc * 4);
        else assert_memory_equal(C, C1, (size_t)M * ldc * 4);   // same bits at any thread count
    }
    par_set_threads(1);
    free(A); free(B); free(C0); free(C); free(C1); free(ref);
}

static void test_par_sgemm(void **state) {
    (void)state;
    // odd sizes, M = 1 (gemv), N = 1, and shapes large enough to be cut into blocks
    static const int shapes[][3] = {{1, 1, 1}, {1, 700, 33}, {1, 1300, 257}, {3, 5, 7}, {37, 1, 19},
                                    {130, 97, 61}, {515, 131, 40}, {700, 3, 9},
                                    // cut into 2, 4 and 8 blocks (par_sgemm_blocks)
                                    {1030, 257, 16}, {260, 600, 33}, {300, 2100, 40}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                check_sgemm(ta, tb, shapes[s][0], shapes[s][1], shapes[s][2], 0.0f, 0);
                check_sgemm(ta, tb, shapes[s][0], shapes[s][1], shapes[s][2], 1.0f, 3);   // lda > K etc.
            }
}

// the cut never depends on the thread count, and it covers the product with non-empty blocks
static void test_par_sgemm_blocks(void **state) {
    (void)state;
    static const int shapes[][3] = {{1, 32000, 768}, {256, 32000, 768}, {256, 768, 32000}, {1024, 2304, 768},
                                    {1024, 768, 2048}, {8, 768, 1024}, {1024, 8, 768}, {5, 5, 5}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int by_rows[3], nb[3], blk[3];
        for (int t = 1; t <= 3; t++) {
            par_set_threads(t);
            par_sgemm_blocks(shapes[s][0], shapes[s][1], shapes[s][2], &by_rows[t - 1], &nb[t - 1], &blk[t - 1]);
        }
        par_set_threads(1);
        assert_int_equal(by_rows[0], by_rows[2]);
        assert_int_equal(nb[0], nb[1]);
        assert_int_equal(nb[0], nb[2]);
        assert_int_equal(blk[0], blk[2]);
        const int dim = by_rows[0] ? shapes[s][0] : shapes[s][1];
        assert_true(nb[0] >= 1 && blk[0] >= 1);
        assert_true((long)(nb[0] - 1) * blk[0] < dim && (long)nb[0] * blk[0] >= dim);
    }
    // the shapes test_par_sgemm relies on are really cut (at a cut width of 8; setup() sets it)
    int by_rows, nb, blk;
    par_sgemm_blocks(300, 2100, 40, &by_rows, &nb, &blk);
    assert_true(!by_rows && nb == 8);
    par_sgemm_blocks(1030, 257, 16, &by_rows, &nb, &blk);
    assert_true(by_rows && nb == 2);
    par_sgemm_blocks(1, 1300, 257, &by_rows, &nb, &blk);
    assert_true(!by_rows && nb == 5);   // 1300 columns, >= 256 per gemv block
}

// ---------------------------------------------------------------------------------------------
// par_for

typedef struct {
    atomic_int *count;
    int nested;
} ForCtx;

static void count_task(void *ctx, int i) {
    ForCtx *c = ctx;
    atomic_fetch_add(&c->count[i], 1);
}

static void nested_task(void *ctx, int i) {
    ForCtx *c = ctx;
    ForCtx inner = {c->count + (size_t)i * 7, 0};
    const int t = par_thread_id();
    par_for(7, count_task, &inner);   // runs serially on this thread
    assert_int_equal(par_thread_id(), t);
}

static void test_par_for(void **state) {
    (void)state;
    static const int sizes[] = {0, 1, 2, 3, 5, 64, 1001};
    atomic_int count[1001 * 7];
    for (int threads = 1; threads <= 3; threads++) {
        assert_int_equal(par_set_threads(threads), threads);
        assert_int_equal(par_threads(), threads);
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
            for (int rep = 0; rep < 20; rep++) {   // repeated jobs in quick succession (the spin path)
                const int n = sizes[s];
                for (int i = 0; i < n; i++) atomic_store(&count[i], 0);
                ForCtx c = {count, 0};
                par_for(n, count_task, &c);
                for (int i = 0; i < n; i++) assert_int_equal(atomic_load(&count[i]), 1);
            }
        for (int i = 0; i < 100 * 7; i++) atomic_store(&count[i], 0);
        ForCtx c = {count, 1};
        par_for(100, nested_task, &c);
        for (int i = 0; i < 100 * 7; i++) assert_int_equal(atomic_load(&count[i]), 1);
    }
    par_set_threads(1);
}

// par_scratch_reserve: after it, every task gets its thread's reserved buffer (no allocation);
// a size that cannot be allocated fails with -1 instead of handing out NULL later.
// Under AddressSanitizer an impossible allocation must come back NULL (as it does without it)
// instead of aborting the test: the refusal is what is tested.
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "allocator_may_return_null=1"; }

typedef struct {
    float *seen[PAR_MAX_THREADS];
    atomic_int bad;
} ScratchCtx;

static void scratch_task(void *ctx, int i) {
    (void)i;
    ScratchCtx *c = ctx;
    float *p = par_scratch(1000);
    if (!p || p != c->seen[par_thread_id()]) atomic_store(&c->bad, 1);
    p[999] = 1.0f;   // the whole reservation is usable
}

static void scratch_record(void *ctx, int i) {
    (void)i;
    ScratchCtx *c = ctx;
    c->seen[par_thread_id()] = par_scratch(1);   // no growth: returns the reserved block
}

static void test_par_scratch_reserve(void **state) {
    (void)state;
    for (int threads = 1; threads <= 3; threads++) {
        par_set_threads(threads);
        par_free_scratch();
        assert_int_equal(par_scratch_reserve(1000), 0);
        ScratchCtx c = {{0}, 0};
        for (int rep = 0; rep < 50; rep++) par_for(64, scratch_record, &c);
        par_for(64, scratch_task, &c);
        assert_int_equal(atomic_load(&c.bad), 0);
        // 2^59 floats = 2 EiB: the allocator says no; a byte count past PTRDIFF_MAX is refused before
        assert_int_equal(par_scratch_reserve((size_t)1 << 59), -1);
        assert_int_equal(par_scratch_reserve((size_t)-1 / 2), -1);
        assert_int_equal(par_scratch_reserve(16), 0);   // and the pool recovers
        assert_non_null(par_scratch(16));
    }
    par_free_scratch();
    par_set_threads(1);
}

// ---------------------------------------------------------------------------------------------
// exp_poly

static double ulp_of(float y) { return nextafterf(fabsf(y), INFINITY) - fabsf(y); }

static void test_exp_poly(void **state) {
    (void)state;
    double worst = 0.0;
    for (float x = -87.3f; x < 88.37f; x += 0.000731f * (1.0f + fabsf(x))) {
        const double ref = exp((double)x);
        const double err = fabs(exp_poly(x) - ref) / ulp_of((float)ref);
        if (err > worst) worst = err;
    }
    assert_true(worst <= 2.0);
    assert_true(exp_poly(0.0f) == 1.0f);
    assert_true(exp_poly(-88.0f) == 0.0f && exp_poly(-1000.0f) == 0.0f && exp_poly(-INFINITY) == 0.0f);
    assert_true(isinf(exp_poly(89.0f)) && exp_poly(89.0f) > 0.0f);
    // the sum helper: x[j] = exp(x[j] - shift), returns their sum
    float v[37];
    double sum = 0.0;
    for (int j = 0; j < 37; j++) v[j] = 0.1f * j - 2.0f;
    for (int j = 0; j < 37; j++) sum += exp(0.1 * j - 2.0 - 1.5);
    assert_true(fabs(exp_shift_sum(v, 37, 1.5f) - sum) < 1e-5 * sum);
    assert_true(fabs(v[36] - exp(3.6 - 2.0 - 1.5)) < 1e-6);
    assert_true(row_max(v, 37) == v[36]);
}

// ---------------------------------------------------------------------------------------------
// a training step at 1, 2 and 3 threads

static ModelConfig cfg_of(Arch arch) {
    ModelConfig c = {0};
    c.arch = arch;
    c.dim = 64; c.n_layers = 2; c.n_heads = 4; c.n_kv_heads = arch == ARCH_LLAMA ? 2 : 4; c.head_dim = 16;
    c.ffn_dim = 176; c.vocab_size = 700; c.max_seq_len = 400; c.norm_eps = 1e-5f; c.rope_theta = 10000.0f;
    c.tied_head = arch == ARCH_GPT2; c.bos_id = 1; c.eos_id = 2;
    return c;
}

static float dlogp_mean(void *ctx, int i, float logp) {
    (void)i; (void)logp;
    return -1.0f / *(const int *)ctx;
}

enum { STEP_B = 2, STEP_TT = 290, STEP_NV = 5, STEP_R = 4 };

typedef struct {
    float *params;   // every trainable tensor, concatenated
    float *grads;    // their gradients after one step
    float *logp;     // (n_logp)
    size_t n_params, n_logp;
} StepResult;

// One step of `mode` (0: LoRA on q, v of both layers, o of layer 0 and down of layer 1, dropout on
// o; 1: soft prompt only) at `threads` threads; fills r (malloc'ed).
static void train_step(Arch arch, int mode, int threads, StepResult *r) {
    char err[FTK_ERR_LEN];
    par_set_threads(threads);
    Model m;
    ModelConfig c = cfg_of(arch);
    assert_int_equal(model_init_synthetic(&m, &c, 21 + arch, err), 0);
    const int C = c.dim, qd = c.n_heads * c.head_dim, kvd = c.n_kv_heads * c.head_dim;
    LoraHook hooks[2 * LSLOT_COUNT];
    memset(hooks, 0, sizeof hooks);
    struct { int layer, slot, in, out, off; float drop; } spec[] = {
        {0, LSLOT_Q, C, qd, 0, 0.0f}, {0, LSLOT_V, C, kvd, qd + kvd, 0.0f}, {1, LSLOT_Q, C, qd, 0, 0.0f},
        {1, LSLOT_V, C, kvd, qd + kvd, 0.0f}, {0, LSLOT_O, qd, C, 0, 0.1f}, {1, LSLOT_DOWN, c.ffn_dim, C, 0, 0.0f}};
    const int n_hooks = mode == 0 ? 6 : 0;
    size_t n_params = mode == 1 ? (size_t)STEP_NV * C : 0;
    for (int h = 0; h < n_hooks; h++) n_params += (size_t)STEP_R * (spec[h].in + spec[h].out);
    float *params = malloc(n_params * 4), *grads = calloc(n_params, 4);
    uint64_t rng = 99;
    for (size_t i = 0; i < n_params; i++) params[i] = 0.2f * ftk_rand_normal(&rng);
    size_t off = 0;
    for (int h = 0; h < n_hooks; h++) {
        LoraHook *k = &hooks[spec[h].layer * LSLOT_COUNT + spec[h].slot];
        *k = (LoraHook){STEP_R, spec[h].in, spec[h].out, spec[h].off, 2.0f, spec[h].drop, params + off,
                        params + off + (size_t)STEP_R * spec[h].in, grads + off, grads + off + (size_t)STEP_R * spec[h].in};
        off += (size_t)STEP_R * (spec[h].in + spec[h].out);
    }
    ModelAdapters ad = {mode == 0 ? hooks : NULL, mode == 1 ? STEP_NV : 0, mode == 1 ? params : NULL,
                        mode == 1 ? grads : NULL, 0};
    const int B = STEP_B, Tt = STEP_TT, T = ad.n_virtual + Tt;
    int tokens[STEP_B * STEP_TT], rows[STEP_B * STEP_TT], targets[STEP_B * STEP_TT];
    int n = 0;
    for (int i = 0; i < B * Tt; i++) tokens[i] = (int)(ftk_rand_u32(&rng) % (uint32_t)c.vocab_size);
    for (int b = 0; b < B; b++)
        for (int t = 0; t + 1 < Tt; t++) {
            if (t % 3 == 1) continue;   // some positions do not enter the loss
            rows[n] = b * T + ad.n_virtual + t;
            targets[n++] = tokens[b * Tt + t + 1];
        }
    RunState *rs;
    assert_int_equal(runstate_create_train(&rs, &m, &ad, B, T, 0, err), 0);
    uint64_t drop_rng = 5;
    if (model_forward(&m, &ad, rs, tokens, B, Tt, NULL, NULL, &drop_rng, err)) fail_msg("%s", err);
    r->logp = malloc((size_t)n * 4);
    if (lm_head_logprobs(&m, rs, rows, targets, n, r->logp, NULL, dlogp_mean, &n, err)) fail_msg("%s", err);
    if (model_backward(&m, &ad, rs, err)) fail_msg("%s", err);
    r->params = params;
    r->grads = grads;
    r->n_params = n_params;
    r->n_logp = (size_t)n;
    runstate_free(rs);
    model_free(&m);
    par_set_threads(1);
}

static void check_threads_bitwise(Arch arch, int mode) {
    StepResult one, other;
    train_step(arch, mode, 1, &one);
    // the gradients are real: not all zero, finite
    double g2 = 0.0;
    for (size_t i = 0; i < one.n_params; i++) {
        assert_true(isfinite(one.grads[i]));
        g2 += (double)one.grads[i] * one.grads[i];
    }
    assert_true(g2 > 1e-12);
    for (int threads = 2; threads <= 3; threads++) {
        train_step(arch, mode, threads, &other);
        assert_memory_equal(one.grads, other.grads, one.n_params * 4);
        assert_memory_equal(one.logp, other.logp, one.n_logp * 4);
        free(other.params); free(other.grads); free(other.logp);
    }
    free(one.params); free(one.grads); free(one.logp);
}

static void test_step_bitwise_llama_lora(void **state) { (void)state; check_threads_bitwise(ARCH_LLAMA, 0); }
static void test_step_bitwise_gpt2_lora(void **state) { (void)state; check_threads_bitwise(ARCH_GPT2, 0); }
static void test_step_bitwise_llama_prompt(void **state) { (void)state; check_threads_bitwise(ARCH_LLAMA, 1); }
static void test_step_bitwise_gpt2_prompt(void **state) { (void)state; check_threads_bitwise(ARCH_GPT2, 1); }

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_par_for),
        cmocka_unit_test(test_par_scratch_reserve),
        cmocka_unit_test(test_par_sgemm),
        cmocka_unit_test(test_par_sgemm_blocks),
        cmocka_unit_test(test_exp_poly),
        cmocka_unit_test(test_step_bitwise_llama_lora),
        cmocka_unit_test(test_step_bitwise_gpt2_lora),
        cmocka_unit_test(test_step_bitwise_llama_prompt),
        cmocka_unit_test(test_step_bitwise_gpt2_prompt),
    };
    par_set_cut_width(8);   // cut products as an 8-CPU machine would, so the blocked paths run here too
    return cmocka_run_group_tests(tests, NULL, NULL);
}
