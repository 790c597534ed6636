// test_dpo.c — DPO: finite-difference gradients of the sigmoid / label-smoothed / IPO losses through a
// synthetic model (LoRA, soft prompt), the loss at the start (policy = reference: log 2), reference
// log-probs that never change during training (cache = recomputation afterwards, bit for bit, for a
// base reference and for a frozen SFT adapter), the word-rate helper, and a short `ftk dpo` run.
#include "tests/testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "datasets/batch.h"
#include "datasets/dataset.h"
#include "lora/adapter.h"
#include "lora/peft.h"
#include "model/common.h"
#include "model/model.h"
#include "model/synthetic.h"
#include "model/tokenizer.h"
#include "model/transformer.h"
#include "rlhf/dpo_train.h"
#include "rlhf/eval_rate.h"

static ModelConfig tiny_cfg(Arch arch) {
    ModelConfig c = {0};
    c.arch = arch;
    c.dim = 16; c.n_layers = 2; c.n_heads = 4; c.n_kv_heads = arch == ARCH_LLAMA ? 2 : 4; c.head_dim = 4;
    c.ffn_dim = 24; c.vocab_size = 37; c.max_seq_len = 160; c.norm_eps = 1e-5f; c.rope_theta = 10000.0f;
    c.tied_head = arch == ARCH_GPT2; c.bos_id = 1; c.eos_id = 2;
    return c;
}

// P pairs by hand, right-padded; the first n_prompt[b] real tokens are the prompt (no target).
typedef struct {
    Batch bt;
    int tokens[8 * 160], targets[8 * 160], lengths[8], items[4];
} HandBatch;

static void hand_batch(HandBatch *h, int P, int T, const int *lengths, int n_prompt, uint64_t seed) {
    memset(h, 0, sizeof *h);
    uint64_t rng = seed;
    for (int b = 0; b < 2 * P; b++) {
        h->lengths[b] = lengths[b];
        for (int t = 0; t < T; t++) h->tokens[b * T + t] = t < lengths[b] ? 3 + (int)(ftk_rand_u32(&rng) % 34) : 0;
        // pair i shares its prompt on both rows
        if (b >= P)
            for (int t = 0; t < n_prompt; t++) h->tokens[b * T + t] = h->tokens[(b - P) * T + t];
        for (int t = 0; t < T; t++)
            h->targets[b * T + t] = t + 1 >= n_prompt && t + 1 < lengths[b] ? h->tokens[b * T + t + 1] : -1;
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
    DpoRefCache ref;
    DpoOptions o;
} DpoFd;

static double dpo_mean_loss(DpoFd *f) {
    char err[FTK_ERR_LEN];
    PairSums s;
    memset(&s, 0, sizeof s);
    if (dpo_train_batch(f->m, &f->hooks, f->rs, f->bt, &f->ref, &f->o, NULL, &s, err)) fail_msg("%s", err);
    return s.loss / (double)s.pairs;
}

static void dpo_fd_check(Arch arch, int with_prompt, DpoLossType type, float label_smoothing, int long_rows) {
    char err[FTK_ERR_LEN];
    ModelConfig cfg = tiny_cfg(arch);
    Model m;
    assert_int_equal(model_init_synthetic(&m, &cfg, 21 + arch, err), 0);
    AdapterConfig ac;
    adapter_config_default(&ac);
    ac.types = ADAPTER_LORA | (with_prompt ? ADAPTER_PROMPT : 0);
    ac.r = 2;
    ac.alpha = 4;
    ac.init = LORA_INIT_NONE;   // policy != reference, B != 0
    snprintf(ac.target_modules, sizeof ac.target_modules, arch == ARCH_GPT2 ? "c_attn,c_fc" : "q_proj,v_proj,up_proj");
    ac.num_virtual_tokens = with_prompt ? 2 : 0;
    Adapters a;
    if (adapters_create(&a, &ac, &m, 5, err)) fail_msg("%s", err);
    DpoFd f;
    memset(&f, 0, sizeof f);
    f.m = &m;
    f.a = &a;
    adapters_hooks(&a, 1, &f.hooks);
    dpo_options_default(&f.o);
    f.o.beta = 0.5f;
    f.o.loss_type = type;
    f.o.label_smoothing = label_smoothing;
    const int P = 3, T = long_rows ? 150 : 9;
    const int lengths_short[6] = {9, 5, 6, 7, 9, 4}, lengths_long[6] = {150, 70, 129, 131, 66, 4};
    static HandBatch hb;
    hand_batch(&hb, P, T, long_rows ? lengths_long : lengths_short, 3, 77);
    f.bt = &hb.bt;
    // reference: the bare base model (adapters disabled)
    ModelAdapters ref = f.hooks;
    ref.disabled = 1;
    RunState *rs_ref;
    assert_int_equal(runstate_create(&rs_ref, &m, 2 * P, T, 0, err), 0);
    float ref_lp[6];
    const int la = type == DPO_IPO;
    assert_int_equal(dpo_batch_logps(&m, &ref, rs_ref, &hb.bt, la, ref_lp, err), 0);
    runstate_free(rs_ref);
    float rc[3] = {ref_lp[0], ref_lp[1], ref_lp[2]}, rr[3] = {ref_lp[3], ref_lp[4], ref_lp[5]};
    f.ref = (DpoRefCache){P, la, rc, rr};
    assert_int_equal(runstate_create(&f.rs, &m, 2 * P, ac.num_virtual_tokens + T, 1, err), 0);
    adapters_zero_grad(&a);
    double l0 = dpo_mean_loss(&f);
    assert_true(isfinite(l0));
    float *g = malloc(a.n_params * sizeof(float));
    for (size_t i = 0; i < a.n_params; i++) g[i] = a.grads[i] / P;   // sum over pairs -> mean
    double gmax = 0;
    const float eps = 1e-2f;
    const size_t stride = long_rows ? 5 : 1;
    for (size_t i = 0; i < a.n_params; i += stride) {
        float keep = a.params[i];
        a.params[i] = keep + eps;
        double lp = dpo_mean_loss(&f);
        a.params[i] = keep - eps;
        double lm = dpo_mean_loss(&f);
        a.params[i] = keep;
        double fd = (lp - lm) / (2.0 * eps);
        gmax = fmax(gmax, fabs(g[i]));
        if (fabs(fd - g[i]) > 3e-4 + 3e-2 * fabs(fd))
            fail_msg("param %zu: analytic %.6g, finite difference %.6g (loss type %d, ls %g)", i, g[i], fd, (int)type,
                     (double)label_smoothing);
    }
    assert_true(gmax > 1e-3);
    free(g);
    runstate_free(f.rs);
    adapters_free(&a);
    model_free(&m);
}

static void test_dpo_fd_sigmoid(void **state) {
    (void)state;
    dpo_fd_check(ARCH_LLAMA, 0, DPO_SIGMOID, 0.0f, 0);
    dpo_fd_check(ARCH_LLAMA, 1, DPO_SIGMOID, 0.2f, 0);
    dpo_fd_check(ARCH_GPT2, 1, DPO_SIGMOID, 0.0f, 0);
    dpo_fd_check(ARCH_LLAMA, 1, DPO_SIGMOID, 0.0f, 1);
}

static void test_dpo_fd_ipo(void **state) {
    (void)state;
    dpo_fd_check(ARCH_LLAMA, 1, DPO_IPO, 0.0f, 0);
}

// Sequence log-probs of the batch = the sum of log_softmax over the response targets computed from
// full logits one sequence at a time; at the start (LoRA B = 0) policy = reference, the loss is log 2.
static void test_dpo_logps_and_start(void **state) {
    (void)state;
    char err[FTK_ERR_LEN];
    ModelConfig cfg = tiny_cfg(ARCH_LLAMA);
    Model m;
    assert_int_equal(model_init_synthetic(&m, &cfg, 4, err), 0);
    AdapterConfig ac;
    adapter_config_default(&ac);
    Adapters a;
    if (adapters_create(&a, &ac, &m, 5, err)) fail_msg("%s", err);
    ModelAdapters hooks, ref;
    adapters_hooks(&a, 1, &hooks);
    ref = hooks;
    ref.disabled = 1;
    const int P = 2, T = 9, lengths[4] = {9, 6, 5, 8};
    static HandBatch hb;
    hand_batch(&hb, P, T, lengths, 3, 5);
    RunState *rs;
    assert_int_equal(runstate_create(&rs, &m, 2 * P, T, 1, err), 0);
    float lp[4];
    assert_int_equal(dpo_batch_logps(&m, &ref, rs, &hb.bt, 0, lp, err), 0);
    for (int b = 0; b < 4; b++) {
        float *logits;
        assert_int_equal(model_logits_all(&m, NULL, hb.tokens + b * T, lengths[b], &logits, err), 0);
        double s = 0;
        for (int t = 0; t < T; t++) {
            int y = hb.targets[b * T + t];
            if (y < 0) continue;
            const float *z = logits + (size_t)t * cfg.vocab_size;
            double mx = z[0], sum = 0;
            for (int v = 1; v < cfg.vocab_size; v++) mx = fmax(mx, z[v]);
            for (int v = 0; v < cfg.vocab_size; v++) sum += exp(z[v] - mx);
            s += z[y] - mx - log(sum);
        }
        free(logits);
        assert_true(fabs(s - lp[b]) < 1e-4);
    }
    float rc[2] = {lp[0], lp[1]}, rr[2] = {lp[2], lp[3]};
    DpoRefCache cache = {P, 0, rc, rr};
    DpoOptions o;
    dpo_options_default(&o);
    PairSums s;
    memset(&s, 0, sizeof s);
    adapters_zero_grad(&a);
    assert_int_equal(dpo_train_batch(&m, &hooks, rs, &hb.bt, &cache, &o, NULL, &s, err), 0);
    assert_true(fabs(s.loss / s.pairs - log(2.0)) < 1e-6);
    assert_true(fabs(s.margin) < 1e-6);
    // a nonzero gradient reaches B (A is random, B = 0): dL/dΔ = -β/2 at Δ = 0
    double gn = 0;
    for (size_t i = 0; i < a.n_params; i++) gn += (double)a.grads[i] * a.grads[i];
    assert_true(gn > 1e-12);
    runstate_free(rs);
    adapters_free(&a);
    model_free(&m);
}

// ---------------------------------------------------------------------------------------------
// stories260K + tinystories-pref

static const char *STORIES = "models/stories260K/stories260K.bin";

static void load_pairs(Dataset *ds, const Model *m, const char *path, int first_n) {
    char err[FTK_ERR_LEN];
    TokEncoder enc;
    tok_encoder_init(&enc, m->tok);
    DatasetOptions o = dataset_options_default(DS_PREFERENCE);
    o.max_seq_length = 512;
    if (dataset_load(ds, path, &o, &enc, err)) fail_msg("%s", err);
    if (first_n > 0 && first_n < ds->n) ds->n = first_n;
}

static void check_reference_unchanged(int with_sft) {
    char err[FTK_ERR_LEN];
    Model m;
    if (model_load(&m, shared_path(STORIES), NULL, err)) fail_msg("%s", err);
    Dataset ds;
    load_pairs(&ds, &m, shared_path("datasets/tinystories-pref/train.jsonl"), 24);
    const char *dir = test_tmpdir(with_sft ? "dpo_ref_sft" : "dpo_ref_base");
    AdapterConfig ac;
    adapter_config_default(&ac);
    Adapters policy, sft;
    ModelAdapters ref;
    if (with_sft) {
        // an "SFT adapter": random LoRA with B != 0, saved and loaded as cmd_dpo does
        ac.init = LORA_INIT_NONE;
        if (adapters_create(&sft, &ac, &m, 3, err)) fail_msg("%s", err);
        char sdir[700];
        snprintf(sdir, sizeof sdir, "%s/sft", dir);
        if (peft_save(&sft, sdir, "stories260K", err)) fail_msg("%s", err);
        adapters_free(&sft);
        if (peft_load(&sft, &m, sdir, err) || peft_load(&policy, &m, sdir, err)) fail_msg("%s", err);
        adapters_hooks(&sft, 0, &ref);
    } else {
        if (adapters_create(&policy, &ac, &m, 3, err)) fail_msg("%s", err);
        adapters_hooks(&policy, 0, &ref);
        ref.disabled = 1;
    }
    DpoRefCache before;
    assert_int_equal(dpo_ref_cache_build(&m, &ref, &ds, 4, 0, &before, err), 0);
    float *copy_c = malloc(ds.n * sizeof(float)), *copy_r = malloc(ds.n * sizeof(float));
    memcpy(copy_c, before.chosen, ds.n * sizeof(float));
    memcpy(copy_r, before.rejected, ds.n * sizeof(float));
    float *p0 = malloc(policy.n_params * sizeof(float));
    memcpy(p0, policy.params, policy.n_params * sizeof(float));
    TrainConfig tc;
    train_config_default(&tc);
    tc.learning_rate = 5e-3;
    tc.max_steps = 4;
    tc.batch_size = 4;
    tc.logging_steps = 0;
    char out[700];
    snprintf(out, sizeof out, "%s/out", dir);
    tc.output_dir = out;
    DpoOptions o;
    dpo_options_default(&o);
    PairTrainResult res;
    if (dpo_train(&m, &policy, &ds, &before, NULL, NULL, &tc, &o, NULL, NULL, NULL, &res, err)) fail_msg("%s", err);
    // the policy moved...
    double moved = 0;
    for (size_t i = 0; i < policy.n_params; i++) moved = fmax(moved, fabs(policy.params[i] - p0[i]));
    assert_true(moved > 1e-3);
    // ...the cache was only read, and the reference recomputed now gives the same bits
    assert_memory_equal(copy_c, before.chosen, ds.n * sizeof(float));
    assert_memory_equal(copy_r, before.rejected, ds.n * sizeof(float));
    DpoRefCache after;
    assert_int_equal(dpo_ref_cache_build(&m, &ref, &ds, 4, 0, &after, err), 0);
    assert_memory_equal(after.chosen, before.chosen, ds.n * sizeof(float));
    assert_memory_equal(after.rejected, before.rejected, ds.n * sizeof(float));
    // and the trained policy does differ from it
    ModelAdapters ph;
    adapters_hooks(&policy, 0, &ph);
    DpoRefCache pol;
    assert_int_equal(dpo_ref_cache_build(&m, &ph, &ds, 4, 0, &pol, err), 0);
    double diff = 0;
    for (int i = 0; i < ds.n; i++) diff = fmax(diff, fabs(pol.chosen[i] - before.chosen[i]));
    assert_true(diff > 1e-3);
    dpo_ref_cache_free(&before);
    dpo_ref_cache_free(&after);
    dpo_ref_cache_free(&pol);
    free(copy_c);
    free(copy_r);
    free(p0);
    if (with_sft) adapters_free(&sft);
    adapters_free(&policy);
    dataset_free(&ds);
    model_free(&m);
    test_rmtree(dir);
}

static void test_dpo_reference_unchanged_base(void **state) {
    (void)state;
    check_reference_unchanged(0);
}

static void test_dpo_reference_unchanged_sft(void **state) {
    (void)state;
    check_reference_unchanged(1);
}

static void test_word_match(void **state) {
    (void)state;
    assert_true(text_has_word("A dog ran.", "dog"));
    assert_true(text_has_word("Dog!", "dog"));
    assert_true(text_has_word("the DOG", "dog"));
    assert_true(text_has_word("(dog)", "dog"));
    assert_false(text_has_word("dogs ran", "dog"));
    assert_false(text_has_word("a hotdog", "dog"));
    assert_false(text_has_word("doggy", "dog"));
    assert_false(text_has_word("dog_house", "dog"));
    assert_true(text_has_word("dogs and a dog", "dog"));
    assert_false(text_has_word("", "dog"));
    double lo, hi;
    wilson_interval(70, 1000, 1.96, &lo, &hi);   // PROVENANCE: 7.0%, CI 5.6-8.8%
    assert_true(fabs(lo - 0.0558) < 5e-4 && fabs(hi - 0.0875) < 5e-4);
}

// word_rate_eval on the base model: deterministic for a seed, and the samples file agrees with it.
static void test_word_rate_eval(void **state) {
    (void)state;
    char err[FTK_ERR_LEN];
    Model m;
    if (model_load(&m, shared_path(STORIES), NULL, err)) fail_msg("%s", err);
    TokEncoder enc;
    tok_encoder_init(&enc, m.tok);
    DatasetOptions o = dataset_options_default(DS_PROMPT);
    o.max_seq_length = 256;
    Dataset prompts;
    if (dataset_load(&prompts, shared_path("datasets/tinystories-pref/eval_prompts.jsonl"), &o, &enc, err))
        fail_msg("%s", err);
    assert_int_equal(prompts.n, 100);
    prompts.n = 20;
    RateOptions ro;
    rate_options_default(&ro);
    ro.samples_per_prompt = 5;
    ro.chunk = 30;
    const char *dir = test_tmpdir("rate");
    char path[700];
    snprintf(path, sizeof path, "%s/samples.jsonl", dir);
    RateResult r1, r2;
    assert_int_equal(word_rate_eval(&m, NULL, &prompts, &ro, path, &r1, err), 0);
    ro.chunk = 100;   // chunking does not change the samples
    assert_int_equal(word_rate_eval(&m, NULL, &prompts, &ro, NULL, &r2, err), 0);
    assert_int_equal(r1.total, 100);
    assert_int_equal(r1.hits, r2.hits);
    assert_true(r1.mean_new_tokens == r2.mean_new_tokens);
    char *text;
    size_t len;
    assert_int_equal(ftk_read_file(path, &text, &len, err), 0);
    int lines = 0, matches = 0;
    for (char *p = text; (p = strchr(p, '\n')) != NULL; p++) lines++;
    for (char *p = text; (p = strstr(p, "\"match\":true")) != NULL; p++) matches++;
    assert_int_equal(lines, 100);
    assert_int_equal(matches, r1.hits);
    free(text);
    test_rmtree(dir);
    dataset_free(&prompts);
    model_free(&m);
}

static double json_number(const char *text, const char *section, const char *key) {
    const char *p = section ? strstr(text, section) : text;
    if (!p) return NAN;
    char pat[80];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    p = strstr(p, pat);
    return p ? strtod(p + strlen(pat), NULL) : NAN;
}

// `ftk dpo` on 200 pairs (25 steps) moves the "dog" rate of 200 samples well above the base rate.
static void test_dpo_cli_raises_rate(void **state) {
    (void)state;
    const char *dir = test_tmpdir("dpo_cli");
    char train[700], out_dir[700], cmd[4096];
    snprintf(train, sizeof train, "%s/train.jsonl", dir);
    snprintf(out_dir, sizeof out_dir, "%s/dpo", dir);
    snprintf(cmd, sizeof cmd, "head -200 %s > %s", shared_path("datasets/tinystories-pref/train.jsonl"), train);
    assert_int_equal(run_cmd(cmd, NULL), 0);
    snprintf(cmd, sizeof cmd,
             "%s dpo --model %s --train-file %s --output-dir %s --batch-size 8 --learning-rate 2e-3 "
             "--lr-scheduler-type constant --logging-steps 5 --eval-rate-word dog --eval-rate-file %s "
             "--eval-rate-max-prompts 20 --eval-rate-samples 10",
             ftk_bin(), shared_path(STORIES), train, out_dir, shared_path("datasets/tinystories-pref/eval_prompts.jsonl"));
    char *out = NULL;
    double t0 = ftk_now();
    int rc = run_cmd(cmd, &out);
    if (rc != 0) fail_msg("ftk dpo failed (%d):\n%s", rc, out);
    free(out);
    char path[800], *text, err[FTK_ERR_LEN];
    size_t len;
    snprintf(path, sizeof path, "%s/eval_rate.json", out_dir);
    assert_int_equal(ftk_read_file(path, &text, &len, err), 0);
    double before = json_number(text, "\"before\"", "rate"), after = json_number(text, "\"after\"", "rate");
    double before_hi = json_number(text, "\"before\"", "ci95_high"), after_lo = json_number(text, "\"after\"", "ci95_low");
    print_message("ftk dpo: 200 pairs, 25 steps: 'dog' rate %.1f%% -> %.1f%% (200 samples), %.1f s\n", 100 * before,
                  100 * after, ftk_now() - t0);
    assert_true(before > 0.01 && before < 0.15);   // the base rate (PROVENANCE: 7.0%)
    assert_true(after_lo > before_hi);              // significantly higher
    free(text);
    snprintf(path, sizeof path, "%s/metrics.jsonl", out_dir);
    assert_int_equal(ftk_read_file(path, &text, &len, err), 0);
    assert_non_null(strstr(text, "\"rewards/accuracies\""));
    assert_non_null(strstr(text, "\"rewards/margins\""));
    free(text);
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", out_dir);
    assert_true(ftk_file_exists(path));
    // the trained policy as the starting point / reference of a second run (--sft-adapter)
    snprintf(cmd, sizeof cmd,
             "%s dpo --model %s --train-file %s --output-dir %s/dpo2 --sft-adapter %s --max-steps 2 --batch-size 4 "
             "--logging-steps 1",
             ftk_bin(), shared_path(STORIES), train, dir, out_dir);
    out = NULL;
    rc = run_cmd(cmd, &out);
    if (rc != 0) fail_msg("ftk dpo --sft-adapter failed (%d):\n%s", rc, out);
    // it starts at policy = reference: loss log 2 on the first step
    assert_non_null(strstr(out, "step 1/2 | loss 0.6931"));
    free(out);
    test_rmtree(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dpo_fd_sigmoid),
        cmocka_unit_test(test_dpo_fd_ipo),
        cmocka_unit_test(test_dpo_logps_and_start),
        cmocka_unit_test(test_dpo_reference_unchanged_base),
        cmocka_unit_test(test_dpo_reference_unchanged_sft),
        cmocka_unit_test(test_word_match),
        cmocka_unit_test(test_word_rate_eval),
        cmocka_unit_test(test_dpo_cli_raises_rate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
