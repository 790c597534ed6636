// metrics.c — see metrics.h.
#include "sft/metrics.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/common.h"

double json_round9(double x) {
    if (!isfinite(x)) return x;  // cJSON writes NaN and Inf as null
    char buf[32];
    snprintf(buf, sizeof buf, "%.9g", x);
    return strtod(buf, NULL);
}

// Keeps the complete lines of data[0..len) whose "step" <= resume_step; returns the kept bytes in
// *kept (malloc'ed) and their length in *kept_len.
static int filter_lines(const char *path, const char *data, size_t len, int64_t resume_step, char **kept,
                        size_t *kept_len, char *err) {
    char *out = malloc(len + 1);
    if (!out) return ftk_err(err, "%s: out of memory", path);
    size_t n_out = 0, line_no = 0;
    for (size_t start = 0; start < len;) {
        const char *nl = memchr(data + start, '\n', len - start);
        if (!nl) break;  // torn last line from a crash mid-write: drop it
        size_t end = (size_t)(nl - data) + 1;
        line_no++;
        size_t k = start;
        while (k < end && (data[k] == ' ' || data[k] == '\t' || data[k] == '\r' || data[k] == '\n')) k++;
        if (k < end) {  // not blank
            cJSON *obj = cJSON_ParseWithLength(data + start, end - start);
            const cJSON *step = cJSON_GetObjectItemCaseSensitive(obj, "step");
            if (!cJSON_IsObject(obj) || !cJSON_IsNumber(step)) {
                cJSON_Delete(obj);
                free(out);
                return ftk_err(err, "%s:%zu: not a JSON object with a numeric \"step\"", path, line_no);
            }
            if (step->valuedouble <= (double)resume_step) {
                memcpy(out + n_out, data + start, end - start);
                n_out += end - start;
            }
            cJSON_Delete(obj);
        }
        start = end;
    }
    *kept = out;
    *kept_len = n_out;
    return 0;
}

int metrics_open(MetricsLog *ml, const char *path, int64_t resume_step, char *err) {
    memset(ml, 0, sizeof *ml);
    if (strlen(path) >= sizeof ml->path) return ftk_err(err, "%s: path too long", path);
    snprintf(ml->path, sizeof ml->path, "%s", path);
    if (resume_step >= 0 && ftk_file_exists(path)) {
        char *data, *kept = NULL;
        size_t len, kept_len = 0;
        if (ftk_read_file(path, &data, &len, err)) return -1;
        int rc = filter_lines(path, data, len, resume_step, &kept, &kept_len, err);
        free(data);
        if (rc) return -1;
        rc = ftk_write_file_atomic(path, kept, kept_len, err);
        free(kept);
        if (rc) return -1;
    }
    ml->f = fopen(path, resume_step >= 0 ? "ab" : "wb");
    if (!ml->f) return ftk_err(err, "%s: cannot open for writing: %s", path, strerror(errno));
    return 0;
}

void metrics_close(MetricsLog *ml) {
    if (ml->f) fclose(ml->f);
    ml->f = NULL;
}

int metrics_write(MetricsLog *ml, const cJSON *obj, char *err) {
    if (!ml->f) return ftk_err(err, "%s: metrics log is not open", ml->path);
    char *text = cJSON_PrintUnformatted(obj);
    if (!text) return ftk_err(err, "%s: cannot format a metrics line", ml->path);
    int bad = fputs(text, ml->f) < 0 || fputc('\n', ml->f) == EOF || fflush(ml->f) != 0;
    free(text);
    if (bad) return ftk_err(err, "%s: write failed: %s", ml->path, strerror(errno));
    return 0;
}

int metrics_log_train(MetricsLog *ml, int64_t step, double epoch, double loss, double lr, double grad_norm,
                      double tokens_per_sec, char *err) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "step", (double)step);
    cJSON_AddNumberToObject(o, "epoch", json_round9(epoch));
    cJSON_AddNumberToObject(o, "loss", json_round9(loss));
    cJSON_AddNumberToObject(o, "lr", json_round9(lr));
    cJSON_AddNumberToObject(o, "grad_norm", json_round9(grad_norm));
    cJSON_AddNumberToObject(o, "tokens_per_sec", json_round9(tokens_per_sec));
    int rc = metrics_write(ml, o, err);
    cJSON_Delete(o);
    return rc;
}

int metrics_log_eval(MetricsLog *ml, int64_t step, double eval_loss, char *err) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "step", (double)step);
    cJSON_AddNumberToObject(o, "eval_loss", json_round9(eval_loss));
    cJSON_AddNumberToObject(o, "eval_ppl", json_round9(exp(eval_loss)));
    int rc = metrics_write(ml, o, err);
    cJSON_Delete(o);
    return rc;
}

int json_write_atomic(const char *path, const cJSON *obj, char *err) {
    char *text = cJSON_Print(obj);
    if (!text) return ftk_err(err, "%s: cannot format JSON", path);
    size_t len = strlen(text);
    AtomicFile af;
    int rc = atomic_open(&af, path, err);
    if (!rc) rc = atomic_write(&af, text, len, err);
    if (!rc) rc = atomic_write(&af, "\n", 1, err);
    if (!rc) rc = atomic_commit(&af, err);
    free(text);
    return rc;
}

int json_read_object(const char *path, cJSON **out, char *err) {
    *out = NULL;
    char *data;
    size_t len;
    if (ftk_read_file(path, &data, &len, err)) return -1;
    if (strlen(data) != len) {
        free(data);
        return ftk_err(err, "%s: not JSON (contains a NUL byte)", path);
    }
    const char *end = NULL;
    cJSON *obj = cJSON_ParseWithOpts(data, &end, 1);
    if (!obj) {
        size_t off = end && end >= data && end <= data + len ? (size_t)(end - data) : 0;
        free(data);
        return ftk_err(err, "%s: not valid JSON (error at byte %zu)", path, off);
    }
    free(data);
    if (!cJSON_IsObject(obj)) {
        cJSON_Delete(obj);
        return ftk_err(err, "%s: expected a JSON object", path);
    }
    *out = obj;
    return 0;
}
