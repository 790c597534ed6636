// test_tokenizer_badinput.c — broken tokenizer files give clear errors (naming the file and the
// fault) and never crash: truncated tokenizer.model / tokenizer.bin at every length, varints and
// lengths running past the end, random corruption, vocab.json that is not JSON, merges naming
// unknown tokens, empty files, unsupported tokenizer.json features, HF dirs without a tokenizer;
// and arbitrary bytes as text round-trip through encode/decode. Runs under ASan/UBSan in CI.
#include "tests/testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/common.h"
#include "model/tokenizer.h"

// Writes a scratch file (plain fwrite: thousands of these, no need for fsync). Returns its path
// in one of 32 rotating buffers.
static const char *write_bytes(const char *dir, const char *name, const void *data, size_t len) {
    static char path[32][1024];
    static int k = 0;
    char *p = path[k++ % 32];
    snprintf(p, 1024, "%s/%s", dir, name);
    unlink(p);  // a fresh file: rewriting a truncated one makes ext4 flush it on close
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
    return p;
}

static const char *write_text(const char *dir, const char *name, const char *text) {
    return write_bytes(dir, name, text, strlen(text));
}

// Loading must fail and the message must contain `needle` (and the file name, when given).
static void expect_spm_error(const char *path, const char *needle) {
    char err[FTK_ERR_LEN] = "";
    Tokenizer *t = (Tokenizer *)1;
    int rc = tokenizer_load_spm_model(&t, path, err);
    if (rc == 0 || !strstr(err, needle)) fprintf(stderr, "rc=%d err=\"%s\" (want \"%s\")\n", rc, err, needle);
    assert_int_not_equal(rc, 0);
    assert_null(t);
    assert_non_null(strstr(err, needle));
    assert_non_null(strstr(err, path));
}

static void test_spm_model_crafted(void **state) {
    (void)state;
    const char *dir = test_tmpdir("tokbad_spm");
    expect_spm_error(write_bytes(dir, "empty.model", "", 0), "empty");
    // field 1 (pieces), wire type 2, a length varint with its continuation bit set at the end
    const unsigned char runaway[] = {0x0A, 0xFF, 0xFF};
    expect_spm_error(write_bytes(dir, "varint.model", runaway, sizeof runaway), "varint runs past the end");
    // a 5-byte piece message with one byte present
    const unsigned char short_len[] = {0x0A, 0x05, 0x0A};
    expect_spm_error(write_bytes(dir, "len.model", short_len, sizeof short_len), "runs past the end");
    // a piece whose own string field claims 100 bytes
    const unsigned char inner[] = {0x0A, 0x03, 0x0A, 0x64, 0x41};
    expect_spm_error(write_bytes(dir, "inner.model", inner, sizeof inner), "runs past the end");
    // an 11-byte varint
    const unsigned char longv[] = {0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01};
    expect_spm_error(write_bytes(dir, "long.model", longv, sizeof longv), "longer than 10 bytes");
    // wire type 3 (start group) is not something a ModelProto contains
    const unsigned char group[] = {0x0B};
    expect_spm_error(write_bytes(dir, "group.model", group, sizeof group), "wire type 3");
    // a piece with an unknown type enum (9)
    const unsigned char badtype[] = {0x0A, 0x05, 0x0A, 0x01, 0x61, 0x18, 0x09};
    expect_spm_error(write_bytes(dir, "type.model", badtype, sizeof badtype), "unknown type 9");
    // one valid piece, but no trainer_spec: model type defaults to UNIGRAM, which is refused
    const unsigned char unigram[] = {0x0A, 0x03, 0x0A, 0x01, 0x61};
    expect_spm_error(write_bytes(dir, "unigram.model", unigram, sizeof unigram), "not BPE");
    // a text file
    expect_spm_error(write_text(dir, "text.model", "hello, this is not a protobuf\n"), "text.model");
    test_rmtree(dir);
}

static void test_spm_model_truncated_and_corrupted(void **state) {
    (void)state;
    const char *dir = test_tmpdir("tokbad_spm_trunc");
    char err[FTK_ERR_LEN], *data;
    size_t len;
    assert_int_equal(ftk_read_file(shared_path("models/stories260K/tok512.model"), &data, &len, err), 0);
    // Every truncation: pieces come first, then trainer_spec, then normalizer_spec, so a cut
    // anywhere fails (mid-field: past the end; before trainer_spec: UNIGRAM) except at the one
    // field boundary after trainer_spec (normalizer_spec then takes its defaults).
    int loaded = 0;
    for (size_t cut = 0; cut < len; cut++) {
        const char *p = write_bytes(dir, "cut.model", data, cut);
        Tokenizer *t = NULL;
        if (tokenizer_load_spm_model(&t, p, err) == 0) {
            loaded++;
            assert_int_equal(t->n_vocab, 512);
            tokenizer_free(t);
        } else {
            assert_non_null(strstr(err, "cut.model"));
        }
    }
    assert_true(loaded <= 1);
    // Random byte corruption (seeded): load or fail cleanly; whatever loads must encode.
    uint64_t rng = 12345;
    unsigned char *copy = malloc(len);
    for (int trial = 0; trial < 300; trial++) {
        memcpy(copy, data, len);
        int flips = 1 + (int)(ftk_rand_u32(&rng) % 4);
        for (int f = 0; f < flips; f++) copy[ftk_rand_u32(&rng) % len] = (unsigned char)ftk_rand_u32(&rng);
        const char *p = write_bytes(dir, "bad.model", copy, len);
        Tokenizer *t = NULL;
        if (tokenizer_load_spm_model(&t, p, err) == 0) {
            int *ids, n;
            if (tokenizer_encode(t, "Once upon a time, \xE6\x97\xA5.", -1, -1, &ids, &n, err) == 0) {
                free(tokenizer_decode(t, ids, n));
                free(ids);
            }
            tokenizer_free(t);
        } else {
            assert_true(strlen(err) > 0);
        }
    }
    free(copy);
    free(data);
    test_rmtree(dir);
}

static void test_llama2c_bin(void **state) {
    (void)state;
    const char *dir = test_tmpdir("tokbad_bin");
    char err[FTK_ERR_LEN], *data;
    size_t len;
    Tokenizer *t;
    assert_int_equal(ftk_read_file(shared_path("models/stories260K/tok512.bin"), &data, &len, err), 0);
    // Every truncation fails, naming the file (512 tokens are asked for).
    for (size_t cut = 0; cut < len; cut += (cut < 64 ? 1 : 7)) {
        const char *p = write_bytes(dir, "tok.bin", data, cut);
        t = NULL;
        assert_int_not_equal(tokenizer_load_llama2c(&t, p, 512, err), 0);
        assert_null(t);
        assert_non_null(strstr(err, "tok.bin"));
    }
    // Asking for more tokens than the file holds
    assert_int_not_equal(tokenizer_load_llama2c(&t, shared_path("models/stories260K/tok512.bin"), 513, err), 0);
    assert_non_null(strstr(err, "truncated at token 512"));
    // A negative and a huge token length
    unsigned char *copy = malloc(len);
    memcpy(copy, data, len);
    int32_t neg = -5, huge = 0x7FFFFFF0;
    memcpy(copy + 4 + 4, &neg, 4);  // token 0: score at 4, length at 8
    assert_int_not_equal(tokenizer_load_llama2c(&t, write_bytes(dir, "neg.bin", copy, len), 512, err), 0);
    assert_non_null(strstr(err, "token 0 has length -5"));
    memcpy(copy + 8, &huge, 4);
    assert_int_not_equal(tokenizer_load_llama2c(&t, write_bytes(dir, "huge.bin", copy, len), 512, err), 0);
    assert_non_null(strstr(err, "token 0 has length"));
    // bad max_token_length
    memcpy(copy, data, len);
    memcpy(copy, &neg, 4);
    assert_int_not_equal(tokenizer_load_llama2c(&t, write_bytes(dir, "max.bin", copy, len), 512, err), 0);
    assert_non_null(strstr(err, "max_token_length"));
    assert_int_not_equal(tokenizer_load_llama2c(&t, write_bytes(dir, "empty.bin", "", 0), 512, err), 0);
    assert_int_not_equal(tokenizer_load_llama2c(&t, "/nonexistent/tokenizer.bin", 512, err), 0);
    assert_non_null(strstr(err, "/nonexistent/tokenizer.bin"));
    free(copy);
    free(data);
    test_rmtree(dir);
}

static void expect_gpt2_error(const char *vocab, const char *merges, const char *needle) {
    char err[FTK_ERR_LEN] = "";
    Tokenizer *t = (Tokenizer *)1;
    int rc = tokenizer_load_gpt2_files(&t, vocab, merges, err);
    if (rc == 0 || !strstr(err, needle)) fprintf(stderr, "rc=%d err=\"%s\" (want \"%s\")\n", rc, err, needle);
    assert_int_not_equal(rc, 0);
    assert_null(t);
    assert_non_null(strstr(err, needle));
}

static void test_vocab_json_and_merges(void **state) {
    (void)state;
    const char *dir = test_tmpdir("tokbad_gpt2");
    char good_vocab[1024], good_merges[1024];
    snprintf(good_vocab, sizeof good_vocab, "%s", write_text(dir, "vocab.json", "{\"a\": 0, \"b\": 1, \"ab\": 2, \"<|endoftext|>\": 3}"));
    snprintf(good_merges, sizeof good_merges, "%s", write_text(dir, "merges.txt", "#version: 0.2\na b\n"));
    char err[FTK_ERR_LEN];
    Tokenizer *t;
    assert_int_equal(tokenizer_load_gpt2_files(&t, good_vocab, good_merges, err), 0);
    assert_int_equal(t->eos_id, 3);
    tokenizer_free(t);

    expect_gpt2_error(write_text(dir, "v1.json", "this is not json"), good_merges, "v1.json: not valid JSON");
    expect_gpt2_error(write_text(dir, "v2.json", "[1, 2, 3]"), good_merges, "not a JSON object");
    expect_gpt2_error(write_text(dir, "v3.json", "{\"a\": \"zero\"}"), good_merges, "is not a number");
    expect_gpt2_error(write_text(dir, "v4.json", "{\"a\": -1}"), good_merges, "bad id");
    expect_gpt2_error(write_text(dir, "v5.json", "{\"a\": 1.5}"), good_merges, "bad id");
    expect_gpt2_error(write_text(dir, "v6.json", "{\"a\": 0, \"b\": 0}"), good_merges, "given to both");
    expect_gpt2_error(write_text(dir, "v7.json", "{}"), good_merges, "empty vocab");
    expect_gpt2_error(write_text(dir, "v8.json", "{\"a\": 1e12}"), good_merges, "bad id");
    expect_gpt2_error(write_bytes(dir, "v9.json", "", 0), good_merges, "v9.json: empty file");
    expect_gpt2_error(write_text(dir, "v10.json", "{\"a\": 0, \"b\": 1"), good_merges, "not valid JSON");

    expect_gpt2_error(good_vocab, write_text(dir, "m1.txt", "a c\n"), "unknown token \"c\"");
    expect_gpt2_error(good_vocab, write_text(dir, "m2.txt", "x b\n"), "unknown token \"x\"");
    expect_gpt2_error(good_vocab, write_text(dir, "m3.txt", "b a\n"), "not in the vocabulary");
    expect_gpt2_error(good_vocab, write_text(dir, "m4.txt", "ab\n"), "is not \"a b\"");
    expect_gpt2_error(good_vocab, write_bytes(dir, "m5.txt", "", 0), "m5.txt: empty file");
    expect_gpt2_error(good_vocab, write_bytes(dir, "m6.txt", "a b\n\0x y\n", 9), "NUL");
    expect_gpt2_error(good_vocab, "/nonexistent/merges.txt", "/nonexistent/merges.txt");
    // merges errors name the merges file
    expect_gpt2_error(good_vocab, write_text(dir, "m7.txt", "a zz\n"), "m7.txt");
    test_rmtree(dir);
}

static void expect_json_error(const char *path, const char *needle) {
    char err[FTK_ERR_LEN] = "";
    Tokenizer *t = (Tokenizer *)1;
    int rc = tokenizer_load_hf_json(&t, path, err);
    if (rc == 0 || !strstr(err, needle)) fprintf(stderr, "rc=%d err=\"%s\" (want \"%s\")\n", rc, err, needle);
    assert_int_not_equal(rc, 0);
    assert_null(t);
    assert_non_null(strstr(err, needle));
    assert_non_null(strstr(err, path));
}

static void test_tokenizer_json(void **state) {
    (void)state;
    const char *dir = test_tmpdir("tokbad_json");
    const char *bl = "\"pre_tokenizer\":{\"type\":\"ByteLevel\"},";
    char buf[2048];
    expect_json_error(write_text(dir, "a.json", "{\"model\": "), "not valid JSON");
    expect_json_error(write_text(dir, "b.json", "{\"version\": \"1.0\"}"), "no \"model\" object");
    expect_json_error(write_text(dir, "c.json", "{\"model\":{\"type\":\"WordPiece\",\"vocab\":{\"a\":0}}}"),
                      "model type WordPiece is not supported");
    snprintf(buf, sizeof buf, "{%s\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":{}}}", bl);
    expect_json_error(write_text(dir, "d.json", buf), "merges is not an array");
    snprintf(buf, sizeof buf, "{%s\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[7]}}", bl);
    expect_json_error(write_text(dir, "e.json", buf), "merge 0 is not");
    snprintf(buf, sizeof buf, "{%s\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[[\"a\",\"q\"]]}}", bl);
    expect_json_error(write_text(dir, "f.json", buf), "unknown token \"q\"");
    expect_json_error(write_text(dir, "g.json", "{\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\w+\"}},"
                                                "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}"),
                      "Split pattern");
    expect_json_error(write_text(dir, "h.json", "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}"),
                      "neither byte-level nor SentencePiece-style");
    snprintf(buf, sizeof buf, "{%s\"added_tokens\":[{\"id\":-3,\"content\":\"x\"}],"
                              "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}", bl);
    expect_json_error(write_text(dir, "i.json", buf), "bad entry in added_tokens");
    expect_json_error(write_text(dir, "j.json", "{\"normalizer\":{\"type\":\"NFKC\"},\"model\":{\"type\":\"BPE\","
                                                "\"vocab\":{\"a\":0},\"byte_fallback\":true,\"merges\":[]}}"),
                      "normalizer NFKC is not supported");
    expect_json_error(write_bytes(dir, "k.json", "", 0), "empty file");
    test_rmtree(dir);
}

static void test_hf_dir(void **state) {
    (void)state;
    const char *dir = test_tmpdir("tokbad_dir");
    char err[FTK_ERR_LEN];
    Tokenizer *t = (Tokenizer *)1;
    assert_int_not_equal(tokenizer_load_hf_dir(&t, dir, err), 0);
    assert_null(t);
    assert_non_null(strstr(err, dir));
    assert_non_null(strstr(err, "tokenizer.json"));
    assert_non_null(strstr(err, "tokenizer.model"));
    assert_non_null(strstr(err, "merges.txt"));
    assert_int_not_equal(tokenizer_load_hf_dir(&t, "/nonexistent/model-dir", err), 0);
    assert_non_null(strstr(err, "/nonexistent/model-dir"));
    // vocab.json alone is not enough
    write_text(dir, "vocab.json", "{\"a\": 0}");
    assert_int_not_equal(tokenizer_load_hf_dir(&t, dir, err), 0);
    assert_non_null(strstr(err, "vocab.json + merges.txt"));
    // a broken tokenizer_config.json next to a good tokenizer is an error naming it
    write_text(dir, "merges.txt", "");
    write_text(dir, "vocab.json", "{\"a\": 0, \"b\": 1, \"ab\": 2}");
    write_text(dir, "merges.txt", "a b\n");
    assert_int_equal(tokenizer_load_hf_dir(&t, dir, err), 0);
    tokenizer_free(t);
    write_text(dir, "tokenizer_config.json", "{\"add_bos_token\": tru");
    assert_int_not_equal(tokenizer_load_hf_dir(&t, dir, err), 0);
    assert_non_null(strstr(err, "tokenizer_config.json"));
    test_rmtree(dir);
}

static void test_create_and_decode_guards(void **state) {
    (void)state;
    char err[FTK_ERR_LEN];
    Tokenizer *t = NULL;
    const char *pieces[] = {"a", "b", "ab"};
    const char *bad_merge[] = {"a b", "ab"};
    assert_int_not_equal(tokenizer_create(&t, TOK_BPE, 0, pieces, NULL, NULL, NULL, 0, -1, -1, -1, err), 0);
    assert_int_not_equal(tokenizer_create(&t, TOK_BPE, 3, NULL, NULL, NULL, NULL, 0, -1, -1, -1, err), 0);
    assert_int_not_equal(tokenizer_create(&t, TOK_BPE, 3, pieces, NULL, NULL, NULL, 0, 3, -1, -1, err), 0);
    assert_non_null(strstr(err, "outside the vocabulary"));
    assert_int_not_equal(tokenizer_create(&t, TOK_BPE, 3, pieces, NULL, NULL, bad_merge, 2, -1, -1, -1, err), 0);
    assert_non_null(strstr(err, "merge 1"));
    assert_int_not_equal(tokenizer_create(&t, (TokKind)7, 3, pieces, NULL, NULL, NULL, 0, -1, -1, -1, err), 0);
    assert_int_equal(tokenizer_create(&t, TOK_BPE, 3, pieces, NULL, NULL, bad_merge, 1, -1, -1, -1, err), 0);
    // ids outside the vocabulary decode to nothing
    const int ids[] = {-5, 0, 99999, 2};
    char *s = tokenizer_decode(t, ids, 4);
    assert_string_equal(s, "aab");
    free(s);
    char buf[256];
    assert_int_equal(tokenizer_token_bytes(t, -1, 12345, buf), 0);
    // a byte with no token and no <unk>: a clear error, no crash
    int *out, n;
    assert_int_not_equal(tokenizer_encode(t, "abc", 0, 0, &out, &n, err), 0);
    assert_non_null(strstr(err, "0x63"));
    tokenizer_free(t);
}

// Arbitrary bytes (no NUL) survive encode -> decode with both byte-level BPE and SPM byte fallback.
static void test_random_bytes_roundtrip(void **state) {
    (void)state;
    char err[FTK_ERR_LEN];
    Tokenizer *spm, *bpe;
    assert_int_equal(tokenizer_load_spm_model(&spm, shared_path("models/stories260K/tok512.model"), err), 0);
    assert_int_equal(tokenizer_load_gpt2_files(&bpe, shared_path("models/gpt2-tokenizer/encoder.json"),
                                               shared_path("models/gpt2-tokenizer/vocab.bpe"), err), 0);
    uint64_t rng = 777;
    char text[80];
    for (int trial = 0; trial < 300; trial++) {
        int len = (int)(ftk_rand_u32(&rng) % 64);
        for (int i = 0; i < len; i++) {
            uint32_t r = ftk_rand_u32(&rng);
            // mostly ASCII and spaces, some high bytes, some valid UTF-8 pieces
            text[i] = (r % 5 == 0) ? ' ' : (r % 7 == 0) ? (char)(0x80 + r % 128) : (char)(0x21 + r % 94);
        }
        text[len] = 0;
        Tokenizer *both[2] = {spm, bpe};
        for (int k = 0; k < 2; k++) {
            int *ids, n;
            assert_int_equal(tokenizer_encode(both[k], text, -1, -1, &ids, &n, err), 0);
            char *back = tokenizer_decode(both[k], ids, n);
            assert_string_equal(back, text);
            free(back);
            free(ids);
        }
    }
    tokenizer_free(spm);
    tokenizer_free(bpe);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spm_model_crafted),
        cmocka_unit_test(test_spm_model_truncated_and_corrupted),
        cmocka_unit_test(test_llama2c_bin),
        cmocka_unit_test(test_vocab_json_and_merges),
        cmocka_unit_test(test_tokenizer_json),
        cmocka_unit_test(test_hf_dir),
        cmocka_unit_test(test_create_and_decode_guards),
        cmocka_unit_test(test_random_bytes_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
