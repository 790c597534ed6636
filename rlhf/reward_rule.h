// reward_rule.h — rule-based rewards, so PPO can be tested and demonstrated without a learned
// reward model (`ftk ppo --reward-rule SPEC`):
//   contains:WORD   1 when the response contains WORD as a whole word, else 0
//   count:WORD      the number of whole-word occurrences of WORD in the response
// "Whole word, case-insensitive" is the regex \bWORD\b with re.IGNORECASE on ASCII text: word
// characters are [A-Za-z0-9_], the same boundaries as the rate measurement (rlhf/eval_rate.h), so a
// contains:dog reward and the 'dog' rate count the same samples. WORD must start and end with a
// word character. The response text is what its tokens add after the prompt (decoded as a
// continuation of the prompt's last token; control tokens such as EOS add nothing).
#ifndef FTK_RLHF_REWARD_RULE_H
#define FTK_RLHF_REWARD_RULE_H

#include <stddef.h>

struct Tokenizer;

typedef enum { REWARD_RULE_CONTAINS = 0, REWARD_RULE_COUNT = 1 } RewardRuleKind;

typedef struct {
    RewardRuleKind kind;
    char word[128];
} RewardRule;

// Parses "contains:WORD" or "count:WORD". Fails (err says why) on any other form.
int reward_rule_parse(RewardRule *r, const char *spec, char *err);

// Whole-word, case-insensitive occurrences of word in text[0..len) (non-overlapping, left to right).
int word_count(const char *text, size_t len, const char *word);

// The rule's score of a response text.
float reward_rule_score_text(const RewardRule *r, const char *text, size_t len);

// Decodes response ids[0..n) as the continuation of token prev (the prompt's last token; -1 = none)
// and scores it. Fails only on allocation failure.
int reward_rule_score(const RewardRule *r, const struct Tokenizer *tok, int prev, const int *ids, int n, float *score,
                      char *err);

#endif
