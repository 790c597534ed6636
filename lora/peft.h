// peft.h — PEFT adapter directories (FORMATS §2a): save Adapters so that PEFT's
// PeftModel.from_pretrained loads them, and load adapters written by PEFT or by ftk.
//
// A directory written by peft_save:
//   adapter_config.json, adapter_model.safetensors    the LoRA adapter (+ "score" in modules_to_save,
//                                                     task_type SEQ_CLS, when there is a score head);
//                                                     without LoRA, the prompt-tuning adapter
//   prompt/adapter_config.json, prompt/adapter_model.safetensors
//                                                     the prompt-tuning adapter of a LoRA + prompt run
//                                                     (one PEFT adapter dir holds one method; load it in
//                                                     PEFT as a second adapter); peft_load picks it up
//   value_head.safetensors                            the PPO value head, TRL's keys v_head.summary.weight
//                                                     (1, C) and v_head.summary.bias (1) (ftk's own file)
// Files are written atomically; stale prompt/ and value_head files of a previous save are removed.
//
// GPT-2 q/k/v block LoRA (slots Q/K/V) is saved as the rank-(n*r) c_attn adapter PEFT can load
// (FORMATS §2a "derived"): for blocks b_0..b_{n-1} (e.g. q, v), A = [A_b0; ...] (n*r, C) and B (3C, n*r)
// with B_bj in rows of block j's part of c_attn and columns j*r.., zero elsewhere (so the k rows of
// a q,v adapter are zero). The config says r = n*r and keeps the scaling: lora_alpha = n*alpha
// (rsLoRA: alpha*sqrt(n)); nothing is folded into B, so the values round-trip bit for bit. The
// safetensors metadata gets "ftk_c_attn_blocks": "q,v"; on load that marker (with the zero blocks
// checked) sends the file back to slots Q/V. A c_attn adapter without the marker — any genuine one —
// loads into slot QKV (the same function; PEFT itself drops the marker when it re-saves).
#ifndef FTK_PEFT_H
#define FTK_PEFT_H

#include "lora/adapter.h"

// base_model_name_or_path: written into the configs (the model path the user gave); may be NULL.
int peft_save(const Adapters *a, const char *dir, const char *base_model_name_or_path, char *err);

// Loads dir (adapter_config.json + adapter_model.safetensors, + prompt/ and value_head.safetensors
// when present) for model m into a (allocated here; adapters_free). adapter_config.json needs only
// peft_type; target_modules may be a list, "all-linear" or a simple regex (a name or a|b alternation).
// Every tensor must be one the config and model call for, with exactly the expected shape, and every
// expected tensor must be there; keys may carry PEFT's ".default" adapter-name segment. Tensors may
// be F32, F16, BF16 or F64. Only safetensors is read (adapter_model.bin is refused).
int peft_load(Adapters *a, const Model *m, const char *dir, char *err);

#endif
