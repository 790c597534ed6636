// test_bench.c — the `ftk bench` library: the executed-FLOP formula equals the sum of 2*M*N*K over
// the sgemm calls the step really makes (this file interposes cblas_sgemm and counts), the peer's
// model formula, parameter counts of the two benchmark shapes, the step's loss against a separate
// inference forward, response-only masking, determinism, decode and the machine measurements.
#include "tests/testutil.h"

#include <cblas.h>
#include <dlfcn.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/common.h"
#include "model/synthetic.h"
#include "sft/bench_decode.h"
#include "sft/bench_machine.h"
#include "sft/bench_step.h"

// ---- cblas_sgemm interposer: counts 2*M*N*K while `counting` is set, then calls OpenBLAS ----
static int counting;
static double counted_flops;

typedef void (*SgemmFn)(const enum CBLAS_ORDER, const enum CBLAS_TRANSPOSE, const enum CBLAS_TRANSPOSE,
                        const blasint, const blasint, const blasint, const float, const float *, const blasint,
                        const float *, const blasint, const float, float *, const blasint);

void cblas_sgemm(const enum CBLAS_ORDER Order, const enum CBLAS_TRANSPOSE TransA, const enum CBLAS_TRANSPOSE TransB,
                 const blasint M, const blasint N, const blasint K, const float alpha, const float *A,
                 const blasint lda, const float *B, const blasint ldb, const float beta, float *C, const blasint ldc) {
    static SgemmFn real;
    if (!real) real = (SgemmFn)dlsym(RTLD_NEXT, "cblas_sgemm");
    if (!real) abort();   // OpenBLAS not loaded: main() references it so the linker keeps it
    if (counting) counted_flops += 2.0 * M * N * K;
    real(Order, TransA, TransB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

static ModelConfig tiny(Arch arch) {
    ModelConfig c;
    memset(&c, 0, sizeof c);
    c.arch = arch;
    c.dim = 32;
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = 4;
    c.head_dim = 8;
    c.ffn_dim = arch == ARCH_LLAMA ? 48 : 128;
    c.vocab_size = 97;
    c.max_seq_len = 64;
    c.norm_eps = 1e-5f;
    c.rope_theta = 10000.0f;
    c.tied_head = arch == ARCH_GPT2;
    c.bos_id = c.eos_id = -1;
    return c;
}

static void make_step_ckpt(BenchStep *bs, Model *m, Arch arch, double mask, const char *targets, uint64_t seed,
                           int checkpointing) {
    char err[FTK_ERR_LEN];
    ModelConfig c = tiny(arch);
    assert_int_equal(model_init_synthetic(m, &c, 99, err), 0);
    BenchStepConfig sc;
    bench_step_config_default(&sc);
    sc.batch = 3;
    sc.seq = 10;
    sc.lora_r = 2;
    sc.mask_fraction = mask;
    sc.seed = seed;
    sc.gradient_checkpointing = checkpointing;
    snprintf(sc.target_modules, sizeof sc.target_modules, "%s", targets);
    if (bench_step_init(bs, m, &sc, err)) fail_msg("%s", err);
}

static void make_step(BenchStep *bs, Model *m, Arch arch, double mask, const char *targets, uint64_t seed) {
    make_step_ckpt(bs, m, arch, mask, targets, seed, 0);
}

static void test_shape_param_counts(void **state) {
    (void)state;
    char err[FTK_ERR_LEN];
    ModelConfig c;
    // the counts the PyTorch peer prints as params_base
    assert_int_equal(bench_shape("gpt2", 0, &c, err), 0);
    assert_int_equal(model_param_count(&c), 124439808);
    assert_int_equal(bench_shape("llama", 256, &c, err), 0);
    assert_int_equal(model_param_count(&c), 134105856);
    assert_int_equal(c.max_seq_len, 1024);
    assert_int_equal(bench_shape("llama", 2048, &c, err), 0);
    assert_int_equal(c.max_seq_len, 2048);
    assert_int_not_equal(bench_shape("gpt3", 0, &c, err), 0);
    assert_non_null(strstr(err, "gpt3"));
}

// executed FLOPs == what the sgemm calls of one step add up to, for several targets and masks
static void check_executed_ckpt(Arch arch, double mask, const char *targets, int checkpointing) {
    Model m;
    BenchStep bs;
    make_step_ckpt(&bs, &m, arch, mask, targets, 5, checkpointing);
    BenchFlops f;
    bench_step_flops(&bs, &f);
    BenchStepTimes t;
    char err[FTK_ERR_LEN];
    counted_flops = 0;
    counting = 1;
    int rc = bench_step_run(&bs, &t, err);
    counting = 0;
    if (rc) fail_msg("%s", err);
    if (fabs(f.executed - counted_flops) > 0.5)
        fail_msg("arch %d mask %g targets '%s' checkpointing %d: formula %.0f, sgemm calls %.0f (linear %.0f attention %.0f head %.0f "
                 "lora %.0f)",
                 arch, mask, targets, checkpointing, f.executed, counted_flops, f.linear, f.attention, f.head, f.lora);
    assert_true(f.lora > 0);
    bench_step_free(&bs);
    model_free(&m);
}

static void check_executed(Arch arch, double mask, const char *targets) { check_executed_ckpt(arch, mask, targets, 0); }

static void test_executed_flops_match_sgemm_calls(void **state) {
    (void)state;
    check_executed(ARCH_LLAMA, 0.0, "");
    check_executed(ARCH_LLAMA, 0.5, "");
    check_executed(ARCH_LLAMA, 0.3, "o_proj,down_proj");   // only O/DOWN train: layer 0's qkv backward skipped
    check_executed(ARCH_LLAMA, 0.0, "all-linear");
    check_executed(ARCH_LLAMA, 0.0, "up_proj");             // MLP only: no attention backward in layer 0
    check_executed(ARCH_GPT2, 0.0, "");
    check_executed(ARCH_GPT2, 0.5, "c_attn,c_proj,c_fc");
    // --gradient-checkpointing: backward recomputes every layer it visits (all but the down projection)
    check_executed_ckpt(ARCH_LLAMA, 0.0, "", 1);
    check_executed_ckpt(ARCH_LLAMA, 0.0, "all-linear", 1);
    check_executed_ckpt(ARCH_LLAMA, 0.3, "up_proj", 1);
    check_executed_ckpt(ARCH_GPT2, 0.5, "c_attn,c_proj,c_fc", 1);
}

static void test_model_flops_formula(void **state) {
    (void)state;
    Model m;
    BenchStep bs;
    make_step(&bs, &m, ARCH_LLAMA, 0.5, "", 1);
    BenchFlops f;
    bench_step_flops(&bs, &f);
    // llama tiny: per layer wqkv 96x32, wo 32x32, gate_up 96x32, down 32x48; head 97x32
    const double n = 30, T = 10, C = 32, L = 2;
    const double n_mm = L * (96 * 32 + 32 * 32 + 96 * 32 + 32 * 48) + 97 * 32;
    const double n_lora = L * 2 * (2 * 32 + 32 * 2);   // q and v: A (2, 32), B (32, 2)
    assert_int_equal(f.gemm_params, (size_t)n_mm);
    assert_int_equal(f.lora_params, (size_t)n_lora);
    assert_int_equal(bs.adapters.n_params, (size_t)n_lora);
    assert_true(fabs(f.model - (4 * n_mm * n + 6 * n_lora * n + 12 * n * T * C * L)) < 0.5);
    // the head part counts only the 15 target rows (half of each row of 10 masked)
    assert_int_equal(bs.n_targets, 15);
    assert_true(fabs(f.head - 4.0 * 15 * 97 * 32) < 0.5);
    bench_step_free(&bs);
    model_free(&m);
}

// The step's loss (before its update) = mean -log softmax(logits)[target] of a separate inference
// forward with the same adapters; masked rows are left out.
static void test_first_loss_matches_reference(void **state) {
    (void)state;
    for (int arch = 0; arch < 2; arch++) {
        Model m;
        BenchStep bs;
        make_step(&bs, &m, (Arch)arch, 0.4, "", 3);
        char err[FTK_ERR_LEN];
        // reference before the step changes the adapters (B starts at 0, so this is the base model)
        RunState *rs;
        assert_int_equal(runstate_create(&rs, &m, bs.cfg.batch, bs.cfg.seq, 0, err), 0);
        assert_int_equal(model_forward(&m, &bs.hooks, rs, bs.tokens, bs.cfg.batch, bs.cfg.seq, NULL, NULL, NULL, err), 0);
        const int V = m.cfg.vocab_size, C = m.cfg.dim;
        float *logits = malloc((size_t)V * sizeof(float));
        double ref = 0.0;
        for (int i = 0; i < bs.n_targets; i++) {
            lm_head_logits(&m, runstate_final_hidden(rs) + (size_t)bs.rows[i] * C, 1, logits);
            double mx = logits[0], s = 0.0;
            for (int j = 1; j < V; j++) mx = logits[j] > mx ? logits[j] : mx;
            for (int j = 0; j < V; j++) s += exp((double)logits[j] - mx);
            ref -= (logits[bs.targets[i]] - mx) - log(s);
        }
        ref /= bs.n_targets;
        // masking: 4 of 10 targets per row are dropped, rows b*T + 4 .. b*T + 9 remain
        assert_int_equal(bs.n_targets, 3 * 6);
        assert_int_equal(bs.rows[0], 4);
        assert_int_equal(bs.rows[6], 14);
        BenchStepTimes t1, t2;
        assert_int_equal(bench_step_run(&bs, &t1, err), 0);
        assert_true(fabs(t1.loss - ref) < 1e-5 * fabs(ref));
        assert_int_equal(bench_step_run(&bs, &t2, err), 0);
        assert_true(t2.loss != t1.loss);   // the update changed the adapters
        assert_true(t1.total_s >= t1.forward_s + t1.head_s + t1.backward_s);
        free(logits);
        runstate_free(rs);
        bench_step_free(&bs);
        model_free(&m);
    }
}

static void test_deterministic(void **state) {
    (void)state;
    uint64_t h[3];
    double loss[3];
    const uint64_t seeds[3] = {7, 7, 8};
    for (int k = 0; k < 3; k++) {
        Model m;
        BenchStep bs;
        make_step(&bs, &m, ARCH_LLAMA, 0.0, "", seeds[k]);
        char err[FTK_ERR_LEN];
        BenchStepTimes t;
        for (int s = 0; s < 3; s++) assert_int_equal(bench_step_run(&bs, &t, err), 0);
        h[k] = bench_step_params_hash(&bs);
        loss[k] = t.loss;
        bench_step_free(&bs);
        model_free(&m);
    }
    assert_true(h[0] == h[1]);
    assert_true(loss[0] == loss[1]);
    assert_true(h[0] != h[2]);
}

static void test_bad_config(void **state) {
    (void)state;
    char err[FTK_ERR_LEN];
    Model m;
    ModelConfig c = tiny(ARCH_LLAMA);
    assert_int_equal(model_init_synthetic(&m, &c, 1, err), 0);
    BenchStepConfig sc;
    bench_step_config_default(&sc);
    BenchStep bs;
    sc.seq = 65;   // more than the model's 64 positions
    assert_int_not_equal(bench_step_init(&bs, &m, &sc, err), 0);
    assert_non_null(strstr(err, "65"));
    sc.seq = 8;
    sc.mask_fraction = 1.0;
    assert_int_not_equal(bench_step_init(&bs, &m, &sc, err), 0);
    sc.mask_fraction = 0.97;   // rounds to all 8 masked
    assert_int_not_equal(bench_step_init(&bs, &m, &sc, err), 0);
    assert_non_null(strstr(err, "no targets"));
    sc.mask_fraction = 0;
    snprintf(sc.target_modules, sizeof sc.target_modules, "nonsense_proj");
    assert_int_not_equal(bench_step_init(&bs, &m, &sc, err), 0);
    model_free(&m);
}

static void count_prefills(void *ctx) { (*(int *)ctx)++; }

static void test_decode(void **state) {
    (void)state;
    char err[FTK_ERR_LEN];
    Model m;
    BenchStep bs;
    make_step(&bs, &m, ARCH_LLAMA, 0.0, "", 2);
    ModelAdapters hooks;
    adapters_hooks(&bs.adapters, 0, &hooks);
    // linears 2 * (96*32 + 32*32 + 96*32 + 32*48) + norms 2 * 2 * 32 + final norm 32 + head 97*32 + LoRA 2*2*(2*64)
    const size_t floats = 2 * (96 * 32 + 32 * 32 + 96 * 32 + 32 * 48) + 2 * 2 * 32 + 32 + 97 * 32 + 2 * 2 * 2 * 64;
    assert_int_equal(bench_decode_weight_bytes(&m, &hooks), floats * sizeof(float));
    assert_int_equal(bench_decode_weight_bytes(&m, NULL), (floats - 2 * 2 * 2 * 64) * sizeof(float));
    BenchDecode d;
    int prefills = 0;
    assert_int_equal(bench_decode(&m, &hooks, 3, 5, 4, 1, count_prefills, &prefills, &d, err), 0);
    assert_int_equal(d.steps, 4);
    assert_int_equal(prefills, 1);
    assert_true(d.tok_s > 0 && d.ms_step_min <= d.ms_step_median);
    assert_int_not_equal(bench_decode(&m, &hooks, 1, 60, 10, 1, NULL, NULL, &d, err), 0);   // 70 positions > 64
    assert_int_not_equal(bench_decode(&m, &hooks, 0, 5, 4, 1, NULL, NULL, &d, err), 0);
    bench_step_free(&bs);
    model_free(&m);
}

static void test_machine(void **state) {
    (void)state;
    char err[FTK_ERR_LEN];
    double g = 0, bw = 0;
    assert_int_equal(bench_sgemm_peak(128, 2, &g, err), 0);
    assert_true(g > 0.1);
    assert_int_not_equal(bench_sgemm_peak(4, 2, &g, err), 0);
    enum { N = 1 << 20 };
    float *buf = calloc(N, sizeof(float));
    assert_int_equal(bench_stream_read(buf, N, 1, 2, &bw, err), 0);
    assert_true(bw > 1e8);
    assert_int_equal(bench_stream_read(buf, N - 3, 2, 2, &bw, err), 0);   // uneven split over 2 threads
    assert_true(bw > 1e8);
    assert_int_not_equal(bench_stream_read(buf, N, 0, 2, &bw, err), 0);
    assert_int_not_equal(bench_stream_read(NULL, N, 1, 2, &bw, err), 0);
    free(buf);
    CpuMeter cm;
    cpu_meter_start(&cm);
    assert_true(cpu_meter_foreign(&cm) >= 0.0);
    assert_true(bench_peak_rss() > 0);
}

int main(void) {
    // A direct reference to OpenBLAS, so that linking with --as-needed keeps the library whose
    // cblas_sgemm the interposer forwards to.
    if (openblas_get_num_threads() < 1) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shape_param_counts),
        cmocka_unit_test(test_executed_flops_match_sgemm_calls),
        cmocka_unit_test(test_model_flops_formula),
        cmocka_unit_test(test_first_loss_matches_reference),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_bad_config),
        cmocka_unit_test(test_decode),
        cmocka_unit_test(test_machine),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
