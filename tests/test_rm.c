// test_rm.c — the reward model: finite-difference gradients of the pairwise loss through a synthetic
// model (LoRA, soft prompt, score head), the last-real-token read under right padding, batched
// scoring = one by one, save/load of an RM dir, exact resume, and a short training run on
// tinystories-pref that must rank held-out pairs (chosen mentions a dog) >= 90% right.
#include "tests/testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "datasets/batch.h"
#include "datasets/dataset.h"
#include "lora/adapter.h"
#include "model/common.h"
#include "model/synthetic.h"
#include "model/transformer.h"
#include "rlhf/reward_model.h"
#include "rlhf/rm_train.h"

static ModelConfig tiny_cfg(Arch arch) {
    ModelConfig c = {0};
    c.arch = arch;
    c.dim = 16; c.n_layers = 2; c.n_heads = 4; c.n_kv_heads = arch == ARCH_LLAMA ? 2 : 4; c.head_dim = 4;
    c.ffn_dim = 24; c.vocab_size = 37; c.max_seq_len = 160; c.norm_eps = 1e-5f; c.rope_theta = 10000.0f;
    c.tied_head = arch == ARCH_GPT2; c.bos_id = 1; c.eos_id = 2;
    return c;
}

// A batch of P pairs by hand: rows [0, P) chosen, [P, 2P) rejected, right-padded with `pad`.
typedef struct {
    Batch bt;
    int tokens[8 * 160], targets[8 * 160], lengths[8], items[4];
} HandBatch;

static void hand_batch(HandBatch *h, int P, int T, const int *lengths, uint64_t seed, int pad) {
    memset(h, 0, sizeof *h);
    uint64_t rng = seed;
    for (int b = 0; b < 2 * P; b++) {
        h->lengths[b] = lengths[b];
        for (int t = 0; t < T; t++) {
            int tok = 3 + (int)(ftk_rand_u32(&rng) % 34);
            h->tokens[b * T + t] = t < lengths[b] ? tok : pad;
            // targets: every real next token (the DPO test uses them; the RM ignores them)
            h->targets[b * T + t] = t + 1 < lengths[b] && t >= 1 ? -2 : -1;
        }
        for (int t = 0; t < T; t++)
            if (h->targets[b * T + t] == -2) h->targets[b * T + t] = h->tokens[b * T + t + 1];
    }
    for (int i = 0; i < P; i++) h->items[i] = i;
    h->bt = (Batch){.B = 2 * P, .T = T, .tokens = h->tokens, .targets = h->targets, .lengths = h->lengths,
                    .n_items = P, .items = h->items, .n_pairs = P};
}

typedef struct {
    const Model *m;
    Adapters *a;
    ModelAdapters hooks;
    RunState *rs;
    const Batch *bt;
    RmOptions ro;
} RmFd;

static double rm_mean_loss(RmFd *f) {
    char err[FTK_ERR_LEN];
    PairSums s;
    memset(&s, 0, sizeof s);
    if (rm_train_batch(f->m, f->a, &f->hooks, f->rs, f->bt, &f->ro, NULL, &s, err)) fail_msg("%s", err);
    return s.loss / (double)s.pairs;
}

// Central differences of the batch-mean loss on trainable values vs the analytic gradient: every
// value for short rows (T = 9); for long rows (T = 150, several attention blocks) every 7th.
static void rm_fd_check(Arch arch, int with_prompt, int long_rows) {
    char err[FTK_ERR_LEN];
    ModelConfig cfg = tiny_cfg(arch);
    Model m;
    assert_int_equal(model_init_synthetic(&m, &cfg, 11 + arch, err), 0);
    AdapterConfig ac;
    adapter_config_default(&ac);
    ac.types = ADAPTER_LORA | (with_prompt ? ADAPTER_PROMPT : 0);
    ac.r = 2;
    ac.alpha = 4;
    ac.init = LORA_INIT_NONE;   // B != 0, so dA is not trivially zero
    snprintf(ac.target_modules, sizeof ac.target_modules, "q_proj,v_proj,down_proj");
    if (arch == ARCH_GPT2) snprintf(ac.target_modules, sizeof ac.target_modules, "c_attn,c_fc");
    ac.num_virtual_tokens = with_prompt ? 2 : 0;
    ac.score_head = 1;
    Adapters a;
    if (adapters_create(&a, &ac, &m, 5, err)) fail_msg("%s", err);
    for (int c = 0; c < cfg.dim; c++) a.score[c] *= 20.0f;   // a head large enough to matter
    RmFd f;
    memset(&f, 0, sizeof f);
    f.m = &m;
    f.a = &a;
    adapters_hooks(&a, 1, &f.hooks);
    rm_options_default(&f.ro);
    f.ro.margin = 0.3f;
    f.ro.center_coef = 0.05f;
    const int P = 3, T = long_rows ? 150 : 9;
    const int lengths_short[6] = {9, 4, 6, 7, 9, 2}, lengths_long[6] = {150, 70, 129, 131, 66, 2};
    const int *lengths = long_rows ? lengths_long : lengths_short;
    static HandBatch hb;
    hand_batch(&hb, P, T, lengths, 77, 0);
    f.bt = &hb.bt;
    assert_int_equal(runstate_create(&f.rs, &m, 2 * P, ac.num_virtual_tokens + T, 1, err), 0);
    adapters_zero_grad(&a);
    double l0 = rm_mean_loss(&f);
    assert_true(isfinite(l0) && l0 > 0);
    float *g = malloc(a.n_params * sizeof(float));
    // rm_train_batch accumulates the gradient of the SUM over pairs; the mean's is 1/P of it
    for (size_t i = 0; i < a.n_params; i++) g[i] = a.grads[i] / P;
    double worst = 0, gmax = 0;
    const float eps = 1e-2f;
    const size_t stride = long_rows ? 7 : 1;
    for (size_t i = 0; i < a.n_params; i += stride) {
        float keep = a.params[i];
        a.params[i] = keep + eps;
        double lp = rm_mean_loss(&f);
        a.params[i] = keep - eps;
        double lm = rm_mean_loss(&f);
        a.params[i] = keep;
        double fd = (lp - lm) / (2.0 * eps);
        double d = fabs(fd - g[i]) / (2e-4 + 2e-2 * fabs(fd));
        if (d > worst) worst = d;
        gmax = fmax(gmax, fabs(g[i]));
        if (d > 1.0) {
            const AdapterView *v = NULL;
            for (int k = 0; k < a.n_views; k++)
                if (i >= a.views[k].offset && i < a.views[k].offset + a.views[k].numel) v = &a.views[k];
            fail_msg("param %zu (%s): analytic %.6g, finite difference %.6g", i, v ? v->name : "?", g[i], fd);
        }
    }
    assert_true(gmax > 1e-3);   // not vacuous
    // the score head's gradient must be there too
    double smax = 0;
    for (int c = 0; c < cfg.dim; c++) smax = fmax(smax, fabs(g[a.score - a.params + c]));
    assert_true(smax > 1e-3);
    free(g);
    runstate_free(f.rs);
    adapters_free(&a);
    model_free(&m);
}

static void test_rm_fd_llama(void **state) {
    (void)state;
    rm_fd_check(ARCH_LLAMA, 0, 0);
    rm_fd_check(ARCH_LLAMA, 1, 0);
    rm_fd_check(ARCH_LLAMA, 1, 1);
}

static void test_rm_fd_gpt2(void **state) {
    (void)state;
    rm_fd_check(ARCH_GPT2, 1, 0);
}

// The score is read at the last REAL token: a padded batch gives what each sequence gives alone,
// whatever the padding holds, and not what position T-1 (a pad) would give.
static void test_rm_last_real_token(void **state) {
    (void)state;
    char err[FTK_ERR_LEN];
    ModelConfig cfg = tiny_cfg(ARCH_LLAMA);
    Model m;
    assert_int_equal(model_init_synthetic(&m, &cfg, 3, err), 0);
    AdapterConfig ac;
    adapter_config_default(&ac);
    ac.types = ADAPTER_LORA | ADAPTER_PROMPT;
    ac.num_virtual_tokens = 3;
    ac.init = LORA_INIT_NONE;
    ac.score_head = 1;
    Adapters a;
    if (adapters_create(&a, &ac, &m, 9, err)) fail_msg("%s", err);
    ModelAdapters hooks;
    adapters_hooks(&a, 0, &hooks);
    const int P = 2, T = 9, lengths[4] = {9, 3, 5, 1};
    HandBatch h1, h2;
    hand_batch(&h1, P, T, lengths, 5, 0);
    hand_batch(&h2, P, T, lengths, 5, 36);   // same real tokens, other padding
    RunState *rs;
    assert_int_equal(runstate_create(&rs, &m, 2 * P, 3 + T, 0, err), 0);
    int rows[4];
    float r1[4], r2[4], single[4];
    assert_int_equal(rm_forward_batch(&m, &hooks, rs, a.score, h1.tokens, h1.lengths, 4, T, NULL, rows, r1, err), 0);
    for (int b = 0; b < 4; b++) assert_int_equal(rows[b], b * (3 + T) + 3 + lengths[b] - 1);
    // the pad position's score differs (this is what the T-1 bug would read)
    const float *hid = runstate_final_hidden(rs);
    double at_pad = 0;
    for (int c = 0; c < cfg.dim; c++) at_pad += hid[(size_t)(1 * (3 + T) + 3 + T - 1) * cfg.dim + c] * a.score[c];
    assert_true(fabs(at_pad - r1[1]) > 1e-3);
    assert_int_equal(rm_forward_batch(&m, &hooks, rs, a.score, h2.tokens, h2.lengths, 4, T, NULL, rows, r2, err), 0);
    for (int b = 0; b < 4; b++) assert_true(fabsf(r1[b] - r2[b]) < 1e-5f);
    // one by one, unpadded
    const int *seqs[4];
    for (int b = 0; b < 4; b++) {
        seqs[b] = h1.tokens + b * T;
        assert_int_equal(rm_score_sequences(&m, &hooks, a.score, seqs + b, lengths + b, 1, single + b, err), 0);
        assert_true(fabsf(single[b] - r1[b]) < 1e-5f);
    }
    // many at once (more than one internal chunk), in a different order
    int nmany = 37, lens_many[37];
    const int *seq_many[37];
    float many[37];
    for (int i = 0; i < nmany; i++) {
        seq_many[i] = seqs[(i * 7) % 4];
        lens_many[i] = lengths[(i * 7) % 4];
    }
    assert_int_equal(rm_score_sequences(&m, &hooks, a.score, seq_many, lens_many, nmany, many, err), 0);
    for (int i = 0; i < nmany; i++) assert_true(fabsf(many[i] - r1[(i * 7) % 4]) < 1e-5f);
    // bad lengths are named
    int zero = 0, huge = 170;
    assert_int_not_equal(rm_score_sequences(&m, &hooks, a.score, seqs, &zero, 1, single, err), 0);
    assert_non_null(strstr(err, "empty"));
    assert_int_not_equal(rm_score_sequences(&m, &hooks, a.score, seqs, &huge, 1, single, err), 0);
    assert_non_null(strstr(err, "context"));
    runstate_free(rs);
    adapters_free(&a);
    model_free(&m);
}

// ---------------------------------------------------------------------------------------------
// stories260K + tinystories-pref

static const char *STORIES = "models/stories260K/stories260K.bin";

static char *write_subset(const char *dir, const char *name, const char *src_rel, int first, int n) {
    static char path[2][700];
    static int which = 0;
    char *out = path[which++ % 2];
    snprintf(out, 700, "%s/%s", dir, name);
    FILE *in = fopen(shared_path(src_rel), "r");
    assert_non_null(in);
    FILE *o = fopen(out, "w");
    assert_non_null(o);
    char *line = NULL;
    size_t cap = 0;
    int k = 0;
    while (getline(&line, &cap, in) > 0) {
        if (k >= first && k < first + n) fputs(line, o);
        k++;
    }
    free(line);
    fclose(in);
    fclose(o);
    return out;
}

static double metrics_last(const char *dir, const char *key) {
    char path[800];
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char *line = NULL, pat[80];
    size_t cap = 0;
    double v = NAN;
    snprintf(pat, sizeof pat, "\"%s\":", key);
    while (getline(&line, &cap, f) > 0) {
        char *p = strstr(line, pat);
        if (p) v = strtod(p + strlen(pat), NULL);
    }
    free(line);
    fclose(f);
    return v;
}

// `ftk rm` on 400 pairs for one epoch (50 steps of 8 pairs, constant lr 3e-3: 0.98-0.99 held-out
// accuracy over seeds 1, 2, 3, 42) ranks the 300 held-out pairs; then `ftk score` on the saved RM
// reproduces the in-training evaluation (same accuracy, up to a pair whose margin is float noise).
static void test_rm_train_tinystories(void **state) {
    (void)state;
    const char *dir = test_tmpdir("rm_train");
    char *train = write_subset(dir, "train.jsonl", "datasets/tinystories-pref/train.jsonl", 0, 400);
    char cmd[4096], out_dir[800];
    snprintf(out_dir, sizeof out_dir, "%s/rm", dir);
    snprintf(cmd, sizeof cmd,
             "%s rm --model %s --train-file %s --eval-file %s --output-dir %s --num-train-epochs 1 "
             "--batch-size 8 --learning-rate 3e-3 --lr-scheduler-type constant --logging-steps 10",
             ftk_bin(), shared_path(STORIES), train, shared_path("datasets/tinystories-pref/valid.jsonl"), out_dir);
    char *out = NULL;
    double t0 = ftk_now();
    int rc = run_cmd(cmd, &out);
    double secs = ftk_now() - t0;
    if (rc != 0) fail_msg("ftk rm failed (%d):\n%s", rc, out);
    double acc = metrics_last(out_dir, "eval_accuracy");
    double margin = metrics_last(out_dir, "eval_margin");
    print_message("ftk rm: 400 pairs, 1 epoch: held-out accuracy %.4f, mean margin %.3f, %.1f s\n", acc, margin, secs);
    assert_true(acc >= 0.90);
    assert_true(margin > 0);
    free(out);
    // reward_model.json and the PEFT keys
    char path[900];
    snprintf(path, sizeof path, "%s/reward_model.json", out_dir);
    assert_true(ftk_file_exists(path));
    snprintf(path, sizeof path, "%s/adapter_config.json", out_dir);
    char *cfg_text;
    size_t len;
    char err[FTK_ERR_LEN];
    assert_int_equal(ftk_read_file(path, &cfg_text, &len, err), 0);
    assert_non_null(strstr(cfg_text, "\"score\""));
    free(cfg_text);
    // ftk score on the valid pairs: the same accuracy as the training run's last eval
    snprintf(cmd, sizeof cmd, "%s score --model %s --adapter %s --file %s", ftk_bin(), shared_path(STORIES), out_dir,
             shared_path("datasets/tinystories-pref/valid.jsonl"));
    out = NULL;
    rc = run_cmd(cmd, &out);
    if (rc != 0) fail_msg("ftk score failed (%d):\n%s", rc, out);
    int lines = 0, right = 0;
    for (char *p = out; (p = strstr(p, "\"chosen\":")) != NULL; p++) {
        double c = strtod(p + 9, NULL);
        char *q = strstr(p, "\"rejected\":");
        assert_non_null(q);
        double r = strtod(q + 11, NULL);
        lines++;
        right += c > r;
    }
    assert_int_equal(lines, 300);
    assert_true(fabs((double)right / lines - acc) < 1.5 / 300);
    free(out);
    test_rmtree(dir);
}

// Removes every ,"pairs_per_sec":<number> from a metrics.jsonl text (it is wall-clock dependent).
static void strip_timing(char *text) {
    char *t;
    while ((t = strstr(text, ",\"pairs_per_sec\":")) != NULL) {
        char *e = strchr(t, '}');
        memmove(t, e, strlen(e) + 1);
    }
}

// A run saved at step 2 and resumed gives the same metrics lines as a straight 4-step run.
static void test_rm_resume_exact(void **state) {
    (void)state;
    const char *dir = test_tmpdir("rm_resume");
    char *train = write_subset(dir, "train.jsonl", "datasets/tinystories-pref/train.jsonl", 0, 24);
    char cmd[4096], a_dir[800], b_dir[800];
    snprintf(a_dir, sizeof a_dir, "%s/a", dir);
    snprintf(b_dir, sizeof b_dir, "%s/b", dir);
    const char *common = "--max-steps 4 --batch-size 4 --logging-steps 1 --lora-dropout 0.1 --validation-split 0.25";
    snprintf(cmd, sizeof cmd, "%s rm --model %s --train-file %s --output-dir %s %s", ftk_bin(), shared_path(STORIES),
             train, a_dir, common);
    char *out = NULL;
    if (run_cmd(cmd, &out)) fail_msg("%s", out);
    free(out);
    snprintf(cmd, sizeof cmd, "%s rm --model %s --train-file %s --output-dir %s %s --save-steps 2", ftk_bin(),
             shared_path(STORIES), train, b_dir, common);
    out = NULL;
    if (run_cmd(cmd, &out)) fail_msg("%s", out);
    free(out);
    // resume from checkpoint-2 (the adapter at the top is overwritten by the resumed run)
    snprintf(cmd, sizeof cmd,
             "%s rm --model %s --train-file %s --output-dir %s %s --save-steps 2 --resume-from-checkpoint %s/checkpoint-2",
             ftk_bin(), shared_path(STORIES), train, b_dir, common, b_dir);
    out = NULL;
    if (run_cmd(cmd, &out)) fail_msg("%s", out);
    free(out);
    char pa[900], pb[900], *ta, *tb;
    size_t la, lb;
    char err[FTK_ERR_LEN];
    snprintf(pa, sizeof pa, "%s/metrics.jsonl", a_dir);
    snprintf(pb, sizeof pb, "%s/metrics.jsonl", b_dir);
    assert_int_equal(ftk_read_file(pa, &ta, &la, err), 0);
    assert_int_equal(ftk_read_file(pb, &tb, &lb, err), 0);
    // pairs_per_sec differs run to run: compare the lines with it cut out
    strip_timing(ta);
    strip_timing(tb);
    assert_string_equal(ta, tb);
    free(ta);
    free(tb);
    // and the final adapters are the same bits
    snprintf(pa, sizeof pa, "%s/adapter_model.safetensors", a_dir);
    snprintf(pb, sizeof pb, "%s/adapter_model.safetensors", b_dir);
    assert_int_equal(ftk_read_file(pa, &ta, &la, err), 0);
    assert_int_equal(ftk_read_file(pb, &tb, &lb, err), 0);
    assert_int_equal(la, lb);
    assert_memory_equal(ta, tb, la);
    free(ta);
    free(tb);
    test_rmtree(dir);
}

// The same commands on the real HH-RLHF pairs: transcripts split at the last "\n\nAssistant:", the
// faulty records named (or skipped and counted with --skip-bad-lines), long prompts dropped or
// truncated and counted, a few RM / DPO steps, and ftk score on the derived {prompt, chosen, rejected}.
static void test_hh_rlhf_pipeline(void **state) {
    (void)state;
    const char *dir = test_tmpdir("rm_hh");
    const char *hh = shared_path("datasets/hh-rlhf/helpful-base-test.jsonl.gz");
    char cmd[8192], sub[700], *out = NULL;
    snprintf(sub, sizeof sub, "%s/pcr40.jsonl", dir);
    snprintf(cmd, sizeof cmd, "zcat %s | head -40 > %s", shared_path("datasets/hh-rlhf/harmless-base-test.pcr.jsonl.gz"),
             sub);
    assert_int_equal(run_cmd(cmd, NULL), 0);
    // without --skip-bad-lines the first faulty transcript is an error naming its line
    snprintf(cmd, sizeof cmd, "%s rm --model %s --train-file %s --output-dir %s/rm0 --max-steps 1", ftk_bin(),
             shared_path(STORIES), hh, dir);
    assert_int_equal(run_cmd(cmd, &out), 1);
    assert_non_null(strstr(out, "helpful-base-test.jsonl.gz:169:"));
    free(out);
    snprintf(cmd, sizeof cmd,
             "%s rm --model %s --train-file %s --eval-file %s --output-dir %s/rm --skip-bad-lines --max-seq-length 256 "
             "--max-steps 2 --batch-size 2 --logging-steps 1",
             ftk_bin(), shared_path(STORIES), hh, sub, dir);
    out = NULL;
    if (run_cmd(cmd, &out)) fail_msg("%s", out);
    assert_non_null(strstr(out, "2354 records read"));
    assert_non_null(strstr(out, "(hh-rlhf "));
    assert_non_null(strstr(out, "skipped 9: \"chosen\" and \"rejected\" do not share the same prompt"));
    assert_non_null(strstr(out, "long prompt "));
    assert_non_null(strstr(out, "step 2/2 | loss "));
    assert_non_null(strstr(out, "eval step 2/2"));
    free(out);
    snprintf(cmd, sizeof cmd, "%s score --model %s --adapter %s/rm --file %s --max-seq-length 256 --long-prompt truncate",
             ftk_bin(), shared_path(STORIES), dir, sub);
    out = NULL;
    if (run_cmd(cmd, &out)) fail_msg("%s", out);
    int lines = 0;
    for (char *p = out; (p = strstr(p, "\"margin\":")) != NULL; p++) lines++;
    assert_int_equal(lines, 40);
    assert_non_null(strstr(out, "truncated "));
    free(out);
    snprintf(cmd, sizeof cmd,
             "%s dpo --model %s --train-file %s --output-dir %s/dpo --max-seq-length 256 --long-prompt truncate "
             "--max-steps 2 --batch-size 2 --logging-steps 1",
             ftk_bin(), shared_path(STORIES), sub, dir);
    out = NULL;
    if (run_cmd(cmd, &out)) fail_msg("%s", out);
    assert_non_null(strstr(out, "40 pairs used"));
    assert_non_null(strstr(out, "step 2/2 | loss "));
    free(out);
    test_rmtree(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rm_fd_llama),
        cmocka_unit_test(test_rm_fd_gpt2),
        cmocka_unit_test(test_rm_last_real_token),
        cmocka_unit_test(test_rm_resume_exact),
        cmocka_unit_test(test_rm_train_tinystories),
        cmocka_unit_test(test_hh_rlhf_pipeline),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
