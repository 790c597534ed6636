// template.h — turns a Record into (prompt text, response text[, rejected text]). The loss mask is
// later set on the response's tokens only, by construction (tokenize.h), never by searching.
//
// auto    per shape: prompt/response, prompt/completion, preference, hh-rlhf, prompt, text -> plain;
//         alpaca -> alpaca; chat -> chatml.
// plain   prompt and response verbatim: the text trained on is exactly prompt + response, so the
//         response keeps its own leading space (" Mia. She ..."); nothing is inserted between them.
//         text: prompt "" and response = text (every token trained; DS_PROMPT: prompt = text).
//         alpaca: prompt = instruction + "\n" [+ input + "\n"], response = output.
//         chat: not supported (error).
// alpaca  the Stanford Alpaca prompt:
//           "Below is an instruction that describes a task[, paired with an input that provides further
//           context]. Write a response that appropriately completes the request.\n\n"
//           "### Instruction:\n{instruction}\n\n[### Input:\n{input}\n\n]### Response:\n"
//         response = output. The input block is present only when input is non-empty. Records with a
//         prompt (prompt/response, preference, prompt) use it as the instruction with no input.
//         text, chat, hh-rlhf: error.
// chatml  every prompt turn as "<|im_start|>{role}\n{content}<|im_end|>\n", then the prompt ends with
//         "<|im_start|>assistant\n"; response = content + "<|im_end|>" (EOS may follow; tokenize.h).
//         Records with a prompt become one user turn; alpaca: user = instruction [+ "\n\n" + input].
//         text, hh-rlhf: error.
// Preference records: the rejected side is formatted exactly like the chosen one, after the same prompt.
#ifndef FTK_TEMPLATE_H
#define FTK_TEMPLATE_H

#include <stddef.h>
#include "datasets/records.h"

typedef enum { TPL_AUTO = 0, TPL_PLAIN, TPL_ALPACA, TPL_CHATML } TemplateKind;

// "auto", "plain", "alpaca", "chatml" -> 0 and *out; anything else -> -1.
int template_from_name(const char *name, TemplateKind *out);
const char *template_name(TemplateKind t);

typedef struct {
    char *prompt;     // text before the response ("" for {text}); malloc'ed
    char *response;   // SFT response / chosen; NULL for DS_PROMPT
    char *rejected;   // DS_PREFERENCE only, else NULL
    TemplateKind used;   // the template applied (auto resolved)
} TemplatedText;

// Formats r for a dataset of the given kind. Returns 0, or -1 with a reason for a template that
// does not apply to the record's shape.
int template_apply(TemplateKind t, const Record *r, DatasetKind kind, TemplatedText *out, char *reason,
                   size_t reason_len);
void templated_free(TemplatedText *t);

#endif
