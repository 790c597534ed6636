// tokenize.h — token ids and loss masks for templated text, with truncation (DESIGN §4).
//
// A sequence is  ids = [BOS] + prompt tokens + response tokens + [EOS]
//                mask =   0   +      0        +       1         +   1     (mask[i] = 1: ids[i] is a target)
// BOS only if the tokenizer adds one, EOS only with add_eos and a tokenizer EOS. The mask is set by
// construction from the token counts, never by searching for a marker. train_on_prompt also sets
// the prompt's tokens (never BOS). {text} records have an empty prompt: every token after BOS trains.
//
// Prompt/response boundary: the text is encoded as one piece, encode(prompt + response), and the
// first len(encode(prompt)) tokens are the prompt's. This is exact when the prompt's encoding is a
// prefix of the whole encoding (always for tok512 on tinystories-mia). When it is not (a merge
// across the boundary), the prompt and the response are encoded separately and concatenated (the
// response as a continuation: no SentencePiece dummy space); TokFlags.prefix_fallback says so.
//
// Truncation to max_seq_length M (the longest side of a pair counts): first the prompt loses tokens
// from its start (BOS stays), then each response loses tokens from its end (EOS first). Preference
// pairs share one prompt, truncated identically on both sides. When BOS + prompt alone leave no room
// for a response token (>= M; prompt-only: > M), long_prompt decides: truncate as above, skip the
// record, or fail. A record with no response token left is dropped.
#ifndef FTK_TOKENIZE_H
#define FTK_TOKENIZE_H

struct Tokenizer;

// The encode function the dataset code calls. The real one wraps tokenizer_encode (tok_encoder_init);
// tests may plug in a byte-level fake.
typedef struct TokEncoder {
    // Encodes text with no BOS/EOS. continuation = 1: the text directly follows other text (no
    // dummy-prefix space). parse_special = 1: control tokens written in the text ("<|im_end|>",
    // "</s>") become those tokens; 0: they stay text. *ids is malloc'ed (may be NULL when *n_ids == 0).
    int (*encode)(void *ctx, const char *text, int continuation, int parse_special, int **ids, int *n_ids,
                  char *err);
    void *ctx;
    int bos_id;   // prepended to every sequence; -1 = none
    int eos_id;   // appended after each response when add_eos; -1 = none
    int pad_id;   // batch padding: tokenizer pad, else EOS, else 0
} TokEncoder;

// Wraps a loaded Tokenizer (borrowed; it must outlive the encoder).
void tok_encoder_init(TokEncoder *e, const struct Tokenizer *t);

typedef enum {
    LONG_PROMPT_AUTO = 0,   // dataset default: TRUNCATE for SFT, SKIP for preference and prompt data
    LONG_PROMPT_TRUNCATE,
    LONG_PROMPT_SKIP,
    LONG_PROMPT_ERROR,
} LongPromptPolicy;

typedef struct {
    int max_seq_length;            // M; 0 = no limit
    int add_eos;                   // append EOS after each response
    int train_on_prompt;           // mask 1 on prompt tokens too
    LongPromptPolicy long_prompt;  // TRUNCATE, SKIP or ERROR (AUTO is resolved by the caller)
    int parse_special;             // passed to the encoder (the dataset sets it for chatml text only)
} TokenizeOptions;

typedef struct {
    int *ids;               // (len)
    unsigned char *mask;    // (len)
    int len;
    int n_prompt;           // leading tokens that are BOS + prompt (after truncation)
} TokSeq;

typedef struct {
    int truncated;          // something was cut
    int prefix_fallback;    // prompt and response had to be encoded separately
} TokFlags;

enum { TOK_OK = 0, TOK_DROP_EMPTY = 1, TOK_DROP_LONG_PROMPT = 2 };

// Tokenizes prompt followed by each of n_resp responses: n_resp = 1 (SFT), 2 (chosen, rejected;
// the prompt tokens are shared), or 0 (prompt only: out[0] = [BOS] + prompt, mask all 0).
// out has max(n_resp, 1) entries. Returns TOK_OK (out filled), TOK_DROP_EMPTY / TOK_DROP_LONG_PROMPT
// (nothing allocated; err holds the reason), or -1 (encoder failure, or a long prompt under
// LONG_PROMPT_ERROR; err holds the reason).
int tokenize_example(const TokEncoder *e, const TokenizeOptions *o, const char *prompt,
                     const char *const *responses, int n_resp, TokSeq *out, TokFlags *flags, char *err);
void tokseq_free(TokSeq *s);

#endif
