// export_model.h — writing a whole model as an HF dir or a GGUF file through a staged output
// (export_out.h), checked by the logits probe before it is renamed into place. `ftk merge` and
// `ftk convert` are this plus loading.
//
// Order: stage -> write (export_hf / export_gguf) -> validate the files against the format rules
// (safetensors: header padded to 8, {"format":"pt"}, packed with no holes; GGUF: general.alignment,
// aligned tensors, ne order) -> reload the staged output and compare its logits
// on the probe ids with the reference (the in-memory model, before writing) -> optional soft prompt
// beside it -> rename into place. When the probe exceeds its tolerance nothing is left behind and
// the error gives the numbers.
#ifndef FTK_EXPORT_MODEL_H
#define FTK_EXPORT_MODEL_H

#include <stddef.h>

#include "lora/adapter.h"
#include "lora/export_out.h"

typedef enum { EXPORT_FORMAT_HF = 0, EXPORT_FORMAT_GGUF = 1 } ExportFormat;

typedef struct {
    ExportFormat format;
    ExportDtype dtype;
    size_t max_shard_bytes;     // HF only; 0 = one file
    const char *name;           // GGUF general.name (NULL: from the model path)
    int overwrite;
    int tokenizer_overridden;   // HF: write m->tok instead of copying the source dir's tokenizer files
    // Probe (probe_ids == NULL: none). probe_ref: (probe_n, V) logits of the reference forward.
    const int *probe_ids;
    int probe_n;
    const float *probe_ref;
    double probe_tol;           // <= 0: probe_tolerance(dtype, max |ref|)
    // A soft prompt to save beside the merged model as a PEFT prompt-tuning dir (NULL: none):
    // HF -> OUT/soft_prompt/, GGUF -> OUT.soft_prompt/.
    const Adapters *soft_prompt;
} ModelExport;

typedef struct {
    int probed;
    double max_diff, max_ref, tol;
    char soft_prompt_dir[4200];   // where the soft prompt went ("" if none)
} ExportResult;

int parse_export_format(const char *s, ExportFormat *out, char *err);   // "hf" | "gguf"

int export_model(const Model *m, const char *out, const ModelExport *x, ExportResult *res, char *err);

#endif
