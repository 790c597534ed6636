// export_out.h — what every model/adapter writer of lora/ shares: the output dtype, staged outputs
// (write to a temporary sibling, check, rename into place) and the logits probe that checks a
// written model against the in-memory one.
//
// Staged output. The final path is never written directly:
//   file  OUT  -> writers produce OUT.partial (themselves through OUT.partial.tmp + rename),
//   dir   OUT/ -> writers fill OUT.partial/ (it holds a marker file .ftk-partial while incomplete),
// and staged_commit renames the stage onto OUT. An existing OUT is refused unless overwrite is set;
// with overwrite a directory is first moved aside to OUT.old and removed after the rename, so a
// crash leaves either the old or the new output, never a mix. staged_abort removes the stage.
#ifndef FTK_EXPORT_OUT_H
#define FTK_EXPORT_OUT_H

#include "model/model.h"
#include "model/transformer.h"

typedef enum { EXPORT_F32 = 0, EXPORT_F16 = 1, EXPORT_BF16 = 2, EXPORT_Q8_0 = 3 } ExportDtype;

// "f32" | "f16" | "bf16" | "q8_0" (case-insensitive, also "float32", "float16", "bfloat16").
int export_dtype_parse(const char *s, ExportDtype *out, char *err);
const char *export_dtype_name(ExportDtype d);   // "f32", ...
// The dtype that keeps the source's precision: F16 -> f16, BF16 -> bf16, Q8_0 -> q8_0 (GGUF only,
// f32 for HF), anything else (F32, mixed) -> f32.
ExportDtype export_dtype_default(const Model *m, int for_gguf);

typedef struct {
    char final_path[4096];
    char stage[4200];     // OUT.partial
    int is_dir;
    int overwrite;
    int active;           // stage exists and must be committed or aborted
} StagedOutput;

// Checks the final path (refused when it exists and overwrite is 0), creates missing parent
// directories, removes a stale stage left by a crashed run (a file, or a directory carrying the
// marker; anything else there is refused), and for a directory creates the stage with its marker.
int staged_begin(StagedOutput *s, const char *path, int is_dir, int overwrite, char *err);
// Removes the marker and renames the stage onto the final path.
int staged_commit(StagedOutput *s, char *err);
void staged_abort(StagedOutput *s);

// Removes a directory tree (files and subdirectories). 0 ok.
int ftk_remove_tree(const char *path);

// The probe: token ids of `prompt` under m's tokenizer (BOS as the tokenizer adds it), clipped to
// the model's context. *ids malloc'ed.
int probe_tokens(const Model *m, const char *prompt, int **ids, int *n, char *err);
// Loads the model at `path` (any format model_load reads), computes its logits of ids and returns
// the max |difference| to ref_logits (n x V, from model_logits_all of the in-memory model) and the
// largest |ref logit|.
int probe_compare(const char *path, const int *ids, int n, const float *ref_logits, int vocab, double *max_diff,
                  double *max_ref, char *err);
// Tolerance on max |Δlogit| for a model written as dtype, given the largest reference |logit|:
//   f32:  1e-4 * max(1, max_ref). The file holds the merged weights exactly; merged vs unmerged
//         forwards differ by float32 rounding only (~10 ulps of the largest logit measured).
//   f16:  32 * 2^-11 * max(1, max_ref)   (2^-11: f16's relative rounding error)
//   bf16: 32 * 2^-8  * max(1, max_ref)   (2^-8: bf16's)
//   q8_0: 64 * 2^-8  * max(1, max_ref)   (8-bit values scaled per 32-block by the block's max, so the
//         error of small values relative to themselves is larger than bf16's)
// Measured with random LoRA on every linear of stories260K, tiny-llama and tiny-gpt2 (test_merge) and a
// gpt2 q/v-block LoRA, the error is at most 4.1 (f16), 6.5 (bf16) and 13 (q8_0) times eps * max_ref:
// the factors leave ~5x margin, while a real fault (q/k rows in the wrong order, a lost delta) moves
// logits by 0.1 to several units (PROVENANCE tables) and fails them.
double probe_tolerance(ExportDtype d, double max_ref);

#endif
