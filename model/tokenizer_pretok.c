// tokenizer_pretok.c — the byte-level BPE pre-tokenizers, written out by hand instead of a regex
// engine. Each function returns the end (exclusive) of the pre-token that starts at code point i
// of cps[0..n); the caller walks i = end until n. The alternatives are tried in the regex's order
// and each one is greedy, which is what a backtracking regex engine does for these patterns.
#include "model/tokenizer_internal.h"

#include "model/unicode.h"

static int is_space(uint32_t c) { return unicode_is_whitespace(c); }
static int is_letter(uint32_t c) { return unicode_is_letter(c); }
static int is_number(uint32_t c) { return unicode_is_number(c); }
static int is_other(uint32_t c) { return !is_space(c) && !is_letter(c) && !is_number(c); }

// \s+(?!\S)|\s+ at i (cps[i] is whitespace): the whole run if it ends the text, else the run
// less its last character (which then leads the next pre-token), but never less than one.
static size_t whitespace_run(const uint32_t *cps, size_t n, size_t i) {
    size_t k = i;
    while (k < n && is_space(cps[k])) k++;
    if (k == n) return k;
    return (k - i >= 2) ? k - 1 : k;
}

// 's|'t|'re|'ve|'m|'ll|'d (case-sensitive, as in GPT-2); returns the length or 0.
static size_t contraction(const uint32_t *cps, size_t n, size_t i, int ignore_case) {
    if (cps[i] != '\'' || i + 1 >= n) return 0;
    uint32_t a = cps[i + 1], b = (i + 2 < n) ? cps[i + 2] : 0;
    if (ignore_case) {
        if (a >= 'A' && a <= 'Z') a += 32;
        if (b >= 'A' && b <= 'Z') b += 32;
    }
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    return 0;
}

// GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
size_t pretok_gpt2_next(const uint32_t *cps, size_t n, size_t i) {
    size_t c = contraction(cps, n, i, 0);
    if (c) return i + c;
    size_t j = (cps[i] == ' ' && i + 1 < n) ? i + 1 : i;  // the optional leading space
    if (is_letter(cps[j])) {
        while (j < n && is_letter(cps[j])) j++;
        return j;
    }
    if (is_number(cps[j])) {
        while (j < n && is_number(cps[j])) j++;
        return j;
    }
    if (is_other(cps[j])) {
        while (j < n && is_other(cps[j])) j++;
        return j;
    }
    return whitespace_run(cps, n, i);
}

// Llama-3 / tiktoken cl100k style:
// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
// Qwen2 is the same with \p{N} (one digit at a time) for \p{N}{1,3}.
static size_t llama3_like_next(const uint32_t *cps, size_t n, size_t i, size_t max_digits) {
    size_t c = contraction(cps, n, i, 1);
    if (c) return i + c;
    // [^\r\n\p{L}\p{N}]?\p{L}+
    {
        size_t j = i;
        uint32_t x = cps[i];
        if (x != '\r' && x != '\n' && !is_letter(x) && !is_number(x) && i + 1 < n) j = i + 1;
        if (is_letter(cps[j])) {
            while (j < n && is_letter(cps[j])) j++;
            return j;
        }
        // with the optional character absent, \p{L}+ must start at i: covered above when cps[i]
        // is a letter (j == i then).
    }
    // \p{N}{1,3}
    if (is_number(cps[i])) {
        size_t j = i;
        while (j < n && j - i < max_digits && is_number(cps[j])) j++;
        return j;
    }
    // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
    {
        size_t j = (cps[i] == ' ' && i + 1 < n) ? i + 1 : i;
        if (is_other(cps[j])) {
            while (j < n && is_other(cps[j])) j++;
            while (j < n && (cps[j] == '\r' || cps[j] == '\n')) j++;
            return j;
        }
    }
    // \s*[\r\n]+ : the longest whitespace prefix whose last character is \r or \n
    {
        size_t k = i, last_nl = 0;
        while (k < n && is_space(cps[k])) {
            if (cps[k] == '\r' || cps[k] == '\n') last_nl = k + 1;
            k++;
        }
        if (last_nl) return last_nl;
    }
    return whitespace_run(cps, n, i);
}

size_t pretok_llama3_next(const uint32_t *cps, size_t n, size_t i) { return llama3_like_next(cps, n, i, 3); }
size_t pretok_qwen2_next(const uint32_t *cps, size_t n, size_t i) { return llama3_like_next(cps, n, i, 1); }
