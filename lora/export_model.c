// export_model.c — staged, probed export of a whole model (lora/export_model.h).
#include "lora/export_model.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "lora/export_gguf.h"
#include "lora/export_hf.h"
#include "lora/peft.h"
#include "model/common.h"

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
        HfExportOptions o = {x->dtype, x->max_shard_bytes, 1};
        rc = export_hf(m, so.stage, &o, sub);
    }
    if (rc) ftk_err(err, "writing %s failed, nothing was left behind: %s", so.final_path, sub);
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
