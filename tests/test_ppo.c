// test_ppo.c — `ftk ppo` and rlhf/ppo_train.h, rlhf/reward_rule.h:
//   - reward rules: whole-word matching (same boundaries as rlhf/eval_rate.h), parsing, decoding a
//     response as the continuation of its prompt (stories260K's tokenizer)
//   - reward-model scoring: the sequence scored ends in EOS, and an RM on "another" base (re-encoded
//     text) scores exactly what the shared-base path scores
//   - advantages: score at the last response token, missing-EOS penalty, KL penalty, whitening
//   - the reference log-probs never change while the policy trains (and equal the bare base's), the
//     base weights are untouched
//   - end-to-end finite differences of the PPO loss (clipped policy + vf_coef * clipped value, with
//     temperature) through a tiny synthetic model, for every LoRA, soft-prompt and value-head parameter
//   - a short PPO run raises the mean reward (tiny synthetic setup)
//   - the CLI: a stories260K run with --reward-rule writes metrics and an adapter with a value head,
//     and resuming from a checkpoint reproduces the straight run's adapter byte for byte
#include "tests/testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lora/adapter.h"
#include "model/common.h"
#include "model/generate.h"
#include "model/model.h"
#include "model/synthetic.h"
#include "model/tokenizer.h"
#include "model/transformer.h"
#include "rlhf/eval_rate.h"
#include "rlhf/ppo_train.h"
#include "rlhf/reward_model.h"
#include "rlhf/reward_rule.h"

// ---------------------------------------------------------------- helpers

static ModelConfig tiny_cfg(Arch arch) {
    ModelConfig c = {0};
    c.arch = arch;
    c.dim = 16;
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = arch == ARCH_LLAMA ? 2 : 4;
    c.head_dim = 4;
    c.ffn_dim = 24;
    c.vocab_size = 32;
    c.max_seq_len = 64;
    c.norm_eps = 1e-5f;
    c.rope_theta = 10000.0f;
    c.tied_head = arch == ARCH_GPT2;
    c.bos_id = 1;
    c.eos_id = 2;
    return c;
}

static void make_policy(Adapters *a, const Model *m, int with_prompt, float b_std, uint64_t seed) {
    char err[FTK_ERR_LEN];
    AdapterConfig ac;
    adapter_config_default(&ac);
    ac.r = 2;
    ac.alpha = 4;
    ac.types = ADAPTER_LORA | (with_prompt ? ADAPTER_PROMPT : 0);
    ac.num_virtual_tokens = with_prompt ? 3 : 0;
    ac.value_head = 1;
    if (m->cfg.arch == ARCH_LLAMA) snprintf(ac.target_modules, sizeof ac.target_modules, "q_proj,v_proj,o_proj,down_proj");
    if (adapters_create(a, &ac, m, seed, err)) fail_msg("%s", err);
    // B = 0 makes LoRA a no-op; give it values so every gradient path is exercised
    if (b_std > 0) {
        uint64_t rng = seed + 99;
        for (int i = 0; i < a->n_views; i++)
            if (a->views[i].kind == VIEW_LORA_B)
                for (size_t k = 0; k < a->views[i].numel; k++) a->params[a->views[i].offset + k] = b_std * ftk_rand_normal(&rng);
    }
}

// A rollout of B prompts of random lengths with random responses (ids >= 3), some shorter than R.
static void make_rollout(PpoRollout *ro, int B, int P_max, int R, int V, uint64_t seed) {
    char err[FTK_ERR_LEN];
    assert_int_equal(ppo_rollout_alloc(ro, B, P_max, R, err), 0);
    uint64_t rng = seed;
    for (int b = 0; b < B; b++) {
        int P = 1 + (int)(ftk_rand_u32(&rng) % (unsigned)P_max);
        ro->prompt_lens[b] = P;
        ro->prompt_ids[(size_t)b * P_max] = 1;   // BOS
        for (int t = 1; t < P; t++) ro->prompt_ids[(size_t)b * P_max + t] = 3 + (int)(ftk_rand_u32(&rng) % (unsigned)(V - 3));
        int L = b % 3 == 0 ? R : 1 + (int)(ftk_rand_u32(&rng) % (unsigned)R);
        ro->resp_lens[b] = L;
        ro->stopped[b] = L < R;
        for (int t = 0; t < R; t++) {
            ro->resp[(size_t)b * R + t] = t < L ? 3 + (int)(ftk_rand_u32(&rng) % (unsigned)(V - 3)) : 0;
            ro->mask[(size_t)b * R + t] = t < L;
        }
    }
}

// ---------------------------------------------------------------- reward rules

static void test_word_count_boundaries(void **state) {
    (void)state;
    const char *t1 = "The Dog saw a dog. Dogs, hotdog, dog_x, doggy, x-dog-y; DOG!";
    // whole words: "Dog", "dog", "dog" (in x-dog-y), "DOG" -> 4; not Dogs/hotdog/dog_x/doggy
    assert_int_equal(word_count(t1, strlen(t1), "dog"), 4);
    assert_int_equal(word_count("dog", 3, "dog"), 1);
    assert_int_equal(word_count("dogdog dog", 10, "dog"), 1);
    assert_int_equal(word_count("", 0, "dog"), 0);
    assert_int_equal(word_count("do", 2, "dog"), 0);
    // the length bound is honoured: "dog" cut to "do" does not match, and a word char beyond len is not seen
    assert_int_equal(word_count("dogs", 3, "dog"), 1);
    // agrees with the rate measurement's matcher on every case
    const char *cases[] = {"a dog", "dogs", "hotdog", "Dog.", "the_dog", "DOG", "do g", "dog\n", "1dog", "dog2", "\"dog\""};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_int_equal(word_count(cases[i], strlen(cases[i]), "dog") > 0, text_has_word(cases[i], "dog"));
}

static void test_rule_parse_and_score(void **state) {
    (void)state;
    char err[FTK_ERR_LEN];
    RewardRule r;
    assert_int_equal(reward_rule_parse(&r, "contains:dog", err), 0);
    assert_int_equal(r.kind, REWARD_RULE_CONTAINS);
    assert_string_equal(r.word, "dog");
    assert_true(reward_rule_score_text(&r, "a dog and a dog", 15) == 1.0f);
    assert_true(reward_rule_score_text(&r, "dogs", 4) == 0.0f);
    assert_int_equal(reward_rule_parse(&r, "count:dog", err), 0);
    assert_true(reward_rule_score_text(&r, "a dog and a Dog", 15) == 2.0f);
    const char *bad[] = {"dog", "contains:", "has:dog", "contains:-dog", "count:dog!", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        assert_int_not_equal(reward_rule_parse(&r, bad[i], err), 0);
        assert_true(strstr(err, "reward rule") != NULL);
    }
}

// The response is decoded as the continuation of the prompt: the first piece keeps its space, so
// "Lily" + " dog" is scored on " dog", and EOS adds nothing.
static void test_rule_scorer_tokens(void **state) {
    (void)state;
    char err[FTK_ERR_LEN];
    Model m;
    if (model_load(&m, shared_path("models/stories260K/stories260K.bin"), NULL, err)) fail_msg("%s", err);
    int *p = NULL, np = 0, *all = NULL, na = 0;
    assert_int_equal(tokenizer_encode(m.tok, "Lily had a", 1, 0, &p, &np, err), 0);
    assert_int_equal(tokenizer_encode(m.tok, "Lily had a dog.", 1, 0, &all, &na, err), 0);
    assert_true(na > np);
    for (int i = 0; i < np; i++) assert_int_equal(p[i], all[i]);   // prompt is a prefix
    int resp[64], nr = na - np;
    memcpy(resp, all + np, (size_t)nr * sizeof(int));
    resp[nr++] = m.cfg.eos_id;
    PpoRuleScorer sc = {{REWARD_RULE_CONTAINS, "dog"}, m.tok};
    PpoSample s = {p, np, resp, nr};
    float score = -1;
    assert_int_equal(ppo_score_rule(&sc, &s, 1, &score, err), 0);
    assert_true(score == 1.0f);
    snprintf(sc.rule.word, sizeof sc.rule.word, "had");   // in the prompt only: not scored
    assert_int_equal(ppo_score_rule(&sc, &s, 1, &score, err), 0);
    assert_true(score == 0.0f);
    free(p);
    free(all);
    model_free(&m);
}

// ---------------------------------------------------------------- reward model scoring

static void test_rm_scorer_eos_and_reencode(void **state) {
    (void)state;
    char err[FTK_ERR_LEN];
    Model m, m2;
    const char *path = shared_path("models/stories260K/stories260K.bin");
    if (model_load(&m, path, NULL, err)) fail_msg("%s", err);
    if (model_load(&m2, path, NULL, err)) fail_msg("%s", err);
    AdapterConfig ac;
    adapter_config_default(&ac);
    ac.score_head = 1;
    Adapters rm;
    assert_int_equal(adapters_create(&rm, &ac, &m, 5, err), 0);
    for (size_t i = 0; i < rm.n_params; i++) rm.params[i] += 0.01f * (float)((i * 7919) % 13) - 0.06f;  // B != 0
    ModelAdapters hooks;
    adapters_hooks(&rm, 0, &hooks);
    int *p = NULL, np = 0, *all = NULL, na = 0;
    assert_int_equal(tokenizer_encode(m.tok, "Once upon a time, there was a cat.", 1, 0, &p, &np, err), 0);
    assert_int_equal(tokenizer_encode(m.tok, "Once upon a time, there was a cat. The cat saw a big dog.", 1, 0, &all, &na,
                                      err), 0);
    const int nr = na - np;
    int resp_stop[64];   // the response as sampled, ending in the model's stop token (BOS for llama2.c)
    memcpy(resp_stop, all + np, (size_t)nr * sizeof(int));
    resp_stop[nr] = m.cfg.bos_id;
    // expected: rm_score_sequences on prompt + response + EOS
    int seq[128];
    memcpy(seq, all, (size_t)na * sizeof(int));
    seq[na] = m.cfg.eos_id;
    const int *seqs[2] = {seq, all};
    int lens[2] = {na + 1, na};
    float want[2];
    assert_int_equal(rm_score_sequences(&m, &hooks, rm.score, seqs, lens, 2, want, err), 0);
    assert_true(want[0] != want[1]);
    PpoSample s[2] = {{p, np, resp_stop, nr + 1}, {p, np, all + np, nr}};
    float got[2];
    PpoRmScorer sc = {&m, &m, &hooks, rm.score, 1};
    assert_int_equal(ppo_score_rm(&sc, s, 2, got, err), 0);
    // (scores of one sequence in batches of other widths may differ in the last bits of the sgemms)
    assert_true(fabsf(got[0] - want[0]) < 1e-5f);   // stop token replaced by EOS
    assert_true(fabsf(got[1] - want[0]) < 1e-5f);   // EOS appended
    sc.end_with_eos = 0;
    assert_int_equal(ppo_score_rm(&sc, s + 1, 1, got, err), 0);
    assert_true(fabsf(got[0] - want[1]) < 1e-5f);
    // the RM on another Model (same file): text decoded and re-encoded, same ids, same score
    sc = (PpoRmScorer){&m, &m2, &hooks, rm.score, 1};
    assert_int_equal(ppo_score_rm(&sc, s, 2, got, err), 0);
    assert_true(fabsf(got[0] - want[0]) < 1e-5f && fabsf(got[1] - want[0]) < 1e-5f);
    free(p);
    free(all);
    adapters_free(&rm);
    model_free(&m);
    model_free(&m2);
}

// ---------------------------------------------------------------- advantages

static void test_advantages_composition(void **state) {
    (void)state;
    char err[FTK_ERR_LEN];
    PpoRollout ro;
    assert_int_equal(ppo_rollout_alloc(&ro, 2, 2, 3, err), 0);
    // seq 0: 3 tokens, stopped; seq 1: 2 tokens, not stopped
    const int lens[2] = {3, 2};
    for (int b = 0; b < 2; b++) {
        ro.resp_lens[b] = lens[b];
        ro.prompt_lens[b] = 1;
        for (int t = 0; t < 3; t++) ro.mask[b * 3 + t] = t < lens[b];
    }
    ro.stopped[0] = 1;
    ro.stopped[1] = 0;
    const float logp[6] = {-1.0f, -2.0f, -0.5f, -1.5f, -0.25f, 0}, ref[6] = {-1.5f, -1.0f, -0.5f, -1.0f, -1.25f, 0};
    const float val[6] = {0.1f, 0.2f, 0.3f, -0.2f, 0.4f, 9.0f};   // 9 on padding must be ignored
    memcpy(ro.logp, logp, sizeof logp);
    memcpy(ro.ref_logp, ref, sizeof ref);
    memcpy(ro.values, val, sizeof val);
    ro.scores[0] = 1.0f;
    ro.scores[1] = 3.0f;
    PpoConfig pc;
    ppo_config_default(&pc);
    pc.gamma = 1.0f;
    pc.lam = 0.5f;
    pc.missing_eos_penalty = 1.0f;
    pc.score_clip = 1.5f;
    assert_int_equal(ppo_compute_advantages(&ro, &pc, 0.1, err), 0);
    // kl = logp - ref: [0.5, -1, 0], [-0.5, 1]; rewards = -0.1 kl, + score at the last token:
    //   seq 0: [-0.05, 0.1, 0 + 1.0]; seq 1: score 3 - 1 (no EOS) = 2, clipped to 1.5: [0.05, -0.1 + 1.5]
    const float r_want[6] = {-0.05f, 0.1f, 1.0f, 0.05f, 1.4f, 0};
    for (int i = 0; i < 6; i++) assert_true(fabsf(ro.rewards[i] - r_want[i]) < 1e-6f);
    // GAE (γ 1, λ 0.5): seq 0: δ2 = 1 - 0.3 = 0.7, A2 = 0.7; δ1 = 0.1 + 0.3 - 0.2 = 0.2, A1 = 0.2 + 0.35 = 0.55;
    //   δ0 = -0.05 + 0.2 - 0.1 = 0.05, A0 = 0.05 + 0.275 = 0.325. seq 1: δ1 = 1.4 - 0.4 = 1.0, A1 = 1.0;
    //   δ0 = 0.05 + 0.4 + 0.2 = 0.65, A0 = 0.65 + 0.5 = 1.15. returns = A + V.
    const double A[5] = {0.325, 0.55, 0.7, 1.15, 1.0};
    const float ret_want[6] = {0.425f, 0.75f, 1.0f, 0.95f, 1.4f, 0};
    for (int i = 0; i < 6; i++) assert_true(fabsf(ro.returns[i] - ret_want[i]) < 1e-6f);
    double mean = 0, var = 0;
    for (int i = 0; i < 5; i++) mean += A[i] / 5;
    for (int i = 0; i < 5; i++) var += (A[i] - mean) * (A[i] - mean) / 4;   // unbiased
    const int at[5] = {0, 1, 2, 3, 4};
    for (int i = 0; i < 5; i++) assert_true(fabs(ro.advantages[at[i]] - (A[i] - mean) / sqrt(var + 1e-8)) < 1e-5);
    assert_true(ro.advantages[5] == 0.0f);
    ppo_rollout_free(&ro);
}

// ---------------------------------------------------------------- reference never moves

typedef struct {
    const Model *m;
    const ModelAdapters *ref;
    PpoWorkspace *w;
    const PpoRollout *probe;
    const float *ref0;    // reference logp of the probe before training
    float *buf;
    int steps, mismatches;
} RefWatch;

static void watch_ref(void *ctx, const PpoStepStats *s) {
    (void)s;
    RefWatch *r = ctx;
    char err[FTK_ERR_LEN];
    if (ppo_forward_rollout(r->m, r->ref, r->w, r->probe, 1.0f, NULL, NULL, r->buf, NULL, NULL, err)) fail_msg("%s", err);
    if (memcmp(r->buf, r->ref0, (size_t)r->probe->B * r->probe->R * sizeof(float)) != 0) r->mismatches++;
    r->steps++;
}

// Score: how many response tokens are 7 (the tiny setup's "dog"; about 0.1 per response at first).
// A count rather than a fraction: a reward much smaller than the freshly initialised value head's
// outputs drowns in their noise for many steps.
static int score_token7(void *ctx, const PpoSample *s, int n, float *scores, char *err) {
    (void)ctx;
    (void)err;
    for (int i = 0; i < n; i++) {
        int c = 0;
        for (int t = 0; t < s[i].response_len; t++) c += s[i].response[t] == 7;
        scores[i] = (float)c;
    }
    return 0;
}

// Byte-level prompts for the synthetic vocabulary: 'a'..'z' -> 3..28.
static int letters_encode(void *ctx, const char *text, int continuation, int parse_special, int **ids, int *n, char *err) {
    (void)ctx;
    (void)continuation;
    (void)parse_special;
    (void)err;
    size_t len = strlen(text);
    *ids = malloc((len + 1) * sizeof(int));
    *n = 0;
    for (size_t i = 0; i < len; i++)
        if (text[i] >= 'a' && text[i] <= 'z') (*ids)[(*n)++] = 3 + (text[i] - 'a');
    return 0;
}

static void load_letter_prompts(Dataset *ds, const char *dir) {
    char err[FTK_ERR_LEN], path[4200];
    snprintf(path, sizeof path, "%s/prompts.jsonl", dir);
    FILE *f = fopen(path, "w");
    const char *words[] = {"abc", "hello", "xyz", "cat", "mat", "dog", "sun", "moonlight", "q", "tree", "blue", "kite"};
    for (int i = 0; i < 12; i++) fprintf(f, "{\"prompt\": \"%s\"}\n", words[i]);
    fclose(f);
    TokEncoder enc = {letters_encode, NULL, 1, 2, 0};
    DatasetOptions o = dataset_options_default(DS_PROMPT);
    if (dataset_load(ds, path, &o, &enc, err)) fail_msg("%s", err);
    assert_int_equal(ds->n, 12);
}

static uint64_t weights_checksum(const Model *m) {
    uint64_t h = 1469598103934665603ull;
    const unsigned char *p = (const unsigned char *)m->weight_mem;
    for (size_t i = 0; i < m->n_weight_floats * sizeof(float); i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static PpoConfig tiny_ppo_config(const char *out_dir) {
    PpoConfig pc;
    ppo_config_default(&pc);
    pc.train.output_dir = out_dir;
    pc.train.learning_rate = 1e-2;
    pc.train.lr_scheduler = LR_CONSTANT;
    pc.train.batch_size = 4;
    pc.train.grad_accum = 2;
    pc.num_mini_batches = 2;   // 16 prompts per step
    pc.gen.max_new_tokens = 12;
    pc.gen.temperature = 1.0f;
    return pc;
}

static void test_reference_logprobs_frozen(void **state) {
    (void)state;
    char err[FTK_ERR_LEN];
    ModelConfig cfg = tiny_cfg(ARCH_LLAMA);
    Model m;
    assert_int_equal(model_init_synthetic(&m, &cfg, 21, err), 0);
    const uint64_t w0 = weights_checksum(&m);
    Adapters a;
    make_policy(&a, &m, 0, 0.0f, 3);
    const char *dir = test_tmpdir("ppo_ref");
    Dataset ds;
    load_letter_prompts(&ds, dir);
    PpoRollout probe;
    make_rollout(&probe, 6, 10, 8, cfg.vocab_size, 77);
    PpoWorkspace *w;
    assert_int_equal(ppo_workspace_create(&w, &m, NULL, 0, 0, 4, 10, 8, err), 0);
    // the reference is the policy's hooks with the adapter disabled
    ModelAdapters hooks, ref;
    adapters_hooks(&a, 1, &hooks);
    ref = hooks;
    ref.disabled = 1;
    const size_t n = (size_t)probe.B * probe.R;
    float *ref0 = malloc(n * sizeof(float)), *base = malloc(n * sizeof(float)), *pol0 = malloc(n * sizeof(float)),
          *buf = malloc(n * sizeof(float)), *vals = malloc(n * sizeof(float));
    assert_int_equal(ppo_forward_rollout(&m, &ref, w, &probe, 1.0f, NULL, NULL, ref0, NULL, NULL, err), 0);
    assert_int_equal(ppo_forward_rollout(&m, NULL, w, &probe, 1.0f, NULL, NULL, base, NULL, NULL, err), 0);
    assert_memory_equal(ref0, base, n * sizeof(float));   // disabled adapter == bare base, bit for bit
    for (size_t i = 0; i < n; i++) assert_true(probe.mask[i] ? ref0[i] < 0 : ref0[i] == 0);
    RefWatch rw = {&m, &ref, w, &probe, ref0, buf, 0, 0};
    PpoConfig pc = tiny_ppo_config(dir);
    pc.train.max_steps = 4;
    PpoResult res;
    if (ppo_train(&m, &a, NULL, &ds, &pc, score_token7, NULL, NULL, watch_ref, &rw, &res, err)) fail_msg("%s", err);
    assert_int_equal(rw.steps, 4);
    assert_int_equal(rw.mismatches, 0);
    assert_true(weights_checksum(&m) == w0);   // the base is never written
    // ...while the policy did move
    assert_int_equal(ppo_forward_rollout(&m, &hooks, w, &probe, 1.0f, a.value_w, a.value_b, pol0, NULL, vals, err), 0);
    double moved = 0;
    for (size_t i = 0; i < n; i++) moved = fmax(moved, fabs(pol0[i] - ref0[i]));
    assert_true(moved > 1e-3);
    // a frozen SFT-style reference (another adapter on the same base) does not move either
    Adapters sft;
    make_policy(&sft, &m, 0, 0.3f, 8);
    ModelAdapters sft_hooks;
    adapters_hooks(&sft, 0, &sft_hooks);
    assert_int_equal(ppo_forward_rollout(&m, &sft_hooks, w, &probe, 1.0f, NULL, NULL, ref0, NULL, NULL, err), 0);
    rw.ref = &sft_hooks;
    rw.steps = 0;
    pc.train.max_steps = 2;
    if (ppo_train(&m, &a, &sft_hooks, &ds, &pc, score_token7, NULL, NULL, watch_ref, &rw, &res, err)) fail_msg("%s", err);
    assert_int_equal(rw.steps, 2);
    assert_int_equal(rw.mismatches, 0);
    adapters_free(&sft);
    free(ref0);
    free(base);
    free(pol0);
    free(buf);
    free(vals);
    ppo_workspace_free(w);
    ppo_rollout_free(&probe);
    dataset_free(&ds);
    adapters_free(&a);
    model_free(&m);
    test_rmtree(dir);
}

// ---------------------------------------------------------------- finite differences

typedef struct {
    const Model *m;
    Adapters *a;
    ModelAdapters *hooks;
    PpoWorkspace *w;
    PpoRollout *ro;
    const int *seqs;
    int n;
    double norm;
    PpoConfig *pc;
} FdCtx;

static double fd_loss(FdCtx *c) {
    char err[FTK_ERR_LEN];
    double loss = 0;
    if (ppo_micro_batch(c->m, c->a, c->hooks, c->w, c->ro, c->seqs, c->n, c->norm, c->pc, NULL, &loss, NULL, err))
        fail_msg("%s", err);
    return loss;
}

static void run_fd(Arch arch, int with_prompt, float temperature) {
    char err[FTK_ERR_LEN];
    ModelConfig cfg = tiny_cfg(arch);
    Model m;
    assert_int_equal(model_init_synthetic(&m, &cfg, 31 + arch, err), 0);
    Adapters a;
    make_policy(&a, &m, with_prompt, 0.3f, 5 + arch);
    ModelAdapters hooks;
    adapters_hooks(&a, 1, &hooks);
    PpoRollout ro;
    make_rollout(&ro, 5, 6, 7, cfg.vocab_size, 11 + arch);
    PpoWorkspace *w;
    assert_int_equal(ppo_workspace_create(&w, &m, NULL, 0, hooks.n_virtual, 5, 6, 7, err), 0);
    PpoConfig pc;
    ppo_config_default(&pc);
    pc.gen.temperature = temperature;
    pc.vf_coef = 0.5f;   // larger than TRL's 0.1 so the value path weighs in the check
    // "old" logp / values = current ones moved away, so ratios and values fall on both sides of the clips
    assert_int_equal(ppo_forward_rollout(&m, &hooks, w, &ro, temperature, a.value_w, a.value_b, ro.logp, NULL,
                                         ro.values, err), 0);
    uint64_t rng = 1234;
    const size_t BR = (size_t)ro.B * ro.R;
    float *cur_logp = malloc(BR * sizeof(float)), *cur_v = malloc(BR * sizeof(float));
    memcpy(cur_logp, ro.logp, BR * sizeof(float));
    memcpy(cur_v, ro.values, BR * sizeof(float));
    int n_clip_lo = 0, n_clip_hi = 0, n_inside = 0, n_vclip = 0;
    for (size_t i = 0; i < BR; i++) {
        if (!ro.mask[i]) continue;
        ro.logp[i] += 0.4f * ftk_rand_normal(&rng);
        ro.values[i] += 0.4f * ftk_rand_normal(&rng);
        ro.advantages[i] = ftk_rand_normal(&rng);
        ro.returns[i] = cur_v[i] + ftk_rand_normal(&rng);
        // keep every token well away from the kinks so central differences see one branch
        double ratio = exp((double)cur_logp[i] - ro.logp[i]);
        if (fabs(ratio - 1.2) < 0.03 || fabs(ratio - 0.8) < 0.03) ro.logp[i] += 0.1f;
        ratio = exp((double)cur_logp[i] - ro.logp[i]);
        n_clip_hi += ratio > 1.2 && ro.advantages[i] > 0;
        n_clip_lo += ratio < 0.8 && ro.advantages[i] < 0;
        n_inside += ratio > 0.8 && ratio < 1.2;
        double dv = (double)cur_v[i] - ro.values[i];
        if (fabs(fabs(dv) - 0.2) < 0.03) ro.values[i] += 0.1f;
        n_vclip += fabs((double)cur_v[i] - ro.values[i]) > 0.2;
    }
    assert_true(n_clip_hi > 0 && n_clip_lo > 0 && n_inside > 0 && n_vclip > 0);   // every branch is taken
    const int seqs[4] = {3, 0, 4, 1};
    double norm = 0;
    for (int j = 0; j < 4; j++) norm += ro.resp_lens[seqs[j]];
    norm += 5;   // a minibatch larger than this micro-batch: the means divide by its count
    FdCtx c = {&m, &a, &hooks, w, &ro, seqs, 4, norm, &pc};
    adapters_zero_grad(&a);
    double loss = 0;
    PpoMicroStats st = {0};
    assert_int_equal(ppo_micro_batch(&m, &a, &hooks, w, &ro, seqs, 4, norm, &pc, NULL, &loss, &st, err), 0);
    assert_true(st.clip_frac > 0 && st.value_clip_frac > 0);
    float *grads = malloc(a.n_params * sizeof(float));
    memcpy(grads, a.grads, a.n_params * sizeof(float));
    int bad = 0, checked = 0, nonzero = 0;
    for (int v = 0; v < a.n_views; v++) {
        const AdapterView *view = &a.views[v];
        for (size_t k = 0; k < view->numel; k++) {
            size_t i = view->offset + k;
            float x = a.params[i];
            const float h = 1e-2f;
            a.params[i] = x + h;
            float xp = a.params[i];
            double lp = fd_loss(&c);
            a.params[i] = x - h;
            float xm = a.params[i];
            double lm = fd_loss(&c);
            a.params[i] = x;
            double fd = (lp - lm) / ((double)xp - (double)xm);
            double tol = 2e-4 + 2e-2 * fmax(fabs(fd), fabs(grads[i]));
            if (fabs(fd - grads[i]) > tol) {
                if (bad < 5) fprintf(stderr, "%s[%zu]: analytic %.6g finite-diff %.6g\n", view->name, k, grads[i], fd);
                bad++;
            }
            nonzero += fabsf(grads[i]) > 1e-4f;
            checked++;
        }
    }
    assert_int_equal(bad, 0);
    assert_true(nonzero > checked / 2);   // not vacuous
    // the value-head bias gradient is exactly vf_coef * Σ dL_v/dv (checked above too)
    assert_true(grads[adapters_find_view(&a, "v_head.summary.bias")->offset] != 0.0f);
    free(grads);
    free(cur_logp);
    free(cur_v);
    ppo_workspace_free(w);
    ppo_rollout_free(&ro);
    adapters_free(&a);
    model_free(&m);
}

static void test_fd_llama_temperature(void **state) {
    (void)state;
    run_fd(ARCH_LLAMA, 0, 0.7f);
}

static void test_fd_gpt2_prompt(void **state) {
    (void)state;
    run_fd(ARCH_GPT2, 1, 1.0f);
}

// ---------------------------------------------------------------- learning

typedef struct {
    double scores[64];
    double kl[64];
    int n;
} Trace;

static void trace_step(void *ctx, const PpoStepStats *s) {
    Trace *t = ctx;
    if (t->n < 64) {
        t->scores[t->n] = s->score_mean;
        t->kl[t->n] = s->kl;
        t->n++;
    }
}

static void test_reward_rises(void **state) {
    (void)state;
    char err[FTK_ERR_LEN];
    ModelConfig cfg = tiny_cfg(ARCH_LLAMA);
    Model m;
    assert_int_equal(model_init_synthetic(&m, &cfg, 21, err), 0);
    Adapters a;
    make_policy(&a, &m, 0, 0.0f, 3);
    const char *dir = test_tmpdir("ppo_rise");
    Dataset ds;
    load_letter_prompts(&ds, dir);
    PpoConfig pc = tiny_ppo_config(dir);
    pc.train.max_steps = 30;
    Trace tr = {0};
    PpoResult res;
    double t0 = ftk_now();
    if (ppo_train(&m, &a, NULL, &ds, &pc, score_token7, NULL, NULL, trace_step, &tr, &res, err)) fail_msg("%s", err);
    double first = 0, last = 0;
    for (int i = 0; i < 5; i++) {
        first += tr.scores[i] / 5;
        last += tr.scores[tr.n - 5 + i] / 5;
    }
    fprintf(stderr, "tiny PPO: mean score %.4f (steps 1-5) -> %.4f (steps 26-30), kl %.3f, %.2f s\n", first, last,
            tr.kl[tr.n - 1], ftk_now() - t0);
    assert_int_equal(tr.n, 30);
    assert_true(first < 0.3);
    assert_true(last > 2.0);   // > 20x
    assert_true(isfinite(tr.kl[tr.n - 1]) && tr.kl[tr.n - 1] > 0);
    // the saved adapter has the value head
    char path[4200];
    snprintf(path, sizeof path, "%s/value_head.safetensors", dir);
    assert_true(ftk_file_exists(path));
    dataset_free(&ds);
    adapters_free(&a);
    model_free(&m);
    test_rmtree(dir);
}

// ---------------------------------------------------------------- CLI

static void read_all(const char *path, char **data, size_t *len) {
    char err[FTK_ERR_LEN];
    *data = NULL;
    if (ftk_read_file(path, data, len, err)) fail_msg("%s", err);
}

static void test_cli_rule_run_and_resume(void **state) {
    (void)state;
    const char *tmp = test_tmpdir("ppo_cli");
    char base[4096], cmd[16384], a_dir[4200], b_dir[4200];
    snprintf(base, sizeof base,
             "%s ppo --model %s --train-file %s --reward-rule contains:the --max-new-tokens 16 --batch-size 4 "
             "--num-mini-batches 2 --ppo-epochs 2 --max-steps 4 --temperature 1 --top-p 0.9 --lora-r 4 --seed 3",
             ftk_bin(), shared_path("models/stories260K/stories260K.bin"),
             shared_path("datasets/tinystories-pref/eval_prompts.jsonl"));
    snprintf(a_dir, sizeof a_dir, "%s/straight", tmp);
    snprintf(b_dir, sizeof b_dir, "%s/resumed", tmp);
    char *out = NULL;
    snprintf(cmd, sizeof cmd, "%s --output-dir %s 2>&1", base, a_dir);
    int rc = run_cmd(cmd, &out);
    if (rc != 0) fail_msg("ftk ppo failed (%d):\n%s", rc, out);
    assert_true(strstr(out, "step 4/4") != NULL);
    assert_true(strstr(out, "reference: the base model") != NULL);
    free(out);
    // metrics: one line per PPO step with the fields
    char path[4300];
    snprintf(path, sizeof path, "%s/metrics.jsonl", a_dir);
    size_t len;
    char *metrics;
    read_all(path, &metrics, &len);
    int lines = 0;
    for (size_t i = 0; i < len; i++) lines += metrics[i] == '\n';
    assert_int_equal(lines, 4);
    const char *keys[] = {"\"score_mean\"", "\"score_std\"", "\"kl\"", "\"entropy\"", "\"clip_frac\"", "\"approx_kl\"",
                          "\"value_loss\"", "\"response_length\"", "\"tokens_per_sec\"", "\"kl_coef\""};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) assert_true(strstr(metrics, keys[i]) != NULL);
    char *straight_metrics = metrics;
    snprintf(path, sizeof path, "%s/value_head.safetensors", a_dir);
    assert_true(ftk_file_exists(path));
    // 2 steps with a checkpoint, then resume to 4: the same adapter, byte for byte
    snprintf(cmd, sizeof cmd, "%s --output-dir %s --save-steps 2 2>&1", base, b_dir);
    rc = run_cmd(cmd, &out);
    if (rc != 0) fail_msg("ftk ppo (to checkpoint) failed (%d):\n%s", rc, out);
    free(out);
    // checkpoint-N counts optimizer updates: 2 PPO steps x 2 epochs x 2 mini-batches = 8
    snprintf(path, sizeof path, "%s/checkpoint-8", b_dir);
    assert_true(ftk_is_dir(path));
    snprintf(cmd, sizeof cmd, "%s --output-dir %s --resume-from-checkpoint %s 2>&1", base, b_dir, path);
    rc = run_cmd(cmd, &out);
    if (rc != 0) fail_msg("ftk ppo (resume) failed (%d):\n%s", rc, out);
    assert_true(strstr(out, "step 3/4") != NULL && strstr(out, "step 1/4") == NULL);
    free(out);
    const char *files[] = {"adapter_model.safetensors", "value_head.safetensors"};
    for (int i = 0; i < 2; i++) {
        size_t la, lb;
        snprintf(path, sizeof path, "%s/%s", a_dir, files[i]);
        char *x, *y;
        read_all(path, &x, &la);
        snprintf(path, sizeof path, "%s/%s", b_dir, files[i]);
        read_all(path, &y, &lb);
        assert_int_equal(la, lb);
        assert_memory_equal(x, y, la);
        free(x);
        free(y);
    }
    // metrics of the resumed run: the same 4 lines as the straight run's, up to the timings (every
    // key before "tokens_per_sec": scores, KL, entropy, clip fraction, losses, grad norm, lr)
    snprintf(path, sizeof path, "%s/metrics.jsonl", b_dir);
    read_all(path, &metrics, &len);
    const char *p = straight_metrics, *q = metrics;
    for (int k = 0; k < 4; k++) {
        const char *pe = strstr(p, "\"tokens_per_sec\""), *qe = strstr(q, "\"tokens_per_sec\"");
        assert_true(pe && qe && pe - p == qe - q);
        assert_memory_equal(p, q, (size_t)(pe - p));
        p = strchr(pe, '\n') + 1;
        q = strchr(qe, '\n') + 1;
    }
    assert_true(*q == 0);
    free(metrics);
    free(straight_metrics);
    // --sft-adapter: the policy starts as the SFT adapter and the reference is base + that adapter,
    // so the first rollout's KL is exactly 0 although the adapter is far from the base
    char sft_dir[4200], p_dir[4200];
    snprintf(sft_dir, sizeof sft_dir, "%s/sft", tmp);
    snprintf(p_dir, sizeof p_dir, "%s/from_sft", tmp);
    snprintf(cmd, sizeof cmd,
             "%s sft --model %s --train-file %s --output-dir %s --max-steps 3 --batch-size 4 --learning-rate 1e-2 "
             "--target-modules q_proj,v_proj,o_proj 2>&1",
             ftk_bin(), shared_path("models/stories260K/stories260K.bin"),
             shared_path("datasets/tinystories-mia/train.jsonl"), sft_dir);
    rc = run_cmd(cmd, &out);
    if (rc != 0) fail_msg("ftk sft failed (%d):\n%s", rc, out);
    free(out);
    snprintf(cmd, sizeof cmd, "%s --output-dir %s --sft-adapter %s --max-steps 2 2>&1", base, p_dir, sft_dir);
    rc = run_cmd(cmd, &out);
    if (rc != 0) fail_msg("ftk ppo --sft-adapter failed (%d):\n%s", rc, out);
    assert_true(strstr(out, "reference: base + ") != NULL);
    free(out);
    snprintf(path, sizeof path, "%s/metrics.jsonl", p_dir);
    read_all(path, &metrics, &len);
    // step 1's line has "kl":0; step 2's does not (the policy has moved away by then)
    const char *second = strstr(metrics, "\"step\":2,");
    const int kl0_first = strstr(metrics, "\"kl\":0,") != NULL, kl0_second = second && strstr(second, "\"kl\":0,");
    const int has_second = second != NULL;
    free(metrics);
    assert_true(has_second && kl0_first && !kl0_second);
    snprintf(path, sizeof path, "%s/adapter_config.json", p_dir);
    char *cfg_text;
    read_all(path, &cfg_text, &len);
    assert_true(strstr(cfg_text, "o_proj") != NULL);   // the SFT adapter's targets, not --target-modules'
    free(cfg_text);
    // usage errors
    snprintf(cmd, sizeof cmd, "%s ppo --model %s --train-file x --output-dir %s/u 2>&1", ftk_bin(),
             shared_path("models/stories260K/stories260K.bin"), tmp);
    rc = run_cmd(cmd, &out);
    assert_int_equal(rc, 2);   // neither --reward-model nor --reward-rule
    free(out);
    snprintf(cmd, sizeof cmd, "%s --output-dir %s/u --reward-rule has:dog 2>&1", base, tmp);
    rc = run_cmd(cmd, &out);
    assert_int_equal(rc, 2);
    free(out);
    test_rmtree(tmp);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_word_count_boundaries),
        cmocka_unit_test(test_rule_parse_and_score),
        cmocka_unit_test(test_rule_scorer_tokens),
        cmocka_unit_test(test_rm_scorer_eos_and_reencode),
        cmocka_unit_test(test_advantages_composition),
        cmocka_unit_test(test_reference_logprobs_frozen),
        cmocka_unit_test(test_fd_llama_temperature),
        cmocka_unit_test(test_fd_gpt2_prompt),
        cmocka_unit_test(test_reward_rises),
        cmocka_unit_test(test_cli_rule_run_and_resume),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
