// records.c — see records.h.
#include "datasets/records.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char HH_MARK[] = "\n\nAssistant:";

const char *record_shape_name(RecordShape s) {
    switch (s) {
    case REC_PROMPT_RESPONSE: return "prompt/response";
    case REC_PROMPT_COMPLETION: return "prompt/completion";
    case REC_ALPACA: return "alpaca";
    case REC_CHAT: return "chat";
    case REC_TEXT: return "text";
    case REC_PREFERENCE: return "preference";
    case REC_HH: return "hh-rlhf";
    case REC_PROMPT_ONLY: return "prompt";
    default: return "?";
    }
}

static int fail(char *reason, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *reason, size_t n, const char *fmt, ...) {
    if (reason && n) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(reason, n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

// Looks up a string field. Returns 1 (string, *out set), 0 (absent or null), -1 (another type).
static int get_str(const cJSON *j, const char *key, const char **out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    *out = NULL;
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsString(v) || !v->valuestring) return -1;
    *out = v->valuestring;
    return 1;
}

static char *dup_n(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = 0;
    }
    return d;
}
static char *dup(const char *s) { return dup_n(s, strlen(s)); }

void record_free(Record *r) {
    free(r->prompt);
    free(r->response);
    free(r->rejected);
    free(r->instruction);
    free(r->input);
    free(r->text);
    for (int i = 0; i < r->n_messages; i++) {
        free(r->roles[i]);
        free(r->contents[i]);
    }
    free(r->roles);
    free(r->contents);
    memset(r, 0, sizeof *r);
}

// The last occurrence of the HH assistant marker, or NULL.
static const char *last_hh_mark(const char *s) {
    const char *last = NULL;
    for (const char *p = strstr(s, HH_MARK); p; p = strstr(p + 1, HH_MARK)) last = p;
    return last;
}

// Fields that must be strings when present.
static int check_types(const cJSON *j, char *reason, size_t n) {
    static const char *keys[] = {"prompt", "response", "completion", "chosen", "rejected",
                                 "instruction", "input", "output", "text"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const char *s;
        if (get_str(j, keys[i], &s) < 0) return fail(reason, n, "field \"%s\" is not a string", keys[i]);
    }
    return 0;
}

static int parse_preference(const cJSON *j, DatasetKind kind, Record *r, char *reason, size_t n) {
    const char *prompt, *chosen, *rejected;
    get_str(j, "prompt", &prompt);
    get_str(j, "chosen", &chosen);
    get_str(j, "rejected", &rejected);
    if (kind == DS_SFT)
        return fail(reason, n, "record is a preference pair (\"chosen\"/\"rejected\"); SFT needs a "
                               "\"response\", \"completion\", \"output\", \"messages\" or \"text\"");
    if (kind == DS_PREFERENCE) {
        if (!chosen) return fail(reason, n, "record has no \"chosen\"");
        if (!rejected) return fail(reason, n, "record has no \"rejected\"");
        if (strcmp(chosen, rejected) == 0) return fail(reason, n, "\"chosen\" and \"rejected\" are identical");
    }
    if (prompt) {
        r->shape = REC_PREFERENCE;
        r->prompt = dup(prompt);
        if (kind == DS_PREFERENCE) {
            if (!*chosen) return fail(reason, n, "\"chosen\" is empty");
            if (!*rejected) return fail(reason, n, "\"rejected\" is empty");
            r->response = dup(chosen);
            r->rejected = dup(rejected);
        }
        return 0;
    }
    // HH-RLHF transcript: prompt = everything through the last "\n\nAssistant:".
    r->shape = REC_HH;
    if (!chosen && !rejected) return fail(reason, n, "record has no \"chosen\"");
    const char *side = chosen ? chosen : rejected;
    const char *mc = last_hh_mark(side);
    if (!mc) return fail(reason, n, "\"%s\" has no \"\\n\\nAssistant:\" turn", chosen ? "chosen" : "rejected");
    size_t plen = (size_t)(mc - side) + strlen(HH_MARK);
    r->prompt = dup_n(side, plen);
    if (kind != DS_PREFERENCE) return 0;
    const char *mr = last_hh_mark(rejected);
    if (!mr) return fail(reason, n, "\"rejected\" has no \"\\n\\nAssistant:\" turn");
    size_t rlen = (size_t)(mr - rejected) + strlen(HH_MARK);
    if (rlen != plen || memcmp(chosen, rejected, plen) != 0)
        return fail(reason, n, "\"chosen\" and \"rejected\" do not share the same prompt "
                               "(the text through the last \"\\n\\nAssistant:\")");
    if (!chosen[plen]) return fail(reason, n, "\"chosen\" has an empty final assistant reply");
    if (!rejected[plen]) return fail(reason, n, "\"rejected\" has an empty final assistant reply");
    r->response = dup(chosen + plen);
    r->rejected = dup(rejected + plen);
    return 0;
}

static int parse_chat(const cJSON *msgs, DatasetKind kind, Record *r, char *reason, size_t n) {
    r->shape = REC_CHAT;
    if (!cJSON_IsArray(msgs)) return fail(reason, n, "field \"messages\" is not an array");
    int m = cJSON_GetArraySize(msgs);
    if (m == 0) return fail(reason, n, "field \"messages\" is empty");
    r->roles = calloc((size_t)m, sizeof(char *));
    r->contents = calloc((size_t)m, sizeof(char *));
    if (!r->roles || !r->contents) return fail(reason, n, "out of memory");
    int i = 0;
    const cJSON *msg;
    cJSON_ArrayForEach(msg, msgs) {
        const char *role, *content;
        if (!cJSON_IsObject(msg)) return fail(reason, n, "message %d is not an object", i);
        int rr = get_str(msg, "role", &role), rc = get_str(msg, "content", &content);
        if (rr <= 0) return fail(reason, n, "message %d has no \"role\" string", i);
        if (rc <= 0) return fail(reason, n, "message %d has no \"content\" string", i);
        if (strcmp(role, "system") != 0 && strcmp(role, "user") != 0 && strcmp(role, "assistant") != 0)
            return fail(reason, n, "message %d has role \"%.40s\" (expected system, user or assistant)", i, role);
        r->roles[i] = dup(role);
        r->contents[i] = dup(content);
        r->n_messages = ++i;
        if (!r->roles[i - 1] || !r->contents[i - 1]) return fail(reason, n, "out of memory");
    }
    int last_is_assistant = strcmp(r->roles[m - 1], "assistant") == 0;
    if (kind == DS_SFT) {
        if (!last_is_assistant)
            return fail(reason, n, "record has no response: the last message is from \"%s\", not \"assistant\"",
                        r->roles[m - 1]);
        r->response = dup(r->contents[m - 1]);
    }
    return 0;
}

// After a successful parse: every string the shape needs is there (a failed malloc leaves NULL).
static int record_complete(const Record *r, DatasetKind kind) {
    int need_resp = kind == DS_SFT || (kind == DS_PREFERENCE);
    switch (r->shape) {
    case REC_PROMPT_RESPONSE:
    case REC_PROMPT_COMPLETION: return r->prompt && r->response;
    case REC_ALPACA: return r->instruction && r->input && (kind != DS_SFT || r->response);
    case REC_CHAT:
        for (int i = 0; i < r->n_messages; i++)
            if (!r->roles[i] || !r->contents[i]) return 0;
        return kind != DS_SFT || r->response;
    case REC_TEXT: return r->text != NULL;
    case REC_PREFERENCE:
    case REC_HH: return r->prompt && (kind != DS_PREFERENCE || (r->response && r->rejected));
    case REC_PROMPT_ONLY: return r->prompt && !need_resp;
    default: return 0;
    }
}

int record_parse(const cJSON *j, DatasetKind kind, Record *r, char *reason, size_t n) {
    memset(r, 0, sizeof *r);
    if (!cJSON_IsObject(j)) return fail(reason, n, "record is not a JSON object");
    if (check_types(j, reason, n) != 0) return -1;
    int rc = -1;
    const char *s, *s2;
    if (cJSON_GetObjectItemCaseSensitive(j, "chosen") || cJSON_GetObjectItemCaseSensitive(j, "rejected")) {
        rc = parse_preference(j, kind, r, reason, n);
    } else if (kind == DS_PREFERENCE) {
        rc = fail(reason, n, "record has no \"chosen\" and \"rejected\" (preference data needs "
                             "{prompt, chosen, rejected} or HH-RLHF {chosen, rejected})");
    } else if (cJSON_GetObjectItemCaseSensitive(j, "messages")) {
        rc = parse_chat(cJSON_GetObjectItemCaseSensitive(j, "messages"), kind, r, reason, n);
    } else if (get_str(j, "instruction", &s) > 0) {
        r->shape = REC_ALPACA;
        r->instruction = dup(s);
        r->input = dup(get_str(j, "input", &s2) > 0 ? s2 : "");
        if (get_str(j, "output", &s2) > 0) r->response = dup(s2);
        rc = (kind == DS_SFT && !r->response) ? fail(reason, n, "record has no \"output\"") : 0;
    } else if (get_str(j, "prompt", &s) > 0) {
        r->prompt = dup(s);
        int has_resp = get_str(j, "response", &s) > 0, has_comp = get_str(j, "completion", &s2) > 0;
        if (has_resp && has_comp) {
            rc = fail(reason, n, "record has both \"response\" and \"completion\"");
        } else if (has_resp || has_comp) {
            r->shape = has_resp ? REC_PROMPT_RESPONSE : REC_PROMPT_COMPLETION;
            r->response = dup(has_resp ? s : s2);
            rc = 0;
        } else {
            r->shape = REC_PROMPT_ONLY;
            rc = kind == DS_SFT ? fail(reason, n, "record has no \"response\" (or \"completion\")") : 0;
        }
    } else if (get_str(j, "text", &s) > 0) {
        r->shape = REC_TEXT;
        r->text = dup(s);
        rc = 0;
    } else {
        rc = fail(reason, n, "record has none of the known fields (prompt, instruction, messages, text, "
                             "chosen/rejected)");
    }
    if (rc == 0 && !record_complete(r, kind)) rc = fail(reason, n, "out of memory");
    if (rc != 0) record_free(r);
    return rc;
}
