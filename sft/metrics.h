// metrics.h — <output_dir>/metrics.jsonl (one JSON object per line, appended and flushed) and
// whole JSON files written atomically (training_args.json, trainer_state.json).
// Lines and files are cJSON objects, so the caller adds any key/values it likes:
//   cJSON *o = cJSON_CreateObject(); cJSON_AddNumberToObject(o, "step", 10); ...
#ifndef FTK_SFT_METRICS_H
#define FTK_SFT_METRICS_H

#include <stdint.h>
#include <stdio.h>
#include <cjson/cJSON.h>

typedef struct {
    FILE *f;
    char path[4096];
} MetricsLog;

// Opens path for appending. resume_step < 0 starts a new run (the file is emptied). resume_step >= 0
// keeps only the lines whose "step" is <= resume_step (rewritten atomically; a torn last line
// without its newline is dropped), so a resumed run's file ends up equal to a straight run's.
// A complete line that is not a JSON object with a numeric "step" is an error naming path:line.
int metrics_open(MetricsLog *ml, const char *path, int64_t resume_step, char *err);
void metrics_close(MetricsLog *ml);

// Appends obj as one line and flushes.
int metrics_write(MetricsLog *ml, const cJSON *obj, char *err);
// {"step","epoch","loss","lr","grad_norm","tokens_per_sec"}; values rounded to 9 significant digits.
int metrics_log_train(MetricsLog *ml, int64_t step, double epoch, double loss, double lr, double grad_norm,
                      double tokens_per_sec, char *err);
// {"step","eval_loss","eval_ppl"} with eval_ppl = exp(eval_loss).
int metrics_log_eval(MetricsLog *ml, int64_t step, double eval_loss, char *err);

// x rounded to 9 significant digits (enough to round-trip a float), so cJSON prints it short.
double json_round9(double x);

// Writes obj as indented JSON to path atomically (tmp + fsync + rename). Use it for
// <output_dir>/training_args.json with one key per flag.
int json_write_atomic(const char *path, const cJSON *obj, char *err);
// Reads a file that must hold one JSON object; *out is freed with cJSON_Delete.
int json_read_object(const char *path, cJSON **out, char *err);

#endif
