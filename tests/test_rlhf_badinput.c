// test_rlhf_badinput.c — bad input to ftk rm / score / dpo and the rlhf library: malformed
// preference records (missing "rejected", identical sides), prompts longer than the context, a
// reward model for another base model or tokenizer, a directory that is not a reward model, damaged
// RM files, and inconsistent reference caches. Every case must fail with a message that names the
// file / fault, exit 1 (runtime) or 2 (usage), and never crash (the suite also runs under ASan/UBSan).
#include "tests/testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "datasets/dataset.h"
#include "lora/adapter.h"
#include "lora/peft.h"
#include "model/common.h"
#include "model/model.h"
#include "model/synthetic.h"
#include "rlhf/dpo_train.h"
#include "rlhf/reward_model.h"

static const char *STORIES = "models/stories260K/stories260K.bin";
static char g_dir[600];     // suite temp dir
static char g_rm[700];      // a small reward model trained on stories260K
static char g_sft[700];     // a LoRA adapter without a score head
static char g_pairs[700];   // 4 good pairs

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static const char *tmp_file(const char *name, const char *text) {
    static char path[4][800];
    static int k = 0;
    char *p = path[k++ % 4];
    snprintf(p, 800, "%s/%s", g_dir, name);
    write_text(p, text);
    return p;
}

// Runs an ftk command line (after "ftk "), expects exit code `want` and every needle in the output.
static void expect(const char *args, int want, const char *needle1, const char *needle2) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "%s %s", ftk_bin(), args);
    char *out = NULL;
    int rc = run_cmd(cmd, &out);
    if (rc != want) fail_msg("exit %d (want %d) for: %s\n%s", rc, want, args, out ? out : "");
    if (needle1 && !strstr(out, needle1)) fail_msg("'%s' not in the output of: %s\n%s", needle1, args, out);
    if (needle2 && !strstr(out, needle2)) fail_msg("'%s' not in the output of: %s\n%s", needle2, args, out);
    if (strstr(out, "AddressSanitizer") || strstr(out, "runtime error")) fail_msg("sanitizer report:\n%s", out);
    free(out);
}

static int setup(void **state) {
    (void)state;
    snprintf(g_dir, sizeof g_dir, "%s", test_tmpdir("rlhf_badinput"));
    snprintf(g_pairs, sizeof g_pairs, "%s/pairs.jsonl", g_dir);
    write_text(g_pairs, "{\"prompt\": \"Once upon a time\", \"chosen\": \" there was a dog.\", \"rejected\": \" there was a cat.\"}\n"
                        "{\"prompt\": \"Tom ran\", \"chosen\": \" to his dog.\", \"rejected\": \" home.\"}\n"
                        "{\"prompt\": \"Lily saw\", \"chosen\": \" a big dog.\", \"rejected\": \" a big tree.\"}\n"
                        "{\"prompt\": \"One day\", \"chosen\": \" a dog came.\", \"rejected\": \" it rained.\"}\n");
    snprintf(g_rm, sizeof g_rm, "%s/rm", g_dir);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s rm --model %s --train-file %s --output-dir %s --max-steps 1 --batch-size 2", ftk_bin(),
             shared_path(STORIES), g_pairs, g_rm);
    char *out = NULL;
    if (run_cmd(cmd, &out) != 0) {
        fprintf(stderr, "setup: %s\n", out);
        free(out);
        return -1;
    }
    free(out);
    // an SFT-style adapter (no score head)
    char err[FTK_ERR_LEN];
    Model m;
    if (model_load(&m, shared_path(STORIES), NULL, err)) return -1;
    AdapterConfig ac;
    adapter_config_default(&ac);
    Adapters a;
    if (adapters_create(&a, &ac, &m, 1, err)) return -1;
    snprintf(g_sft, sizeof g_sft, "%s/sft", g_dir);
    int rc = peft_save(&a, g_sft, shared_path(STORIES), err);
    adapters_free(&a);
    model_free(&m);
    return rc;
}

static int teardown(void **state) {
    (void)state;
    test_rmtree(g_dir);
    return 0;
}

static void test_record_missing_rejected(void **state) {
    (void)state;
    const char *f = tmp_file("norej.jsonl", "{\"prompt\": \"a\", \"chosen\": \" b\", \"rejected\": \" c\"}\n"
                                            "{\"prompt\": \"a\", \"chosen\": \" b\"}\n");
    char args[4096];
    snprintf(args, sizeof args, "rm --model %s --train-file %s --output-dir %s/o1", shared_path(STORIES), f, g_dir);
    expect(args, 1, "norej.jsonl:2", "rejected");
    snprintf(args, sizeof args, "dpo --model %s --train-file %s --output-dir %s/o1", shared_path(STORIES), f, g_dir);
    expect(args, 1, "norej.jsonl:2", "rejected");
    // ftk score detects a preference file from its first record and reports the same
    snprintf(args, sizeof args, "score --model %s --adapter %s --file %s", shared_path(STORIES), g_rm, f);
    expect(args, 1, "norej.jsonl:2", "rejected");
}

static void test_identical_sides(void **state) {
    (void)state;
    const char *f = tmp_file("same.jsonl", "{\"prompt\": \"a\", \"chosen\": \" same\", \"rejected\": \" same\"}\n");
    char args[4096];
    snprintf(args, sizeof args, "rm --model %s --train-file %s --output-dir %s/o2", shared_path(STORIES), f, g_dir);
    expect(args, 1, "same.jsonl:1", "identical");
    snprintf(args, sizeof args, "dpo --model %s --train-file %s --output-dir %s/o2", shared_path(STORIES), f, g_dir);
    expect(args, 1, "same.jsonl:1", "identical");
}

// A prompt longer than the model's context (512 for stories260K).
static void test_prompt_longer_than_context(void **state) {
    (void)state;
    size_t n = 4000;
    char *text = malloc(n + 400);
    strcpy(text, "{\"prompt\": \"");
    for (int i = 0; i < 700; i++) strcat(text, "dog ");
    strcat(text, "\", \"chosen\": \" a\", \"rejected\": \" b\"}\n");
    const char *only_long = tmp_file("long.jsonl", text);
    char *mixed_text = malloc(strlen(text) + 200);
    sprintf(mixed_text, "{\"prompt\": \"x\", \"chosen\": \" a\", \"rejected\": \" b\"}\n%s", text);
    const char *mixed = tmp_file("mixed.jsonl", mixed_text);
    char args[4096];
    // the default skips and counts: with nothing left that is an error naming the file and the count
    snprintf(args, sizeof args, "rm --model %s --train-file %s --output-dir %s/o3", shared_path(STORIES), only_long,
             g_dir);
    expect(args, 1, "long.jsonl: no usable records", "1 with a prompt longer than max_seq_length");
    snprintf(args, sizeof args, "dpo --model %s --train-file %s --output-dir %s/o3", shared_path(STORIES), only_long,
             g_dir);
    expect(args, 1, "long.jsonl: no usable records", "prompt longer");
    // --long-prompt error: the record is named even when others are fine
    snprintf(args, sizeof args, "rm --model %s --train-file %s --output-dir %s/o3 --long-prompt error",
             shared_path(STORIES), mixed, g_dir);
    expect(args, 1, "mixed.jsonl:2", "longer than max_seq_length");
    snprintf(args, sizeof args, "score --model %s --adapter %s --file %s --long-prompt error", shared_path(STORIES), g_rm,
             mixed);
    expect(args, 1, "mixed.jsonl:2", "longer than max_seq_length");
    snprintf(args, sizeof args, "rm --model %s --train-file %s --output-dir %s/o3 --long-prompt sometimes",
             shared_path(STORIES), mixed, g_dir);
    expect(args, 2, "--long-prompt", NULL);
    free(text);
    free(mixed_text);
}

static void test_rm_for_another_model(void **state) {
    (void)state;
    char args[4096];
    // tiny-llama-hf: 3 layers, 2 kv heads (stories260K: 5 layers, 4 kv heads)
    snprintf(args, sizeof args, "score --model %s --adapter %s --file %s", shared_path("models/tiny-llama-hf"), g_rm,
             g_pairs);
    expect(args, 1, "trained on a different base model", "num_hidden_layers 5");
    // without reward_model.json (a PEFT/TRL RM) the shape check still refuses it
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "cp -r %s %s/rm_noinfo && rm %s/rm_noinfo/reward_model.json", g_rm, g_dir, g_dir);
    assert_int_equal(run_cmd(cmd, NULL), 0);
    snprintf(args, sizeof args, "score --model %s --adapter %s/rm_noinfo --file %s", shared_path("models/tiny-llama-hf"),
             g_dir, g_pairs);
    expect(args, 1, "cannot load the reward model", "rm_noinfo");
    // same shapes, other tokenizer: the fingerprint says so
    snprintf(cmd, sizeof cmd,
             "cp -r %s %s/rm_tok && sed -i 's/\"tokenizer_fingerprint\":[^,]*/\"tokenizer_fingerprint\": \"0123456789abcdef\"/' "
             "%s/rm_tok/reward_model.json",
             g_rm, g_dir, g_dir);
    assert_int_equal(run_cmd(cmd, NULL), 0);
    snprintf(args, sizeof args, "score --model %s --adapter %s/rm_tok --file %s", shared_path(STORIES), g_dir, g_pairs);
    expect(args, 1, "different tokenizer", "0123456789abcdef");
    // the same model in another format is accepted (same vocabulary)
    snprintf(args, sizeof args, "score --model %s --adapter %s --file %s", shared_path("models/stories260K-hf"), g_rm,
             g_pairs);
    expect(args, 0, "\"chosen\":", "pairwise accuracy");
}

static void test_not_a_reward_model(void **state) {
    (void)state;
    char args[4096];
    snprintf(args, sizeof args, "score --model %s --adapter %s --file %s", shared_path(STORIES), g_sft, g_pairs);
    expect(args, 1, "not a reward model", "score");
    snprintf(args, sizeof args, "dpo --model %s --train-file %s --output-dir %s/o4 --sft-adapter %s",
             shared_path(STORIES), g_pairs, g_dir, g_rm);
    expect(args, 1, "is a reward model", NULL);
    snprintf(args, sizeof args, "score --model %s --adapter %s/nowhere --file %s", shared_path(STORIES), g_dir, g_pairs);
    expect(args, 1, "nowhere: no such reward model directory", NULL);
    snprintf(args, sizeof args, "rm --model %s --train-file %s --output-dir %s/o4 --peft prompt", shared_path(STORIES),
             g_pairs, g_dir);
    expect(args, 2, "--peft lora", NULL);
}

static void test_damaged_rm_files(void **state) {
    (void)state;
    char cmd[4096], args[4096];
    // reward_model.json that is not JSON, and one without the sizes
    snprintf(cmd, sizeof cmd, "cp -r %s %s/rm_badjson && echo '{oops' > %s/rm_badjson/reward_model.json", g_rm, g_dir,
             g_dir);
    assert_int_equal(run_cmd(cmd, NULL), 0);
    snprintf(args, sizeof args, "score --model %s --adapter %s/rm_badjson --file %s", shared_path(STORIES), g_dir, g_pairs);
    expect(args, 1, "reward_model.json", NULL);
    snprintf(cmd, sizeof cmd, "cp -r %s %s/rm_nokeys && echo '{\"vocab_size\": 512}' > %s/rm_nokeys/reward_model.json",
             g_rm, g_dir, g_dir);
    assert_int_equal(run_cmd(cmd, NULL), 0);
    snprintf(args, sizeof args, "score --model %s --adapter %s/rm_nokeys --file %s", shared_path(STORIES), g_dir, g_pairs);
    expect(args, 1, "hidden_size", "reward_model.json");
    // a truncated adapter_model.safetensors
    snprintf(cmd, sizeof cmd, "cp -r %s %s/rm_trunc && truncate -s 300 %s/rm_trunc/adapter_model.safetensors", g_rm, g_dir,
             g_dir);
    assert_int_equal(run_cmd(cmd, NULL), 0);
    snprintf(args, sizeof args, "score --model %s --adapter %s/rm_trunc --file %s", shared_path(STORIES), g_dir, g_pairs);
    expect(args, 1, "adapter_model.safetensors", NULL);
}

static void test_files_and_usage(void **state) {
    (void)state;
    char args[4096];
    snprintf(args, sizeof args, "score --model %s --adapter %s --file %s/absent.jsonl", shared_path(STORIES), g_rm, g_dir);
    expect(args, 1, "absent.jsonl", NULL);
    const char *empty = tmp_file("empty.jsonl", "");
    snprintf(args, sizeof args, "rm --model %s --train-file %s --output-dir %s/o5", shared_path(STORIES), empty, g_dir);
    expect(args, 1, "empty.jsonl", NULL);
    const char *notjson = tmp_file("notjson.jsonl", "{\"prompt\": \"a\", \"chosen\": \" b\", \"rejected\": \" c\"}\n{nope\n");
    snprintf(args, sizeof args, "rm --model %s --train-file %s --output-dir %s/o5", shared_path(STORIES), notjson, g_dir);
    expect(args, 1, "notjson.jsonl:2", NULL);
    // an SFT file is not preference data
    const char *sft = tmp_file("sft.jsonl", "{\"prompt\": \"a\", \"response\": \" b\"}\n");
    snprintf(args, sizeof args, "dpo --model %s --train-file %s --output-dir %s/o5", shared_path(STORIES), sft, g_dir);
    expect(args, 1, "sft.jsonl:1", "chosen");
    // usage errors: exit 2
    snprintf(args, sizeof args, "rm --model %s --output-dir %s/o5", shared_path(STORIES), g_dir);
    expect(args, 2, "--train-file", NULL);
    snprintf(args, sizeof args, "dpo --model %s --train-file %s --output-dir %s/o5 --loss-type hinge",
             shared_path(STORIES), g_pairs, g_dir);
    expect(args, 2, "--loss-type", NULL);
    snprintf(args, sizeof args, "dpo --model %s --train-file %s --output-dir %s/o5 --beta 0", shared_path(STORIES),
             g_pairs, g_dir);
    expect(args, 2, "--beta", NULL);
    snprintf(args, sizeof args, "dpo --model %s --train-file %s --output-dir %s/o5 --label-smoothing 0.7",
             shared_path(STORIES), g_pairs, g_dir);
    expect(args, 2, "--label-smoothing", NULL);
    snprintf(args, sizeof args, "rm --model %s --train-file %s --output-dir %s/o5 --packing", shared_path(STORIES),
             g_pairs, g_dir);
    expect(args, 2, "--packing", NULL);
    snprintf(args, sizeof args, "score --model %s --adapter %s --file %s --kind chat", shared_path(STORIES), g_rm, g_pairs);
    expect(args, 2, "--kind", NULL);
    // an output dir that already holds an adapter
    snprintf(args, sizeof args, "rm --model %s --train-file %s --output-dir %s", shared_path(STORIES), g_pairs, g_rm);
    expect(args, 1, "already holds an adapter", NULL);
}

// Library-level faults: caches that do not fit, datasets of the wrong kind, scoring without a head.
static void test_library_faults(void **state) {
    (void)state;
    char err[FTK_ERR_LEN];
    Model m;
    if (model_load(&m, shared_path(STORIES), NULL, err)) fail_msg("%s", err);
    TokEncoder enc;
    tok_encoder_init(&enc, m.tok);
    DatasetOptions o = dataset_options_default(DS_PREFERENCE);
    Dataset pairs, prompts;
    if (dataset_load(&pairs, g_pairs, &o, &enc, err)) fail_msg("%s", err);
    DatasetOptions op = dataset_options_default(DS_PROMPT);
    if (dataset_load(&prompts, g_pairs, &op, &enc, err)) fail_msg("%s", err);
    AdapterConfig ac;
    adapter_config_default(&ac);
    Adapters a;
    if (adapters_create(&a, &ac, &m, 1, err)) fail_msg("%s", err);
    ModelAdapters hooks;
    adapters_hooks(&a, 0, &hooks);
    // reference cache of a prompt dataset; evaluation of a non-preference dataset
    DpoRefCache c;
    assert_int_not_equal(dpo_ref_cache_build(&m, &hooks, &prompts, 2, 0, &c, err), 0);
    assert_non_null(strstr(err, "preference"));
    RmEvalStats st;
    float w[64] = {0};
    assert_int_not_equal(rm_evaluate(&m, &hooks, w, &prompts, 2, &st, NULL, NULL, err), 0);
    assert_non_null(strstr(err, "preference"));
    // a cache for fewer pairs than the dataset; a summed cache with the IPO loss
    assert_int_equal(dpo_ref_cache_build(&m, &hooks, &pairs, 2, 0, &c, err), 0);
    c.n = 2;
    DpoOptions d;
    dpo_options_default(&d);
    TrainConfig tc;
    train_config_default(&tc);
    tc.output_dir = g_dir;
    tc.max_steps = 1;
    PairTrainResult res;
    assert_int_not_equal(dpo_train(&m, &a, &pairs, &c, NULL, NULL, &tc, &d, NULL, NULL, NULL, &res, err), 0);
    assert_non_null(strstr(err, "reference cache"));
    c.n = pairs.n;
    PairSums sums;
    d.loss_type = DPO_IPO;
    assert_int_not_equal(dpo_evaluate(&m, &hooks, &pairs, &c, &d, 2, &sums, err), 0);
    dpo_ref_cache_free(&c);
    // scoring: no head, empty sequence
    const int toks[3] = {1, 50, 60};
    const int *seqs[1] = {toks};
    int len = 3;
    float r;
    assert_int_not_equal(rm_score_sequences(&m, &hooks, NULL, seqs, &len, 1, &r, err), 0);
    assert_non_null(strstr(err, "score head"));
    // rm_load of a directory without adapter files
    RewardModel rm;
    assert_int_not_equal(rm_load(&rm, &m, g_dir, err), 0);
    assert_non_null(strstr(err, g_dir));
    adapters_free(&a);
    dataset_free(&pairs);
    dataset_free(&prompts);
    model_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_record_missing_rejected), cmocka_unit_test(test_identical_sides),
        cmocka_unit_test(test_prompt_longer_than_context), cmocka_unit_test(test_rm_for_another_model),
        cmocka_unit_test(test_not_a_reward_model), cmocka_unit_test(test_damaged_rm_files),
        cmocka_unit_test(test_files_and_usage), cmocka_unit_test(test_library_faults),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
