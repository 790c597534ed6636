// test_sft.c — behaviour tests of `ftk sft` / `ftk eval` through the binary: a short fine-tune of
// the real stories260K must lower validation loss and change the greedy name to "Mia"; a resumed
// run must give byte-identical adapter files; other record shapes train; bad input and a NaN loss
// stop with a clear error and leave the last checkpoint intact.
#include "tests/testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/common.h"
#include "model/safetensors.h"

#define MODEL "models/stories260K/stories260K.bin"
#define MIA "datasets/tinystories-mia"

static char cmdbuf[16384];

// Runs `ftk <args>`; returns the exit status and keeps the output in *out (caller frees).
static int ftk(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int ftk(char **out, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int k = snprintf(cmdbuf, sizeof cmdbuf, "OPENBLAS_NUM_THREADS=1 '%s' ", ftk_bin());
    vsnprintf(cmdbuf + k, sizeof cmdbuf - (size_t)k, fmt, ap);
    va_end(ap);
    char *o = NULL;
    int rc = run_cmd(cmdbuf, &o);
    if (out) *out = o;
    else free(o);
    return rc;
}

// The eval_loss values of metrics.jsonl, in order.
static int read_eval_losses(const char *dir, double *vals, int max) {
    char path[1024];
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof line, f) && n < max) {
        char *p = strstr(line, "\"eval_loss\":");
        if (p) vals[n++] = strtod(p + 12, NULL);
    }
    fclose(f);
    return n;
}

static int files_equal(const char *a, const char *b) {
    char *da, *db;
    size_t la, lb;
    char err[FTK_ERR_LEN];
    if (ftk_read_file(a, &da, &la, err)) return 0;
    if (ftk_read_file(b, &db, &lb, err)) { free(da); return 0; }
    int eq = la == lb && memcmp(da, db, la) == 0;
    free(da);
    free(db);
    return eq;
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

// A short LoRA run (r=8 on q,v, the other settings default) lowers validation loss and flips the
// name the model gives the little girl from Lily to Mia.
static void test_sft_learns_mia(void **state) {
    (void)state;
    const char *dir = test_tmpdir("sft-learn");
    char valid[600];
    snprintf(valid, sizeof valid, "%s/valid100.jsonl", dir);
    char *o = NULL;
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "head -n 100 '%s' > '%s'", shared_path(MIA "/valid.jsonl"), valid);
    assert_int_equal(run_cmd(cmd, NULL), 0);
    int rc = ftk(&o, "generate --model '%s' --prompt 'Once upon a time, there was a little girl named' "
                     "--max-new-tokens 3",
                 shared_path(MODEL));
    assert_int_equal(rc, 0);
    assert_non_null(strstr(o, "named Lily"));
    free(o);
    rc = ftk(&o, "sft --model '%s' --train-file '%s' --eval-file '%s' --output-dir '%s/out' --max-steps 60 "
                 "--learning-rate 3e-3 --logging-steps 20",
             shared_path(MODEL), shared_path(MIA "/train.jsonl"), valid, dir);
    if (rc != 0) fprintf(stderr, "%s\n", o);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(o, "trainable params: 8,960"));
    free(o);
    char out[700];
    snprintf(out, sizeof out, "%s/out", dir);
    double ev[8];
    int n = read_eval_losses(out, ev, 8);
    assert_int_equal(n, 2);
    fprintf(stderr, "eval loss %.4f -> %.4f\n", ev[0], ev[1]);
    assert_true(ev[0] > 1.1 && ev[0] < 1.25);   // the base model on these stories
    assert_true(ev[1] < ev[0] - 0.08);
    rc = ftk(&o, "generate --model '%s' --adapter '%s' --prompt 'Once upon a time, there was a little girl named' "
                 "--max-new-tokens 3",
             shared_path(MODEL), out);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(o, "named Mia"));
    free(o);
    // ftk eval reproduces the final eval loss of the run.
    rc = ftk(&o, "eval --model '%s' --adapter '%s' --file '%s'", shared_path(MODEL), out, valid);
    assert_int_equal(rc, 0);
    char *p = strstr(o, "loss ");
    assert_non_null(p);
    assert_true(fabs(strtod(p + 5, NULL) - ev[1]) < 1e-4);
    free(o);
    test_rmtree(dir);
}

// 8 steps straight vs 4 steps, stop, resume for 4 more: identical adapter files (dropout on, so
// the dropout RNG and the data cursor must be restored exactly).
static void test_sft_resume_identical(void **state) {
    (void)state;
    const char *dir = test_tmpdir("sft-resume");
    const char *common = "--lora-dropout 0.1 --batch-size 4 --lr-scheduler-type constant --learning-rate 2e-3 "
                         "--save-steps 4 --logging-steps 1 --target-modules q_proj,v_proj,o_proj";
    char *o = NULL;
    int rc = ftk(&o, "sft --model '%s' --train-file '%s' --output-dir '%s/a' --max-steps 8 %s", shared_path(MODEL),
                 shared_path(MIA "/train.jsonl"), dir, common);
    if (rc) fprintf(stderr, "%s\n", o);
    assert_int_equal(rc, 0);
    free(o);
    rc = ftk(&o, "sft --model '%s' --train-file '%s' --output-dir '%s/b' --max-steps 4 %s", shared_path(MODEL),
             shared_path(MIA "/train.jsonl"), dir, common);
    assert_int_equal(rc, 0);
    free(o);
    rc = ftk(&o, "sft --model '%s' --train-file '%s' --output-dir '%s/b' --max-steps 8 %s "
                 "--resume-from-checkpoint latest",
             shared_path(MODEL), shared_path(MIA "/train.jsonl"), dir, common);
    if (rc) fprintf(stderr, "%s\n", o);
    assert_int_equal(rc, 0);
    free(o);
    char a[700], b[700];
    snprintf(a, sizeof a, "%s/a/adapter_model.safetensors", dir);
    snprintf(b, sizeof b, "%s/b/adapter_model.safetensors", dir);
    assert_true(files_equal(a, b));
    snprintf(a, sizeof a, "%s/a/checkpoint-8/optimizer.bin", dir);
    snprintf(b, sizeof b, "%s/b/checkpoint-8/optimizer.bin", dir);
    assert_true(files_equal(a, b));
    // A run that differs (another seed) must not be identical: the comparison can fail.
    rc = ftk(&o, "sft --model '%s' --train-file '%s' --output-dir '%s/c' --max-steps 8 --seed 7 %s",
             shared_path(MODEL), shared_path(MIA "/train.jsonl"), dir, common);
    assert_int_equal(rc, 0);
    free(o);
    snprintf(a, sizeof a, "%s/a/adapter_model.safetensors", dir);
    snprintf(b, sizeof b, "%s/c/adapter_model.safetensors", dir);
    assert_false(files_equal(a, b));
    test_rmtree(dir);
}

// Alpaca, chat and plain-text copies of the data train too (a few steps, loss reported).
static void test_sft_record_shapes(void **state) {
    (void)state;
    const char *dir = test_tmpdir("sft-shapes");
    const char *files[] = {"alpaca.jsonl", "chat.jsonl", "text.jsonl"};
    for (int i = 0; i < 3; i++) {
        char path[300];
        snprintf(path, sizeof path, MIA "/%s", files[i]);
        char *o = NULL;
        int rc = ftk(&o, "sft --model '%s' --train-file '%s' --validation-split 0.1 --output-dir '%s/%d' "
                         "--max-steps 5 --batch-size 4 --logging-steps 1",
                     shared_path(MODEL), shared_path(path), dir, i);
        if (rc) fprintf(stderr, "%s\n", o);
        assert_int_equal(rc, 0);
        assert_non_null(strstr(o, "step 5/5"));
        free(o);
    }
    test_rmtree(dir);
}

// A NaN loss stops training with an error naming the step, and leaves the checkpoint it resumed
// from untouched. The NaN comes from a poisoned copy of a checkpoint (one lora_B value set to NaN).
static void test_sft_nan_stops(void **state) {
    (void)state;
    const char *dir = test_tmpdir("sft-nan");
    char *o = NULL;
    int rc = ftk(&o, "sft --model '%s' --train-file '%s' --output-dir '%s/out' --max-steps 2 --save-steps 2 "
                     "--batch-size 2",
                 shared_path(MODEL), shared_path(MIA "/train.jsonl"), dir);
    assert_int_equal(rc, 0);
    free(o);
    char cmd[2048], st_path[700], err[FTK_ERR_LEN];
    snprintf(cmd, sizeof cmd, "cp -r '%s/out/checkpoint-2' '%s/out/checkpoint-poisoned'", dir, dir);
    assert_int_equal(run_cmd(cmd, NULL), 0);
    snprintf(st_path, sizeof st_path, "%s/out/checkpoint-poisoned/adapter_model.safetensors", dir);
    StFile sf;
    assert_int_equal(st_open(&sf, st_path, err), 0);
    const StTensor *t = st_find(&sf, "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight");
    assert_non_null(t);
    long off = (long)((const unsigned char *)sf.data - (const unsigned char *)sf.map) + (long)t->begin;
    st_close(&sf);
    FILE *f = fopen(st_path, "r+b");
    assert_non_null(f);
    float nan = NAN;
    fseek(f, off, SEEK_SET);
    fwrite(&nan, sizeof nan, 1, f);
    fclose(f);
    char before[700];
    snprintf(before, sizeof before, "%s/out/checkpoint-2/adapter_model.safetensors", dir);
    char *orig;
    size_t orig_len;
    assert_int_equal(ftk_read_file(before, &orig, &orig_len, err), 0);
    rc = ftk(&o, "sft --model '%s' --train-file '%s' --output-dir '%s/out' --max-steps 4 --save-steps 1 "
                 "--batch-size 2 --resume-from-checkpoint '%s/out/checkpoint-poisoned'",
             shared_path(MODEL), shared_path(MIA "/train.jsonl"), dir, dir);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(o, "ftk: error:"));
    assert_true(strstr(o, "NaN") || strstr(o, "not finite") || strstr(o, "nan"));
    free(o);
    char *now;
    size_t now_len;
    assert_int_equal(ftk_read_file(before, &now, &now_len, err), 0);
    assert_true(now_len == orig_len && memcmp(now, orig, orig_len) == 0);
    free(now);
    free(orig);
    char ck3[700];
    snprintf(ck3, sizeof ck3, "%s/out/checkpoint-3", dir);
    assert_false(ftk_file_exists(ck3));   // nothing saved after the NaN step
    test_rmtree(dir);
}

static void test_sft_bad_input(void **state) {
    (void)state;
    const char *dir = test_tmpdir("sft-bad");
    char bad[600], empty[600], noresp[600];
    snprintf(bad, sizeof bad, "%s/bad.jsonl", dir);
    snprintf(empty, sizeof empty, "%s/empty.jsonl", dir);
    snprintf(noresp, sizeof noresp, "%s/noresp.jsonl", dir);
    write_text(bad, "{\"prompt\": \"a\", \"response\": \" b\"}\n{\"prompt\": \"a\", \"response\n");
    write_text(empty, "");
    write_text(noresp, "{\"prompt\": \"a\", \"response\": \" b\"}\n{\"prompt\": \"only a prompt\"}\n");
    char *o = NULL;
    int rc = ftk(&o, "sft --model '%s' --train-file '%s' --output-dir '%s/o1'", shared_path(MODEL), bad, dir);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(o, "bad.jsonl:2"));
    free(o);
    rc = ftk(&o, "sft --model '%s' --train-file '%s' --output-dir '%s/o2'", shared_path(MODEL), empty, dir);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(o, "empty.jsonl"));
    free(o);
    rc = ftk(&o, "sft --model '%s' --train-file '%s' --output-dir '%s/o3'", shared_path(MODEL), noresp, dir);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(o, "noresp.jsonl:2"));
    free(o);
    // an adapter made for another model: the error names the tensor
    rc = ftk(&o, "generate --model '%s' --adapter '%s' --prompt a", shared_path(MODEL),
             shared_path("models/tiny-llama-hf/peft-lora"));
    assert_int_equal(rc, 1);
    assert_non_null(strstr(o, "lora_"));
    free(o);
    // usage errors exit 2
    rc = ftk(&o, "sft --model '%s'", shared_path(MODEL));
    assert_int_equal(rc, 2);
    free(o);
    test_rmtree(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sft_learns_mia), cmocka_unit_test(test_sft_resume_identical),
        cmocka_unit_test(test_sft_record_shapes), cmocka_unit_test(test_sft_nan_stops),
        cmocka_unit_test(test_sft_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
