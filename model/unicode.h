// unicode.h — the small piece of Unicode the tokenizers need: UTF-8 decoding, the regex classes
// \p{L}, \p{N} and \s, and GPT-2's byte <-> code point table (FORMATS.md §2d).
#ifndef FTK_UNICODE_H
#define FTK_UNICODE_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t lo, hi;  // inclusive
} UnicodeRange;

// Generated tables (model/unicode_tables.c, scripts/gen_unicode_tables.py).
extern const UnicodeRange unicode_letter_ranges[];
extern const int unicode_letter_ranges_count;
extern const UnicodeRange unicode_number_ranges[];
extern const int unicode_number_ranges_count;
extern const char unicode_tables_version[];

// Decodes one UTF-8 sequence from s (n > 0 bytes available). Returns the number of bytes it
// takes (1..4) and sets *cp. A malformed or truncated sequence, an overlong form or a surrogate
// counts as one byte with *cp = 0xFFFD.
int utf8_decode(const unsigned char *s, size_t n, uint32_t *cp);
// Writes cp as UTF-8 into out (4 bytes room); returns the length.
int utf8_encode(uint32_t cp, char *out);

int unicode_is_letter(uint32_t cp);      // \p{L}
int unicode_is_number(uint32_t cp);      // \p{N}
int unicode_is_whitespace(uint32_t cp);  // \s = White_Space property

// GPT-2 bytes_to_unicode: printable bytes map to themselves, the other 68 to U+0100.. in order.
uint32_t gpt2_byte_to_cp(unsigned char b);
// The inverse; -1 for a code point that stands for no byte.
int gpt2_cp_to_byte(uint32_t cp);

#endif
