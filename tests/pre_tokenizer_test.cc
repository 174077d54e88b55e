// Pre-tokenizer specification: the words each tokenizer.ggml.pre family cuts
// text into, worked out by hand from llama.cpp's regexes and its classes.
#include "runtime/pre_tokenizer.h"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "gtest/gtest.h"

namespace micromoe::runtime {
namespace {

using Words = std::vector<std::string>;

Words Split(std::string_view pre, std::string_view text) {
  auto p = PreTokenizer::Create(pre);
  EXPECT_TRUE(p.ok()) << p.status();
  if (!p.ok()) return {};
  Words words;
  for (const std::string_view w : (*p)->Split(text)) words.emplace_back(w);
  return words;
}

// Characters used below, spelled in UTF-8.
constexpr char kAcute[] = "\xCC\x81";          // U+0301 COMBINING ACUTE ACCENT (Mn)
constexpr char kIdeographicSpace[] = "\xE3\x80\x80";  // U+3000 (Zs, white space)
constexpr char kNbsp[] = "\xC2\xA0";           // U+00A0 (Zs, white space)
constexpr char kMongolianVowelSeparator[] = "\xE1\xA0\x8E";  // U+180E (Cf, not white space)
constexpr char kLongS[] = "\xC5\xBF";          // U+017F LATIN SMALL LETTER LONG S (Ll)
constexpr char kGrin[] = "\xF0\x9F\x98\x80";   // U+1F600 (So)

TEST(PreTokenizerTest, Gpt2KeepsLettersAndNumbersOfEveryScriptTogether) {
  EXPECT_EQ(Split("gpt2", "naïve café"), (Words{"naïve", " café"}));
  EXPECT_EQ(Split("gpt2", "日本語です。"), (Words{"日本語です", "。"}));
  // ² and ½ are No, ٣ (ARABIC-INDIC DIGIT THREE) is Nd: all \p{N}.
  EXPECT_EQ(Split("gpt2", "x²٣ ½"), (Words{"x", "²٣", " ½"}));
  EXPECT_EQ(Split("gpt2", "Ελληνικά русский"), (Words{"Ελληνικά", " русский"}));
}

TEST(PreTokenizerTest, Gpt2ContractionsAreLowerCaseOnly) {
  EXPECT_EQ(Split("gpt2", "it's I'M"), (Words{"it", "'s", " I", "'", "M"}));
}

TEST(PreTokenizerTest, Gpt2LeavesTheLastSpaceOfARunToTheNextWord) {
  EXPECT_EQ(Split("gpt2", "a   b"), (Words{"a", "  ", " b"}));
  EXPECT_EQ(Split("gpt2", "a   "), (Words{"a", "   "}));
  // Only ' ' joins the word after it; other white space before a word stands alone.
  EXPECT_EQ(Split("gpt2", std::string("a  ") + kIdeographicSpace + "b"),
            (Words{"a", "  ", kIdeographicSpace, "b"}));
  EXPECT_EQ(Split("gpt2", "a\n\tb"), (Words{"a", "\n", "\t", "b"}));
}

TEST(PreTokenizerTest, Gpt2SplitsCombiningMarksFromLetters) {
  // U+0301 is a mark (Mn), not \p{L}: "é" spelled e + U+0301 is two words.
  const std::string text = std::string("e") + kAcute + "t" + kAcute;
  EXPECT_EQ(Split("gpt2", text), (Words{"e", kAcute, "t", kAcute}));
}

TEST(PreTokenizerTest, Gpt2WhiteSpaceIsUnicodeWhiteSpace) {
  // U+180E is a format character, not white space (PCRE2's own \s would take it).
  EXPECT_EQ(Split("gpt2", std::string("a ") + kMongolianVowelSeparator + "b"),
            (Words{"a", std::string(" ") + kMongolianVowelSeparator, "b"}));
  EXPECT_EQ(Split("gpt2", std::string("a") + kNbsp + "b"), (Words{"a", kNbsp, "b"}));
}

TEST(PreTokenizerTest, Gpt2GroupsSymbolsAndPunctuation) {
  EXPECT_EQ(Split("gpt2", std::string("hi") + kGrin + "!! ok"),
            (Words{"hi", std::string(kGrin) + "!!", " ok"}));
}

TEST(PreTokenizerTest, Qwen2CountsMarksSymbolsAndNonAsciiSpaceAsLlamaCppDoes) {
  // llama.cpp's collapsed classes: non-ASCII marks and symbols are letters...
  EXPECT_EQ(Split("qwen2", std::string("e") + kAcute + "t" + kAcute),
            (Words{std::string("e") + kAcute + "t" + kAcute}));
  EXPECT_EQ(Split("qwen2", std::string("hi") + kGrin + "!! ok"),
            (Words{std::string("hi") + kGrin, "!!", " ok"}));
  // ...and white space other than CR and LF may lead a word.
  EXPECT_EQ(Split("qwen2", std::string("a") + kNbsp + "b"),
            (Words{"a", std::string(kNbsp) + "b"}));
  EXPECT_EQ(Split("qwen2", "日本語です。"), (Words{"日本語です", "。"}));
}

TEST(PreTokenizerTest, Qwen2TakesOneDigitAWordAndLlama3UpToThree) {
  const std::string digits = "١٢٣٤";  // U+0661..U+0664
  EXPECT_EQ(Split("qwen2", digits), (Words{"١", "٢", "٣", "٤"}));
  EXPECT_EQ(Split("llama-bpe", digits), (Words{"١٢٣", "٤"}));
  EXPECT_EQ(Split("llama-bpe", "x12345"), (Words{"x", "123", "45"}));
}

TEST(PreTokenizerTest, Llama3ContractionsIgnoreAsciiCaseOnly) {
  EXPECT_EQ(Split("llama-bpe", "I'M here"), (Words{"I", "'M", " here"}));
  EXPECT_EQ(Split("llama-bpe", "'sx"), (Words{"'s", "x"}));
  // The long s is no 's': the apostrophe leads the word instead.
  EXPECT_EQ(Split("llama-bpe", std::string("'") + kLongS + "x"),
            (Words{std::string("'") + kLongS + "x"}));
}

TEST(PreTokenizerTest, Llama3EndsWordsAtLineBreaks) {
  EXPECT_EQ(Split("llama-bpe", "a.\n\n  b  \n c"),
            (Words{"a", ".\n\n", " ", " b", "  \n", " c"}));
}

TEST(PreTokenizerTest, RefactSplitsDigitsFirstThenMatchesEachPieceAlone) {
  EXPECT_EQ(Split("refact", "v12 ٣"), (Words{"v", "1", "2", " ", "٣"}));
  // "a  " is matched without the digit after it: its spaces end a piece.
  EXPECT_EQ(Split("refact", "a  1"), (Words{"a", "  ", "1"}));
  EXPECT_EQ(Split("gpt2", "a  1"), (Words{"a", " ", " 1"}));
}

TEST(PreTokenizerTest, InvalidUtf8BytesCountAsReplacementCharacters) {
  // U+FFFD is a symbol: punctuation-like for gpt2, a letter for qwen2.
  EXPECT_EQ(Split("gpt2", "a\xFF" "b !\x80!"), (Words{"a", "\xFF", "b", " !\x80!"}));
  EXPECT_EQ(Split("qwen2", "a\xFF" "b !\x80!"), (Words{"a\xFF" "b", " !", "\x80", "!"}));
  EXPECT_EQ(Split("gpt2", "\xE2\x82 x"), (Words{"\xE2\x82", " x"}));
}

TEST(PreTokenizerTest, WordsCoverAnyBytesExactly) {
  uint32_t state = 7;
  for (const char* pre : {"gpt2", "qwen2", "llama-bpe", "refact"}) {
    auto p = PreTokenizer::Create(pre);
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_TRUE((*p)->Split("").empty());
    for (int round = 0; round < 300; ++round) {
      std::string text(1 + round % 50, '\0');
      for (char& c : text) {
        state = state * 1664525u + 1013904223u;
        c = static_cast<char>(state >> 24);
      }
      std::string joined;
      for (const std::string_view w : (*p)->Split(text)) {
        ASSERT_FALSE(w.empty());
        ASSERT_EQ(w.data(), text.data() + joined.size()) << "words are views in order";
        joined += w;
      }
      EXPECT_EQ(joined, text);
    }
  }
}

TEST(PreTokenizerTest, KnowsTheLlamaCppNames) {
  for (const char* pre : {"gpt-2", "gpt2", "olmo", "mpt", "jais", "phi-2", "roberta-bpe", "qwen2",
                          "stablelm2", "deepseek-r1-qwen", "llama3", "llama-v3", "llama-bpe",
                          "refact", "starcoder", "command-r", "smollm", "codeshell", "exaone",
                          "minerva-7b"}) {
    EXPECT_TRUE(PreTokenizer::Create(pre).ok()) << pre;
  }
  EXPECT_TRUE((*PreTokenizer::Create("llama-bpe"))->ignore_merges());
  EXPECT_FALSE((*PreTokenizer::Create("qwen2"))->ignore_merges());
  auto unknown = PreTokenizer::Create("no-such-pre");
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(unknown.status().message()).find("no-such-pre"), std::string::npos);
}

}  // namespace
}  // namespace micromoe::runtime
