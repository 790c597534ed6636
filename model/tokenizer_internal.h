// tokenizer_internal.h — private to model/tokenizer*.c: the lookup tables behind Tokenizer.impl
// and the hooks the loaders use to set options that tokenizer_create has no argument for.
#ifndef FTK_TOKENIZER_INTERNAL_H
#define FTK_TOKENIZER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "model/tokenizer.h"

// Pre-tokenizer of a byte-level BPE (TOK_BPE).
typedef enum { PRETOK_GPT2 = 0, PRETOK_LLAMA3 = 1, PRETOK_QWEN2 = 2 } PretokKind;

typedef struct {
    // piece -> id: open addressing, slots hold an id or -1; piece_len[id] = strlen(pieces[id]).
    int *piece_slots;
    size_t piece_mask;
    size_t *piece_len;
    // merge (left id, right id) -> rank and the id of the merged piece.
    uint64_t *pair_keys;
    int *pair_rank;  // -1 = empty slot
    int *pair_result;
    size_t pair_mask;
    // The id that stands for a raw byte: SPM "<0xXX>", BPE the piece of the byte's code point.
    int byte_ids[256];
    // Decode tables for byte-level BPE: GPT-2 code point -> byte (code points < 0x144), -1 = none.
    int cp_byte[0x144];
    // Tokens split out of the text verbatim before BPE (CONTROL and USER_DEFINED), sorted by
    // first byte, then longest first; special_start[b]..special_start[b+1] are those starting with b.
    int *special_ids;
    int n_special;
    int special_start[257];
    // Bytes that some piece holds right before a "▁": a boundary in front of "▁" after any
    // other byte is one no merge can cross (SPM encodes the words between them separately).
    unsigned char glue_byte[256];
    int byte_fallback;  // SPM: characters without a piece become <0xXX> tokens (else unk)
    int ignore_merges;  // BPE: a pre-token that is itself a piece is emitted whole (HF ignore_merges)
    PretokKind pretok;
    int split_digits;   // BPE: HF Digits pre-tokenizer first: 0 off, 1 each digit, 2 runs of digits
    char *piece_block;  // storage of all piece strings
    char *merge_block;  // storage of all merge strings
} TokImpl;

// Loader hooks (call right after tokenizer_create).
void tokenizer_set_pretok(Tokenizer *t, PretokKind kind);
void tokenizer_set_byte_fallback(Tokenizer *t, int on);
void tokenizer_set_ignore_merges(Tokenizer *t, int on);
void tokenizer_set_split_digits(Tokenizer *t, int mode);  // 0 off, 1 individual digits, 2 digit runs
// After changing t->types: rebuilds the list of verbatim-matched (CONTROL / USER_DEFINED) tokens.
int tokenizer_rebuild_specials(Tokenizer *t, char *err);

// Pre-tokenizers (tokenizer_pretok.c): the end of the pre-token that starts at cps[i].
size_t pretok_gpt2_next(const uint32_t *cps, size_t n, size_t i);
size_t pretok_llama3_next(const uint32_t *cps, size_t n, size_t i);
size_t pretok_qwen2_next(const uint32_t *cps, size_t n, size_t i);

#endif
