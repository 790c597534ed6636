// test_checkpoint.c — checkpoint-N/ round trips (AdamW state bit-exact, trainer state with uint64
// RNG states), resuming the optimizer gives bit-identical parameters, save_total_limit, finding the
// latest checkpoint, metrics.jsonl truncation on resume, and the progress line.
#include "tests/testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/common.h"
#include "sft/checkpoint.h"
#include "sft/metrics.h"
#include "sft/optim.h"
#include "sft/progress.h"
#include "sft/schedule.h"

// A deterministic gradient for update `step` (stands in for forward/backward).
static void fake_grads(float *g, size_t n, int64_t step) {
    uint64_t rng = 1000 + (uint64_t)step;
    for (size_t i = 0; i < n; i++) g[i] = ftk_rand_normal(&rng) * (i % 7 == 0 ? 10.0f : 0.1f);
}

// One training update as the loop composes them: gradient, clip, scheduled lr, AdamW.
static void train_step(AdamW *opt, float *params, float *grads, const LrSchedule *sched) {
    char err[FTK_ERR_LEN];
    double norm;
    fake_grads(grads, opt->n, opt->step);
    assert_int_equal(grad_clip(grads, opt->n, 1.0, &norm, err), 0);
    adamw_step(opt, params, grads, lr_at(sched, opt->step));
}

// The adapter stand-in: the callback writes the parameters as raw floats into the checkpoint.
typedef struct {
    const float *params;
    size_t n;
} FakeAdapter;

static int write_params(const char *dir, void *user, char *err) {
    const FakeAdapter *a = user;
    char path[4096];
    if (ftk_path_join(path, sizeof path, dir, "params.bin", err)) return -1;
    return ftk_write_file_atomic(path, a->params, a->n * sizeof(float), err);
}

static int fail_write(const char *dir, void *user, char *err) {
    (void)user;
    return ftk_err(err, "%s: adapter writer failed on purpose", dir);
}

static void test_optimizer_roundtrip_bitexact(void **state) {
    (void)state;
    const char *dir = test_tmpdir("opt");
    char err[FTK_ERR_LEN], path[600];
    snprintf(path, sizeof path, "%s/optimizer.bin", dir);
    size_t n = 1003;
    AdamW a, b;
    assert_int_equal(adamw_init(&a, n, err), 0);
    assert_int_equal(adamw_init(&b, n, err), 0);
    float *p = calloc(n, sizeof(float)), *g = malloc(n * sizeof(float));
    LrSchedule s = {.type = LR_COSINE, .base_lr = 1e-3, .warmup_steps = 1, .max_steps = 10};
    for (int t = 0; t < 3; t++) train_step(&a, p, g, &s);
    assert_int_equal(optimizer_save(path, &a, err), 0);
    assert_int_equal(optimizer_load(path, &b, err), 0);
    assert_int_equal(b.step, 3);
    assert_memory_equal(a.m, b.m, n * sizeof(float));
    assert_memory_equal(a.v, b.v, n * sizeof(float));
    // file size is exactly header + 2 n floats
    char *data;
    size_t len;
    assert_int_equal(ftk_read_file(path, &data, &len, err), 0);
    assert_int_equal(len, 32 + 2 * n * sizeof(float));
    assert_memory_equal(data, "FTKADAMW", 8);
    free(data);
    free(p);
    free(g);
    adamw_free(&a);
    adamw_free(&b);
    test_rmtree(dir);
}

// 2N straight updates == N updates, checkpoint, fresh process state, load, N more: bit-identical.
static void test_resume_bit_identical(void **state) {
    (void)state;
    const char *dir = test_tmpdir("resume");
    char err[FTK_ERR_LEN];
    const size_t n = 517;
    const int N = 4;
    LrSchedule sched = {.type = LR_LINEAR, .base_lr = 5e-3, .warmup_steps = 2, .max_steps = 2 * N};
    float *p_straight = malloc(n * sizeof(float)), *p_resumed = malloc(n * sizeof(float));
    float *grads = malloc(n * sizeof(float));
    uint64_t rng = 7;
    for (size_t i = 0; i < n; i++) p_straight[i] = p_resumed[i] = ftk_rand_normal(&rng);

    AdamW straight;
    assert_int_equal(adamw_init(&straight, n, err), 0);
    straight.weight_decay = 0.01;
    for (int t = 0; t < 2 * N; t++) train_step(&straight, p_straight, grads, &sched);

    AdamW first;
    assert_int_equal(adamw_init(&first, n, err), 0);
    first.weight_decay = 0.01;
    for (int t = 0; t < N; t++) train_step(&first, p_resumed, grads, &sched);
    TrainerState ts;
    trainer_state_init(&ts);
    ts.global_step = N;
    FakeAdapter fa = {p_resumed, n};
    assert_int_equal(checkpoint_save(dir, &first, &ts, NULL, write_params, &fa, 0, err), 0);
    adamw_free(&first);
    memset(p_resumed, 0, n * sizeof(float));  // nothing survives but the checkpoint

    char ckpt[4096], path[4200];
    int64_t step;
    assert_int_equal(checkpoint_latest(dir, ckpt, sizeof ckpt, &step, err), 0);
    assert_int_equal(step, N);
    AdamW resumed;
    assert_int_equal(adamw_init(&resumed, n, err), 0);
    resumed.weight_decay = 0.01;
    TrainerState loaded;
    trainer_state_init(&loaded);
    assert_int_equal(checkpoint_load(ckpt, &resumed, &loaded, err), 0);
    assert_int_equal(loaded.global_step, N);
    assert_int_equal(resumed.step, N);
    char *data;
    size_t len;
    snprintf(path, sizeof path, "%s/params.bin", ckpt);
    assert_int_equal(ftk_read_file(path, &data, &len, err), 0);
    assert_int_equal(len, n * sizeof(float));
    memcpy(p_resumed, data, len);
    free(data);
    for (int t = 0; t < N; t++) train_step(&resumed, p_resumed, grads, &sched);

    assert_memory_equal(p_resumed, p_straight, n * sizeof(float));
    assert_memory_equal(resumed.m, straight.m, n * sizeof(float));
    assert_memory_equal(resumed.v, straight.v, n * sizeof(float));
    trainer_state_free(&loaded);
    adamw_free(&resumed);
    adamw_free(&straight);
    free(p_straight);
    free(p_resumed);
    free(grads);
    test_rmtree(dir);
}

static void test_trainer_state_roundtrip(void **state) {
    (void)state;
    const char *dir = test_tmpdir("state");
    char err[FTK_ERR_LEN], path[600];
    snprintf(path, sizeof path, "%s/trainer_state.json", dir);
    TrainerState ts, back;
    trainer_state_init(&ts);
    trainer_state_init(&back);
    ts.global_step = 1234;
    ts.epoch = 1.2345678901234567;
    ts.data_epoch = 1;
    ts.data_position = 987;
    ts.data_rng = 0xFFFFFFFFFFFFFFFFull;       // would not survive as a JSON number
    ts.dropout_rng = (1ull << 53) + 1;         // the first integer a double cannot hold
    ts.best_eval_loss = 1.0 / 3.0;
    ts.best_eval_step = 1000;
    ts.extra = cJSON_CreateObject();
    cJSON_AddStringToObject(ts.extra, "model", "stories260K");
    cJSON_AddNumberToObject(ts.extra, "max_steps", 5000);
    cJSON_AddObjectToObject(ts.extra, "nested");
    assert_int_equal(trainer_state_save(path, &ts, err), 0);
    assert_int_equal(trainer_state_load(path, &back, err), 0);
    assert_int_equal(back.global_step, 1234);
    assert_true(back.epoch == ts.epoch);
    assert_int_equal(back.data_epoch, 1);
    assert_int_equal(back.data_position, 987);
    assert_true(back.data_rng == 0xFFFFFFFFFFFFFFFFull);
    assert_true(back.dropout_rng == (1ull << 53) + 1);
    assert_true(back.best_eval_loss == 1.0 / 3.0);
    assert_int_equal(back.best_eval_step, 1000);
    assert_true(isnan(back.last_eval_loss));  // never evaluated: null in the file
    assert_string_equal(cJSON_GetObjectItem(back.extra, "model")->valuestring, "stories260K");
    assert_true(cJSON_GetObjectItem(back.extra, "max_steps")->valuedouble == 5000);
    assert_true(cJSON_IsObject(cJSON_GetObjectItem(back.extra, "nested")));
    assert_null(cJSON_GetObjectItem(back.extra, "global_step"));  // only the caller's keys
    // the RNG state is a string in the file
    cJSON *root;
    assert_int_equal(json_read_object(path, &root, err), 0);
    const cJSON *rs = cJSON_GetObjectItem(cJSON_GetObjectItem(root, "data_cursor"), "rng_state");
    assert_true(cJSON_IsString(rs));
    assert_string_equal(rs->valuestring, "18446744073709551615");
    cJSON_Delete(root);
    // an extra key may not shadow a field
    cJSON_AddNumberToObject(ts.extra, "global_step", 1);
    assert_int_not_equal(trainer_state_save(path, &ts, err), 0);
    assert_non_null(strstr(err, "global_step"));
    trainer_state_free(&ts);
    trainer_state_free(&back);
    test_rmtree(dir);
}

static void test_checkpoint_layout_and_limit(void **state) {
    (void)state;
    const char *dir = test_tmpdir("ckpt");
    char out[600], err[FTK_ERR_LEN], path[700];
    snprintf(out, sizeof out, "%s/run", dir);  // created by the first save
    AdamW opt;
    assert_int_equal(adamw_init(&opt, 8, err), 0);
    float params[8] = {0};
    FakeAdapter fa = {params, 8};
    TrainerState ts;
    trainer_state_init(&ts);
    cJSON *args = cJSON_CreateObject();
    cJSON_AddNumberToObject(args, "learning_rate", 2e-4);
    cJSON_AddStringToObject(args, "lr_scheduler_type", "cosine");

    char ckpt[4096];
    int64_t step;
    assert_int_equal(checkpoint_latest(out, ckpt, sizeof ckpt, &step, err), 0);  // no dir yet
    assert_int_equal(step, -1);
    assert_string_equal(ckpt, "");

    for (int64_t s = 1; s <= 5; s++) {
        opt.step = ts.global_step = s * 10;
        params[0] = (float)s;
        assert_int_equal(checkpoint_save(out, &opt, &ts, args, write_params, &fa, 2, err), 0);
    }
    const char *files[] = {"optimizer.bin", "trainer_state.json", "training_args.json", "params.bin"};
    for (int i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "%s/checkpoint-50/%s", out, files[i]);
        assert_true(ftk_file_exists(path));
    }
    for (int s = 1; s <= 3; s++) {  // save_total_limit 2 deleted the oldest three
        snprintf(path, sizeof path, "%s/checkpoint-%d", out, s * 10);
        assert_false(ftk_file_exists(path));
    }
    snprintf(path, sizeof path, "%s/checkpoint-40", out);
    assert_true(ftk_is_dir(path));
    snprintf(path, sizeof path, "%s/checkpoint-50.tmp", out);
    assert_false(ftk_file_exists(path));
    cJSON *back;
    snprintf(path, sizeof path, "%s/checkpoint-50/training_args.json", out);
    assert_int_equal(json_read_object(path, &back, err), 0);
    assert_true(cJSON_Compare(args, back, 1));
    cJSON_Delete(back);

    // latest ignores leftovers of a crash and unrelated names
    const char *junk[] = {"checkpoint-90.tmp", "checkpoint-abc", "checkpoint-", "checkpoint-70.old"};
    for (int i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "%s/%s", out, junk[i]);
        assert_int_equal(ftk_mkdirs(path, err), 0);
    }
    snprintf(path, sizeof path, "%s/checkpoint-99", out);  // a file, not a dir
    assert_int_equal(ftk_write_file_atomic(path, "x", 1, err), 0);
    assert_int_equal(checkpoint_latest(out, ckpt, sizeof ckpt, &step, err), 0);
    assert_int_equal(step, 50);
    snprintf(path, sizeof path, "%s/checkpoint-50", out);
    assert_string_equal(ckpt, path);

    // saving step 40 again (a run resumed from an earlier checkpoint) replaces it; a stale
    // checkpoint-40.tmp from a crash is cleared first; the limit keeps the one just saved
    snprintf(path, sizeof path, "%s/checkpoint-40.tmp/half-written", out);
    assert_int_equal(ftk_mkdirs(path, err), 0);
    opt.step = ts.global_step = 40;
    params[0] = 44.0f;
    assert_int_equal(checkpoint_save(out, &opt, &ts, NULL, write_params, &fa, 1, err), 0);
    snprintf(path, sizeof path, "%s/checkpoint-40/params.bin", out);
    char *data;
    size_t len;
    assert_int_equal(ftk_read_file(path, &data, &len, err), 0);
    assert_true(((float *)data)[0] == 44.0f);
    free(data);
    snprintf(path, sizeof path, "%s/checkpoint-40/training_args.json", out);
    assert_false(ftk_file_exists(path));  // not given this time: the old dir was replaced, not merged
    snprintf(path, sizeof path, "%s/checkpoint-50", out);
    assert_false(ftk_file_exists(path));  // limit 1, and 40 is the one just written
    snprintf(path, sizeof path, "%s/checkpoint-40.tmp", out);
    assert_false(ftk_file_exists(path));

    // a failing adapter writer: error passed through, no checkpoint-60 and no .tmp left
    opt.step = ts.global_step = 60;
    assert_int_not_equal(checkpoint_save(out, &opt, &ts, NULL, fail_write, NULL, 0, err), 0);
    assert_non_null(strstr(err, "on purpose"));
    snprintf(path, sizeof path, "%s/checkpoint-60", out);
    assert_false(ftk_file_exists(path));
    snprintf(path, sizeof path, "%s/checkpoint-60.tmp", out);
    assert_false(ftk_file_exists(path));
    // optimizer and trainer state must agree on the step
    ts.global_step = 61;
    assert_int_not_equal(checkpoint_save(out, &opt, &ts, NULL, NULL, NULL, 0, err), 0);
    assert_non_null(strstr(err, "step 60"));

    cJSON_Delete(args);
    adamw_free(&opt);
    test_rmtree(dir);
}

static int count_lines(const char *path) {
    char *data, err[FTK_ERR_LEN];
    size_t len;
    if (ftk_read_file(path, &data, &len, err)) return -1;
    int k = 0;
    for (size_t i = 0; i < len; i++) k += data[i] == '\n';
    free(data);
    return k;
}

// Writes the log of steps [from, to] as a run would: a train line every step, eval every 5.
static void log_steps(MetricsLog *ml, int from, int to) {
    char err[FTK_ERR_LEN];
    for (int s = from; s <= to; s++) {
        assert_int_equal(metrics_log_train(ml, s, s / 10.0, 3.0 / s, 1e-4 * s, 0.5 + s, 1234.5, err), 0);
        if (s % 5 == 0) assert_int_equal(metrics_log_eval(ml, s, 2.0 / s, err), 0);
    }
}

static void test_metrics_lines_and_resume(void **state) {
    (void)state;
    const char *dir = test_tmpdir("metrics");
    char path[600], err[FTK_ERR_LEN];
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    MetricsLog ml;
    assert_int_equal(metrics_open(&ml, path, -1, err), 0);
    log_steps(&ml, 1, 10);
    metrics_close(&ml);
    char *straight;
    size_t straight_len;
    assert_int_equal(ftk_read_file(path, &straight, &straight_len, err), 0);
    assert_int_equal(count_lines(path), 12);

    // every line parses back with the values written
    char *line = straight;
    for (int k = 0; k < 12; k++) {
        char *nl = strchr(line, '\n');
        assert_non_null(nl);
        cJSON *o = cJSON_ParseWithLength(line, (size_t)(nl - line));
        assert_non_null(o);
        double s = cJSON_GetObjectItem(o, "step")->valuedouble;
        const cJSON *eval = cJSON_GetObjectItem(o, "eval_loss");
        if (eval) {
            assert_true(fabs(eval->valuedouble - 2.0 / s) < 1e-8 * (2.0 / s));
            assert_true(fabs(cJSON_GetObjectItem(o, "eval_ppl")->valuedouble - exp(2.0 / s)) < 1e-7 * exp(2.0 / s));
        } else {
            assert_true(cJSON_GetObjectItem(o, "loss")->valuedouble == json_round9(3.0 / s));
            assert_true(fabs(cJSON_GetObjectItem(o, "lr")->valuedouble - 1e-4 * s) < 1e-12);
            assert_true(cJSON_GetObjectItem(o, "grad_norm")->valuedouble == 0.5 + s);
            assert_true(cJSON_GetObjectItem(o, "epoch")->valuedouble == json_round9(s / 10.0));
            assert_true(cJSON_GetObjectItem(o, "tokens_per_sec")->valuedouble == 1234.5);
        }
        cJSON_Delete(o);
        line = nl + 1;
    }
    // 9 significant digits: short in the file, still the float exactly
    assert_true((float)json_round9((double)0.1f) == 0.1f);
    assert_true(json_round9(1.0 / 3.0) == 0.333333333);

    // a run that crashed after step 8 with a torn line, resumed from checkpoint-5
    assert_int_equal(metrics_open(&ml, path, -1, err), 0);
    log_steps(&ml, 1, 8);
    assert_int_equal(fputs("{\"step\":9,\"lo", ml.f) >= 0, 1);
    metrics_close(&ml);
    assert_int_equal(metrics_open(&ml, path, 5, err), 0);
    assert_int_equal(count_lines(path), 6);  // steps 1..5 and the eval at 5
    log_steps(&ml, 6, 10);
    metrics_close(&ml);
    char *resumed;
    size_t resumed_len;
    assert_int_equal(ftk_read_file(path, &resumed, &resumed_len, err), 0);
    assert_int_equal(resumed_len, straight_len);
    assert_memory_equal(resumed, straight, straight_len);
    free(resumed);
    free(straight);

    // resume with no file yet: starts one
    snprintf(path, sizeof path, "%s/fresh.jsonl", dir);
    assert_int_equal(metrics_open(&ml, path, 100, err), 0);
    log_steps(&ml, 101, 101);
    metrics_close(&ml);
    assert_int_equal(count_lines(path), 1);
    test_rmtree(dir);
}

static void test_progress_line(void **state) {
    (void)state;
    char buf[128], hms[32];
    progress_hms(hms, sizeof hms, 3723.4);
    assert_string_equal(hms, "1:02:03");
    progress_hms(hms, sizeof hms, 59.6);
    assert_string_equal(hms, "0:01:00");
    progress_hms(hms, sizeof hms, 100 * 3600.0);
    assert_string_equal(hms, "100:00:00");
    progress_hms(hms, sizeof hms, -1);
    assert_string_equal(hms, "-:--:--");
    progress_hms(hms, sizeof hms, NAN);
    assert_string_equal(hms, "-:--:--");
    assert_true(progress_eta(10.0, 5, 20) == 40.0);
    assert_true(progress_eta(10.0, 0, 20) < 0);
    size_t k = progress_format(buf, sizeof buf, 12, 100, 2.34567, 1e-4, 1234.4, 83);
    assert_string_equal(buf, "step 12/100 | loss 2.3457 | lr 1.00e-04 | 1234 tok/s | eta 0:01:23");
    assert_int_equal(k, strlen(buf));
    k = progress_format(buf, 10, 12, 100, 2.34567, 1e-4, 1234.4, 83);  // truncated, terminated
    assert_string_equal(buf, "step 12/1");
    assert_int_equal(k, 9);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_optimizer_roundtrip_bitexact), cmocka_unit_test(test_resume_bit_identical),
        cmocka_unit_test(test_trainer_state_roundtrip),      cmocka_unit_test(test_checkpoint_layout_and_limit),
        cmocka_unit_test(test_metrics_lines_and_resume),     cmocka_unit_test(test_progress_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
