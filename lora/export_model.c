// export_model.c — staged, probed export of a whole model (lora/export_model.h).
#include "lora/export_model.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lora/export_gguf.h"
#include "lora/export_hf.h"
#include "lora/peft.h"
#include "model/common.h"
#include "model/gguf.h"
#include "model/safetensors.h"

int parse_export_format(const char *s, ExportFormat *out, char *err) {
    if (s && !strcmp(s, "hf")) *out = EXPORT_FORMAT_HF;
    else if (s && !strcmp(s, "gguf")) *out = EXPORT_FORMAT_GGUF;
    else return ftk_err(err, "unknown format '%s' (hf, gguf)", s ? s : "(null)");
    return 0;
}

// The soft prompt alone, as a PEFT prompt-tuning adapter dir whose base is the exported model.
static int save_soft_prompt(const Adapters *src, const char *dir, const char *base, char *err) {
    AdapterConfig cfg = src->cfg;
    cfg.types = ADAPTER_PROMPT;
    cfg.score_head = cfg.value_head = 0;
    Adapters a;
    if (adapters_alloc(&a, &cfg, &src->mcfg, err)) return -1;
    memcpy(a.prompt, src->prompt, (size_t)cfg.num_virtual_tokens * (size_t)src->mcfg.dim * sizeof(float));
    int rc = peft_save(&a, dir, base, err);
    adapters_free(&a);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// Validation of what was written, against the format rules (FORMATS §2b, §2c), before the probe.

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

// One safetensors file: st_open checks bounds, dtype sizes and that the tensors cover the data
// buffer exactly (no overlaps, no holes, no trailing bytes); here also the header padding to 8 and
// __metadata__ {"format": "pt"}.
static int validate_safetensors(const char *path, int *n_tensors, char *err) {
    StFile f;
    if (st_open(&f, path, err)) return -1;
    int rc = 0;
    const size_t header = (size_t)(f.data - (const uint8_t *)f.map);   // 8 + N
    if (header % 8 != 0) rc = ftk_err(err, "%s: header of %zu bytes is not padded to a multiple of 8", path, header);
    cJSON *meta = f.metadata_json ? cJSON_Parse(f.metadata_json) : NULL;
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(meta, "format");
    if (!rc && !(cJSON_IsString(fmt) && strcmp(fmt->valuestring, "pt") == 0))
        rc = ftk_err(err, "%s: __metadata__ lacks \"format\": \"pt\" (transformers refuses such files)", path);
    cJSON_Delete(meta);
    *n_tensors += f.n_tensors;
    st_close(&f);
    return rc;
}

static int validate_hf_dir(const Model *m, const char *dir, char *err) {
    DIR *d = opendir(dir);
    if (!d) return ftk_err(err, "%s: cannot list the written directory", dir);
    int rc = 0, n_files = 0, n_tensors = 0;
    struct dirent *e;
    char path[4400];
    while (!rc && (e = readdir(d))) {
        if (!ends_with(e->d_name, ".safetensors")) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        rc = validate_safetensors(path, &n_tensors, err);
        n_files++;
    }
    closedir(d);
    if (rc) return -1;
    // Tensor count of the architecture: llama 2 + 9 per layer (+ lm_head), gpt2 4 + 12 per layer.
    const ModelConfig *c = &m->cfg;
    int want = c->arch == ARCH_LLAMA ? 2 + 9 * c->n_layers + !c->tied_head : 4 + 12 * c->n_layers;
    if (n_files == 0 || n_tensors != want)
        return ftk_err(err, "%s: %d safetensors files with %d tensors written, expected %d tensors", dir, n_files,
                       n_tensors, want);
    return 0;
}

// gguf_open checks the container (bounds, alignment of every tensor, no overlaps); here also that
// general.alignment is written, and the ne order of the embedding (ne[0] = hidden size).
static int validate_gguf(const Model *m, const char *path, char *err) {
    GgufFile f;
    if (gguf_open(&f, path, err)) return -1;
    int rc = 0;
    uint32_t al = 0;
    if (gguf_get_u32(&f, "general.alignment", &al, err) != 0 || al != f.alignment || f.data_offset % al != 0)
        rc = ftk_err(err, "%s: general.alignment missing or not honoured", path);
    const GgufTensor *emb = gguf_find_tensor(&f, "token_embd.weight");
    if (!rc && !(emb && emb->n_dims == 2 && emb->ne[0] == (uint64_t)m->cfg.dim && emb->ne[1] == (uint64_t)m->cfg.vocab_size))
        rc = ftk_err(err, "%s: token_embd.weight is not ne [%d, %d]", path, m->cfg.dim, m->cfg.vocab_size);
    for (size_t i = 0; !rc && i < f.n_tensors; i++)
        if (f.tensors[i].offset % f.alignment != 0)
            rc = ftk_err(err, "%s: tensor '%s' is not aligned", path, f.tensors[i].name);
    gguf_close(&f);
    return rc;
}

int export_model(const Model *m, const char *out, const ModelExport *x, ExportResult *res, char *err) {
    memset(res, 0, sizeof *res);
    const int gguf = x->format == EXPORT_FORMAT_GGUF;
    if (!gguf && x->dtype == EXPORT_Q8_0)
        return ftk_err(err, "%s: q8_0 is a GGUF type; an HF dir takes f32, f16 or bf16", out);
    StagedOutput so, sp;
    memset(&sp, 0, sizeof sp);
    if (staged_begin(&so, out, !gguf, x->overwrite, err)) return -1;
    int rc = 0;
    char sub[FTK_ERR_LEN];
    if (gguf) {
        GgufExportOptions o = {x->dtype, x->name};
        rc = export_gguf(m, so.stage, &o, sub);
    } else {
        HfExportOptions o = {x->dtype, x->max_shard_bytes, !x->tokenizer_overridden};
        rc = export_hf(m, so.stage, &o, sub);
    }
    if (rc) ftk_err(err, "writing %s failed, nothing was left behind: %s", so.final_path, sub);
    if (!rc && (gguf ? validate_gguf(m, so.stage, sub) : validate_hf_dir(m, so.stage, sub)))
        rc = ftk_err(err, "%s: the written file breaks the format rules: %s", so.final_path, sub);
    if (!rc && x->probe_ids) {
        rc = probe_compare(so.stage, x->probe_ids, x->probe_n, x->probe_ref, m->cfg.vocab_size, &res->max_diff,
                           &res->max_ref, err);
        if (!rc) {
            res->probed = 1;
            res->tol = x->probe_tol > 0 ? x->probe_tol : probe_tolerance(x->dtype, res->max_ref);
            if (!(res->max_diff <= res->tol))
                rc = ftk_err(err, "%s: probe failed: max |logit difference| %.3g between the written model and the "
                                  "in-memory one exceeds the tolerance %.3g for %s (largest |logit| %.3g); nothing "
                                  "was written", out, res->max_diff, res->tol, export_dtype_name(x->dtype), res->max_ref);
        }
    }
    if (!rc && x->soft_prompt) {
        if (!gguf) {
            snprintf(res->soft_prompt_dir, sizeof res->soft_prompt_dir, "%s/soft_prompt", so.final_path);
            char dir[4300];
            snprintf(dir, sizeof dir, "%s/soft_prompt", so.stage);
            if (save_soft_prompt(x->soft_prompt, dir, so.final_path, sub)) rc = ftk_err(err, "%s: %s", dir, sub);
        } else {
            snprintf(res->soft_prompt_dir, sizeof res->soft_prompt_dir, "%s.soft_prompt", so.final_path);
            if (staged_begin(&sp, res->soft_prompt_dir, 1, x->overwrite, err)) rc = -1;
            else if (save_soft_prompt(x->soft_prompt, sp.stage, so.final_path, sub))
                rc = ftk_err(err, "%s: %s", res->soft_prompt_dir, sub);
        }
    }
    if (!rc) rc = staged_commit(&so, err);
    if (!rc && sp.active) rc = staged_commit(&sp, err);
    if (rc) {
        staged_abort(&so);
        staged_abort(&sp);
    }
    return rc ? -1 : 0;
}
