// test_checkpoint_badinput.c — corrupted and truncated checkpoint files give clear errors that name
// the file, and a failed load leaves the optimizer and trainer state as they were.
#include "tests/testutil.h"

#include <stdlib.h>
#include <string.h>

#include "model/common.h"
#include "sft/checkpoint.h"
#include "sft/metrics.h"
#include "sft/optim.h"

static char tmpdir[512];

static int setup(void **state) {
    (void)state;
    const char *d = test_tmpdir("ckpt-bad");
    if (!d) return -1;
    snprintf(tmpdir, sizeof tmpdir, "%s", d);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    test_rmtree(tmpdir);
    return 0;
}

static const char *tmp_path(const char *name) {
    static char buf[4][700];
    static int k = 0;
    char *out = buf[k++ % 4];
    snprintf(out, 700, "%s/%s", tmpdir, name);
    return out;
}

// A valid optimizer.bin for n parameters at step 3; its bytes in *data (malloc'ed).
static void make_optimizer_file(const char *path, size_t n, char **data, size_t *len) {
    char err[FTK_ERR_LEN];
    AdamW opt;
    assert_int_equal(adamw_init(&opt, n, err), 0);
    for (size_t i = 0; i < n; i++) {
        opt.m[i] = (float)i;
        opt.v[i] = (float)(2 * i);
    }
    opt.step = 3;
    assert_int_equal(optimizer_save(path, &opt, err), 0);
    adamw_free(&opt);
    assert_int_equal(ftk_read_file(path, data, len, err), 0);
}

// Loads path into a fresh AdamW(n) whose m[0] is a sentinel; expects an error containing both the
// path and `what`, and the sentinel untouched.
static void expect_optimizer_error(const char *path, size_t n, const char *what) {
    char err[FTK_ERR_LEN] = "";
    AdamW opt;
    assert_int_equal(adamw_init(&opt, n, err), 0);
    opt.m[0] = 42.0f;
    assert_int_not_equal(optimizer_load(path, &opt, err), 0);
    if (!strstr(err, what) || !strstr(err, path)) print_message("unexpected error: %s\n", err);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, what));
    assert_true(opt.m[0] == 42.0f && opt.step == 0);
    adamw_free(&opt);
}

static void test_optimizer_bad_files(void **state) {
    (void)state;
    char err[FTK_ERR_LEN], *good;
    size_t len;
    const char *src = tmp_path("good.bin"), *bad = tmp_path("bad.bin");
    make_optimizer_file(src, 100, &good, &len);

    expect_optimizer_error(tmp_path("missing.bin"), 100, "cannot open");
    assert_int_equal(ftk_write_file_atomic(bad, good, 0, err), 0);        // empty
    expect_optimizer_error(bad, 100, "truncated");
    assert_int_equal(ftk_write_file_atomic(bad, good, 20, err), 0);       // inside the header
    expect_optimizer_error(bad, 100, "truncated");
    assert_int_equal(ftk_write_file_atomic(bad, good, len - 4, err), 0);  // one float short
    expect_optimizer_error(bad, 100, "truncated");
    char *longer = malloc(len + 1);
    memcpy(longer, good, len);
    longer[len] = 0;
    assert_int_equal(ftk_write_file_atomic(bad, longer, len + 1, err), 0);
    expect_optimizer_error(bad, 100, "trailing bytes");
    free(longer);

    char *copy = malloc(len);
    memcpy(copy, good, len);
    copy[0] = 'X';                                                        // magic
    assert_int_equal(ftk_write_file_atomic(bad, copy, len, err), 0);
    expect_optimizer_error(bad, 100, "bad magic");
    memcpy(copy, good, len);
    copy[8] = 2;                                                          // version
    assert_int_equal(ftk_write_file_atomic(bad, copy, len, err), 0);
    expect_optimizer_error(bad, 100, "unsupported version 2");
    memcpy(copy, good, len);
    copy[len - 1] ^= 0x40;                                                // one bit of v
    assert_int_equal(ftk_write_file_atomic(bad, copy, len, err), 0);
    expect_optimizer_error(bad, 100, "checksum");
    memcpy(copy, good, len);
    memset(copy + 16, 0xff, 8);                                           // n = 2^64 - 1
    assert_int_equal(ftk_write_file_atomic(bad, copy, len, err), 0);
    expect_optimizer_error(bad, 100, "checkpoint has 18446744073709551615 parameters, the adapter has 100");
    memcpy(copy, good, len);
    memset(copy + 24, 0xff, 8);                                           // step = -1
    assert_int_equal(ftk_write_file_atomic(bad, copy, len, err), 0);
    expect_optimizer_error(bad, 100, "negative step");
    free(copy);

    // a different adapter size
    expect_optimizer_error(src, 50, "checkpoint has 100 parameters, the adapter has 50");
    free(good);
}

static void write_text(const char *path, const char *text) {
    char err[FTK_ERR_LEN];
    assert_int_equal(ftk_write_file_atomic(path, text, strlen(text), err), 0);
}

static void expect_state_error(const char *text, const char *what) {
    const char *path = tmp_path("trainer_state.json");
    write_text(path, text);
    char err[FTK_ERR_LEN] = "";
    TrainerState ts;
    trainer_state_init(&ts);
    ts.global_step = 77;
    assert_int_not_equal(trainer_state_load(path, &ts, err), 0);
    if (!strstr(err, what) || !strstr(err, path)) print_message("unexpected error: %s\n", err);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, what));
    assert_int_equal(ts.global_step, 77);  // untouched
    trainer_state_free(&ts);
}

#define CURSOR "\"data_cursor\":{\"epoch\":0,\"position\":5,\"rng_state\":\"42\"}"
#define EVALS "\"best_eval_loss\":null,\"best_eval_step\":null,\"last_eval_loss\":null"

static void test_trainer_state_bad_files(void **state) {
    (void)state;
    // the valid file these are variations of
    const char *good = "{\"global_step\":3,\"epoch\":0.5," CURSOR ",\"dropout_rng_state\":\"7\"," EVALS "}";
    const char *path = tmp_path("trainer_state.json");
    write_text(path, good);
    char err[FTK_ERR_LEN];
    TrainerState ts;
    trainer_state_init(&ts);
    assert_int_equal(trainer_state_load(path, &ts, err), 0);
    assert_int_equal(ts.data_position, 5);
    assert_true(ts.data_rng == 42 && ts.dropout_rng == 7);
    trainer_state_free(&ts);

    expect_state_error("", "not valid JSON");
    expect_state_error("{\"global_step\": 3,", "not valid JSON");
    expect_state_error("global_step=3", "not valid JSON");
    expect_state_error("[1, 2]", "expected a JSON object");
    expect_state_error("{\"epoch\":0.5," CURSOR ",\"dropout_rng_state\":\"7\"," EVALS "}",
                       "missing field \"global_step\"");
    expect_state_error("{\"global_step\":-3,\"epoch\":0.5," CURSOR ",\"dropout_rng_state\":\"7\"," EVALS "}",
                       "\"global_step\" must be a non-negative integer");
    expect_state_error("{\"global_step\":2.5,\"epoch\":0.5," CURSOR ",\"dropout_rng_state\":\"7\"," EVALS "}",
                       "\"global_step\" must be a non-negative integer");
    expect_state_error("{\"global_step\":\"3\",\"epoch\":0.5," CURSOR ",\"dropout_rng_state\":\"7\"," EVALS "}",
                       "\"global_step\" must be a non-negative integer");
    expect_state_error("{\"global_step\":3,\"epoch\":null," CURSOR ",\"dropout_rng_state\":\"7\"," EVALS "}",
                       "\"epoch\" must be a number");
    expect_state_error("{\"global_step\":3,\"epoch\":0.5,\"dropout_rng_state\":\"7\"," EVALS "}",
                       "missing field \"data_cursor\"");
    expect_state_error("{\"global_step\":3,\"epoch\":0.5,\"data_cursor\":5,\"dropout_rng_state\":\"7\"," EVALS "}",
                       "\"data_cursor\" must be an object");
    expect_state_error("{\"global_step\":3,\"epoch\":0.5,\"data_cursor\":{\"epoch\":0,\"position\":5},"
                       "\"dropout_rng_state\":\"7\"," EVALS "}",
                       "missing field \"data_cursor.rng_state\"");
    // uint64 states must be decimal strings that fit
    const char *bad_rng[] = {"42", "\"-1\"", "\"18446744073709551616\"", "\"12a\"", "\"\"", "\" 1\""};
    for (size_t i = 0; i < sizeof bad_rng / sizeof bad_rng[0]; i++) {
        char text[512];
        snprintf(text, sizeof text,
                 "{\"global_step\":3,\"epoch\":0.5,\"data_cursor\":{\"epoch\":0,\"position\":5,\"rng_state\":%s},"
                 "\"dropout_rng_state\":\"7\"," EVALS "}",
                 bad_rng[i]);
        expect_state_error(text, "\"data_cursor.rng_state\" must be a uint64 as a decimal string");
    }
    expect_state_error("{\"global_step\":3,\"epoch\":0.5," CURSOR "," EVALS "}", "missing field \"dropout_rng_state\"");
    expect_state_error("{\"global_step\":3,\"epoch\":0.5," CURSOR ",\"dropout_rng_state\":\"7\","
                       "\"best_eval_loss\":\"low\",\"best_eval_step\":null,\"last_eval_loss\":null}",
                       "\"best_eval_loss\" must be a number or null");
    // a NUL byte inside the file
    char err2[FTK_ERR_LEN];
    assert_int_equal(ftk_write_file_atomic(path, "{}\0{}", 5, err2), 0);
    trainer_state_init(&ts);
    assert_int_not_equal(trainer_state_load(path, &ts, err2), 0);
    assert_non_null(strstr(err2, "NUL"));
    trainer_state_free(&ts);
}

static void test_checkpoint_dir_bad(void **state) {
    (void)state;
    char err[FTK_ERR_LEN], dir[700], path[900];
    snprintf(dir, sizeof dir, "%s/out", tmpdir);
    AdamW opt;
    assert_int_equal(adamw_init(&opt, 10, err), 0);
    TrainerState ts;
    trainer_state_init(&ts);
    opt.step = ts.global_step = 4;
    assert_int_equal(checkpoint_save(dir, &opt, &ts, NULL, NULL, NULL, 0, err), 0);
    char ckpt[800];
    snprintf(ckpt, sizeof ckpt, "%s/checkpoint-4", dir);

    // not a directory
    assert_int_not_equal(checkpoint_load(tmp_path("nope"), &opt, &ts, err), 0);
    assert_non_null(strstr(err, "nope"));
    // the trainer state and the optimizer disagree on the step
    ts.global_step = 5;
    snprintf(path, sizeof path, "%s/trainer_state.json", ckpt);
    assert_int_equal(trainer_state_save(path, &ts, err), 0);
    TrainerState loaded;
    trainer_state_init(&loaded);
    AdamW other;
    assert_int_equal(adamw_init(&other, 10, err), 0);
    assert_int_not_equal(checkpoint_load(ckpt, &other, &loaded, err), 0);
    assert_non_null(strstr(err, "optimizer.bin"));
    assert_non_null(strstr(err, "step 4 but trainer_state.json says 5"));
    assert_int_equal(other.step, 0);
    assert_int_equal(loaded.global_step, 0);
    // a different adapter size, through the directory API
    ts.global_step = 4;
    assert_int_equal(trainer_state_save(path, &ts, err), 0);
    AdamW small;
    assert_int_equal(adamw_init(&small, 9, err), 0);
    assert_int_not_equal(checkpoint_load(ckpt, &small, &loaded, err), 0);
    assert_non_null(strstr(err, "checkpoint has 10 parameters, the adapter has 9"));
    // trainer_state.json missing
    remove(path);
    assert_int_not_equal(checkpoint_load(ckpt, &other, &loaded, err), 0);
    assert_non_null(strstr(err, "trainer_state.json"));
    // output dir path that runs through a file
    snprintf(path, sizeof path, "%s/afile", tmpdir);
    write_text(path, "x");
    snprintf(dir, sizeof dir, "%s/afile/out", tmpdir);
    assert_int_not_equal(checkpoint_save(dir, &opt, &ts, NULL, NULL, NULL, 0, err), 0);
    assert_non_null(strstr(err, "afile"));
    adamw_free(&opt);
    adamw_free(&other);
    adamw_free(&small);
    trainer_state_free(&ts);
    trainer_state_free(&loaded);
}

static void test_metrics_bad_line(void **state) {
    (void)state;
    const char *path = tmp_path("metrics.jsonl");
    write_text(path, "{\"step\":1,\"loss\":2}\nnot json\n{\"step\":2}\n");
    char err[FTK_ERR_LEN];
    MetricsLog ml;
    assert_int_not_equal(metrics_open(&ml, path, 5, err), 0);
    char where[800];
    snprintf(where, sizeof where, "%s:2:", path);
    assert_non_null(strstr(err, where));
    write_text(path, "{\"step\":1}\n{\"loss\":2}\n");
    assert_int_not_equal(metrics_open(&ml, path, 5, err), 0);
    assert_non_null(strstr(err, "\"step\""));
    // the file is left as it was
    char *data;
    size_t len;
    assert_int_equal(ftk_read_file(path, &data, &len, err), 0);
    assert_string_equal(data, "{\"step\":1}\n{\"loss\":2}\n");
    free(data);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_optimizer_bad_files), cmocka_unit_test(test_trainer_state_bad_files),
        cmocka_unit_test(test_checkpoint_dir_bad), cmocka_unit_test(test_metrics_bad_line),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
