// test_dataset_badinput.c — datasets/ on bad input: malformed lines (error names file:line),
// missing fields, empty files, truncated and corrupt gzip, broken JSON arrays, bad preference
// pairs, skip-bad-lines counting, bad cursors. Runs under ASan/UBSan in CI.
#include "tests/testutil.h"

#include <stdlib.h>
#include <string.h>

#include "datasets/batch.h"
#include "datasets/dataset.h"
#include "datasets/jsonl.h"
#include "model/common.h"
#include "tests/dataset_testutil.h"

static char g_dir[512];

static const char *tmp_path(const char *name) {
    static char buf[4][700];
    static int k = 0;
    char *out = buf[k++ % 4];
    snprintf(out, 700, "%s/%s", g_dir, name);
    return out;
}

// Loads `content` (written to g_dir/name) and expects failure with every string of `want` in err.
static void expect_fail(const char *name, const char *content, DatasetKind kind, int skip_bad, const char *want1,
                        const char *want2) {
    const char *p = tmp_path(name);
    write_text(p, content);
    TokEncoder e = fake_encoder(0);
    DatasetOptions o = dataset_options_default(kind);
    o.skip_bad_lines = skip_bad;
    Dataset ds;
    char err[FTK_ERR_LEN] = "";
    int rc = dataset_load(&ds, p, &o, &e, err);
    if (rc == 0) dataset_free(&ds);
    assert_int_not_equal(rc, 0);
    if (want1 && !strstr(err, want1)) fail_msg("error \"%s\" lacks \"%s\"", err, want1);
    if (want2 && !strstr(err, want2)) fail_msg("error \"%s\" lacks \"%s\"", err, want2);
    // The dataset is left empty and freeable.
    assert_null(ds.seqs);
    dataset_free(&ds);
}

static void test_malformed_line(void **state) {
    (void)state;
    expect_fail("train.jsonl", "{\"prompt\":\"a\",\"response\":\"b\"}\n\n{\"prompt\":\"a\",\"response\":\"b\"\n",
                DS_SFT, 0, "train.jsonl:3: not valid JSON", NULL);
    expect_fail("two.jsonl", "{\"prompt\":\"a\",\"response\":\"b\"} {\"text\":\"x\"}\n", DS_SFT, 0,
                "two.jsonl:1: not valid JSON", "extra data");
    expect_fail("notobj.jsonl", "{\"text\":\"x\"}\n[1, 2]\n", DS_SFT, 0, "notobj.jsonl:2: record is not a JSON object",
                NULL);
    expect_fail("type.jsonl", "{\"prompt\": 5, \"response\": \"x\"}\n", DS_SFT, 0,
                "type.jsonl:1: field \"prompt\" is not a string", NULL);
    expect_fail("binary.jsonl", "\x01\x02\xff\xfe garbage\n", DS_SFT, 0, "binary.jsonl:1: not valid JSON", NULL);
    // A NUL byte inside a line is not JSON either.
    const char *p = tmp_path("nul.jsonl");
    FILE *f = fopen(p, "wb");
    fwrite("{\"text\":\"a\0b\"}\n", 1, 15, f);
    fclose(f);
    TokEncoder e = fake_encoder(0);
    DatasetOptions o = dataset_options_default(DS_SFT);
    Dataset ds;
    char err[FTK_ERR_LEN];
    assert_int_not_equal(dataset_load(&ds, p, &o, &e, err), 0);
    assert_non_null(strstr(err, "nul.jsonl:1: not valid JSON"));
}

static void test_missing_fields(void **state) {
    (void)state;
    expect_fail("train.jsonl", "{\"prompt\":\"a\",\"response\":\"b\"}\n{\"text\":\"t\"}\n{\"prompt\":\"only\"}\n", DS_SFT,
                0, "train.jsonl:3: record has no \"response\"", NULL);
    expect_fail("alp.jsonl", "{\"instruction\":\"i\",\"input\":\"\"}\n", DS_SFT, 0, "alp.jsonl:1: record has no \"output\"",
                NULL);
    expect_fail("none.jsonl", "{\"question\":\"q\",\"answer\":\"a\"}\n", DS_SFT, 0,
                "none.jsonl:1: record has none of the known fields", NULL);
    expect_fail("both.jsonl", "{\"prompt\":\"q\",\"response\":\"a\",\"completion\":\"b\"}\n", DS_SFT, 0,
                "both.jsonl:1:", "both");
    // Chat: bad role, last message not from the assistant, empty list, content not a string.
    expect_fail("chat1.jsonl", "{\"messages\":[{\"role\":\"bot\",\"content\":\"x\"}]}\n", DS_SFT, 0, "chat1.jsonl:1:",
                "role \"bot\"");
    expect_fail("chat2.jsonl",
                "{\"messages\":[{\"role\":\"assistant\",\"content\":\"x\"},{\"role\":\"user\",\"content\":\"y\"}]}\n",
                DS_SFT, 0, "chat2.jsonl:1: record has no response", "\"user\"");
    expect_fail("chat3.jsonl", "{\"messages\":[]}\n", DS_SFT, 0, "chat3.jsonl:1:", "empty");
    expect_fail("chat4.jsonl", "{\"messages\":[{\"role\":\"user\",\"content\":3}]}\n", DS_SFT, 0, "chat4.jsonl:1:",
                "content");
    // Template that does not fit the record.
    const char *p = tmp_path("tpl.jsonl");
    write_text(p, "{\"text\":\"plain text\"}\n");
    TokEncoder e = fake_encoder(0);
    DatasetOptions o = dataset_options_default(DS_SFT);
    o.template_kind = TPL_CHATML;
    Dataset ds;
    char err[FTK_ERR_LEN];
    assert_int_not_equal(dataset_load(&ds, p, &o, &e, err), 0);
    assert_non_null(strstr(err, "tpl.jsonl:1: the chatml template does not apply to a text record"));
}

static void test_empty_inputs(void **state) {
    (void)state;
    expect_fail("empty.jsonl", "", DS_SFT, 0, "empty.jsonl", "no records");
    expect_fail("blank.jsonl", "\n   \n\r\n", DS_SFT, 1, "blank.jsonl", "no records");
    expect_fail("emptyarr.json", " [ ]\n", DS_SFT, 0, "emptyarr.json", "no records");
    // Every record bad (skipped) or dropped: nothing usable, and the error says why.
    expect_fail("allbad.jsonl", "{\"prompt\":\"a\"}\nnot json\n", DS_SFT, 1, "allbad.jsonl: no usable records",
                "2 skipped");
    write_gz(tmp_path("empty.gz"), "");
    TokEncoder e = fake_encoder(0);
    DatasetOptions o = dataset_options_default(DS_SFT);
    Dataset ds;
    char err[FTK_ERR_LEN];
    assert_int_not_equal(dataset_load(&ds, tmp_path("empty.gz"), &o, &e, err), 0);
    assert_non_null(strstr(err, "no records"));
    assert_int_not_equal(dataset_load(&ds, tmp_path("does-not-exist.jsonl"), &o, &e, err), 0);
    assert_non_null(strstr(err, "does-not-exist.jsonl"));
    // A directory: said so, not "line 1: read error".
    assert_int_not_equal(dataset_load(&ds, g_dir, &o, &e, err), 0);
    assert_non_null(strstr(err, g_dir));
    assert_non_null(strstr(err, "is a directory"));
    // max_seq_length that cannot hold a token after BOS
    write_text(tmp_path("ok.jsonl"), "{\"text\":\"x\"}\n");
    o.max_seq_length = 1;
    assert_int_not_equal(dataset_load(&ds, tmp_path("ok.jsonl"), &o, &e, err), 0);
    assert_non_null(strstr(err, "max_seq_length"));
}

// Writes a gzip file of many records, then a copy cut to `keep` bytes or with a byte flipped.
static size_t make_big_gz(const char *path) {
    char *text = malloc(200000), *p = text;
    for (int i = 0; i < 2000; i++) p += sprintf(p, "{\"prompt\":\"prompt %d\",\"response\":\" response %d\"}\n", i, i * 7);
    *p = 0;
    write_gz(path, text);
    free(text);
    char *data;
    size_t len;
    char err[FTK_ERR_LEN];
    assert_int_equal(ftk_read_file(path, &data, &len, err), 0);
    free(data);
    return len;
}

static void test_bad_gzip(void **state) {
    (void)state;
    const char *full = tmp_path("big.jsonl.gz");
    size_t len = make_big_gz(full);
    char *data;
    size_t n;
    char err[FTK_ERR_LEN];
    assert_int_equal(ftk_read_file(full, &data, &n, err), 0);
    assert_int_equal(n, len);
    TokEncoder e = fake_encoder(0);
    DatasetOptions o = dataset_options_default(DS_SFT);
    o.skip_bad_lines = 1;   // never makes a broken stream acceptable
    Dataset ds;
    assert_int_equal(dataset_load(&ds, full, &o, &e, err), 0);
    assert_int_equal(ds.n, 2000);
    dataset_free(&ds);
    // Truncated: at half, and missing only the 8-byte trailer's last bytes, and only the header.
    const size_t cuts[3] = {len / 2, len - 3, 5};
    for (int c = 0; c < 3; c++) {
        const char *p = tmp_path("cut.jsonl.gz");
        FILE *f = fopen(p, "wb");
        fwrite(data, 1, cuts[c], f);
        fclose(f);
        assert_int_not_equal(dataset_load(&ds, p, &o, &e, err), 0);
        if (!strstr(err, "cut.jsonl.gz") || (!strstr(err, "truncated gzip") && !strstr(err, "corrupt gzip")))
            fail_msg("cut at %zu: %s", cuts[c], err);
    }
    // Corrupt: flip bytes in the middle of the deflate stream (or the CRC catches it).
    data[len / 2] ^= 0x55;
    data[len / 2 + 1] ^= 0xAA;
    const char *p = tmp_path("bad.jsonl.gz");
    FILE *f = fopen(p, "wb");
    fwrite(data, 1, len, f);
    fclose(f);
    assert_int_not_equal(dataset_load(&ds, p, &o, &e, err), 0);
    assert_non_null(strstr(err, "bad.jsonl.gz"));
    free(data);
    // Two gzip members concatenated are one valid stream (gzip allows it).
    const char *a = tmp_path("a.gz"), *b = tmp_path("b.gz");
    write_gz(a, "{\"text\":\"one\"}\n");
    write_gz(b, "{\"text\":\"two\"}\n");
    char *da, *db;
    size_t la, lb;
    assert_int_equal(ftk_read_file(a, &da, &la, err), 0);
    assert_int_equal(ftk_read_file(b, &db, &lb, err), 0);
    f = fopen(tmp_path("ab.gz"), "wb");
    fwrite(da, 1, la, f);
    fwrite(db, 1, lb, f);
    fclose(f);
    free(da);
    free(db);
    o.skip_bad_lines = 0;
    assert_int_equal(dataset_load(&ds, tmp_path("ab.gz"), &o, &e, err), 0);
    assert_int_equal(ds.n, 2);
    assert_int_equal(ds.seqs[1].line, 2);
    dataset_free(&ds);
    // ... but trailing garbage after a member is an error.
    f = fopen(tmp_path("trail.gz"), "ab");
    assert_int_equal(ftk_read_file(a, &da, &la, err), 0);
    fwrite(da, 1, la, f);
    fwrite("garbage!", 1, 8, f);
    fclose(f);
    free(da);
    assert_int_not_equal(dataset_load(&ds, tmp_path("trail.gz"), &o, &e, err), 0);
    assert_non_null(strstr(err, "trail.gz"));
}

static void test_bad_json_arrays(void **state) {
    (void)state;
    expect_fail("open.json", "[{\"text\":\"a\"},\n{\"text\":\"b\"}\n", DS_SFT, 1, "open.json:", "no closing ']'");
    expect_fail("after.json", "[{\"text\":\"a\"}]\n{\"text\":\"b\"}\n", DS_SFT, 1, "after.json:2:", "after the closing");
    expect_fail("comma.json", "[{\"text\":\"a\"},\n]\n", DS_SFT, 1, "comma.json:2:", "after ','");
    expect_fail("hole.json", "[{\"text\":\"a\"},,{\"text\":\"b\"}]", DS_SFT, 1, "hole.json:1:", "empty element");
    expect_fail("str.json", "[{\"text\":\"never closed}]\n", DS_SFT, 1, "str.json:", "end of file");
    // A bad element is one bad record: reported with its line, or skipped and counted.
    expect_fail("elem.json", "[\n{\"text\":\"a\"},\n{\"text\": tru},\n{\"text\":\"c\"}\n]", DS_SFT, 0,
                "elem.json:3: not valid JSON", NULL);
    write_text(tmp_path("elem.json"), "[\n{\"text\":\"a\"},\n{\"text\": tru},\n{\"text\":\"c\"}\n]");
    TokEncoder e = fake_encoder(0);
    DatasetOptions o = dataset_options_default(DS_SFT);
    o.skip_bad_lines = 1;
    Dataset ds;
    char err[FTK_ERR_LEN];
    assert_int_equal(dataset_load(&ds, tmp_path("elem.json"), &o, &e, err), 0);
    assert_int_equal(ds.n, 2);
    assert_int_equal(ds.summary.skipped, 1);
    assert_int_equal(ds.summary.skip_reasons[0].first_line, 3);
    assert_int_equal(ds.seqs[1].line, 4);
    dataset_free(&ds);
}

static void test_bad_preference(void **state) {
    (void)state;
    expect_fail("pref.jsonl", "{\"prompt\":\"p\",\"chosen\":\" a\",\"rejected\":\" b\"}\n{\"prompt\":\"p\",\"chosen\":\" a\"}\n",
                DS_PREFERENCE, 0, "pref.jsonl:2: record has no \"rejected\"", NULL);
    expect_fail("pref2.jsonl", "{\"prompt\":\"p\",\"rejected\":\" a\"}\n", DS_PREFERENCE, 0,
                "pref2.jsonl:1: record has no \"chosen\"", NULL);
    expect_fail("same.jsonl", "{\"prompt\":\"p\",\"chosen\":\" a\",\"rejected\":\" a\"}\n", DS_PREFERENCE, 0,
                "same.jsonl:1: \"chosen\" and \"rejected\" are identical", NULL);
    expect_fail("emptyc.jsonl", "{\"prompt\":\"p\",\"chosen\":\"\",\"rejected\":\" a\"}\n", DS_PREFERENCE, 0,
                "emptyc.jsonl:1: \"chosen\" is empty", NULL);
    expect_fail("sft.jsonl", "{\"prompt\":\"p\",\"response\":\" a\"}\n", DS_PREFERENCE, 0,
                "sft.jsonl:1: record has no \"chosen\" and \"rejected\"", NULL);
    expect_fail("prefsft.jsonl", "{\"prompt\":\"p\",\"chosen\":\" a\",\"rejected\":\" b\"}\n", DS_SFT, 0,
                "prefsft.jsonl:1: record is a preference pair", NULL);
    // HH transcripts: different prompts, no assistant turn, identical sides.
    expect_fail("hh1.jsonl",
                "{\"chosen\":\"\\n\\nHuman: a\\n\\nAssistant: x\",\"rejected\":\"\\n\\nHuman: b\\n\\nAssistant: y\"}\n",
                DS_PREFERENCE, 0, "hh1.jsonl:1: \"chosen\" and \"rejected\" do not share the same prompt", NULL);
    expect_fail("hh2.jsonl", "{\"chosen\":\"\\n\\nHuman: a\",\"rejected\":\"\\n\\nHuman: b\"}\n", DS_PREFERENCE, 0,
                "hh2.jsonl:1: \"chosen\" has no", "Assistant:");
    expect_fail("hh3.jsonl",
                "{\"chosen\":\"\\n\\nHuman: a\\n\\nAssistant: x\",\"rejected\":\"\\n\\nHuman: a\\n\\nAssistant: x\"}\n",
                DS_PREFERENCE, 0, "hh3.jsonl:1:", "identical");
    expect_fail("hh4.jsonl",
                "{\"chosen\":\"\\n\\nHuman: a\\n\\nAssistant:\",\"rejected\":\"\\n\\nHuman: a\\n\\nAssistant: x\"}\n",
                DS_PREFERENCE, 0, "hh4.jsonl:1:", "empty final assistant reply");
    // A prompt longer than the context: error on request, skipped and counted by default.
    const char *p = tmp_path("long.jsonl");
    write_text(p, "{\"prompt\":\"0123456789\",\"chosen\":\" a\",\"rejected\":\" b\"}\n"
                  "{\"prompt\":\"01\",\"chosen\":\" a\",\"rejected\":\" b\"}\n");
    TokEncoder e = fake_encoder(0);
    DatasetOptions o = dataset_options_default(DS_PREFERENCE);
    o.max_seq_length = 8;
    Dataset ds;
    char err[FTK_ERR_LEN];
    assert_int_equal(dataset_load(&ds, p, &o, &e, err), 0);
    assert_int_equal(ds.n, 1);
    assert_int_equal(ds.summary.dropped_long_prompt, 1);
    dataset_free(&ds);
    o.long_prompt = LONG_PROMPT_ERROR;
    assert_int_not_equal(dataset_load(&ds, p, &o, &e, err), 0);
    assert_non_null(strstr(err, "long.jsonl:1: prompt is 11 tokens"));
}

static void test_skip_bad_lines_counts(void **state) {
    (void)state;
    const char *p = tmp_path("mixed.jsonl");
    write_text(p, "{\"prompt\":\"a\",\"response\":\"b\"}\n"   // 1 ok
                  "{broken\n"                                 // 2 bad JSON
                  "{\"prompt\":\"a\"}\n"                      // 3 no response
                  "{\"text\":\"t\"}\n"                        // 4 ok
                  "[1,\n"                                     // 5 bad JSON
                  "{\"prompt\":\"x\"}\n"                      // 6 no response
                  "{\"prompt\":\"z\",\"response\":\"\"}\n"    // 7 ok: EOS only trains
                  "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}\n");  // 8 no assistant reply
    TokEncoder e = fake_encoder(0);
    DatasetOptions o = dataset_options_default(DS_SFT);
    Dataset ds;
    char err[FTK_ERR_LEN];
    assert_int_not_equal(dataset_load(&ds, p, &o, &e, err), 0);   // without the option: first bad line
    assert_non_null(strstr(err, "mixed.jsonl:2: not valid JSON"));
    o.skip_bad_lines = 1;
    assert_int_equal(dataset_load(&ds, p, &o, &e, err), 0);
    assert_int_equal(ds.summary.records_read, 8);
    assert_int_equal(ds.n, 3);
    assert_int_equal(ds.summary.skipped, 5);
    assert_int_equal(ds.summary.n_skip_reasons, 3);
    assert_string_equal(ds.summary.skip_reasons[0].reason, "not valid JSON");
    assert_int_equal(ds.summary.skip_reasons[0].count, 2);
    assert_int_equal(ds.summary.skip_reasons[0].first_line, 2);
    assert_string_equal(ds.summary.skip_reasons[1].reason, "record has no \"response\"");
    assert_int_equal(ds.summary.skip_reasons[1].count, 2);
    assert_int_equal(ds.summary.skip_reasons[1].first_line, 3);
    assert_int_equal(ds.summary.skip_reasons[2].count, 1);
    assert_int_equal(ds.summary.skip_reasons[2].first_line, 8);
    char summary[2048];
    dataset_summary_format(&ds, summary, sizeof summary);
    assert_non_null(strstr(summary, "skipped 2: not valid JSON (first at line 2)"));
    assert_non_null(strstr(summary, "8 records read, 3 examples used"));
    dataset_free(&ds);

    // More distinct reasons than slots: the last slot counts the rest, nothing is lost.
    char *text = malloc(8192), *q = text;
    for (int i = 0; i < 12; i++) q += sprintf(q, "{\"messages\":[{\"role\":\"r%d\",\"content\":\"x\"}]}\n", i);
    q += sprintf(q, "{\"text\":\"ok\"}\n");
    write_text(p, text);
    free(text);
    assert_int_equal(dataset_load(&ds, p, &o, &e, err), 0);
    assert_int_equal(ds.summary.skipped, 12);
    assert_int_equal(ds.summary.n_skip_reasons, DS_MAX_SKIP_REASONS);
    long total = 0;
    for (int i = 0; i < ds.summary.n_skip_reasons; i++) total += ds.summary.skip_reasons[i].count;
    assert_int_equal(total, 12);
    assert_string_equal(ds.summary.skip_reasons[DS_MAX_SKIP_REASONS - 1].reason, "other reasons");
    dataset_free(&ds);
}

static void test_bad_cursor(void **state) {
    (void)state;
    write_text(tmp_path("c.jsonl"), "{\"text\":\"a\"}\n{\"text\":\"b\"}\n{\"text\":\"c\"}\n");
    TokEncoder e = fake_encoder(0);
    DatasetOptions o = dataset_options_default(DS_SFT);
    Dataset ds;
    char err[FTK_ERR_LEN];
    assert_int_equal(dataset_load(&ds, tmp_path("c.jsonl"), &o, &e, err), 0);
    DataLoader L;
    assert_int_equal(loader_init(&L, &ds, 2, 1, 9, 0, err), 0);
    DataCursor c = loader_cursor(&L);
    c.position = 4;   // past the end
    assert_int_not_equal(loader_restore(&L, &c, err), 0);
    c = loader_cursor(&L);
    c.n_items = 5;    // another dataset
    assert_int_not_equal(loader_restore(&L, &c, err), 0);
    assert_non_null(strstr(err, "5 items"));
    const char *bad[4] = {"{}", "{\"seed\":\"9\",\"n_items\":3,\"epoch\":\"0\",\"position\":\"0\",\"epoch_rng\":\"1\"}",
                          "{\"seed\":\"9\",\"n_items\":\"3\",\"epoch\":\"-1\",\"position\":\"0\",\"epoch_rng\":\"1\"}",
                          "{\"seed\":\"9x\",\"n_items\":\"3\",\"epoch\":\"0\",\"position\":\"0\",\"epoch_rng\":\"1\"}"};
    for (int i = 0; i < 4; i++) {
        cJSON *j = cJSON_Parse(bad[i]);
        assert_int_not_equal(batch_cursor_from_json(j, &c, err), 0);
        cJSON_Delete(j);
    }
    loader_free(&L);
    assert_int_not_equal(loader_init(&L, &ds, 0, 1, 9, 0, err), 0);   // batch size 0
    dataset_free(&ds);
}

static void test_long_line(void **state) {
    (void)state;
    // One record of 3 MB (longer than the reader's chunks) between two short ones.
    size_t big = 3u << 20;
    char *text = malloc(big + 200), *p = text;
    p += sprintf(p, "{\"text\":\"a\"}\n{\"text\":\"");
    memset(p, 'x', big);
    p += big;
    p += sprintf(p, "\"}\n{\"text\":\"b\"}");
    write_text(tmp_path("long.jsonl"), text);
    write_gz(tmp_path("long.jsonl.gz"), text);
    free(text);
    TokEncoder e = fake_encoder(0);
    DatasetOptions o = dataset_options_default(DS_SFT);
    o.max_seq_length = 64;
    Dataset ds;
    char err[FTK_ERR_LEN];
    for (int g = 0; g < 2; g++) {
        assert_int_equal(dataset_load(&ds, tmp_path(g ? "long.jsonl.gz" : "long.jsonl"), &o, &e, err), 0);
        assert_int_equal(ds.n, 3);
        assert_int_equal(ds.seqs[1].len, 64);
        assert_int_equal(ds.seqs[2].line, 3);
        assert_int_equal(ds.summary.truncated, 1);
        dataset_free(&ds);
    }
}

static int setup(void **state) {
    (void)state;
    const char *d = test_tmpdir("dataset-bad");
    if (!d) return -1;
    snprintf(g_dir, sizeof g_dir, "%s", d);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    test_rmtree(g_dir);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_malformed_line),     cmocka_unit_test(test_missing_fields),
        cmocka_unit_test(test_empty_inputs),       cmocka_unit_test(test_bad_gzip),
        cmocka_unit_test(test_bad_json_arrays),    cmocka_unit_test(test_bad_preference),
        cmocka_unit_test(test_skip_bad_lines_counts), cmocka_unit_test(test_bad_cursor),
        cmocka_unit_test(test_long_line),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
