// dataset.h — one dataset file read (jsonl.h), shaped (records.h), templated (template.h) and
// tokenized (tokenize.h) into examples: token ids and loss masks in one arena, plus a summary of
// what happened to every record (DESIGN §4).
//
// Errors name the file and line: "train.jsonl:17: not valid JSON (column 5)",
// "train.jsonl:3: record has no \"response\" (or \"completion\")". With skip_bad_lines a bad record
// (invalid JSON, wrong shape, template mismatch) is skipped and counted by reason instead; faults
// that stop reading (truncated gzip, broken array) always fail. No usable record -> error naming the file.
#ifndef FTK_DATASET_H
#define FTK_DATASET_H

#include <stddef.h>
#include <stdint.h>

#include "datasets/records.h"
#include "datasets/template.h"
#include "datasets/tokenize.h"

typedef struct {
    DatasetKind kind;              // DS_SFT, DS_PREFERENCE, DS_PROMPT
    TemplateKind template_kind;    // TPL_AUTO
    int max_seq_length;            // 0 = no limit (default 0)
    int add_eos;                   // 1: EOS after each response (not for DS_PROMPT)
    int train_on_prompt;           // 0: loss on the response (+EOS) only
    int skip_bad_lines;            // 0: the first bad record is an error
    LongPromptPolicy long_prompt;  // LONG_PROMPT_AUTO: truncate (SFT), skip (preference, prompt)
} DatasetOptions;

DatasetOptions dataset_options_default(DatasetKind kind);

// One token sequence in the arena.
typedef struct {
    size_t offset;   // into Dataset.ids / Dataset.mask
    int len;         // tokens, BOS and EOS included
    int n_prompt;    // leading BOS + prompt tokens (after truncation)
    int line;        // line of the record in the source file
} Example;

#define DS_MAX_SKIP_REASONS 8
typedef struct {
    char reason[160];   // e.g. "record has no \"response\"" (column details cut off)
    long count;
    int first_line;
} SkipCount;

typedef struct {
    long records_read;        // records met in the file (good and bad; blank lines are not records)
    long records_used;        // items in the dataset (examples, or pairs for preference data)
    long skipped;             // bad records skipped under skip_bad_lines, by reason below
    int n_skip_reasons;       // when full, the last entry counts every further reason as "other"
    SkipCount skip_reasons[DS_MAX_SKIP_REASONS];
    long truncated;           // records cut to max_seq_length
    long dropped_empty;       // records with no response token left (or an empty prompt-only record)
    long dropped_long_prompt; // records skipped for a prompt longer than max_seq_length
    long prefix_fallbacks;    // prompt encoding was not a prefix of prompt+response's
    long shapes[REC_N_SHAPES];// records used, by shape
    long total_tokens;        // over all sequences (both sides of a pair)
    long trained_tokens;      // mask sum
    int max_len;              // longest sequence
    double mean_len;          // mean sequence length
} DatasetSummary;

typedef struct {
    DatasetKind kind;
    char path[4096];
    int n;               // items: examples (SFT, prompt) or pairs (preference)
    int seqs_per_item;   // 1, or 2 for preference: sequence 2i = chosen, 2i+1 = rejected of pair i
    Example *seqs;       // n * seqs_per_item
    int *ids;            // token arena (n_tokens)
    unsigned char *mask; // (n_tokens) 1 = the token is a training target
    size_t n_tokens;
    int bos_id, eos_id, pad_id;   // from the encoder (-1 when absent; pad_id >= 0)
    DatasetSummary summary;
    size_t cap_tokens;   // private: arena capacities
    int cap_seqs;
} Dataset;

// Reads path (JSONL / JSON array, plain or gzip) into ds. ds is zeroed first; free with dataset_free.
int dataset_load(Dataset *ds, const char *path, const DatasetOptions *opt, const TokEncoder *enc, char *err);
void dataset_free(Dataset *ds);

// Sequence s (0 <= s < n * seqs_per_item) and its tokens / mask.
static inline const Example *dataset_seq(const Dataset *ds, int s) { return &ds->seqs[s]; }
static inline const int *dataset_seq_ids(const Dataset *ds, int s) { return ds->ids + ds->seqs[s].offset; }
static inline const unsigned char *dataset_seq_mask(const Dataset *ds, int s) { return ds->mask + ds->seqs[s].offset; }

// Validation split: round(fraction * n) items (at least 1, at most n-1) chosen from the seed go to
// val, the rest to train; both keep the file order. fraction in (0, 1). train's summary keeps the
// file-level counts of all; val's has only its items. Both have their token statistics recomputed.
int dataset_split(const Dataset *all, double fraction, uint64_t seed, Dataset *train, Dataset *val, char *err);

// Human-readable multi-line summary for the CLI ("records 2500 read, 2500 used, ...").
void dataset_summary_format(const Dataset *ds, char *buf, size_t n);

#endif
