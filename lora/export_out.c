// export_out.c — output dtype, staged outputs and the logits probe (lora/export_out.h).
#include "lora/export_out.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model/common.h"
#include "model/tokenizer.h"

#define PARTIAL_MARKER ".ftk-partial"

int export_dtype_parse(const char *s, ExportDtype *out, char *err) {
    if (!s) return ftk_err(err, "no dtype given");
    if (!strcasecmp(s, "f32") || !strcasecmp(s, "float32")) *out = EXPORT_F32;
    else if (!strcasecmp(s, "f16") || !strcasecmp(s, "float16")) *out = EXPORT_F16;
    else if (!strcasecmp(s, "bf16") || !strcasecmp(s, "bfloat16")) *out = EXPORT_BF16;
    else if (!strcasecmp(s, "q8_0")) *out = EXPORT_Q8_0;
    else return ftk_err(err, "unknown dtype '%s' (f32, f16, bf16, q8_0)", s);
    return 0;
}

const char *export_dtype_name(ExportDtype d) {
    switch (d) {
    case EXPORT_F16: return "f16";
    case EXPORT_BF16: return "bf16";
    case EXPORT_Q8_0: return "q8_0";
    default: return "f32";
    }
}

ExportDtype export_dtype_default(const Model *m, int for_gguf) {
    if (!strcmp(m->src_dtype, "F16")) return EXPORT_F16;
    if (!strcmp(m->src_dtype, "BF16")) return EXPORT_BF16;
    if (!strcmp(m->src_dtype, "Q8_0") && for_gguf) return EXPORT_Q8_0;
    return EXPORT_F32;
}

// ---------------------------------------------------------------------------------------------
// Staged outputs

int ftk_remove_tree(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return errno == ENOENT ? 0 : -1;
    if (!S_ISDIR(st.st_mode)) return unlink(path);
    DIR *d = opendir(path);
    if (!d) return -1;
    int rc = 0;
    struct dirent *e;
    char child[4096];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        int k = snprintf(child, sizeof child, "%s/%s", path, e->d_name);
        if (k < 0 || (size_t)k >= sizeof child || ftk_remove_tree(child) != 0) rc = -1;
    }
    closedir(d);
    if (rmdir(path) != 0) rc = -1;
    return rc;
}

static int path_exists(const char *p) {
    struct stat st;
    return lstat(p, &st) == 0;
}

// mkdir -p of the directory part of path (nothing when it has none).
static int make_parent(const char *path, char *err) {
    char parent[4096];
    snprintf(parent, sizeof parent, "%s", path);
    size_t n = strlen(parent);
    while (n > 1 && parent[n - 1] == '/') parent[--n] = 0;   // "out/" -> "out"
    char *slash = strrchr(parent, '/');
    if (!slash) return 0;
    if (slash == parent) return 0;   // "/name": the root exists
    *slash = 0;
    if (ftk_is_dir(parent)) return 0;
    return ftk_mkdirs(parent, err);
}

// A stale stage from a crashed run: remove it if it is ours, else refuse to touch it. A killed
// single-file writer also leaves its own OUT.partial.tmp.
static int clear_stale_stage(const StagedOutput *s, char *err) {
    char tmp[4300];
    snprintf(tmp, sizeof tmp, "%s.tmp", s->stage);
    struct stat st;
    if (lstat(tmp, &st) == 0 && S_ISREG(st.st_mode) && unlink(tmp) != 0)
        return ftk_err(err, "%s: cannot remove the stale temporary file: %s", tmp, strerror(errno));
    if (lstat(s->stage, &st) != 0) return 0;
    if (S_ISDIR(st.st_mode)) {
        char marker[4300];
        snprintf(marker, sizeof marker, "%s/%s", s->stage, PARTIAL_MARKER);
        if (!ftk_file_exists(marker))
            return ftk_err(err, "%s: exists and was not left by ftk; remove it or choose another output", s->stage);
    }
    if (ftk_remove_tree(s->stage) != 0)
        return ftk_err(err, "%s: cannot remove the stale partial output: %s", s->stage, strerror(errno));
    return 0;
}

int staged_begin(StagedOutput *s, const char *path, int is_dir, int overwrite, char *err) {
    memset(s, 0, sizeof *s);
    size_t n = path ? strlen(path) : 0;
    while (n > 1 && path[n - 1] == '/') n--;
    if (n == 0) return ftk_err(err, "empty output path");
    if (n + 16 >= sizeof s->final_path) return ftk_err(err, "%s: output path too long", path);
    memcpy(s->final_path, path, n);
    s->final_path[n] = 0;
    snprintf(s->stage, sizeof s->stage, "%s.partial", s->final_path);
    s->is_dir = is_dir;
    s->overwrite = overwrite;
    struct stat st;
    if (lstat(s->final_path, &st) == 0) {
        if (!overwrite) return ftk_err(err, "%s: already exists (pass --overwrite to replace it)", s->final_path);
        if (is_dir && !S_ISDIR(st.st_mode))
            return ftk_err(err, "%s: exists and is not a directory; refusing to replace it with one", s->final_path);
        if (!is_dir && S_ISDIR(st.st_mode))
            return ftk_err(err, "%s: is a directory; refusing to replace it with a file", s->final_path);
    }
    if (make_parent(s->final_path, err) || clear_stale_stage(s, err)) return -1;
    if (is_dir) {
        if (mkdir(s->stage, 0755) != 0) return ftk_err(err, "%s: cannot create directory: %s", s->stage, strerror(errno));
        char marker[4300];
        snprintf(marker, sizeof marker, "%s/%s", s->stage, PARTIAL_MARKER);
        if (ftk_write_file_atomic(marker, "incomplete ftk output\n", 22, err)) {
            rmdir(s->stage);
            return -1;
        }
    }
    s->active = 1;
    return 0;
}

int staged_commit(StagedOutput *s, char *err) {
    if (!s->active) return ftk_err(err, "%s: nothing staged", s->final_path);
    char old[4300] = "";
    if (s->is_dir) {
        char marker[4300];
        snprintf(marker, sizeof marker, "%s/%s", s->stage, PARTIAL_MARKER);
        if (unlink(marker) != 0) return ftk_err(err, "%s: cannot remove marker: %s", marker, strerror(errno));
        if (path_exists(s->final_path)) {
            // rename() cannot replace a non-empty directory: move the old one aside first.
            snprintf(old, sizeof old, "%s.old", s->final_path);
            if (path_exists(old) && ftk_remove_tree(old) != 0)
                return ftk_err(err, "%s: cannot remove: %s", old, strerror(errno));
            if (rename(s->final_path, old) != 0)
                return ftk_err(err, "%s: cannot move the old output aside: %s", s->final_path, strerror(errno));
        }
    }
    if (rename(s->stage, s->final_path) != 0) {
        int e = errno;
        if (old[0]) rename(old, s->final_path);   // put the previous output back
        return ftk_err(err, "%s: cannot rename %s into place: %s", s->final_path, s->stage, strerror(e));
    }
    s->active = 0;
    if (old[0]) ftk_remove_tree(old);
    return 0;
}

void staged_abort(StagedOutput *s) {
    if (!s->active) return;
    ftk_remove_tree(s->stage);
    char tmp[4300];
    snprintf(tmp, sizeof tmp, "%s.tmp", s->stage);   // a single-file writer's own temp file
    unlink(tmp);
    s->active = 0;
}

// ---------------------------------------------------------------------------------------------
// Probe

int probe_tokens(const Model *m, const char *prompt, int **ids, int *n, char *err) {
    *ids = NULL;
    *n = 0;
    if (!m->tok) return ftk_err(err, "%s: no tokenizer for the probe prompt", m->path);
    if (tokenizer_encode(m->tok, prompt, -1, -1, ids, n, err)) return -1;
    if (*n == 0) {
        free(*ids);
        *ids = NULL;
        return ftk_err(err, "probe prompt \"%s\" encodes to no tokens", prompt);
    }
    if (*n > m->cfg.max_seq_len) *n = m->cfg.max_seq_len;
    return 0;
}

int probe_compare(const char *path, const int *ids, int n, const float *ref_logits, int vocab, double *max_diff,
                  double *max_ref, char *err) {
    Model out;
    char sub[FTK_ERR_LEN];
    if (model_load(&out, path, NULL, sub)) return ftk_err(err, "probe: reloading the output failed: %s", sub);
    int rc = 0;
    float *logits = NULL;
    if (out.cfg.vocab_size != vocab)
        rc = ftk_err(err, "probe: %s has a vocabulary of %d, the source %d", path, out.cfg.vocab_size, vocab);
    if (!rc && model_logits_all(&out, NULL, ids, n, &logits, sub)) rc = ftk_err(err, "probe: %s: %s", path, sub);
    if (!rc) {
        double md = 0.0, mr = 0.0;
        size_t total = (size_t)n * (size_t)vocab;
        for (size_t i = 0; i < total; i++) {
            double d = fabs((double)logits[i] - (double)ref_logits[i]);
            if (isnan(d)) { md = NAN; break; }   // a NaN logit fails every tolerance
            if (d > md) md = d;
            if (fabs((double)ref_logits[i]) > mr) mr = fabs((double)ref_logits[i]);
        }
        *max_diff = md;
        *max_ref = mr;
    }
    free(logits);
    model_free(&out);
    return rc;
}

double probe_tolerance(ExportDtype d, double max_ref) {
    const double scale = max_ref > 1.0 ? max_ref : 1.0;
    switch (d) {
    case EXPORT_F16: return 32.0 * ldexp(1.0, -11) * scale;
    case EXPORT_BF16: return 32.0 * ldexp(1.0, -8) * scale;
    case EXPORT_Q8_0: return 64.0 * ldexp(1.0, -8) * scale;
    default: return 1e-4 * scale;
    }
}
