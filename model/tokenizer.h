// tokenizer.h — encode text to ids and back. Two families:
//   TOK_SPM: SentencePiece-style (LLaMA, tok512): pieces with scores, "▁" for spaces, a dummy
//            prefix space, <0xXX> byte fallback; merges chosen by piece score (llama2.c / llama.cpp).
//   TOK_BPE: byte-level BPE (GPT-2): bytes->unicode table, regex pre-tokenizer, rank-ordered merges.
// Sources: tokenizer.model (protobuf), llama2.c tokenizer.bin, vocab.json + merges.txt,
// tokenizer.json (byte-level BPE, or SentencePiece-style BPE with byte_fallback), GGUF vocab.
// TOK_SPM with merges (from tokenizer.json) merges by rank instead of score. Not applied: the
// sentencepiece normalizer (NFKC, remove_extra_whitespaces), as llama.cpp and HF's Llama
// conversion don't either. A Tokenizer is read-only after loading: encode/decode are thread-safe.
#ifndef FTK_TOKENIZER_H
#define FTK_TOKENIZER_H

#include <stddef.h>

typedef enum { TOK_SPM = 0, TOK_BPE = 1 } TokKind;

// Token types as in GGUF tokenizer.ggml.token_type / sentencepiece.
enum { TOKT_NORMAL = 1, TOKT_UNKNOWN = 2, TOKT_CONTROL = 3, TOKT_USER = 4, TOKT_UNUSED = 5, TOKT_BYTE = 6 };

typedef struct Tokenizer {
    TokKind kind;
    int n_vocab;
    char **pieces;       // n_vocab NUL-terminated strings, as stored (SPM uses "▁", BPE the byte-unicode form)
    float *scores;       // n_vocab (SPM merge priority); may be NULL for BPE
    int *types;          // n_vocab TOKT_*
    char **merges;       // BPE: n_merges "a b" strings in rank order; NULL for SPM
    int n_merges;
    int bos_id, eos_id, unk_id, pad_id;   // -1 when absent
    int add_bos;         // prepend BOS when encoding a document
    int add_eos;
    int add_space_prefix;  // SPM dummy prefix (default 1); BPE: ByteLevel add_prefix_space (default 0)
    char source[16];     // "spm-model", "llama2c", "gguf", "hf-json", "vocab+merges"
    void *impl;          // private lookup tables (hash maps, merge ranks, ...)
} Tokenizer;

// Builds a tokenizer from plain arrays (the arrays are copied). Loaders for every source end here.
// scores/types/merges may be NULL. Special (CONTROL/USER) tokens are matched verbatim before BPE.
// Each merge is "left right" (split at the space where both sides are pieces); a merge naming an
// unknown piece, or whose concatenation is not a piece, is an error. Defaults: SPM add_bos = 1,
// add_space_prefix = 1; BPE both 0; add_eos = 0, pad_id = -1. With types NULL, SPM "<0xXX>"
// pieces are BYTE, bos/eos CONTROL and unk UNKNOWN.
int tokenizer_create(Tokenizer **out, TokKind kind, int n_vocab, const char *const *pieces,
                     const float *scores, const int *types, const char *const *merges, int n_merges,
                     int bos_id, int eos_id, int unk_id, char *err);

// Loaders by file. `path` names the file (or an HF dir for tokenizer_load_hf_dir).
int tokenizer_load_spm_model(Tokenizer **out, const char *path, char *err);          // tokenizer.model
int tokenizer_load_llama2c(Tokenizer **out, const char *path, int vocab_size, char *err);  // tokenizer.bin
int tokenizer_load_gpt2_files(Tokenizer **out, const char *vocab_json, const char *merges_txt, char *err);
int tokenizer_load_hf_json(Tokenizer **out, const char *path, char *err);           // tokenizer.json
int tokenizer_load_gguf(Tokenizer **out, const char *path, char *err);              // GGUF tokenizer.ggml.*
// HF dir: tokenizer.json, else tokenizer.model, else vocab.json+merges.txt; reads
// tokenizer_config.json / special_tokens_map.json / config.json for BOS/EOS/add_bos.
int tokenizer_load_hf_dir(Tokenizer **out, const char *dir, char *err);

void tokenizer_free(Tokenizer *t);

// Encodes text. add_bos/add_eos: -1 = the tokenizer's default, 0/1 = force.
// *ids is malloc'ed (caller frees).
int tokenizer_encode(const Tokenizer *t, const char *text, int add_bos, int add_eos,
                     int **ids, int *n_ids, char *err);

// The same on text[0..len), with a choice about special tokens: parse_special = 1 (what
// tokenizer_encode does) splits out every CONTROL and USER_DEFINED piece found verbatim in the
// text, as HF tokenizers do with added tokens; 0 splits out only USER_DEFINED ones (llama.cpp's
// parse_special = false), so that text from a data set cannot smuggle in "</s>" as EOS.
int tokenizer_encode_ex(const Tokenizer *t, const char *text, size_t len, int add_bos, int add_eos,
                        int parse_special, int **ids, int *n_ids, char *err);

// Decodes ids to a malloc'ed UTF-8 string (SPM: the dummy-prefix space of the first piece is dropped,
// and of the first piece after a control token, mirroring encode; control tokens such as BOS/EOS
// produce nothing; ids outside the vocabulary are skipped). NULL only when out of memory.
char *tokenizer_decode(const Tokenizer *t, const int *ids, int n_ids);

// The bytes one token stands for when it follows token `prev` (for streaming output); writes to
// buf (at least 256 bytes) and returns the length.
int tokenizer_token_bytes(const Tokenizer *t, int prev, int id, char *buf);

// The tokenizer.ggml.pre name a GGUF writer records for t ("default" for SPM, "gpt-2", "llama-bpe",
// "qwen2", "smollm"): what tokenizer_load_gguf maps back to the same pre-tokenizer.
const char *tokenizer_gguf_pre_name(const Tokenizer *t);

// Exact-piece lookup: id or -1.
int tokenizer_piece_id(const Tokenizer *t, const char *piece);

#endif
