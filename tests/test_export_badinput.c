// test_export_badinput.c — merge/export under bad input and failing disks:
//  - adapters made for another model (shape mismatch names the tensor; another architecture), unknown
//    target modules (PEFT config and GGUF tensor names), malformed GGUF adapters (wrong general.type /
//    adapter.type, half a pair, transposed lora_a, mixed ranks, layer out of range, NaN, truncated);
//  - outputs: a read-only directory (run with CAP_DAC_OVERRIDE dropped when root), a path under /proc,
//    a full disk (RLIMIT_FSIZE in a child process: writes fail with EFBIG) and a failed probe all give a
//    clear error and leave nothing behind (no output, no .partial, no .tmp); an existing output is
//    refused without overwrite and replaced whole with it; stale partial outputs are handled;
//  - the CLI's usage errors (exit 2) and runtime errors (exit 1).
#include "tests/testutil.h"

#include <dirent.h>
#include <errno.h>
#include <linux/capability.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lora/adapter.h"
#include "lora/adapter_load.h"
#include "lora/export_lora_gguf.h"
#include "lora/export_model.h"
#include "lora/merge.h"
#include "model/common.h"
#include "model/gguf.h"
#include "model/model.h"

static void load(Model *m, const char *rel) {
    char err[FTK_ERR_LEN];
    int rc = model_load(m, shared_path(rel), NULL, err);
    if (rc) fprintf(stderr, "%s\n", err);
    assert_int_equal(rc, 0);
}

// Number of entries in dir (without . and ..).
static int count_entries(const char *dir) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

// ---------------------------------------------------------------------------------------------
// Adapters for another model / unknown modules / malformed GGUF adapters

static void expect_load_error(const Model *m, const char *path, const char *must_contain) {
    Adapters a;
    char err[FTK_ERR_LEN] = "";
    int rc = adapter_load_any(&a, m, path, err);
    if (rc == 0) adapters_free(&a);
    assert_int_not_equal(rc, 0);
    if (!strstr(err, must_contain)) fprintf(stderr, "error was: %s\n(expected to contain: %s)\n", err, must_contain);
    assert_non_null(strstr(err, must_contain));
}

static void test_adapter_for_another_model(void **state) {
    (void)state;
    Model st, g;
    load(&st, "models/stories260K/stories260K.bin");   // dim 64 like tiny-llama, but 4 kv heads (kv_dim 32)
    load(&g, "models/tiny-gpt2-hf");
    expect_load_error(&st, shared_path("models/tiny-llama-hf/peft-lora"), "self_attn.v_proj.lora_B.weight");
    expect_load_error(&st, shared_path("models/tiny-llama-hf/peft-lora/adapter.gguf"), "blk.0.attn_v.weight.lora_b");
    expect_load_error(&st, shared_path("models/tiny-llama-hf/peft-lora/adapter.gguf"), "expected [4, 32]");
    expect_load_error(&g, shared_path("models/tiny-llama-hf/peft-lora/adapter.gguf"),
                      "adapter is for architecture 'llama' but the model is 'gpt2'");
    expect_load_error(&g, shared_path("models/tiny-llama-hf/peft-lora"), "q_proj.lora_A.weight");
    expect_load_error(&g, "/nonexistent/adapter", "no such adapter");
    expect_load_error(&g, shared_path("models/tiny-gpt2-hf/config.json"), "not an adapter");
    // Adapters of another geometry cannot be combined or merged into this model.
    Model tl;
    load(&tl, "models/tiny-llama-hf");
    Adapters a;
    char err[FTK_ERR_LEN];
    assert_int_equal(adapter_load_any(&a, &tl, shared_path("models/tiny-llama-hf/peft-lora"), err), 0);
    const Adapters *ads[1] = {&a};
    const double w[1] = {1.0};
    CombinedLora c;
    assert_int_not_equal(lora_combine(&c, ads, w, 1, COMBINE_CAT, &st.cfg, err), 0);
    assert_non_null(strstr(err, "another shape"));
    assert_int_not_equal(lora_merge_adapters(&st, &a, err), 0);
    // A NaN in an adapter is caught when merging (PEFT's safe_merge).
    a.params[3] = NAN;
    assert_int_not_equal(lora_merge_adapters(&tl, &a, err), 0);
    assert_non_null(strstr(err, "not finite"));
    adapters_free(&a);
    model_free(&tl);
    model_free(&st);
    model_free(&g);
}

typedef struct {
    const char *name;
    uint64_t ne0, ne1;
} TSpec;

// A GGUF adapter with the given header values (NULL = key absent) and tensors filled with `fill`.
static void write_adapter(const char *path, const char *type, const char *atype, const char *arch, const TSpec *ts,
                          int n, float fill) {
    char err[FTK_ERR_LEN];
    GgufWriter *w;
    assert_int_equal(gguf_writer_create(&w, err), 0);
    if (arch) assert_int_equal(gguf_writer_set_str(w, "general.architecture", arch, err), 0);
    if (type) assert_int_equal(gguf_writer_set_str(w, "general.type", type, err), 0);
    if (atype) assert_int_equal(gguf_writer_set_str(w, "adapter.type", atype, err), 0);
    assert_int_equal(gguf_writer_set_f32(w, "adapter.lora.alpha", 8.0f, err), 0);
    float *bufs[16];
    for (int i = 0; i < n; i++) {
        size_t k = (size_t)(ts[i].ne0 * ts[i].ne1);
        bufs[i] = malloc(k * sizeof(float));
        for (size_t j = 0; j < k; j++) bufs[i][j] = fill;
        const uint64_t ne[2] = {ts[i].ne0, ts[i].ne1};
        assert_int_equal(gguf_writer_add_tensor_f32(w, ts[i].name, 2, ne, bufs[i], GGML_TYPE_F32, err), 0);
    }
    assert_int_equal(gguf_writer_write(w, path, err), 0);
    gguf_writer_free(w);
    for (int i = 0; i < n; i++) free(bufs[i]);
}

static void test_bad_gguf_adapters(void **state) {
    (void)state;
    char d[512], p[1024];
    snprintf(d, sizeof d, "%s", test_tmpdir("bad-lora"));
    snprintf(p, sizeof p, "%s/a.gguf", d);
    Model m;
    load(&m, "models/tiny-llama-hf");   // dim 64, q 64, kv 16, ffn 160, 3 layers
    const TSpec good[2] = {{"blk.0.attn_q.weight.lora_a", 64, 4}, {"blk.0.attn_q.weight.lora_b", 4, 64}};
    // The well-formed file loads (the cases below differ from it in one thing each).
    write_adapter(p, "adapter", "lora", "llama", good, 2, 0.01f);
    Adapters a;
    char err[FTK_ERR_LEN];
    assert_int_equal(adapter_load_any(&a, &m, p, err), 0);
    assert_string_equal(a.cfg.target_modules, "q_proj");
    assert_string_equal(a.cfg.layers_to_transform, "0");
    adapters_free(&a);

    write_adapter(p, "model", "lora", "llama", good, 2, 0.01f);
    expect_load_error(&m, p, "general.type is 'model', expected 'adapter'");
    write_adapter(p, NULL, "lora", "llama", good, 2, 0.01f);
    expect_load_error(&m, p, "not a GGUF adapter");
    write_adapter(p, "adapter", "alora", "llama", good, 2, 0.01f);
    expect_load_error(&m, p, "adapter.type is 'alora'");
    write_adapter(p, "adapter", NULL, "llama", good, 2, 0.01f);
    expect_load_error(&m, p, "missing key adapter.type");
    write_adapter(p, "adapter", "lora", "llama", good, 1, 0.01f);
    expect_load_error(&m, p, "'blk.0.attn_q.weight.lora_a' has no matching lora_b");
    const TSpec transposed[2] = {{"blk.0.attn_q.weight.lora_a", 4, 64}, {"blk.0.attn_q.weight.lora_b", 4, 64}};
    write_adapter(p, "adapter", "lora", "llama", transposed, 2, 0.01f);
    expect_load_error(&m, p, "lora_a is transposed");
    const TSpec wrong_b[2] = {{"blk.0.attn_q.weight.lora_a", 64, 4}, {"blk.0.attn_q.weight.lora_b", 4, 48}};
    write_adapter(p, "adapter", "lora", "llama", wrong_b, 2, 0.01f);
    expect_load_error(&m, p, "'blk.0.attn_q.weight.lora_b' has GGUF shape [4, 48]");
    const TSpec ranks[4] = {{"blk.0.attn_q.weight.lora_a", 64, 4}, {"blk.0.attn_q.weight.lora_b", 4, 64},
                            {"blk.0.attn_v.weight.lora_a", 64, 8}, {"blk.0.attn_v.weight.lora_b", 8, 16}};
    write_adapter(p, "adapter", "lora", "llama", ranks, 4, 0.01f);
    expect_load_error(&m, p, "has rank 8 but earlier modules rank 4");
    const TSpec layer[2] = {{"blk.7.attn_q.weight.lora_a", 64, 4}, {"blk.7.attn_q.weight.lora_b", 4, 64}};
    write_adapter(p, "adapter", "lora", "llama", layer, 2, 0.01f);
    expect_load_error(&m, p, "for layer 7 but the model has 3 layers");
    // Unknown target modules.
    const TSpec unknown[2] = {{"blk.0.attn_foo.weight.lora_a", 64, 4}, {"blk.0.attn_foo.weight.lora_b", 4, 64}};
    write_adapter(p, "adapter", "lora", "llama", unknown, 2, 0.01f);
    expect_load_error(&m, p, "'attn_foo' is not a llama module");
    const TSpec emb[2] = {{"token_embd.weight.lora_a", 64, 4}, {"token_embd.weight.lora_b", 4, 512}};
    write_adapter(p, "adapter", "lora", "llama", emb, 2, 0.01f);
    expect_load_error(&m, p, "'token_embd.weight.lora_a' is not a LoRA tensor of a block linear");
    const TSpec uneven[4] = {{"blk.0.attn_q.weight.lora_a", 64, 4}, {"blk.0.attn_q.weight.lora_b", 4, 64},
                             {"blk.1.attn_v.weight.lora_a", 64, 4}, {"blk.1.attn_v.weight.lora_b", 4, 16}};
    write_adapter(p, "adapter", "lora", "llama", uneven, 4, 0.01f);
    expect_load_error(&m, p, "layer 0 lacks blk.0.attn_v.weight");
    write_adapter(p, "adapter", "lora", "llama", good, 2, NAN);
    expect_load_error(&m, p, "NaN or Inf");
    write_adapter(p, "adapter", "lora", "llama", good, 0, 0.0f);
    expect_load_error(&m, p, "no LoRA tensors");
    // Truncated file: the container reader names the file.
    write_adapter(p, "adapter", "lora", "llama", good, 2, 0.01f);
    assert_int_equal(truncate(p, 600), 0);
    expect_load_error(&m, p, p);

    // PEFT config with an unknown target module.
    char pd[1024], cfgp[1100];
    snprintf(pd, sizeof pd, "%s/peft", d);
    assert_int_equal(ftk_mkdirs(pd, err), 0);
    snprintf(cfgp, sizeof cfgp, "%s/adapter_config.json", pd);
    const char *cfg = "{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8, \"target_modules\": [\"foo_proj\"]}\n";
    assert_int_equal(ftk_write_file_atomic(cfgp, cfg, strlen(cfg), err), 0);
    snprintf(cfgp, sizeof cfgp, "%s/adapter_model.safetensors", pd);
    const char st[16] = {8, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' ', ' ', ' ', ' ', ' '};
    assert_int_equal(ftk_write_file_atomic(cfgp, st, 16, err), 0);
    expect_load_error(&m, pd, "foo_proj");
    model_free(&m);
    test_rmtree(d);
}

// ---------------------------------------------------------------------------------------------
// Failing outputs

// Drops the capabilities that let root ignore file permissions (effective set only).
static void drop_dac_caps(void) {
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    if (syscall(SYS_capget, &h, data) != 0) return;
    const int caps[] = {CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER};
    for (size_t i = 0; i < sizeof caps / sizeof *caps; i++) data[caps[i] / 32].effective &= ~(1u << (caps[i] % 32));
    if (syscall(SYS_capset, &h, data) != 0) { /* not permitted: the writability probe below decides */ }
}

typedef struct {
    const Model *m;
    const char *out;
    ExportFormat fmt;
    int adapter;   // write a GGUF adapter instead of the model
    const Adapters *a;
} WriteJob;

// Runs one write in a child process (limits apply to it alone). Returns the child's exit status
// (0 = the write succeeded, 1 = it failed) and its error message in msg.
static int run_write_in_child(const WriteJob *job, int read_only, rlim_t fsize, char *msg, size_t msg_n) {
    int pipefd[2];
    assert_int_equal(pipe(pipefd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(pipefd[0]);
        if (read_only) drop_dac_caps();
        if (fsize) {
            signal(SIGXFSZ, SIG_IGN);   // a write past the limit then fails with EFBIG
            struct rlimit rl = {fsize, fsize};
            setrlimit(RLIMIT_FSIZE, &rl);
        }
        char err[FTK_ERR_LEN] = "";
        int rc;
        if (job->adapter) {
            rc = lora_gguf_save(job->a, job->out, EXPORT_F32, NULL, NULL, err);
        } else {
            ModelExport x = {0};
            x.format = job->fmt;
            x.dtype = EXPORT_F32;
            ExportResult res;
            rc = export_model(job->m, job->out, &x, &res, err);
        }
        ssize_t k = write(pipefd[1], err, strlen(err));
        (void)k;
        close(pipefd[1]);
        _exit(rc ? 1 : 0);
    }
    close(pipefd[1]);
    ssize_t got = read(pipefd[0], msg, msg_n - 1);
    msg[got > 0 ? got : 0] = 0;
    close(pipefd[0]);
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 99;
}

// Whether a process with dropped DAC capabilities can create files in dir.
static int writable_without_caps(const char *dir) {
    pid_t pid = fork();
    if (pid == 0) {
        drop_dac_caps();
        char p[1100];
        snprintf(p, sizeof p, "%s/probe", dir);
        FILE *f = fopen(p, "w");
        if (f) { fclose(f); unlink(p); _exit(1); }
        _exit(0);
    }
    int st;
    waitpid(pid, &st, 0);
    return !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void test_read_only_and_proc_outputs(void **state) {
    (void)state;
    char d[512], ro[1024], out[1200], msg[FTK_ERR_LEN];
    snprintf(d, sizeof d, "%s", test_tmpdir("ro"));
    snprintf(ro, sizeof ro, "%s/ro", d);
    assert_int_equal(mkdir(ro, 0555), 0);
    Model m;
    load(&m, "models/tiny-llama-hf");
    Adapters a;
    char err[FTK_ERR_LEN];
    assert_int_equal(adapter_load_any(&a, &m, shared_path("models/tiny-llama-hf/peft-lora"), err), 0);
    if (writable_without_caps(ro)) {
        print_message("  (skipping the read-only dir cases: this process cannot drop CAP_DAC_OVERRIDE)\n");
    } else {
        WriteJob jobs[3] = {{&m, out, EXPORT_FORMAT_HF, 0, NULL}, {&m, out, EXPORT_FORMAT_GGUF, 0, NULL},
                            {&m, out, EXPORT_FORMAT_GGUF, 1, &a}};
        const char *names[3] = {"hf", "m.gguf", "a.gguf"};
        for (int i = 0; i < 3; i++) {
            snprintf(out, sizeof out, "%s/%s", ro, names[i]);
            assert_int_equal(run_write_in_child(&jobs[i], 1, 0, msg, sizeof msg), 1);
            assert_non_null(strstr(msg, ro));                       // names the place
            assert_non_null(strstr(msg, "Permission denied"));      // and the reason
            assert_int_equal(count_entries(ro), 0);                 // nothing left
        }
    }
    chmod(ro, 0755);
    // A path under /proc (not writable by anyone).
    ModelExport x = {0};
    x.format = EXPORT_FORMAT_GGUF;
    ExportResult res;
    assert_int_not_equal(export_model(&m, "/proc/ftk-test-no-such/out.gguf", &x, &res, err), 0);
    assert_non_null(strstr(err, "/proc/ftk-test-no-such"));
    assert_int_not_equal(lora_gguf_save(&a, "/proc/self/ftk-adapter.gguf", EXPORT_F32, NULL, NULL, err), 0);
    assert_non_null(strstr(err, "/proc/self/ftk-adapter.gguf"));
    adapters_free(&a);
    model_free(&m);
    test_rmtree(d);
}

static void test_full_disk(void **state) {
    (void)state;
    char d[512], out[1200], msg[FTK_ERR_LEN];
    snprintf(d, sizeof d, "%s", test_tmpdir("full"));
    Model m;
    load(&m, "models/stories260K/stories260K.bin");   // ~1 MB of weights
    Adapters a;
    char err[FTK_ERR_LEN];
    AdapterConfig c;
    adapter_config_default(&c);
    snprintf(c.target_modules, sizeof c.target_modules, "all-linear");
    c.r = 64;   // ~1.5 MB adapter
    assert_int_equal(adapters_alloc(&a, &c, &m.cfg, err), 0);
    // HF dir, GGUF model, GGUF adapter: each file over the 450 kB limit fails part-way through.
    WriteJob jobs[3] = {{&m, out, EXPORT_FORMAT_HF, 0, NULL}, {&m, out, EXPORT_FORMAT_GGUF, 0, NULL},
                        {&m, out, EXPORT_FORMAT_GGUF, 1, &a}};
    const char *names[3] = {"hf", "m.gguf", "a.gguf"};
    for (int i = 0; i < 3; i++) {
        snprintf(out, sizeof out, "%s/%s", d, names[i]);
        assert_int_equal(run_write_in_child(&jobs[i], 0, 450000, msg, sizeof msg), 1);
        if (!strstr(msg, "File too large")) fprintf(stderr, "message: %s\n", msg);
        assert_non_null(strstr(msg, "File too large"));
        assert_non_null(strstr(msg, d));
        assert_int_equal(count_entries(d), 0);   // no output, no .partial, no .tmp
    }
    // Without the limit the same writes succeed (the limit was the only cause).
    for (int i = 0; i < 3; i++) {
        snprintf(out, sizeof out, "%s/%s", d, names[i]);
        assert_int_equal(run_write_in_child(&jobs[i], 0, 0, msg, sizeof msg), 0);
    }
    assert_int_equal(count_entries(d), 3);
    adapters_free(&a);
    model_free(&m);
    test_rmtree(d);
}

static void test_existing_and_stale_outputs(void **state) {
    (void)state;
    char d[512], out[1024], p[1200], err[FTK_ERR_LEN];
    snprintf(d, sizeof d, "%s", test_tmpdir("exist"));
    Model m;
    load(&m, "models/tiny-llama-hf");
    ModelExport x = {0};
    x.format = EXPORT_FORMAT_HF;
    ExportResult res;
    // An existing directory with a file of its own: refused and untouched.
    snprintf(out, sizeof out, "%s/hf", d);
    assert_int_equal(ftk_mkdirs(out, err), 0);
    snprintf(p, sizeof p, "%s/keep.txt", out);
    assert_int_equal(ftk_write_file_atomic(p, "x", 1, err), 0);
    assert_int_not_equal(export_model(&m, out, &x, &res, err), 0);
    assert_non_null(strstr(err, "already exists (pass --overwrite"));
    assert_true(ftk_file_exists(p));
    assert_int_equal(count_entries(out), 1);
    assert_int_equal(count_entries(d), 1);
    // With overwrite the new output replaces it whole (the old file is gone, no .old left).
    x.overwrite = 1;
    assert_int_equal(export_model(&m, out, &x, &res, err), 0);
    assert_false(ftk_file_exists(p));
    snprintf(p, sizeof p, "%s/model.safetensors", out);
    assert_true(ftk_file_exists(p));
    assert_int_equal(count_entries(d), 1);
    // A file output over an existing file, and a file where a directory is asked for.
    x.format = EXPORT_FORMAT_GGUF;
    x.overwrite = 0;
    snprintf(p, sizeof p, "%s/m.gguf", d);
    assert_int_equal(ftk_write_file_atomic(p, "old", 3, err), 0);
    assert_int_not_equal(export_model(&m, p, &x, &res, err), 0);
    assert_non_null(strstr(err, "already exists"));
    x.overwrite = 1;
    assert_int_equal(export_model(&m, p, &x, &res, err), 0);
    struct stat sb;
    assert_int_equal(stat(p, &sb), 0);
    assert_true(sb.st_size > 100000);
    x.format = EXPORT_FORMAT_HF;
    assert_int_not_equal(export_model(&m, p, &x, &res, err), 0);
    assert_non_null(strstr(err, "not a directory"));
    // A stale partial dir left by a crashed ftk (marker present) is cleaned; anything else is refused.
    x.overwrite = 0;
    snprintf(out, sizeof out, "%s/hf2", d);
    snprintf(p, sizeof p, "%s.partial", out);
    assert_int_equal(ftk_mkdirs(p, err), 0);
    snprintf(p, sizeof p, "%s.partial/.ftk-partial", out);
    assert_int_equal(ftk_write_file_atomic(p, "incomplete", 10, err), 0);
    assert_int_equal(export_model(&m, out, &x, &res, err), 0);
    snprintf(p, sizeof p, "%s.partial", out);
    assert_false(ftk_file_exists(p));
    snprintf(out, sizeof out, "%s/hf3", d);
    snprintf(p, sizeof p, "%s.partial", out);
    assert_int_equal(ftk_mkdirs(p, err), 0);
    assert_int_not_equal(export_model(&m, out, &x, &res, err), 0);
    assert_non_null(strstr(err, "was not left by ftk"));
    assert_true(ftk_is_dir(p));
    assert_false(ftk_file_exists(out));
    model_free(&m);
    test_rmtree(d);
}

static void test_probe_failure_leaves_nothing(void **state) {
    (void)state;
    char d[512], out[1024], err[FTK_ERR_LEN];
    snprintf(d, sizeof d, "%s", test_tmpdir("probe"));
    Model m;
    load(&m, "models/tiny-llama-hf");
    int ids[4] = {1, 403, 407, 261};
    float *ref = NULL;
    assert_int_equal(model_logits_all(&m, NULL, ids, 4, &ref, err), 0);
    ref[7] += 0.5f;   // a reference the written model cannot match
    for (int f = 0; f < 2; f++) {
        ModelExport x = {0};
        x.format = f ? EXPORT_FORMAT_GGUF : EXPORT_FORMAT_HF;
        x.probe_ids = ids;
        x.probe_n = 4;
        x.probe_ref = ref;
        ExportResult res;
        snprintf(out, sizeof out, "%s/%s", d, f ? "m.gguf" : "hf");
        assert_int_not_equal(export_model(&m, out, &x, &res, err), 0);
        assert_non_null(strstr(err, "probe failed"));
        assert_true(fabs(res.max_diff - 0.5) < 1e-6);
        assert_int_equal(count_entries(d), 0);
    }
    free(ref);
    model_free(&m);
    test_rmtree(d);
}

// ---------------------------------------------------------------------------------------------
// CLI

static void expect_cli(const char *args, int want_rc, const char *must_contain) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s %s", ftk_bin(), args);
    char *o = NULL;
    int rc = run_cmd(cmd, &o);
    if (rc != want_rc || !strstr(o, must_contain))
        fprintf(stderr, "command: %s\nexit %d (want %d), output:\n%s\n(expected to contain: %s)\n", cmd, rc, want_rc, o,
                must_contain);
    assert_int_equal(rc, want_rc);
    assert_non_null(strstr(o, must_contain));
    free(o);
}

static void test_cli_errors(void **state) {
    (void)state;
    char d[512], a[4096];
    snprintf(d, sizeof d, "%s", test_tmpdir("cli-bad"));
    const char *tl = shared_path("models/tiny-llama-hf");
    const char *st = shared_path("models/stories260K/stories260K.bin");
    const char *lora = shared_path("models/tiny-llama-hf/peft-lora");
    // usage errors: exit 2
    snprintf(a, sizeof a, "merge --model %s --adapter %s", tl, lora);
    expect_cli(a, 2, "--output is required");
    snprintf(a, sizeof a, "merge --model %s --adapter %s --adapter %s --weights 0.5 --output %s/x", tl, lora, lora, d);
    expect_cli(a, 2, "--weights has 1 values for 2 adapters");
    snprintf(a, sizeof a, "merge --model %s --adapter %s --output %s/x --dtype q8_0", tl, lora, d);
    expect_cli(a, 2, "q8_0 is a GGUF type");
    snprintf(a, sizeof a, "merge --model %s --adapter %s --output %s/x --format onnx", tl, lora, d);
    expect_cli(a, 2, "unknown format 'onnx'");
    snprintf(a, sizeof a, "merge --model %s --adapter %s --output %s/x --combination ties", tl, lora, d);
    expect_cli(a, 2, "unknown combination 'ties'");
    snprintf(a, sizeof a, "convert --model %s --output %s/x --max-shard-size 5XB", tl, d);
    expect_cli(a, 2, "bad size unit");
    snprintf(a, sizeof a, "export-adapter --model %s --adapter %s --output %s/a.gguf --dtype q4_0", tl, lora, d);
    expect_cli(a, 2, "unknown dtype 'q4_0'");
    // runtime errors: exit 1, nothing written
    snprintf(a, sizeof a, "merge --model %s --adapter %s --output %s/x.gguf", st, lora, d);
    expect_cli(a, 1, "v_proj.lora_B.weight has shape [16, 4]");
    snprintf(a, sizeof a, "export-adapter --model %s --adapter %s/adapter.gguf --output %s/a.gguf", st, lora, d);
    expect_cli(a, 1, "blk.0.attn_v.weight.lora_b");
    snprintf(a, sizeof a, "export-adapter --model %s --adapter %s --output %s/a.gguf", tl,
             shared_path("models/tiny-llama-hf/peft-prompt"), d);
    expect_cli(a, 1, "soft prompt");
    snprintf(a, sizeof a, "merge --model %s --adapter %s --output %s/hf --dtype f16 --probe-tolerance 1e-12", tl, lora, d);
    expect_cli(a, 1, "probe failed");
    assert_int_equal(count_entries(d), 0);
    // ulimit -f: the write fails with EFBIG (SIGXFSZ is ignored by ftk), is reported and cleaned up.
    char cmd[4600], *o = NULL;
    snprintf(cmd, sizeof cmd, "ulimit -f 300; %s convert --model %s --output %s/full.gguf", ftk_bin(), st, d);
    assert_int_equal(run_cmd(cmd, &o), 1);
    assert_non_null(strstr(o, "full.gguf failed, nothing was left behind"));
    assert_non_null(strstr(o, "File too large"));
    free(o);
    assert_int_equal(count_entries(d), 0);
    snprintf(a, sizeof a, "convert --model %s --output %s", tl, d);   // the temp dir itself exists
    expect_cli(a, 1, "already exists");
    test_rmtree(d);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_adapter_for_another_model),
        cmocka_unit_test(test_bad_gguf_adapters),
        cmocka_unit_test(test_read_only_and_proc_outputs),
        cmocka_unit_test(test_full_disk),
        cmocka_unit_test(test_existing_and_stale_outputs),
        cmocka_unit_test(test_probe_failure_leaves_nothing),
        cmocka_unit_test(test_cli_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
