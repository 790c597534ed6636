// tokenizer_write.h — writing a loaded Tokenizer (model/tokenizer.h) back out, for exports whose
// source had no HF tokenizer files (llama2.c tokenizer.bin, a GGUF vocabulary) and for GGUF files.
//
//   SPM  -> tokenizer.model: a sentencepiece ModelProto with the pieces (the "▁" form the Tokenizer
//           holds; llama2.c's " " was already turned into "▁" by its loader), scores and types; a
//           BPE trainer_spec (model_type 2, vocab_size, byte_fallback when <0xXX> pieces exist,
//           unk/bos/eos/pad ids and pieces) and an identity normalizer_spec (add_dummy_prefix from
//           the Tokenizer, no whitespace removal, escaped whitespace). sentencepiece needs exactly
//           one UNKNOWN piece: the unk id (or "<unk>") gets that type.
//   BPE  -> vocab.json ({piece: id}) + merges.txt ("#version: 0.2" then "a b" per line, rank order).
//   both -> tokenizer_config.json (LlamaTokenizer / GPT2Tokenizer, add_bos/eos, special tokens,
//           added_tokens_decoder for control tokens) + special_tokens_map.json.
//   GGUF -> tokenizer.ggml.* keys as llama.cpp's converter writes them (FORMATS §2c).
#ifndef FTK_TOKENIZER_WRITE_H
#define FTK_TOKENIZER_WRITE_H

#include "model/gguf.h"
#include "model/tokenizer.h"

int tokenizer_write_spm_model(const Tokenizer *t, const char *path, char *err);
int tokenizer_write_gpt2_files(const Tokenizer *t, const char *dir, char *err);
// model_max_length: the model's context (written to tokenizer_config.json).
int tokenizer_write_hf_configs(const Tokenizer *t, const char *dir, int model_max_length, char *err);
// All the files for t's kind into dir.
int tokenizer_write_hf_dir(const Tokenizer *t, const char *dir, int model_max_length, char *err);

// tokenizer.ggml.model ("llama" / "gpt2"), .pre ("default" / "gpt-2"), .tokens, .scores (SPM),
// .token_type, .merges (BPE), bos/eos/unknown/padding ids, add_bos_token, add_eos_token and, for
// SPM, add_space_prefix. n_vocab (>= t->n_vocab) is the model's vocabulary: extra ids get "[PAD<id>]"
// pieces of type UNUSED (score -1000), as convert_hf_to_gguf.py pads them.
int tokenizer_gguf_set_keys(GgufWriter *w, const Tokenizer *t, int n_vocab, char *err);

#endif
