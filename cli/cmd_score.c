// cmd_score.c — `ftk score`: the reward of every record of a file under a reward model (ftk rm's
// output dir, or any PEFT dir with a "score" head). One JSON line per record on stdout:
//   preference records   {"index", "line", "chosen", "rejected", "margin"}
//   SFT records          {"index", "line", "reward"}   reward of prompt + response
//   prompt-only records  {"index", "line", "reward"}   reward of the prompt
// and a summary on stderr (pairwise accuracy and mean margin for pairs, mean reward otherwise).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

#include "cli/cli.h"
#include "cli/rlhf_common.h"
#include "datasets/dataset.h"
#include "datasets/jsonl.h"
#include "model/common.h"
#include "model/tokenizer.h"
#include "rlhf/reward_model.h"

static const Flag SCORE_FLAGS[] = {
    {"--model", FLAG_STR, NULL, "base model the reward model was trained on: HF dir, .gguf, or llama2.c .bin"},
    {"--tokenizer", FLAG_STR, NULL, "tokenizer file overriding the model's"},
    {"--adapter", FLAG_STR, NULL, "reward model dir (ftk rm output: PEFT adapter with a score head)"},
    {"--file", FLAG_STR, NULL, "records to score: preference pairs, prompt/response (SFT) or prompts; JSONL or JSON array, optionally gzipped"},
    {"--kind", FLAG_STR, "auto", "auto (from the first record), preference, sft, prompt"},
    {"--template", FLAG_STR, "auto", "record template: auto, plain, alpaca, chatml (as used in training)"},
    {"--max-seq-length", FLAG_INT, "0", "tokens per sequence at most (0 = the model's context)"},
    {"--long-prompt", FLAG_STR, "skip", "a prompt that leaves no room for a response: skip (counted), truncate, error"},
    {"--skip-bad-lines", FLAG_BOOL, NULL, "skip and count malformed records instead of failing"},
    {"--output", FLAG_STR, NULL, "write the JSON lines to this file (atomically) instead of stdout"},
    {"--threads", FLAG_INT, "0", "worker threads (0 = one per CPU)"},
    {0},
};

// The dataset kind of a file from its first record: chosen/rejected -> preference; a response,
// completion, output, messages or text -> sft; a prompt alone -> prompt.
static DatasetKind detect_kind(const char *path) {
    char err[FTK_ERR_LEN];
    JsonReader *r;
    if (json_reader_open(&r, path, err)) cli_die("%s", err);
    DatasetKind kind = DS_SFT;
    for (;;) {
        cJSON *rec = NULL;
        int line;
        int got = json_reader_next(r, &rec, &line, err);
        if (got < 0) cli_die("%s", err);
        if (got == JR_END) break;
        if (got == JR_BAD) continue;   // dataset_load reports it (or skips it) with its line
        if (cJSON_GetObjectItemCaseSensitive(rec, "chosen") || cJSON_GetObjectItemCaseSensitive(rec, "rejected"))
            kind = DS_PREFERENCE;
        else if (cJSON_GetObjectItemCaseSensitive(rec, "prompt") && !cJSON_GetObjectItemCaseSensitive(rec, "response") &&
                 !cJSON_GetObjectItemCaseSensitive(rec, "completion"))
            kind = DS_PROMPT;
        cJSON_Delete(rec);
        break;
    }
    json_reader_close(r);
    return kind;
}

// Appends s to a growing buffer (exits on allocation failure).
static void buf_append(char **buf, size_t *len, size_t *cap, const char *s) {
    size_t n = strlen(s);
    if (*len + n + 1 > *cap) {
        size_t nc = *cap ? *cap : 4096;
        while (*len + n + 1 > nc) nc *= 2;
        char *nb = realloc(*buf, nc);
        if (!nb) cli_die("out of memory");
        *buf = nb;
        *cap = nc;
    }
    memcpy(*buf + *len, s, n + 1);
    *len += n;
}

int cmd_score(int argc, char **argv) {
    Command cmd = {.name = "score",
                   .summary = "print the reward of every record under a reward model (both rewards for preference pairs)",
                   .usage = "ftk score --model M --adapter RM --file F [flags]",
                   .flags = SCORE_FLAGS};
    cli_parse(&cmd, argc, argv);
    if (!cli_str(&cmd, "--model")) cli_usage_error(&cmd, "--model is required");
    if (!cli_str(&cmd, "--adapter")) cli_usage_error(&cmd, "--adapter (the reward model dir) is required");
    if (!cli_str(&cmd, "--file")) cli_usage_error(&cmd, "--file is required");
    const char *kind_name = cli_str(&cmd, "--kind");
    const char *file = cli_str(&cmd, "--file");
    DatasetKind kind;
    if (strcmp(kind_name, "preference") == 0) kind = DS_PREFERENCE;
    else if (strcmp(kind_name, "sft") == 0) kind = DS_SFT;
    else if (strcmp(kind_name, "prompt") == 0) kind = DS_PROMPT;
    else if (strcmp(kind_name, "auto") == 0) kind = DS_SFT;
    else cli_usage_error(&cmd, "--kind must be auto, preference, sft or prompt");
    int max_len = cli_int(&cmd, "--max-seq-length");
    if (max_len < 0 || max_len == 1) cli_usage_error(&cmd, "--max-seq-length must be 0 or >= 2");
    cli_set_threads(cli_int(&cmd, "--threads"));

    Model m;
    cli_load_model(&m, cli_str(&cmd, "--model"), cli_str(&cmd, "--tokenizer"));
    char err[FTK_ERR_LEN];
    RewardModel rm;
    if (rm_load(&rm, &m, cli_str(&cmd, "--adapter"), err)) cli_die("%s", err);
    if (strcmp(kind_name, "auto") == 0) kind = detect_kind(file);

    const int nv = rm.hooks.n_virtual;
    DatasetOptions o = dataset_options_default(kind);
    if (template_from_name(cli_str(&cmd, "--template"), &o.template_kind))
        cli_usage_error(&cmd, "--template must be auto, plain, alpaca or chatml");
    const int ctx = m.cfg.max_seq_len - nv;
    o.max_seq_length = max_len == 0 || max_len > ctx ? ctx : max_len;
    // A prompt-only sequence gets EOS appended below, so it must leave room for it.
    if (kind == DS_PROMPT && rm.append_eos) o.max_seq_length--;
    o.add_eos = rm.append_eos;
    o.skip_bad_lines = cli_bool(&cmd, "--skip-bad-lines");
    pref_long_prompt_option(&cmd, &o);
    TokEncoder enc;
    tok_encoder_init(&enc, m.tok);
    Dataset ds;
    if (dataset_load(&ds, file, &o, &enc, err)) cli_die("%s", err);

    // Every sequence of the file, scored in one call (rm_score_sequences batches them).
    const int n_seqs = ds.n * ds.seqs_per_item;
    const int **seqs = malloc(sizeof(int *) * (size_t)n_seqs);
    int *lens = malloc(sizeof(int) * (size_t)n_seqs);
    float *scores = malloc(sizeof(float) * (size_t)n_seqs);
    int **owned = calloc((size_t)n_seqs, sizeof(int *));
    if (!seqs || !lens || !scores || !owned) cli_die("out of memory");
    for (int s = 0; s < n_seqs; s++) {
        seqs[s] = dataset_seq_ids(&ds, s);
        lens[s] = dataset_seq(&ds, s)->len;
        if (kind == DS_PROMPT && rm.append_eos && ds.eos_id >= 0) {
            // prompt-only sequences come without EOS; the RM read EOS in training
            owned[s] = malloc(sizeof(int) * (size_t)(lens[s] + 1));
            if (!owned[s]) cli_die("out of memory");
            memcpy(owned[s], seqs[s], sizeof(int) * (size_t)lens[s]);
            owned[s][lens[s]++] = ds.eos_id;
            seqs[s] = owned[s];
        }
    }
    double t0 = ftk_now();
    if (rm_score_sequences(&m, &rm.hooks, rm.score_w, seqs, lens, n_seqs, scores, err)) cli_die("%s", err);
    double secs = ftk_now() - t0;

    char *out = NULL, line[256];
    size_t len = 0, cap = 0;
    double sum = 0, margin = 0;
    long right = 0;
    for (int i = 0; i < ds.n; i++) {
        const int src_line = dataset_seq(&ds, i * ds.seqs_per_item)->line;
        if (kind == DS_PREFERENCE) {
            const float c = scores[2 * i], r = scores[2 * i + 1];
            snprintf(line, sizeof line, "{\"index\": %d, \"line\": %d, \"chosen\": %.9g, \"rejected\": %.9g, \"margin\": %.9g}\n",
                     i, src_line, (double)c, (double)r, (double)c - (double)r);
            right += c > r;
            margin += (double)c - r;
            sum += (double)c + r;
        } else {
            snprintf(line, sizeof line, "{\"index\": %d, \"line\": %d, \"reward\": %.9g}\n", i, src_line, (double)scores[i]);
            sum += scores[i];
        }
        buf_append(&out, &len, &cap, line);
    }
    const char *out_path = cli_str(&cmd, "--output");
    if (out_path) {
        if (ftk_write_file_atomic(out_path, out ? out : "", len, err)) cli_die("%s", err);
    } else if (len) {
        fwrite(out, 1, len, stdout);
        fflush(stdout);
    }
    char summary[4096];
    dataset_summary_format(&ds, summary, sizeof summary);
    fprintf(stderr, "%s\n", summary);
    if (kind == DS_PREFERENCE)
        fprintf(stderr, "%d pairs: pairwise accuracy %.4f, mean margin %.4f, mean reward %.4f (%.1f s)\n", ds.n,
                (double)right / ds.n, margin / ds.n, sum / (2.0 * ds.n), secs);
    else
        fprintf(stderr, "%d records: mean reward %.4f (%.1f s)\n", ds.n, sum / ds.n, secs);
    for (int s = 0; s < n_seqs; s++) free(owned[s]);
    free(owned);
    free(out);
    free(seqs);
    free(lens);
    free(scores);
    dataset_free(&ds);
    rm_free(&rm);
    model_free(&m);
    return 0;
}
