// test_dataset.c — datasets/: reading (JSONL, JSON arrays, gzip by magic), record shapes,
// templates, tokenization with loss masks and truncation, batches, packing, shuffling and cursors,
// validation split; then every shared dataset through the real tok512 tokenizer.
#include "tests/testutil.h"

#include <stdlib.h>
#include <string.h>

#include "datasets/batch.h"
#include "datasets/dataset.h"
#include "datasets/jsonl.h"
#include "datasets/records.h"
#include "datasets/template.h"
#include "datasets/tokenize.h"
#include "model/common.h"
#include "model/tokenizer.h"
#include "tests/dataset_testutil.h"

static char g_dir[512];

static const char *tmp_path(const char *name) {
    static char buf[4][700];
    static int k = 0;
    char *out = buf[k++ % 4];
    snprintf(out, 700, "%s/%s", g_dir, name);
    return out;
}

// Loads `content` written to a temp file.
static int load_text(const char *name, const char *content, const DatasetOptions *o, const TokEncoder *e, Dataset *ds,
                     char *err) {
    const char *p = tmp_path(name);
    write_text(p, content);
    return dataset_load(ds, p, o, e, err);
}

// ---------------------------------------------------------------- reading

static void check_three_records(const char *path, int want_gz) {
    char err[FTK_ERR_LEN];
    JsonReader *r;
    assert_int_equal(json_reader_open(&r, path, err), 0);
    const int want_line[3] = {1, 4, 5};
    for (int i = 0; i < 3; i++) {
        cJSON *j;
        int line;
        assert_int_equal(json_reader_next(r, &j, &line, err), JR_RECORD);
        assert_int_equal(line, want_line[i]);
        assert_int_equal(cJSON_GetObjectItem(j, "a")->valueint, i + 1);
        cJSON_Delete(j);
    }
    cJSON *j;
    int line;
    assert_int_equal(json_reader_next(r, &j, &line, err), JR_END);
    assert_int_equal(json_reader_is_gzip(r), want_gz);
    assert_int_equal(json_reader_is_array(r), 0);
    json_reader_close(r);
}

static void test_read_jsonl_plain_and_gzip_by_magic(void **state) {
    (void)state;
    const char *text = "{\"a\":1}\n\n  \n{\"a\": 2}\r\n{\"a\":3}";   // blank lines, CRLF, no final newline
    write_text(tmp_path("r.jsonl"), text);
    write_gz(tmp_path("r.data"), text);          // gzip without a .gz name
    write_text(tmp_path("plain.jsonl.gz"), text); // plain text with a .gz name
    check_three_records(tmp_path("r.jsonl"), 0);
    check_three_records(tmp_path("r.data"), 1);
    check_three_records(tmp_path("plain.jsonl.gz"), 0);
}

static void test_read_json_array(void **state) {
    (void)state;
    // Brackets, braces and commas inside strings, nested values, escaped quotes.
    const char *text = "\xEF\xBB\xBF[\n  {\"prompt\": \"a]b,c{\", \"response\": \"[x}\"},\n"
                       "  {\"prompt\": \"q\\\"],\", \"response\": \"r\", \"n\": [1, {\"k\": [2]}]}\n]\n";
    write_text(tmp_path("arr.json"), text);
    write_gz(tmp_path("arr.json.gz"), text);
    const char *files[2] = {tmp_path("arr.json"), tmp_path("arr.json.gz")};
    for (int f = 0; f < 2; f++) {
        char err[FTK_ERR_LEN];
        JsonReader *r;
        assert_int_equal(json_reader_open(&r, files[f], err), 0);
        cJSON *j;
        int line;
        assert_int_equal(json_reader_next(r, &j, &line, err), JR_RECORD);
        assert_int_equal(json_reader_is_array(r), 1);
        assert_int_equal(json_reader_is_gzip(r), f);
        assert_int_equal(line, 2);
        assert_string_equal(cJSON_GetObjectItem(j, "prompt")->valuestring, "a]b,c{");
        assert_string_equal(cJSON_GetObjectItem(j, "response")->valuestring, "[x}");
        cJSON_Delete(j);
        assert_int_equal(json_reader_next(r, &j, &line, err), JR_RECORD);
        assert_int_equal(line, 3);
        assert_string_equal(cJSON_GetObjectItem(j, "prompt")->valuestring, "q\"],");
        cJSON_Delete(j);
        assert_int_equal(json_reader_next(r, &j, &line, err), JR_END);
        json_reader_close(r);
    }
    // The same through dataset_load, with the fake byte tokenizer.
    TokEncoder e = fake_encoder(0);
    DatasetOptions o = dataset_options_default(DS_SFT);
    Dataset ds;
    char err[FTK_ERR_LEN];
    assert_int_equal(dataset_load(&ds, tmp_path("arr.json.gz"), &o, &e, err), 0);
    assert_int_equal(ds.n, 2);
    assert_int_equal(ds.seqs[1].line, 3);
    assert_int_equal(ds.seqs[0].len, 1 + 6 + 3 + 1);   // BOS "a]b,c{" "[x}" EOS
    dataset_free(&ds);
}

// ---------------------------------------------------------------- shapes and templates

static void apply(const char *json, DatasetKind kind, TemplateKind t, TemplatedText *out, RecordShape want_shape) {
    cJSON *j = cJSON_Parse(json);
    assert_non_null(j);
    Record r;
    char reason[256];
    int rc = record_parse(j, kind, &r, reason, sizeof reason);
    if (rc != 0) fprintf(stderr, "record_parse: %s\n", reason);
    assert_int_equal(rc, 0);
    assert_int_equal(r.shape, want_shape);
    rc = template_apply(t, &r, kind, out, reason, sizeof reason);
    if (rc != 0) fprintf(stderr, "template_apply: %s\n", reason);
    assert_int_equal(rc, 0);
    record_free(&r);
    cJSON_Delete(j);
}

static void test_shapes_and_templates(void **state) {
    (void)state;
    TemplatedText t;
    apply("{\"prompt\":\"Once\",\"response\":\" upon\"}", DS_SFT, TPL_AUTO, &t, REC_PROMPT_RESPONSE);
    assert_string_equal(t.prompt, "Once");
    assert_string_equal(t.response, " upon");
    templated_free(&t);
    apply("{\"prompt\":\"P\",\"completion\":\"C\"}", DS_SFT, TPL_PLAIN, &t, REC_PROMPT_COMPLETION);
    assert_string_equal(t.prompt, "P");
    assert_string_equal(t.response, "C");
    templated_free(&t);

    // Alpaca, both branches; extra fields (alpaca-libre's status) are ignored.
    apply("{\"instruction\":\"Add.\",\"input\":\"1 2\",\"output\":\"3\",\"status\":\"ok\"}", DS_SFT, TPL_AUTO, &t,
          REC_ALPACA);
    assert_string_equal(t.prompt,
                        "Below is an instruction that describes a task, paired with an input that provides further "
                        "context. Write a response that appropriately completes the request.\n\n"
                        "### Instruction:\nAdd.\n\n### Input:\n1 2\n\n### Response:\n");
    assert_string_equal(t.response, "3");
    templated_free(&t);
    const char *no_input[2] = {"{\"instruction\":\"Say hi.\",\"input\":\"\",\"output\":\"hi\"}",
                               "{\"instruction\":\"Say hi.\",\"output\":\"hi\"}"};
    for (int i = 0; i < 2; i++) {
        apply(no_input[i], DS_SFT, TPL_ALPACA, &t, REC_ALPACA);
        assert_string_equal(t.prompt, "Below is an instruction that describes a task. Write a response that "
                                      "appropriately completes the request.\n\n### Instruction:\nSay hi.\n\n"
                                      "### Response:\n");
        templated_free(&t);
    }
    apply(no_input[0], DS_SFT, TPL_CHATML, &t, REC_ALPACA);
    assert_string_equal(t.prompt, "<|im_start|>user\nSay hi.<|im_end|>\n<|im_start|>assistant\n");
    assert_string_equal(t.response, "hi<|im_end|>");
    templated_free(&t);

    // Chat: every earlier turn is prompt; the last assistant message is the response.
    const char *chat = "{\"messages\":[{\"role\":\"system\",\"content\":\"S\"},{\"role\":\"user\",\"content\":\"U1\"},"
                       "{\"role\":\"assistant\",\"content\":\"A1\"},{\"role\":\"user\",\"content\":\"U2\"},"
                       "{\"role\":\"assistant\",\"content\":\"A2\"}]}";
    apply(chat, DS_SFT, TPL_AUTO, &t, REC_CHAT);
    assert_string_equal(t.prompt, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU1<|im_end|>\n"
                                  "<|im_start|>assistant\nA1<|im_end|>\n<|im_start|>user\nU2<|im_end|>\n"
                                  "<|im_start|>assistant\n");
    assert_string_equal(t.response, "A2<|im_end|>");
    templated_free(&t);
    apply(chat, DS_PROMPT, TPL_AUTO, &t, REC_CHAT);   // prompt-only: the same prompt, no response
    assert_true(strstr(t.prompt, "U2<|im_end|>\n<|im_start|>assistant\n") != NULL);
    assert_null(t.response);
    templated_free(&t);

    apply("{\"text\":\"all of it\"}", DS_SFT, TPL_AUTO, &t, REC_TEXT);
    assert_string_equal(t.prompt, "");
    assert_string_equal(t.response, "all of it");
    templated_free(&t);

    // HH-RLHF: split at the LAST "\n\nAssistant:", the marker stays in the prompt.
    const char *hh = "{\"chosen\":\"\\n\\nHuman: hi\\n\\nAssistant: hello\\n\\nHuman: dog?\\n\\nAssistant: yes\","
                     "\"rejected\":\"\\n\\nHuman: hi\\n\\nAssistant: hello\\n\\nHuman: dog?\\n\\nAssistant: no\"}";
    apply(hh, DS_PREFERENCE, TPL_AUTO, &t, REC_HH);
    assert_string_equal(t.prompt, "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: dog?\n\nAssistant:");
    assert_string_equal(t.response, " yes");
    assert_string_equal(t.rejected, " no");
    templated_free(&t);
    apply("{\"prompt\":\"P\",\"chosen\":\" c\",\"rejected\":\" r\"}", DS_PREFERENCE, TPL_CHATML, &t, REC_PREFERENCE);
    assert_string_equal(t.prompt, "<|im_start|>user\nP<|im_end|>\n<|im_start|>assistant\n");
    assert_string_equal(t.response, " c<|im_end|>");
    assert_string_equal(t.rejected, " r<|im_end|>");
    templated_free(&t);
    apply("{\"prompt\":\"P\",\"chosen\":\" c\",\"rejected\":\" r\"}", DS_PROMPT, TPL_AUTO, &t, REC_PREFERENCE);
    assert_string_equal(t.prompt, "P");
    templated_free(&t);
    apply("{\"prompt\":\"Only\"}", DS_PROMPT, TPL_AUTO, &t, REC_PROMPT_ONLY);
    assert_string_equal(t.prompt, "Only");
    templated_free(&t);

    // A template that does not fit the shape is refused.
    cJSON *j = cJSON_Parse(chat);
    Record r;
    char reason[256];
    assert_int_equal(record_parse(j, DS_SFT, &r, reason, sizeof reason), 0);
    assert_int_not_equal(template_apply(TPL_PLAIN, &r, DS_SFT, &t, reason, sizeof reason), 0);
    assert_non_null(strstr(reason, "plain"));
    record_free(&r);
    cJSON_Delete(j);
    TemplateKind k;
    assert_int_equal(template_from_name("chatml", &k), 0);
    assert_int_equal(k, TPL_CHATML);
    assert_int_not_equal(template_from_name("vicuna", &k), 0);
}

// ---------------------------------------------------------------- tokenization

static void test_mask_positions(void **state) {
    (void)state;
    TokEncoder e = fake_encoder(0);
    TokenizeOptions o = {0, 1, 0, LONG_PROMPT_TRUNCATE, 0};
    TokSeq s;
    TokFlags f;
    char err[FTK_ERR_LEN];
    const char *resp[1] = {"cd"};
    assert_int_equal(tokenize_example(&e, &o, "ab", resp, 1, &s, &f, err), TOK_OK);
    const int want_ids[6] = {FAKE_BOS, 'a' + 3, 'b' + 3, 'c' + 3, 'd' + 3, FAKE_EOS};
    const unsigned char want_mask[6] = {0, 0, 0, 1, 1, 1};
    assert_int_equal(s.len, 6);
    assert_int_equal(s.n_prompt, 3);   // == len(BOS + encode(prompt))
    assert_memory_equal(s.ids, want_ids, sizeof want_ids);
    assert_memory_equal(s.mask, want_mask, sizeof want_mask);
    assert_int_equal(f.truncated, 0);
    assert_int_equal(f.prefix_fallback, 0);
    tokseq_free(&s);

    o.train_on_prompt = 1;   // prompt trains too, never BOS
    assert_int_equal(tokenize_example(&e, &o, "ab", resp, 1, &s, &f, err), TOK_OK);
    const unsigned char all_mask[6] = {0, 1, 1, 1, 1, 1};
    assert_memory_equal(s.mask, all_mask, sizeof all_mask);
    tokseq_free(&s);

    o.train_on_prompt = 0;
    o.add_eos = 0;
    assert_int_equal(tokenize_example(&e, &o, "ab", resp, 1, &s, &f, err), TOK_OK);
    assert_int_equal(s.len, 5);
    assert_int_equal(s.ids[4], 'd' + 3);
    tokseq_free(&s);

    // {text}: empty prompt, everything after BOS trains.
    o.add_eos = 1;
    const char *text[1] = {"xyz"};
    assert_int_equal(tokenize_example(&e, &o, "", text, 1, &s, &f, err), TOK_OK);
    const unsigned char text_mask[5] = {0, 1, 1, 1, 1};
    assert_int_equal(s.n_prompt, 1);
    assert_memory_equal(s.mask, text_mask, 5);
    tokseq_free(&s);

    // The encoder merges "ab": prompt "xa" + response "bc" encodes as x,[ab],c, so the prompt's
    // own encoding x,a is not a prefix: fall back to separate encodings, flagged.
    TokEncoder m = fake_encoder(1);
    const char *bc[1] = {"bc"};
    assert_int_equal(tokenize_example(&m, &o, "xa", bc, 1, &s, &f, err), TOK_OK);
    const int fb_ids[6] = {FAKE_BOS, 'x' + 3, 'a' + 3, 'b' + 3, 'c' + 3, FAKE_EOS};
    assert_int_equal(f.prefix_fallback, 1);
    assert_int_equal(s.n_prompt, 3);
    assert_memory_equal(s.ids, fb_ids, sizeof fb_ids);
    tokseq_free(&s);
    // ... and no fallback where nothing merges across the boundary.
    const char *ab_resp[1] = {" ab"};
    assert_int_equal(tokenize_example(&m, &o, "xa", ab_resp, 1, &s, &f, err), TOK_OK);
    assert_int_equal(f.prefix_fallback, 0);
    assert_int_equal(s.ids[4], FAKE_AB);
    tokseq_free(&s);
}

static void test_truncation(void **state) {
    (void)state;
    TokEncoder e = fake_encoder(0);
    TokenizeOptions o = {10, 1, 0, LONG_PROMPT_TRUNCATE, 0};
    TokSeq s[2];
    TokFlags f;
    char err[FTK_ERR_LEN];
    // 1 + 10 + 5 + 1 = 17 > 10: the prompt loses its first 7 tokens; the response stays whole.
    const char *resp[1] = {"vwxyz"};
    assert_int_equal(tokenize_example(&e, &o, "0123456789", resp, 1, s, &f, err), TOK_OK);
    const int want[10] = {FAKE_BOS, '7' + 3, '8' + 3, '9' + 3, 'v' + 3, 'w' + 3, 'x' + 3, 'y' + 3, 'z' + 3, FAKE_EOS};
    assert_int_equal(f.truncated, 1);
    assert_int_equal(s[0].len, 10);
    assert_int_equal(s[0].n_prompt, 4);
    assert_memory_equal(s[0].ids, want, sizeof want);
    tokseq_free(&s[0]);

    // M = 5: the prompt goes entirely, then the response's end (EOS first).
    o.max_seq_length = 5;
    assert_int_equal(tokenize_example(&e, &o, "0123456789", resp, 1, s, &f, err), TOK_OK);
    const int want5[5] = {FAKE_BOS, 'v' + 3, 'w' + 3, 'x' + 3, 'y' + 3};
    assert_int_equal(s[0].n_prompt, 1);
    assert_memory_equal(s[0].ids, want5, sizeof want5);
    tokseq_free(&s[0]);

    // Long-prompt policies (the prompt alone fills M).
    o.long_prompt = LONG_PROMPT_SKIP;
    assert_int_equal(tokenize_example(&e, &o, "0123456789", resp, 1, s, &f, err), TOK_DROP_LONG_PROMPT);
    o.long_prompt = LONG_PROMPT_ERROR;
    assert_int_equal(tokenize_example(&e, &o, "0123456789", resp, 1, s, &f, err), -1);
    assert_non_null(strstr(err, "max_seq_length"));

    // Preference: the shared prompt is cut identically on both sides, then each response's end.
    o.max_seq_length = 8;
    o.long_prompt = LONG_PROMPT_SKIP;
    const char *pair[2] = {"ABCD", "ab"};   // lengths with EOS: 5 and 3
    assert_int_equal(tokenize_example(&e, &o, "pqrs", pair, 2, s, &f, err), TOK_OK);
    // longest = 1 + 4 + 5 = 10 > 8: cut 2 prompt tokens from both sides.
    const int c_ids[8] = {FAKE_BOS, 'r' + 3, 's' + 3, 'A' + 3, 'B' + 3, 'C' + 3, 'D' + 3, FAKE_EOS};
    const int r_ids[6] = {FAKE_BOS, 'r' + 3, 's' + 3, 'a' + 3, 'b' + 3, FAKE_EOS};
    assert_int_equal(s[0].len, 8);
    assert_int_equal(s[1].len, 6);
    assert_int_equal(s[0].n_prompt, 3);
    assert_int_equal(s[1].n_prompt, 3);
    assert_memory_equal(s[0].ids, c_ids, sizeof c_ids);
    assert_memory_equal(s[1].ids, r_ids, sizeof r_ids);
    tokseq_free(&s[0]);
    tokseq_free(&s[1]);

    // Prompt-only: longer than M is skipped by default policy of the dataset, truncated on request.
    o.max_seq_length = 4;
    o.long_prompt = LONG_PROMPT_TRUNCATE;
    assert_int_equal(tokenize_example(&e, &o, "pqrst", NULL, 0, s, &f, err), TOK_OK);
    const int p_ids[4] = {FAKE_BOS, 'r' + 3, 's' + 3, 't' + 3};
    assert_int_equal(s[0].len, 4);
    assert_int_equal(s[0].n_prompt, 4);
    assert_memory_equal(s[0].ids, p_ids, sizeof p_ids);
    tokseq_free(&s[0]);

    // Dataset level: truncation is counted, an empty response with add_eos=0 is dropped and counted.
    DatasetOptions d = dataset_options_default(DS_SFT);
    d.max_seq_length = 10;
    d.add_eos = 0;
    Dataset ds;
    assert_int_equal(load_text("trunc.jsonl",
                               "{\"prompt\":\"0123456789\",\"response\":\"vwxyz\"}\n"
                               "{\"prompt\":\"p\",\"response\":\"\"}\n"
                               "{\"prompt\":\"p\",\"response\":\"r\"}\n",
                               &d, &e, &ds, err),
                     0);
    assert_int_equal(ds.n, 2);
    assert_int_equal(ds.summary.truncated, 1);
    assert_int_equal(ds.summary.dropped_empty, 1);
    assert_int_equal(ds.summary.records_read, 3);
    assert_int_equal(ds.summary.total_tokens, 10 + 3);
    assert_int_equal(ds.summary.trained_tokens, 5 + 1);
    assert_int_equal(ds.summary.max_len, 10);
    assert_int_equal(ds.seqs[1].line, 3);
    dataset_free(&ds);
}

static void test_special_tokens_only_from_templates(void **state) {
    (void)state;
    // chatml markers become special tokens; the same characters inside plain data stay text.
    TokEncoder e = fake_encoder(0);
    DatasetOptions o = dataset_options_default(DS_SFT);
    Dataset ds;
    char err[FTK_ERR_LEN];
    assert_int_equal(load_text("special.jsonl",
                               "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"},"
                               "{\"role\":\"assistant\",\"content\":\"r\"}]}\n"
                               "{\"prompt\":\"q\",\"response\":\"r<|im_end|>\"}\n",
                               &o, &e, &ds, err),
                     0);
    const Example *c = dataset_seq(&ds, 0), *p = dataset_seq(&ds, 1);
    const int *ci = dataset_seq_ids(&ds, 0), *pi = dataset_seq_ids(&ds, 1);
    // chat: ... "<|im_start|>assistant\n" | r <|im_end|> EOS
    assert_int_equal(ci[c->len - 1], FAKE_EOS);
    assert_int_equal(ci[c->len - 2], FAKE_IM_END);
    assert_int_equal(ci[c->len - 3], 'r' + 3);
    assert_int_equal(c->len - c->n_prompt, 3);
    assert_int_equal(ci[1], '<' + 3);   // "<|im_start|>" is not special in the fake
    // plain: BOS q r < | i m _ e n d | > EOS — bytes, no special id
    assert_int_equal(p->len, 1 + 1 + 1 + 10 + 1);
    for (int t = 0; t < p->len; t++) assert_int_not_equal(pi[t], FAKE_IM_END);
    dataset_free(&ds);
}

// ---------------------------------------------------------------- batches

// Builds an SFT dataset of n examples: prompt "p" and a response of lens[i] letters.
static void make_sft(Dataset *ds, const int *lens, int n) {
    char *text = malloc(65536), *p = text;
    for (int i = 0; i < n; i++) {
        p += sprintf(p, "{\"prompt\":\"p\",\"response\":\"");
        for (int k = 0; k < lens[i]; k++) *p++ = (char)('a' + (i + k) % 26);
        p += sprintf(p, "\"}\n");
    }
    *p = 0;
    TokEncoder e = fake_encoder(0);
    DatasetOptions o = dataset_options_default(DS_SFT);
    char err[FTK_ERR_LEN];
    assert_int_equal(load_text("sft.jsonl", text, &o, &e, ds, err), 0);
    free(text);
}

static void test_batch_padding_and_targets(void **state) {
    (void)state;
    const int lens[3] = {2, 4, 1};   // sequences: BOS p r.. EOS = 5, 7, 4 tokens
    Dataset ds;
    make_sft(&ds, lens, 3);
    DataLoader L;
    char err[FTK_ERR_LEN];
    assert_int_equal(loader_init(&L, &ds, 2, 0, 1, 0, err), 0);
    const Batch *b;
    assert_int_equal(loader_next(&L, &b, err), 0);
    assert_int_equal(b->B, 2);
    assert_int_equal(b->T, 7);   // the longest row, not max_seq_length
    assert_int_equal(b->lengths[0], 5);
    assert_int_equal(b->lengths[1], 7);
    // Row 0: BOS p a b EOS pad pad. Targets: at p -> a, at a -> b, at b -> EOS; BOS -> p is a prompt token.
    const int tok0[7] = {FAKE_BOS, 'p' + 3, 'a' + 3, 'b' + 3, FAKE_EOS, 0, 0};
    const int tgt0[7] = {-1, 'a' + 3, 'b' + 3, FAKE_EOS, -1, -1, -1};
    assert_memory_equal(b->tokens, tok0, sizeof tok0);
    assert_memory_equal(b->targets, tgt0, sizeof tgt0);
    assert_int_equal(b->seg_ids[5], -1);
    assert_int_equal(b->pos_ids[4], 4);
    assert_int_equal(b->n_targets, 3 + 5);
    assert_int_equal(b->last_in_epoch, 0);
    assert_int_equal(loader_next(&L, &b, err), 0);   // the short last batch of the epoch
    assert_int_equal(b->B, 1);
    assert_int_equal(b->T, 4);
    assert_int_equal(b->items[0], 2);
    assert_int_equal(b->last_in_epoch, 1);
    assert_int_equal(loader_next(&L, &b, err), 0);
    assert_int_equal(b->epoch, 1);
    assert_int_equal(b->items[0], 0);
    loader_free(&L);
    dataset_free(&ds);

    // Preference batches: chosen rows first, then rejected.
    TokEncoder e = fake_encoder(0);
    DatasetOptions o = dataset_options_default(DS_PREFERENCE);
    assert_int_equal(load_text("pref.jsonl",
                               "{\"prompt\":\"P\",\"chosen\":\"c1\",\"rejected\":\"r\"}\n"
                               "{\"prompt\":\"Q\",\"chosen\":\"c\",\"rejected\":\"r22\"}\n",
                               &o, &e, &ds, err),
                     0);
    assert_int_equal(ds.n, 2);
    assert_int_equal(loader_init(&L, &ds, 2, 0, 1, 0, err), 0);
    assert_int_equal(loader_next(&L, &b, err), 0);
    assert_int_equal(b->B, 4);
    assert_int_equal(b->n_pairs, 2);
    assert_int_equal(b->T, 6);
    const int lengths[4] = {5, 4, 4, 6};
    assert_memory_equal(b->lengths, lengths, sizeof lengths);
    assert_int_equal(b->tokens[1 * 6 + 1], 'Q' + 3);   // row 1 = chosen of pair 1
    assert_int_equal(b->tokens[3 * 6 + 4], '2' + 3);   // row 3 = rejected of pair 1
    assert_int_equal(b->targets[3 * 6 + 1], 'r' + 3);  // Q -> r is the first response target
    assert_int_equal(b->targets[3 * 6 + 0], -1);
    loader_free(&L);
    assert_int_not_equal(loader_init(&L, &ds, 2, 0, 1, 16, err), 0);   // no packing of pairs
    dataset_free(&ds);
}

static void test_packing(void **state) {
    (void)state;
    const int lens[6] = {3, 1, 6, 2, 2, 5};   // sequences of 6, 4, 9, 5, 5, 8 tokens
    Dataset ds;
    make_sft(&ds, lens, 6);
    DataLoader L;
    char err[FTK_ERR_LEN];
    assert_int_equal(loader_init(&L, &ds, 2, 0, 1, 10, err), 0);
    const Batch *b;
    // Rows of 10: [6 4] [9] | [5 5] [8]
    assert_int_equal(loader_next(&L, &b, err), 0);
    assert_int_equal(b->B, 2);
    assert_int_equal(b->T, 10);
    assert_int_equal(b->n_items, 3);
    assert_int_equal(b->lengths[0], 10);
    assert_int_equal(b->lengths[1], 9);
    const int pos0[10] = {0, 1, 2, 3, 4, 5, 0, 1, 2, 3};
    const int seg0[10] = {0, 0, 0, 0, 0, 0, 1, 1, 1, 1};
    assert_memory_equal(b->pos_ids, pos0, sizeof pos0);
    assert_memory_equal(b->seg_ids, seg0, sizeof seg0);
    assert_int_equal(b->tokens[6], FAKE_BOS);          // the second example starts at column 6
    assert_int_equal(b->targets[5], -1);               // EOS of example 0 predicts nothing across
    assert_int_equal(b->targets[4], FAKE_EOS);
    assert_int_equal(b->targets[6], -1);               // BOS -> p: prompt
    assert_int_equal(b->targets[7], 'b' + 3);          // p -> first response letter of example 1 (i=1: 'b')
    assert_int_equal(b->targets[8], FAKE_EOS);
    assert_int_equal(b->targets[9], -1);               // end of row
    assert_int_equal(b->seg_ids[19], -1);              // padding at the end of row 1
    assert_int_equal(b->targets[18], -1);
    assert_int_equal(loader_next(&L, &b, err), 0);
    assert_int_equal(b->B, 2);
    assert_int_equal(b->n_items, 3);
    assert_int_equal(b->items[2], 5);
    assert_int_equal(b->last_in_epoch, 1);
    assert_int_equal(loader_batches_in_epoch(&L), 2);
    loader_free(&L);
    // A sequence longer than the packed row is refused.
    assert_int_not_equal(loader_init(&L, &ds, 2, 0, 1, 8, err), 0);
    assert_non_null(strstr(err, "max_seq_length"));
    dataset_free(&ds);
}

static void collect(DataLoader *L, int n_batches, int *items, int *n_out) {
    char err[FTK_ERR_LEN];
    *n_out = 0;
    for (int i = 0; i < n_batches; i++) {
        const Batch *b;
        assert_int_equal(loader_next(L, &b, err), 0);
        for (int k = 0; k < b->n_items; k++) items[(*n_out)++] = b->items[k] + 1000 * (int)b->epoch;
    }
}

static void test_shuffle_and_cursor(void **state) {
    (void)state;
    int lens[20];
    for (int i = 0; i < 20; i++) lens[i] = 1 + i % 7;
    Dataset ds;
    make_sft(&ds, lens, 20);
    char err[FTK_ERR_LEN];
    for (int pack = 0; pack <= 16; pack += 16) {
        DataLoader a, b2, c;
        assert_int_equal(loader_init(&a, &ds, 3, 1, 42, pack, err), 0);
        assert_int_equal(loader_init(&b2, &ds, 3, 1, 42, pack, err), 0);
        assert_int_equal(loader_init(&c, &ds, 3, 1, 43, pack, err), 0);
        int ia[400], ib[400], ic[400], na, nb, nc;
        collect(&a, 20, ia, &na);
        collect(&b2, 20, ib, &nb);
        collect(&c, 20, ic, &nc);
        assert_int_equal(na, nb);
        assert_memory_equal(ia, ib, (size_t)na * sizeof(int));          // same seed, same order
        assert_true(nc != na || memcmp(ia, ic, (size_t)na * sizeof(int)) != 0);   // another seed differs
        // Every epoch is a permutation of all 20 items, and not the file order.
        if (!pack) {
            int seen[20] = {0}, identity = 1;
            for (int i = 0; i < 20; i++) {
                seen[ia[i] % 1000]++;
                identity &= ia[i] == i;
            }
            for (int i = 0; i < 20; i++) assert_int_equal(seen[i], 1);
            assert_false(identity);
        }
        loader_free(&a);
        loader_free(&b2);
        loader_free(&c);

        // Save after k batches (mid-epoch and at an epoch end), restore in a fresh loader through JSON.
        for (int k = 1; k <= 7; k += 6) {
            DataLoader run, resumed;
            assert_int_equal(loader_init(&run, &ds, 3, 1, 42, pack, err), 0);
            int tmp[400], n_tmp;
            collect(&run, k, tmp, &n_tmp);
            DataCursor cur = loader_cursor(&run);
            cJSON *j = batch_cursor_to_json(&cur);
            char *s = cJSON_PrintUnformatted(j);
            cJSON_Delete(j);
            cJSON *j2 = cJSON_Parse(s);
            free(s);
            DataCursor back;
            assert_int_equal(batch_cursor_from_json(j2, &back, err), 0);
            cJSON_Delete(j2);
            assert_memory_equal(&back, &cur, sizeof cur);
            assert_int_equal(loader_init(&resumed, &ds, 3, 1, 42, pack, err), 0);
            assert_int_equal(loader_restore(&resumed, &back, err), 0);
            int x[400], y[400], nx, ny;
            collect(&run, 12, x, &nx);
            collect(&resumed, 12, y, &ny);
            assert_int_equal(nx, ny);
            assert_memory_equal(x, y, (size_t)nx * sizeof(int));
            loader_free(&run);
            // A cursor from another seed is refused.
            DataLoader other;
            assert_int_equal(loader_init(&other, &ds, 3, 1, 7, pack, err), 0);
            assert_int_not_equal(loader_restore(&other, &back, err), 0);
            loader_free(&other);
            loader_free(&resumed);
        }
    }
    dataset_free(&ds);
}

static void test_validation_split(void **state) {
    (void)state;
    int lens[50];
    for (int i = 0; i < 50; i++) lens[i] = 1 + i % 9;
    Dataset all, tr, va, tr2, va2;
    make_sft(&all, lens, 50);
    char err[FTK_ERR_LEN];
    assert_int_equal(dataset_split(&all, 0.1, 5, &tr, &va, err), 0);
    assert_int_equal(va.n, 5);
    assert_int_equal(tr.n, 45);
    assert_int_equal(tr.summary.total_tokens + va.summary.total_tokens, all.summary.total_tokens);
    assert_int_equal(tr.summary.records_read, 50);
    // Disjoint, complete, file order kept (lines increase).
    int seen[51] = {0};
    for (int i = 0; i < tr.n; i++) seen[tr.seqs[i].line]++;
    for (int i = 0; i < va.n; i++) seen[va.seqs[i].line]++;
    for (int l = 1; l <= 50; l++) assert_int_equal(seen[l], 1);
    for (int i = 1; i < va.n; i++) assert_true(va.seqs[i].line > va.seqs[i - 1].line);
    // The same seed gives the same split; the tokens travel with their examples.
    assert_int_equal(dataset_split(&all, 0.1, 5, &tr2, &va2, err), 0);
    for (int i = 0; i < va.n; i++) {
        assert_int_equal(va.seqs[i].line, va2.seqs[i].line);
        int src = va.seqs[i].line - 1;
        assert_int_equal(va.seqs[i].len, all.seqs[src].len);
        assert_memory_equal(dataset_seq_ids(&va, i), dataset_seq_ids(&all, src), (size_t)va.seqs[i].len * sizeof(int));
    }
    dataset_free(&tr);
    dataset_free(&va);
    dataset_free(&tr2);
    dataset_free(&va2);
    assert_int_not_equal(dataset_split(&all, 1.0, 5, &tr2, &va2, err), 0);
    dataset_free(&all);
}

// ---------------------------------------------------------------- shared data with tok512

static Tokenizer *g_tok;

static Tokenizer *tok512(void) {
    if (g_tok) return g_tok;
    char err[FTK_ERR_LEN];
    if (tokenizer_load_llama2c(&g_tok, shared_path("models/stories260K/tok512.bin"), 512, err) != 0) {
        g_tok = NULL;
        return NULL;
    }
    return g_tok;
}

#define NEED_TOK512()                                                              \
    do {                                                                           \
        if (!tok512()) {                                                           \
            fprintf(stderr, "tok512 not loadable (tokenizer not ready): skipped\n"); \
            skip();                                                                \
        }                                                                          \
    } while (0)

static void load_shared(const char *rel, DatasetKind kind, Dataset *ds) {
    TokEncoder e;
    tok_encoder_init(&e, tok512());
    DatasetOptions o = dataset_options_default(kind);
    char err[FTK_ERR_LEN];
    int rc = dataset_load(ds, shared_path(rel), &o, &e, err);
    if (rc != 0) fprintf(stderr, "%s\n", err);
    assert_int_equal(rc, 0);
}

static void test_tinystories_mia(void **state) {
    (void)state;
    NEED_TOK512();
    Dataset ds;
    load_shared("datasets/tinystories-mia/train.jsonl", DS_SFT, &ds);
    assert_int_equal(ds.n, 2500);
    assert_int_equal(ds.summary.shapes[REC_PROMPT_RESPONSE], 2500);
    assert_int_equal(ds.summary.prefix_fallbacks, 0);   // PROVENANCE: the prompt is always a prefix
    // Row 0: "Once upon a time, there was a little girl named" + " Mia. ..."; PROVENANCE gives its tokens.
    const int prompt0[14] = {1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395};
    const Example *e0 = dataset_seq(&ds, 0);
    const int *ids = dataset_seq_ids(&ds, 0);
    const unsigned char *mask = dataset_seq_mask(&ds, 0);
    assert_int_equal(e0->n_prompt, 14);
    assert_memory_equal(ids, prompt0, sizeof prompt0);
    assert_int_equal(ids[14], 392);   // " M" of " Mia" (" M", "i", "a")
    assert_int_equal(ids[15], 417);
    assert_int_equal(ids[16], 412);
    assert_int_equal(mask[13], 0);
    assert_int_equal(mask[14], 1);
    for (int t = 0; t < 14; t++) assert_int_equal(mask[t], 0);
    for (int t = 14; t < e0->len; t++) assert_int_equal(mask[t], 1);
    assert_int_equal(ids[e0->len - 1], tok512()->eos_id);
    // n_prompt == len(BOS + encode(prompt)) for a hand-made record too.
    int *p_ids, np;
    char err[FTK_ERR_LEN];
    assert_int_equal(tokenizer_encode(tok512(), "Once upon a time, there was a little girl named", 1, 0, &p_ids, &np, err), 0);
    assert_int_equal(np, 14);
    free(p_ids);
    // A prompt that ends inside a word ("ti" + "me"): its encoding is not a prefix of the whole,
    // so prompt and response are encoded apart, the response with no dummy-prefix space.
    TokEncoder enc;
    tok_encoder_init(&enc, tok512());
    TokenizeOptions to = {0, 0, 0, LONG_PROMPT_TRUNCATE, 0};
    TokSeq s;
    TokFlags f;
    const char *me[1] = {"me"};
    assert_int_equal(tokenize_example(&enc, &to, "Once upon a ti", me, 1, &s, &f, err), TOK_OK);
    assert_int_equal(f.prefix_fallback, 1);
    char *back = tokenizer_decode(tok512(), s.ids, s.len);
    assert_string_equal(back, "Once upon a time");
    free(back);
    tokseq_free(&s);
    // "</s>" written in data is text, not EOS.
    const char *eos_text[1] = {" b</s>"};
    assert_int_equal(tokenize_example(&enc, &to, "a", eos_text, 1, &s, &f, err), TOK_OK);
    for (int t = 0; t < s.len; t++) assert_int_not_equal(s.ids[t], tok512()->eos_id);
    tokseq_free(&s);
    // PROVENANCE: BOS + text is at most 214 tokens, 191 on average; +EOS here.
    assert_int_equal(ds.summary.max_len, 215);
    assert_true(ds.summary.mean_len > 191.0 && ds.summary.mean_len < 193.0);
    dataset_free(&ds);

    load_shared("datasets/tinystories-mia/text.jsonl", DS_SFT, &ds);
    assert_int_equal(ds.n, 2500);
    assert_int_equal(ds.summary.shapes[REC_TEXT], 2500);
    assert_int_equal(ds.summary.trained_tokens, ds.summary.total_tokens - ds.n);   // all but BOS
    assert_int_equal(ds.summary.max_len, 215);
    dataset_free(&ds);

    load_shared("datasets/tinystories-mia/alpaca.jsonl", DS_SFT, &ds);
    assert_int_equal(ds.n, 200);
    assert_int_equal(ds.summary.shapes[REC_ALPACA], 200);
    dataset_free(&ds);

    load_shared("datasets/tinystories-mia/chat.jsonl", DS_SFT, &ds);
    assert_int_equal(ds.n, 200);
    assert_int_equal(ds.summary.shapes[REC_CHAT], 200);
    dataset_free(&ds);

    load_shared("datasets/tinystories-mia/valid.jsonl", DS_PROMPT, &ds);   // SFT data used prompt-only
    assert_int_equal(ds.n, 300);
    assert_int_equal(ds.summary.trained_tokens, 0);
    assert_memory_equal(dataset_seq_ids(&ds, 0), prompt0, sizeof prompt0);
    assert_int_equal(dataset_seq(&ds, 0)->len, 14);
    dataset_free(&ds);
}

// Checks that both sides of every pair share the prompt tokens and differ after them.
static void check_pairs(const Dataset *ds) {
    for (int i = 0; i < ds->n; i++) {
        const Example *c = dataset_seq(ds, 2 * i), *r = dataset_seq(ds, 2 * i + 1);
        assert_int_equal(c->n_prompt, r->n_prompt);
        assert_memory_equal(dataset_seq_ids(ds, 2 * i), dataset_seq_ids(ds, 2 * i + 1), (size_t)c->n_prompt * sizeof(int));
        assert_int_equal(dataset_seq_mask(ds, 2 * i)[c->n_prompt], 1);
        assert_int_equal(dataset_seq_mask(ds, 2 * i)[c->n_prompt - 1], 0);
    }
}

static void test_preference_data(void **state) {
    (void)state;
    NEED_TOK512();
    Dataset ds;
    load_shared("datasets/tinystories-pref/train.jsonl", DS_PREFERENCE, &ds);
    assert_int_equal(ds.n, 2000);
    assert_int_equal(ds.summary.shapes[REC_PREFERENCE], 2000);
    assert_int_equal(ds.summary.prefix_fallbacks, 0);   // PROVENANCE: prompt encoding is a prefix of both
    check_pairs(&ds);
    dataset_free(&ds);

    load_shared("datasets/tinystories-pref/eval_prompts.jsonl", DS_PROMPT, &ds);
    assert_int_equal(ds.n, 100);
    assert_int_equal(ds.summary.shapes[REC_PROMPT_ONLY], 100);
    dataset_free(&ds);

    // HH-RLHF raw transcripts (gzip): 9 pairs whose sides have different prompts and 2 with
    // identical sides are refused; counted with skip_bad_lines.
    TokEncoder e;
    tok_encoder_init(&e, tok512());
    DatasetOptions o = dataset_options_default(DS_PREFERENCE);
    o.skip_bad_lines = 1;
    char err[FTK_ERR_LEN];
    assert_int_equal(dataset_load(&ds, shared_path("datasets/hh-rlhf/helpful-base-test.jsonl.gz"), &o, &e, err), 0);
    assert_int_equal(ds.summary.records_read, 2354);
    assert_int_equal(ds.summary.skipped, 11);
    assert_int_equal(ds.n, 2343);
    assert_int_equal(ds.summary.shapes[REC_HH], 2343);
    assert_int_equal(ds.summary.n_skip_reasons, 2);
    long n_prompt_diff = 0, n_ident = 0;
    for (int i = 0; i < ds.summary.n_skip_reasons; i++) {
        if (strstr(ds.summary.skip_reasons[i].reason, "same prompt")) n_prompt_diff = ds.summary.skip_reasons[i].count;
        if (strstr(ds.summary.skip_reasons[i].reason, "identical")) n_ident = ds.summary.skip_reasons[i].count;
    }
    assert_int_equal(n_prompt_diff, 9);
    assert_int_equal(n_ident, 2);
    check_pairs(&ds);
    // Row 0 split: the HH prompt through "\n\nAssistant:" equals the derived .pcr file's row 0.
    Dataset pcr;
    load_shared("datasets/hh-rlhf/helpful-base-test.pcr.jsonl.gz", DS_PREFERENCE, &pcr);
    assert_int_equal(pcr.n, 2348);
    assert_int_equal(pcr.summary.shapes[REC_PREFERENCE], 2348);
    for (int s = 0; s < 2; s++) {
        assert_int_equal(dataset_seq(&ds, s)->len, dataset_seq(&pcr, s)->len);
        assert_int_equal(dataset_seq(&ds, s)->n_prompt, dataset_seq(&pcr, s)->n_prompt);
        assert_memory_equal(dataset_seq_ids(&ds, s), dataset_seq_ids(&pcr, s), (size_t)dataset_seq(&ds, s)->len * sizeof(int));
    }
    char summary[2048];
    dataset_summary_format(&ds, summary, sizeof summary);
    assert_non_null(strstr(summary, "2354 records read, 2343 pairs used"));
    dataset_free(&pcr);
    dataset_free(&ds);
}

static void test_alpaca_libre_and_seed(void **state) {
    (void)state;
    NEED_TOK512();
    Dataset ds;
    load_shared("datasets/alpaca-libre/alpaca_libre_tasks_v1.jsonl", DS_SFT, &ds);   // raw, with extra fields
    assert_int_equal(ds.n, 2375);
    assert_int_equal(ds.summary.shapes[REC_ALPACA], 2375);
    dataset_free(&ds);
    load_shared("datasets/alpaca-libre/alpaca_libre_tasks_v1_ok.jsonl", DS_SFT, &ds);
    assert_int_equal(ds.n, 1202);
    dataset_free(&ds);
    load_shared("datasets/self-instruct-seed/seed_tasks_flat.jsonl", DS_SFT, &ds);
    assert_int_equal(ds.n, 175);
    dataset_free(&ds);
}

static int setup(void **state) {
    (void)state;
    const char *d = test_tmpdir("dataset");
    if (!d) return -1;
    snprintf(g_dir, sizeof g_dir, "%s", d);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    test_rmtree(g_dir);
    if (g_tok) tokenizer_free(g_tok);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_jsonl_plain_and_gzip_by_magic),
        cmocka_unit_test(test_read_json_array),
        cmocka_unit_test(test_shapes_and_templates),
        cmocka_unit_test(test_mask_positions),
        cmocka_unit_test(test_truncation),
        cmocka_unit_test(test_special_tokens_only_from_templates),
        cmocka_unit_test(test_batch_padding_and_targets),
        cmocka_unit_test(test_packing),
        cmocka_unit_test(test_shuffle_and_cursor),
        cmocka_unit_test(test_validation_split),
        cmocka_unit_test(test_tinystories_mia),
        cmocka_unit_test(test_preference_data),
        cmocka_unit_test(test_alpaca_libre_and_seed),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
