// cmd_bench.c — `ftk bench`: a LoRA SFT step and KV-cache decoding on synthetic models of real
// shapes (no files), measured against the machine's own sgemm peak and memory bandwidth in the
// same run. The PyTorch peer for the same step is /work/shared/bench/torch_lora_bench.py;
// bench/compare.sh runs both side by side.
//
// Per model it prints the timed steps, tokens/s (B*T / median step), the phase times, FLOPs per
// step with their formulas and the achieved GFLOP/s, the fraction of the sgemm peak (measured
// before and after the steps, and again just before each timed step: a shared VM's speed drifts
// by 10% and more over minutes, so each step is also judged against its own moment), peak RSS,
// parameter counts, decode tokens/s at each --decode-batch against the bandwidth bound, and one
// `RESULT {json}` line for scripts. Steps during which other processes took more than the idle
// cores (+ --max-foreign) are dropped and replaced, as the peer does.
//
// Build with -DFTK_PROFILE to also time every cblas_sgemm call by kind (linear, attention, LM head,
// LoRA): this file then interposes cblas_sgemm and forwards to OpenBLAS's.
#include <cblas.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "model/common.h"
#include "model/parallel.h"
#include "model/synthetic.h"
#include "model/weights_bf16.h"
#include "sft/bench_decode.h"
#include "sft/bench_machine.h"
#include "sft/bench_step.h"

// ---------------------------------------------------------------------------------------------
// optional sgemm profile (-DFTK_PROFILE)

#ifdef FTK_PROFILE
#include <dlfcn.h>

enum { PK_LINEAR, PK_ATTENTION, PK_HEAD, PK_LORA, PK_COUNT };
static const char *PK_NAMES[PK_COUNT] = {"linear (frozen W)", "attention", "LM head", "LoRA"};
static struct {
    int hd, V, r, rows;   // the shape being benchmarked, to tell the kinds apart (rows: B*T, 0 in decode)
    double s[PK_COUNT], flops[PK_COUNT];
    long calls[PK_COUNT];
} prof;

typedef void (*SgemmFn)(const enum CBLAS_ORDER, const enum CBLAS_TRANSPOSE, const enum CBLAS_TRANSPOSE,
                        const blasint, const blasint, const blasint, const float, const float *, const blasint,
                        const float *, const blasint, const float, float *, const blasint);

static int prof_kind(int M, int N, int K) {
    if (N == prof.V || K == prof.V) return PK_HEAD;
    if (N == prof.r || K == prof.r || (M == prof.r && K == prof.rows)) return PK_LORA;   // M = r: dA over the rows
    if (K == prof.hd || N == prof.hd) return PK_ATTENTION;   // no linear of these shapes has a head_dim side
    return PK_LINEAR;
}

void cblas_sgemm(const enum CBLAS_ORDER Order, const enum CBLAS_TRANSPOSE TransA, const enum CBLAS_TRANSPOSE TransB,
                 const blasint M, const blasint N, const blasint K, const float alpha, const float *A,
                 const blasint lda, const float *B, const blasint ldb, const float beta, float *C, const blasint ldc) {
    static SgemmFn real;
    if (!real) real = (SgemmFn)dlsym(RTLD_NEXT, "cblas_sgemm");
    const double t0 = ftk_now();
    real(Order, TransA, TransB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    const int k = prof_kind(M, N, K);
    prof.s[k] += ftk_now() - t0;
    prof.flops[k] += 2.0 * M * N * K;
    prof.calls[k]++;
}

static void prof_reset(const ModelConfig *c, int r, int rows) {
    memset(&prof, 0, sizeof prof);
    prof.rows = rows;
    prof.hd = c->head_dim;
    prof.V = c->vocab_size;
    prof.r = r;
}

typedef struct {
    const ModelConfig *cfg;
    int r;
} ProfResetCtx;
static void prof_reset_cb(void *ctx) {
    const ProfResetCtx *p = ctx;
    prof_reset(p->cfg, p->r, 0);
}

static void prof_report(const char *what, int runs, double total_s) {
    double s = 0.0;
    printf("# profile (%s, per run over %d runs): cblas_sgemm by kind\n", what, runs);
    for (int k = 0; k < PK_COUNT; k++) {
        s += prof.s[k];
        printf("#   %-18s %8.1f ms  %6ld calls  %7.1f GFLOP/s  %5.1f%% of the time\n", PK_NAMES[k],
               prof.s[k] / runs * 1e3, prof.calls[k] / runs, prof.s[k] > 0 ? prof.flops[k] / prof.s[k] * 1e-9 : 0.0,
               100.0 * prof.s[k] / total_s);
    }
    printf("#   %-18s %8.1f ms  (%.1f%%)\n", "not sgemm", (total_s - s) / runs * 1e3, 100.0 * (total_s - s) / total_s);
}
#endif

// ---------------------------------------------------------------------------------------------

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void with_commas(size_t v, char *out) {
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%zu", v), k = 0;
    for (int i = 0; i < n; i++) {
        if (i && (n - i) % 3 == 0) out[k++] = ',';
        out[k++] = tmp[i];
    }
    out[k] = 0;
}

typedef struct {
    BenchStepConfig step;
    int threads;             // ftk pool threads in use
    int n_steps, n_warmup;
    double max_foreign, quiet_wait;
    int decode_batches[16], n_decode_batches, decode_tokens, decode_prompt;
    double peak_gflops;      // measured once per run
    int peak_n;
    const char *json_path;
    const char *params_prefix;
    int decode_only;         // --decode-only: no training step
    int base_bf16;           // --base-dtype bf16: frozen weights stored as bf16 (no decode: generation needs fp32)
} BenchOptions;

// Parses "1,8" into out (at most cap values >= 1).
static int parse_int_list(const char *s, int *out, int cap) {
    int n = 0;
    while (s && *s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 1 || v > 4096 || n == cap) return -1;
        out[n++] = (int)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -1;
    }
    return n;
}

// Decode tokens/s at each --decode-batch against the bandwidth bound (bw measured at o->threads when
// the model was built, and again after each batch: the larger counts); appends one object per batch
// to dec (NULL: print only).
static void bench_decodes(const Model *m, const ModelAdapters *hooks, const BenchOptions *o, const ModelConfig *cfg,
                          double bw, cJSON *dec) {
    char err[FTK_ERR_LEN];
    (void)cfg;   // only the profiler reads it
    const size_t wbytes = bench_decode_weight_bytes(m, hooks);
    for (int k = 0; k < o->n_decode_batches; k++) {
        const int nb = o->decode_batches[k];
        BenchDecode d;
        CpuMeter cm;
        cpu_meter_start(&cm);
#ifdef FTK_PROFILE
        ProfResetCtx pr = {cfg, o->step.lora_r};
        if (bench_decode(m, hooks, nb, o->decode_prompt, o->decode_tokens, o->step.seed, prof_reset_cb, &pr, &d, err))
            cli_die("%s", err);
#else
        if (bench_decode(m, hooks, nb, o->decode_prompt, o->decode_tokens, o->step.seed, NULL, NULL, &d, err))
            cli_die("%s", err);
#endif
        const double foreign = cpu_meter_foreign(&cm);
        // The streaming read again right after this decode: the VM's bandwidth drifts, and the
        // larger of the two readings gives the stricter bound.
        double bw_after = 0.0;
        if (bench_stream_read(m->weight_mem, m->n_weight_floats, o->threads, 3, &bw_after, err)) cli_die("%s", err);
        const double bw_use = bw_after > bw ? bw_after : bw;
        // every step reads the weights once for all nb rows, and each sequence's K/V cache
        const double bound = bench_decode_bound_tok_s(nb, wbytes, d.kv_bytes_step, bw_use);
        printf("decode batch %d: %.1f tokens/s (median step %.1f ms, min %.1f, %d steps after a %d-token prompt; "
               "prefill %.2f s) | bandwidth bound %.1f tokens/s (%.1f MB of fp32 weights + %.1f MB of KV cache per "
               "step / %.2f GB/s, the larger of %.2f at the start and %.2f right after) -> %.2fx the bound's time | "
               "foreign %.2f cores\n",
               nb, d.tok_s, d.ms_step_median, d.ms_step_min, d.steps, o->decode_prompt, d.prefill_s, bound,
               wbytes / 1e6, d.kv_bytes_step / 1e6, bw_use * 1e-9, bw * 1e-9, bw_after * 1e-9, bound / d.tok_s,
               foreign);
#ifdef FTK_PROFILE
        prof_report("decode step", d.steps, d.decode_s);
#endif
        cJSON *o1 = cJSON_CreateObject();
        cJSON_AddNumberToObject(o1, "batch", nb);
        cJSON_AddNumberToObject(o1, "tok_s", d.tok_s);
        cJSON_AddNumberToObject(o1, "ms_step_median", d.ms_step_median);
        cJSON_AddNumberToObject(o1, "bound_tok_s", bound);
        cJSON_AddNumberToObject(o1, "weight_mb", wbytes / 1e6);
        cJSON_AddNumberToObject(o1, "kv_mb", d.kv_bytes_step / 1e6);
        cJSON_AddNumberToObject(o1, "bandwidth_gbs", bw_use * 1e-9);
        cJSON_AddNumberToObject(o1, "foreign_cores", foreign);
        if (dec) cJSON_AddItemToArray(dec, o1);
        else cJSON_Delete(o1);
        fflush(stdout);
    }
}

// Runs the whole benchmark of one shape and prints as it goes; exits 1 on failure.
static void bench_model(const char *name, const BenchOptions *o) {
    char err[FTK_ERR_LEN];
    const BenchStepConfig *sc = &o->step;
    int need_pos = sc->seq;
    if (o->n_decode_batches && o->decode_prompt + o->decode_tokens > need_pos) need_pos = o->decode_prompt + o->decode_tokens;
    ModelConfig cfg;
    if (bench_shape(name, need_pos, &cfg, err)) cli_die("%s", err);
    const int rss_reset = bench_reset_peak_rss() == 0;

    Model m;
    double t0 = ftk_now();
    if (model_init_synthetic(&m, &cfg, 1234 + sc->seed, err)) cli_die("%s", err);
    const double init_s = ftk_now() - t0;
    double bw = 0.0;
    if (bench_stream_read(m.weight_mem, m.n_weight_floats, o->threads, 3, &bw, err)) cli_die("%s", err);
    const size_t fp32_weight_bytes = model_weight_bytes(&m);
    if (o->base_bf16 && model_to_bf16(&m, err)) cli_die("%s", err);

    BenchStep bs;
    if (bench_step_init(&bs, &m, sc, err)) cli_die("%s", err);
    BenchFlops fl;
    bench_step_flops(&bs, &fl);
    const size_t n_base = model_param_count(&cfg), n_train = bs.adapters.n_params;
    char c_base[32], c_train[32], c_total[32], c_mm[32];
    with_commas(n_base, c_base);
    with_commas(n_train, c_train);
    with_commas(n_base + n_train, c_total);
    with_commas(fl.gemm_params, c_mm);

    const char *env_core = getenv("OPENBLAS_CORETYPE"), *env_l2 = getenv("OPENBLAS_L2_SIZE");
    printf("# ftk bench: model=%s (synthetic, built in %.1f s) threads=%d openblas=%s (%s) OPENBLAS_CORETYPE=%s "
           "OPENBLAS_L2_SIZE=%s\n",
           name, init_s, o->threads, openblas_get_corename(), openblas_get_config(), env_core ? env_core : "(unset)",
           env_l2 ? env_l2 : "(unset)");
    printf("# step: batch=%d seq=%d lora r=%d alpha=%g targets=%s mask_fraction=%g (%d target tokens) lr=%g fp32%s\n",
           sc->batch, sc->seq, sc->lora_r, sc->lora_alpha, sc->target_modules[0] ? sc->target_modules : "q_proj,v_proj",
           sc->mask_fraction, bs.n_targets, sc->learning_rate,
           sc->gradient_checkpointing ? " gradient-checkpointing" : "");
    printf("# params: total %s = base %s + trainable %s (%.3f%%); gemm weights N_mm %s\n", c_total, c_base, c_train,
           100.0 * (double)n_train / (double)(n_base + n_train), c_mm);
    printf("# memory: weights %.0f MiB (%s; fp32 %.0f MiB), training activation arena %.0f MiB\n",
           model_weight_bytes(&m) / 1048576.0, o->base_bf16 ? "bf16" : "fp32", fp32_weight_bytes / 1048576.0,
           runstate_bytes(bs.rs) / 1048576.0);
    printf("# machine: sgemm peak %.1f GFLOP/s before the model (square %d, best of 3); streaming read %.2f GB/s (%d threads, %.0f MB "
           "of weights, best of 3)\n",
           o->peak_gflops, o->peak_n, bw * 1e-9, o->threads, fp32_weight_bytes / 1e6);
    fflush(stdout);
    if (o->decode_only) {   // the adapter as initialised (its reads cost the same as a trained one's)
        ModelAdapters hooks;
        adapters_hooks(&bs.adapters, 0, &hooks);
        bench_decodes(&m, &hooks, o, &cfg, bw, NULL);
        bench_step_free(&bs);
        model_free(&m);
        return;
    }

    // training steps, with the peer's interference rule
    const long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    const double allowed = (ncpu > o->threads ? (double)(ncpu - o->threads) : 0.0) + o->max_foreign;
    const int max_runs = o->n_warmup + 3 * o->n_steps;
    double *tot = calloc((size_t)max_runs, sizeof(double)), *all = calloc((size_t)max_runs, sizeof(double));
    double *foreign_of = calloc((size_t)max_runs, sizeof(double));
    double *beside = calloc((size_t)max_runs, sizeof(double));   // peak measured right before each kept step
    double *beside_all = calloc((size_t)max_runs, sizeof(double));
    BenchStepTimes *kept = calloc((size_t)max_runs, sizeof(BenchStepTimes));
    if (!tot || !all || !kept || !foreign_of || !beside || !beside_all) cli_die("out of memory");
    size_t steps_rss = 0;   // peak RSS over the steps, without the peak probes' matrices
    int n_kept = 0, n_all = 0, dropped = 0, fallback = 0;
    double last_loss = NAN, timed_s = 0.0;
    int n_timed = 0;
#ifdef FTK_PROFILE
    prof_reset(&cfg, sc->lora_r, sc->batch * sc->seq);
#endif
    for (int i = 0; n_kept < o->n_steps && i < max_runs; i++) {
        if (i >= o->n_warmup && o->quiet_wait > 0) bench_wait_quiet(o->quiet_wait, allowed);
#ifdef FTK_PROFILE
        if (i == o->n_warmup) {
            prof_reset(&cfg, sc->lora_r, sc->batch * sc->seq);
            printf("# profile window start (CLOCK_MONOTONIC, for perf record -k mono / perf report --time): %.6f\n",
                   ftk_now());
        }
#endif
        double peak_now = 0.0;
        if (i >= o->n_warmup) {   // the peak of this moment; its matrices are gone again before the step
            SgemmProbe probe;
            if (sgemm_probe_init(&probe, o->peak_n, err)) cli_die("%s", err);
            peak_now = sgemm_probe_peak(&probe, 2, NULL, NULL);
            sgemm_probe_free(&probe);
            if (rss_reset) bench_reset_peak_rss();
        }
        CpuMeter cm;
        cpu_meter_start(&cm);
        BenchStepTimes t;
        if (bench_step_run(&bs, &t, err)) cli_die("%s", err);
        const double foreign = cpu_meter_foreign(&cm);
        const size_t rss_now = bench_peak_rss();
        if (rss_now > steps_rss) steps_rss = rss_now;
        const int clean = foreign <= allowed;
        const char *tag = i < o->n_warmup ? "warmup" : clean ? "step" : "DROPPED";
        printf("  %s %d: %9.1f ms  loss %.6f  (fwd %.0f / head %.0f / bwd %.0f / opt %.1f ms)  foreign %.2f cores", tag,
               i, t.total_s * 1e3, t.loss, t.forward_s * 1e3, t.head_s * 1e3, t.backward_s * 1e3, t.optim_s * 1e3,
               foreign);
        if (peak_now > 0) printf("  sgemm peak just before %.1f GFLOP/s", peak_now);
        printf("\n");
        fflush(stdout);
        last_loss = t.loss;
        if (i < o->n_warmup) continue;
        timed_s += t.total_s;
        n_timed++;
        foreign_of[n_all] = foreign;
        beside_all[n_all] = peak_now;
        all[n_all++] = t.total_s;
        if (clean) {
            beside[n_kept] = peak_now;
            kept[n_kept] = t;
            tot[n_kept++] = t.total_s;
        } else {
            dropped++;
        }
    }
    if (n_kept == 0) {
        printf("  WARNING: no step ran without interference; reporting all steps\n");
        for (int i = 0; i < n_all; i++) {
            tot[i] = all[i];
            beside[i] = beside_all[i];
        }
        n_kept = n_all;
        fallback = 1;
    }
#ifdef FTK_PROFILE
    printf("# profile window end: %.6f\n", ftk_now());
    if (n_timed) prof_report("training step", n_timed, timed_s);
#endif
    const size_t peak_rss = steps_rss;
    // the peak again after the steps: on a shared machine the larger of the two is the better estimate
    double peak_after = 0.0;
    if (bench_sgemm_peak(o->peak_n, 3, &peak_after, err)) cli_die("%s", err);
    const double peak = peak_after > o->peak_gflops ? peak_after : o->peak_gflops;
    printf("# sgemm peak after the steps %.1f GFLOP/s; using %.1f\n", peak_after, peak);
    double mean = 0.0, mn = 1e300, fwd = 0, head = 0, bwd = 0, opt = 0, gemm_s = 0, gemm_flops = 0;
    for (int i = 0; i < n_kept; i++) {
        mean += tot[i] / n_kept;
        mn = tot[i] < mn ? tot[i] : mn;
    }
    const int n_phase = fallback ? 0 : n_kept;   // phase times of the counted steps
    for (int i = 0; i < n_phase; i++) {
        fwd += kept[i].forward_s / n_phase;
        head += kept[i].head_s / n_phase;
        bwd += kept[i].backward_s / n_phase;
        opt += kept[i].optim_s / n_phase;
        gemm_s += kept[i].gemm_s / n_phase;
        gemm_flops += kept[i].gemm_flops / n_phase;
    }
    // each step against the peak measured just before it (median over the counted steps)
    double *ratio = calloc((size_t)n_kept + 1, sizeof(double));
    if (!ratio) cli_die("out of memory");
    int n_ratio = 0;
    for (int i = 0; i < n_kept; i++)
        if (beside[i] > 0) ratio[n_ratio++] = fl.executed / tot[i] * 1e-9 / beside[i];
    const double exec_beside = n_ratio ? median(ratio, n_ratio) : NAN;
    n_ratio = 0;
    for (int i = 0; i < n_phase; i++)
        if (beside[i] > 0 && kept[i].gemm_s > 0) ratio[n_ratio++] = kept[i].gemm_flops / kept[i].gemm_s * 1e-9 / beside[i];
    const double gemm_beside = n_ratio ? median(ratio, n_ratio) : NAN;
    for (int i = 0; i < n_kept; i++) ratio[i] = beside[i];
    const double peak_beside_med = n_kept ? median(ratio, n_kept) : NAN;
    free(ratio);
    const double med = median(tot, n_kept);
    const double tok_s = (double)sc->batch * sc->seq / med;
    const double gf_model = fl.model / med * 1e-9, gf_exec = fl.executed / med * 1e-9;
    printf("tokens/s %.1f (median step) | ms/step median %.1f mean %.1f min %.1f | fwd %.0f head %.0f bwd %.0f opt %.1f ms\n",
           tok_s, med * 1e3, mean * 1e3, mn * 1e3, fwd * 1e3, head * 1e3, bwd * 1e3, opt * 1e3);
    printf("steps counted %d, dropped for interference %d\n", n_kept, dropped);
    printf("FLOPs/step, model (peer's formula 4*N_mm*n + 6*N_lora*n + 12*n*T*C*L, n = B*T): %.1f GFLOP -> %.1f GFLOP/s\n",
           fl.model * 1e-9, gf_model);
    printf("FLOPs/step, executed sgemm (linear %.1f + attention %.1f + LM head 4*nt*V*C %.1f + LoRA %.2f): %.1f GFLOP "
           "-> %.1f GFLOP/s = %.1f%% of the sgemm peak %.1f (larger of before and after the steps); %.1f%% of the peak measured just "
           "before each step (median %.1f)\n",
           fl.linear * 1e-9, fl.attention * 1e-9, fl.head * 1e-9, fl.lora * 1e-9, fl.executed * 1e-9, gf_exec,
           100.0 * gf_exec / peak, peak, 100.0 * exec_beside, peak_beside_med);
    const double gemm_gf = gemm_s > 0 ? gemm_flops / gemm_s * 1e-9 : 0.0;
    if (gemm_s > 0)
        printf("products through par_sgemm (linears, LM head, LoRA; not the attention tiles): %.1f GFLOP/step in "
               "%.0f ms of the step = %.1f GFLOP/s = %.1f%% of that peak; %.1f%% of the peak "
               "measured just before each step\n",
               gemm_flops * 1e-9, gemm_s * 1e3, gemm_gf, 100.0 * gemm_gf / peak, 100.0 * gemm_beside);
    printf("peak RSS %.0f MiB%s | trainable params %s (%.3f%% of %s)\n", peak_rss / 1048576.0,
           rss_reset ? "" : " (process-wide)", c_train, 100.0 * (double)n_train / (double)(n_base + n_train), c_total);
    printf("adapter hash %016llx after %d steps (same data and seed => identical at any thread count)\n",
           (unsigned long long)bench_step_params_hash(&bs), n_timed + o->n_warmup);
    if (o->params_prefix) {
        char path[4200];
        snprintf(path, sizeof path, "%s%s.f32", o->params_prefix, name);
        if (ftk_write_file_atomic(path, bs.adapters.params, bs.adapters.n_params * sizeof(float), err)) cli_die("%s", err);
        printf("adapter parameters written to %s\n", path);
    }
    fflush(stdout);

    cJSON *res = cJSON_CreateObject();
    cJSON_AddStringToObject(res, "tool", "ftk");
    cJSON_AddStringToObject(res, "model", name);
    cJSON_AddStringToObject(res, "mode", "lora");
    cJSON_AddStringToObject(res, "base_dtype", o->base_bf16 ? "bf16" : "f32");
    cJSON_AddBoolToObject(res, "gradient_checkpointing", sc->gradient_checkpointing);
    cJSON_AddNumberToObject(res, "batch", sc->batch);
    cJSON_AddNumberToObject(res, "seq", sc->seq);
    cJSON_AddNumberToObject(res, "mask_fraction", sc->mask_fraction);
    cJSON_AddNumberToObject(res, "threads", o->threads);
    cJSON_AddStringToObject(res, "openblas", openblas_get_corename());
    cJSON_AddNumberToObject(res, "rank", sc->lora_r);
    cJSON_AddNumberToObject(res, "trainable", (double)n_train);
    cJSON_AddNumberToObject(res, "params_base", (double)n_base);
    cJSON_AddNumberToObject(res, "gemm_params", (double)fl.gemm_params);
    cJSON_AddNumberToObject(res, "steps", o->n_steps);
    cJSON_AddNumberToObject(res, "ms_step_median", med * 1e3);
    cJSON_AddNumberToObject(res, "ms_step_mean", mean * 1e3);
    cJSON_AddNumberToObject(res, "ms_step_min", mn * 1e3);
    cJSON_AddNumberToObject(res, "tok_s", tok_s);
    cJSON_AddNumberToObject(res, "fwd_ms", fwd * 1e3);
    cJSON_AddNumberToObject(res, "head_ms", head * 1e3);
    cJSON_AddNumberToObject(res, "bwd_ms", bwd * 1e3);
    cJSON_AddNumberToObject(res, "opt_ms", opt * 1e3);
    cJSON_AddNumberToObject(res, "gflop_step", fl.model * 1e-9);
    cJSON_AddNumberToObject(res, "gflops", gf_model);
    cJSON_AddNumberToObject(res, "executed_gflop_step", fl.executed * 1e-9);
    cJSON_AddNumberToObject(res, "executed_gflops", gf_exec);
    cJSON_AddNumberToObject(res, "sgemm_peak_gflops", peak);
    cJSON_AddNumberToObject(res, "peak_fraction", gf_exec / peak);
    cJSON_AddNumberToObject(res, "par_sgemm_fraction", gemm_gf / peak);
    cJSON_AddNumberToObject(res, "sgemm_peak_beside_gflops", peak_beside_med);
    cJSON_AddNumberToObject(res, "peak_fraction_beside", exec_beside);
    cJSON_AddNumberToObject(res, "par_sgemm_fraction_beside", gemm_beside);
    cJSON_AddNumberToObject(res, "par_sgemm_ms", gemm_s * 1e3);
    cJSON_AddNumberToObject(res, "peak_rss_mb", peak_rss / 1048576.0);
    cJSON_AddNumberToObject(res, "arena_mb", runstate_bytes(bs.rs) / 1048576.0);
    cJSON_AddNumberToObject(res, "final_loss", last_loss);
    cJSON_AddNumberToObject(res, "clean_steps", n_kept);
    cJSON_AddNumberToObject(res, "dropped_steps", dropped);
    cJSON_AddNumberToObject(res, "steps_run", o->n_warmup + n_timed);
    double foreign_sum = 0.0;
    for (int i = 0; i < n_all; i++) foreign_sum += foreign_of[i];
    cJSON_AddNumberToObject(res, "foreign_cores_mean", n_all ? foreign_sum / n_all : 0.0);
    char hash[24];
    snprintf(hash, sizeof hash, "%016llx", (unsigned long long)bench_step_params_hash(&bs));
    cJSON_AddStringToObject(res, "adapter_hash", hash);
    cJSON_AddNumberToObject(res, "bandwidth_gbs", bw * 1e-9);

    // decoding with the (trained) adapters, as PPO rollouts do
    cJSON *dec = cJSON_AddArrayToObject(res, "decode");
    ModelAdapters hooks;
    adapters_hooks(&bs.adapters, 0, &hooks);
    bench_decodes(&m, &hooks, o, &cfg, bw, dec);

    char *line = cJSON_PrintUnformatted(res);
    printf("RESULT %s\n", line ? line : "{}");
    fflush(stdout);
    if (o->json_path && line) {
        FILE *f = fopen(o->json_path, "a");
        if (!f || fprintf(f, "%s\n", line) < 0 || fclose(f)) cli_die("cannot append to %s", o->json_path);
    }
    free(line);
    cJSON_Delete(res);
    free(tot);
    free(all);
    free(foreign_of);
    free(kept);
    free(beside);
    free(beside_all);
    bench_step_free(&bs);
    model_free(&m);
}

int cmd_bench(int argc, char **argv) {
    const Flag flags[] = {
        {"--model", FLAG_LIST, "gpt2,llama", "shapes to run: gpt2 (124M, tied head), llama (12 x 768, SwiGLU 2048, vocab 32000)"},
        {"--batch", FLAG_INT, "4", "sequences per step"},
        {"--seq", FLAG_INT, "256", "tokens per sequence"},
        {"--lora-r", FLAG_INT, "8", "LoRA rank"},
        {"--lora-alpha", FLAG_FLOAT, "16", "LoRA alpha"},
        {"--target-modules", FLAG_LIST, "q_proj,v_proj", "LoRA targets (HF module names, as ftk sft)"},
        {"--mask-fraction", FLAG_FLOAT, "0", "response-only SFT: the first FRACTION of each row's targets are ignored "
                                             "(-1), so the LM head runs on the other rows only"},
        {"--threads", FLAG_INT, "0", "worker threads, also for the stream read (0 = one per CPU)"},
        {"--gradient-checkpointing", FLAG_BOOL, NULL, "keep only each layer's input; backward recomputes the layer"},
        {"--base-dtype", FLAG_STR, "f32", "frozen weights (linears, embeddings, LM head) as f32 or bf16 (bf16 halves "
                                          "them; products stay fp32; no decode measurement: generation needs f32)"},
        {"--steps", FLAG_INT, "5", "timed steps (median reported)"},
        {"--warmup", FLAG_INT, "2", "untimed steps first"},
        {"--learning-rate", FLAG_FLOAT, "1e-4", "AdamW learning rate (weight decay 0)"},
        {"--seed", FLAG_INT, "0", "data, weights and adapter init"},
        {"--decode-batch", FLAG_LIST, "1,8", "decode batch sizes to time (KV cache); empty with --no-decode"},
        {"--decode-tokens", FLAG_INT, "32", "decode steps per batch size"},
        {"--decode-prompt", FLAG_INT, "32", "prompt tokens prefilled before decoding"},
        {"--no-decode", FLAG_BOOL, NULL, "skip the decode measurement"},
        {"--decode-only", FLAG_BOOL, NULL, "skip the training steps: only the decode measurement (no RESULT line)"},
        {"--peak-size", FLAG_INT, "2048", "n of the n x n x n sgemm that measures the peak"},
        {"--max-foreign", FLAG_FLOAT, "0.1", "drop steps during which other processes used more than (idle cores + this) "
                                             "cores; a dropped step is replaced, up to 3x --steps runs"},
        {"--quiet-wait", FLAG_FLOAT, "30", "before each timed step wait up to this many seconds for an idle machine"},
        {"--json", FLAG_STR, NULL, "append the RESULT JSON line to this file"},
        {"--save-params", FLAG_STR, NULL, "write the adapter parameters after the steps (raw little-endian float32) to "
                                          "PREFIX<model>.f32, to compare runs (e.g. 1 vs 2 threads) value by value"},
        {0},
    };
    Command cmd = {.name = "bench",
                   .summary = "benchmark a LoRA SFT step and KV-cache decoding on synthetic models of real shapes",
                   .usage = "ftk bench [--model gpt2,llama] [--threads T] [--mask-fraction F] [--steps N] [flags]\n\n"
                            "Builds random-weight models in memory (no files). Reports tokens/s, ms/step, GFLOP/s with\n"
                            "the FLOPs formulas, the fraction of the sgemm peak measured in the same run, peak RSS,\n"
                            "trainable/total parameters, and decode tokens/s against the memory-bandwidth bound.\n"
                            "bench/compare.sh runs it side by side with the PyTorch peer",
                   .flags = flags,
                   .n_positional_max = 0};
    cli_parse(&cmd, argc, argv);

    BenchOptions o;
    memset(&o, 0, sizeof o);
    bench_step_config_default(&o.step);
    o.step.batch = cli_int(&cmd, "--batch");
    o.step.seq = cli_int(&cmd, "--seq");
    o.step.lora_r = cli_int(&cmd, "--lora-r");
    o.step.lora_alpha = (float)cli_float(&cmd, "--lora-alpha");
    snprintf(o.step.target_modules, sizeof o.step.target_modules, "%s", cli_str(&cmd, "--target-modules"));
    o.step.mask_fraction = cli_float(&cmd, "--mask-fraction");
    o.step.learning_rate = cli_float(&cmd, "--learning-rate");
    o.step.seed = (uint64_t)cli_int(&cmd, "--seed");
    o.step.gradient_checkpointing = cli_bool(&cmd, "--gradient-checkpointing");
    const char *dtype = cli_str(&cmd, "--base-dtype");
    if (strcmp(dtype, "bf16") == 0) o.base_bf16 = 1;
    else if (strcmp(dtype, "f32") != 0) cli_usage_error(&cmd, "--base-dtype must be f32 or bf16 (got '%s')", dtype);
    o.n_steps = cli_int(&cmd, "--steps");
    o.n_warmup = cli_int(&cmd, "--warmup");
    o.max_foreign = cli_float(&cmd, "--max-foreign");
    o.quiet_wait = cli_float(&cmd, "--quiet-wait");
    o.decode_only = cli_bool(&cmd, "--decode-only");
    o.decode_tokens = cli_int(&cmd, "--decode-tokens");
    o.decode_prompt = cli_int(&cmd, "--decode-prompt");
    o.json_path = cli_str(&cmd, "--json");
    o.params_prefix = cli_str(&cmd, "--save-params");
    if (o.step.batch < 1 || o.step.seq < 1) cli_usage_error(&cmd, "--batch and --seq must be >= 1");
    if (o.step.lora_r < 1) cli_usage_error(&cmd, "--lora-r must be >= 1");
    if (!(o.step.mask_fraction >= 0 && o.step.mask_fraction < 1)) cli_usage_error(&cmd, "--mask-fraction must be in [0, 1)");
    if (o.n_steps < 1 || o.n_warmup < 0) cli_usage_error(&cmd, "--steps must be >= 1 and --warmup >= 0");
    if (cli_int(&cmd, "--threads") < 0 || cli_int(&cmd, "--threads") > 64) cli_usage_error(&cmd, "--threads must be in [0, 64]");
    if (o.base_bf16 && !cli_bool(&cmd, "--no-decode"))
        fprintf(stderr, "note: --base-dtype bf16 skips the decode measurement (generation reads fp32 weights)\n");
    if (!cli_bool(&cmd, "--no-decode") && !o.base_bf16) {
        o.n_decode_batches = parse_int_list(cli_str(&cmd, "--decode-batch"), o.decode_batches, 16);
        if (o.n_decode_batches < 0) cli_usage_error(&cmd, "--decode-batch expects up to 16 comma-separated sizes in [1, 4096]");
        if (o.decode_tokens < 1 || o.decode_prompt < 1) cli_usage_error(&cmd, "--decode-tokens and --decode-prompt must be >= 1");
    }
    const char *models = cli_str(&cmd, "--model");
    char names[8][16];
    int n_models = 0;
    for (const char *p = models; p && *p;) {
        size_t len = strcspn(p, ",");
        if (len == 0 || len >= sizeof names[0] || n_models == 8) cli_usage_error(&cmd, "--model expects gpt2 and/or llama");
        memcpy(names[n_models], p, len);
        names[n_models][len] = 0;
        ModelConfig tmp;
        char err[FTK_ERR_LEN];
        if (bench_shape(names[n_models], 0, &tmp, err)) cli_usage_error(&cmd, "%s", err);
        n_models++;
        p += len;
        if (*p == ',') p++;
    }
    if (n_models == 0) cli_usage_error(&cmd, "--model expects gpt2 and/or llama");

    cli_set_threads(cli_int(&cmd, "--threads"));
    o.threads = par_threads();   // ftk's pool (OpenBLAS itself runs single-threaded)
    char err[FTK_ERR_LEN];
    o.peak_n = cli_int(&cmd, "--peak-size");
    if (bench_sgemm_peak(o.peak_n, 3, &o.peak_gflops, err)) cli_die("%s", err);
    for (int i = 0; i < n_models; i++) bench_model(names[i], &o);
    return 0;
}
