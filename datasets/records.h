// records.h — the record shapes of a dataset line, detected per record (DESIGN §4).
//
//   shape          fields                                   meaning
//   REC_PROMPT_RESPONSE  {prompt, response}                 response kept verbatim (its leading space too)
//   REC_PROMPT_COMPLETION {prompt, completion}              TRL's name for the same thing
//   REC_ALPACA     {instruction, input?, output}            input may be missing, null or ""
//   REC_CHAT       {messages: [{role, content}...]}         roles system|user|assistant; for SFT the last
//                                                           message must be the assistant's (= response),
//                                                           earlier turns are the prompt
//   REC_TEXT       {text}                                   every token is trained
//   REC_PREFERENCE {prompt, chosen, rejected}
//   REC_HH         {chosen, rejected}                       HH-RLHF transcripts: both are split at their LAST
//                                                           "\n\nAssistant:"; the prompt ends with that marker
//                                                           and must be the same on both sides
//   REC_PROMPT_ONLY {prompt}                                prompts for PPO
//
// Detection order: chosen/rejected -> messages -> instruction -> prompt -> text. Other fields are
// ignored. What a record must hold depends on the dataset kind:
//   DS_SFT        a response: prompt/response, prompt/completion, alpaca, chat, text
//   DS_PREFERENCE chosen and rejected (different, non-empty): preference or HH
//   DS_PROMPT     any shape; only its prompt is used (chat: turns before a final assistant message;
//                 text: the text; alpaca: output may be missing)
#ifndef FTK_RECORDS_H
#define FTK_RECORDS_H

#include <stddef.h>
#include <cjson/cJSON.h>

typedef enum { DS_SFT = 0, DS_PREFERENCE = 1, DS_PROMPT = 2 } DatasetKind;

typedef enum {
    REC_PROMPT_RESPONSE = 0,
    REC_PROMPT_COMPLETION,
    REC_ALPACA,
    REC_CHAT,
    REC_TEXT,
    REC_PREFERENCE,
    REC_HH,
    REC_PROMPT_ONLY,
    REC_N_SHAPES
} RecordShape;

// One record with every string owned (malloc'ed). Fields a shape does not have are NULL.
typedef struct {
    RecordShape shape;
    char *prompt;        // prompt / HH prompt (through "\n\nAssistant:") / NULL
    char *response;      // response, completion, alpaca output, last assistant message, chosen
    char *rejected;      // preference shapes only
    char *instruction;   // alpaca
    char *input;         // alpaca; "" when missing
    char *text;          // text
    int n_messages;      // chat: every message, the final assistant one included
    char **roles;
    char **contents;
} Record;

// Fills r from one parsed JSON record. On failure returns -1 with a reason (no file:line; the
// caller adds them), e.g. `record has no "response"`, `"chosen" and "rejected" are identical`.
int record_parse(const cJSON *json, DatasetKind kind, Record *r, char *reason, size_t reason_len);
void record_free(Record *r);

const char *record_shape_name(RecordShape s);   // "prompt/response", "alpaca", "hh-rlhf", ...

#endif
