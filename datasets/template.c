// template.c — see template.h.
#include "datasets/template.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char ALPACA_HEAD_NO_INPUT[] =
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n";
static const char ALPACA_HEAD_INPUT[] =
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n";
static const char IM_START[] = "<|im_start|>";
static const char IM_END[] = "<|im_end|>";

int template_from_name(const char *name, TemplateKind *out) {
    static const char *names[] = {"auto", "plain", "alpaca", "chatml"};
    for (int i = 0; i < 4; i++) {
        if (name && strcmp(name, names[i]) == 0) {
            *out = (TemplateKind)i;
            return 0;
        }
    }
    return -1;
}

const char *template_name(TemplateKind t) {
    switch (t) {
    case TPL_AUTO: return "auto";
    case TPL_PLAIN: return "plain";
    case TPL_ALPACA: return "alpaca";
    case TPL_CHATML: return "chatml";
    }
    return "?";
}

// Concatenates NULL-terminated string arguments into a new malloc'ed string.
static char *cat(const char *first, ...) {
    va_list ap;
    size_t len = 0;
    va_start(ap, first);
    for (const char *s = first; s; s = va_arg(ap, const char *)) len += strlen(s);
    va_end(ap);
    char *out = malloc(len + 1);
    if (!out) return NULL;
    char *p = out;
    va_start(ap, first);
    for (const char *s = first; s; s = va_arg(ap, const char *)) {
        size_t n = strlen(s);
        memcpy(p, s, n);
        p += n;
    }
    va_end(ap);
    *p = 0;
    return out;
}

void templated_free(TemplatedText *t) {
    free(t->prompt);
    free(t->response);
    free(t->rejected);
    t->prompt = t->response = t->rejected = NULL;
}

static int fail(char *reason, size_t n, TemplateKind t, const Record *r) {
    if (reason && n)
        snprintf(reason, n, "the %s template does not apply to a %s record (use --template auto or another one)",
                 template_name(t), record_shape_name(r->shape));
    return -1;
}

static char *alpaca_prompt(const char *instruction, const char *input) {
    if (input && *input)
        return cat(ALPACA_HEAD_INPUT, "### Instruction:\n", instruction, "\n\n### Input:\n", input,
                   "\n\n### Response:\n", NULL);
    return cat(ALPACA_HEAD_NO_INPUT, "### Instruction:\n", instruction, "\n\n### Response:\n", NULL);
}

// ChatML prompt for the first n_turns messages of a chat record, ending with the assistant header.
static char *chatml_prompt(const Record *r, int n_turns) {
    size_t len = strlen(IM_START) + strlen("assistant\n") + 1;
    for (int i = 0; i < n_turns; i++)
        len += strlen(IM_START) + strlen(r->roles[i]) + 1 + strlen(r->contents[i]) + strlen(IM_END) + 1;
    char *out = malloc(len);
    if (!out) return NULL;
    char *p = out;
    for (int i = 0; i < n_turns; i++)
        p += sprintf(p, "%s%s\n%s%s\n", IM_START, r->roles[i], r->contents[i], IM_END);
    sprintf(p, "%sassistant\n", IM_START);
    return out;
}

static char *chatml_user_prompt(const char *user) {
    return cat(IM_START, "user\n", user, IM_END, "\n", IM_START, "assistant\n", NULL);
}

int template_apply(TemplateKind t, const Record *r, DatasetKind kind, TemplatedText *out, char *reason,
                   size_t reason_len) {
    memset(out, 0, sizeof *out);
    if (t == TPL_AUTO) t = r->shape == REC_ALPACA ? TPL_ALPACA : r->shape == REC_CHAT ? TPL_CHATML : TPL_PLAIN;
    out->used = t;
    // The prompt and whether the responses get a chatml end marker.
    int chatml_end = 0;
    const char *response = r->response, *rejected = r->rejected;
    switch (r->shape) {
    case REC_PROMPT_RESPONSE:
    case REC_PROMPT_COMPLETION:
    case REC_PREFERENCE:
    case REC_PROMPT_ONLY:
    case REC_HH:
        if (t == TPL_PLAIN) out->prompt = cat(r->prompt, NULL);
        else if (r->shape == REC_HH) return fail(reason, reason_len, t, r);
        else if (t == TPL_ALPACA) out->prompt = alpaca_prompt(r->prompt, NULL);
        else {
            out->prompt = chatml_user_prompt(r->prompt);
            chatml_end = 1;
        }
        break;
    case REC_ALPACA:
        if (t == TPL_PLAIN) {
            out->prompt = *r->input ? cat(r->instruction, "\n", r->input, "\n", NULL) : cat(r->instruction, "\n", NULL);
        } else if (t == TPL_ALPACA) {
            out->prompt = alpaca_prompt(r->instruction, r->input);
        } else {
            char *user = *r->input ? cat(r->instruction, "\n\n", r->input, NULL) : cat(r->instruction, NULL);
            out->prompt = user ? chatml_user_prompt(user) : NULL;
            free(user);
            chatml_end = 1;
        }
        break;
    case REC_CHAT: {
        if (t != TPL_CHATML) return fail(reason, reason_len, t, r);
        int n_turns = r->n_messages;
        if (strcmp(r->roles[n_turns - 1], "assistant") == 0) n_turns--;  // the final reply is the response
        out->prompt = chatml_prompt(r, n_turns);
        chatml_end = 1;
        break;
    }
    case REC_TEXT:
        if (t != TPL_PLAIN) return fail(reason, reason_len, t, r);
        out->prompt = cat(kind == DS_PROMPT ? r->text : "", NULL);
        response = r->text;
        break;
    default:
        return fail(reason, reason_len, t, r);
    }
    if (kind != DS_PROMPT && response) out->response = cat(response, chatml_end ? IM_END : "", NULL);
    if (kind == DS_PREFERENCE && rejected) out->rejected = cat(rejected, chatml_end ? IM_END : "", NULL);
    int ok = out->prompt && (kind == DS_PROMPT || out->response) && (kind != DS_PREFERENCE || out->rejected);
    if (!ok) {
        templated_free(out);
        if (reason && reason_len) snprintf(reason, reason_len, "out of memory (or a record without a response)");
        return -1;
    }
    return 0;
}
