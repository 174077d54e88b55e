// Tokenizer specification: token ids must equal llama.cpp's on the reference
// models (shared/reference/expected.md), and text must survive a round trip.
#include "runtime/tokenizer.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gguf/writer.h"
#include "gtest/gtest.h"

#ifndef MICROMOE_REFERENCE_DIR
#error "define MICROMOE_REFERENCE_DIR to the folder holding the reference GGUF files"
#endif

namespace micromoe::runtime {
namespace {

using Ids = std::vector<int32_t>;

const char* const kHello = "Hello world";
const char* const kLicense = " the  GNU General Public License, version 3 (2007).";
const char* const kContractions = "it's 12345 don't\ttabs\nnew line";
const char* const kNonAscii = "naïve café — ünïcödé ✓ 日本";

std::unique_ptr<gguf::File> OpenReference(const std::string& name) {
  auto file = gguf::File::Open(std::string(MICROMOE_REFERENCE_DIR) + "/" + name);
  EXPECT_TRUE(file.ok()) << file.status();
  return file.ok() ? std::move(*file) : nullptr;
}

// The reference files live outside the repository (../shared/reference);
// tests that need them are skipped where the folder is absent.
bool ReferenceAvailable() { return std::ifstream(std::string(MICROMOE_REFERENCE_DIR) + "/mixtral-f32.gguf").good(); }
#define SKIP_WITHOUT_REFERENCE() \
  if (!ReferenceAvailable()) GTEST_SKIP() << "no reference folder at " MICROMOE_REFERENCE_DIR

std::unique_ptr<Tokenizer> LoadReference(const std::string& name) {
  auto file = OpenReference(name);
  if (!file) return nullptr;
  auto tokenizer = Tokenizer::FromGguf(*file);
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  return tokenizer.ok() ? std::move(*tokenizer) : nullptr;
}

// As llama-tokenize: BOS when the model adds it, special tokens not parsed.
Ids Tokenize(const Tokenizer& t, const std::string& text) {
  return t.Encode(text, t.add_bos(), /*parse_special=*/false);
}

// ---------------------------------------------------------------------------
// The 16 reference cases (llama.cpp build 4748, llama-tokenize --ids).

TEST(TokenizerReference, MixtralIsLlamaSentencePiece) {
  SKIP_WITHOUT_REFERENCE();
  auto t = LoadReference("mixtral-f32.gguf");
  ASSERT_NE(t, nullptr);
  EXPECT_TRUE(t->add_bos());
  EXPECT_EQ(Tokenize(*t, kHello), (Ids{1, 293, 312, 322, 322, 315, 731, 320, 322, 321}));
  EXPECT_EQ(Tokenize(*t, kLicense),
            (Ids{1,   259, 397, 312, 259, 302, 343, 350, 302, 312, 317, 312, 320, 314, 322, 304,
                 324, 331, 322, 316, 323, 296, 316, 323, 312, 317, 318, 312, 47,  884, 320, 318,
                 316, 315, 317, 259, 54,  259, 43,  53,  51,  51,  58,  44,  49}));
  EXPECT_EQ(Tokenize(*t, kContractions),
            (Ids{1,   469, 42,  318, 259, 52,  53, 54,  55,  56,  601, 317, 42,
                 313, 12,  313, 314, 331, 318, 13, 317, 312, 326, 628, 317, 312}));
  EXPECT_EQ(Tokenize(*t, kNonAscii),
            (Ids{1,   496, 198, 178, 332, 312, 652, 327, 198, 172, 259, 229, 131,
                 151, 259, 198, 191, 317, 198, 178, 323, 198, 185, 321, 198, 172,
                 259, 229, 159, 150, 259, 233, 154, 168, 233, 159, 175}));
}

TEST(TokenizerReference, OlmoeIsGpt2WithOlmoPreTokenizer) {
  SKIP_WITHOUT_REFERENCE();
  auto t = LoadReference("olmoe-f32.gguf");
  ASSERT_NE(t, nullptr);
  EXPECT_FALSE(t->add_bos());
  EXPECT_EQ(Tokenize(*t, kHello), (Ids{72, 101, 382, 111, 272, 260, 528}));
  EXPECT_EQ(Tokenize(*t, kLicense),
            (Ids{266, 32, 523, 513, 530, 336, 44, 404, 813, 381, 50, 48, 48, 55, 1351}));
  EXPECT_EQ(Tokenize(*t, kContractions), (Ids{279, 611, 510, 50,  51,  52, 53,  304, 261, 39,
                                               116, 9,   116, 697, 115, 10, 110, 1260, 315, 969}));
  EXPECT_EQ(Tokenize(*t, kNonAscii),
            (Ids{110, 97,  195, 175, 309, 264, 97,  102, 195, 169, 32,  226, 128,
                 148, 32,  195, 188, 110, 195, 175, 99,  195, 182, 100, 195, 169,
                 32,  226, 156, 147, 32,  230, 151, 165, 230, 156, 172}));
}

TEST(TokenizerReference, Qwen2moeIsGpt2WithQwen2PreTokenizer) {
  SKIP_WITHOUT_REFERENCE();
  auto t = LoadReference("qwen2moe-f32.gguf");
  ASSERT_NE(t, nullptr);
  EXPECT_FALSE(t->add_bos());
  EXPECT_EQ(Tokenize(*t, kHello), (Ids{72, 101, 382, 111, 272, 260, 528}));
  EXPECT_EQ(Tokenize(*t, kLicense),
            (Ids{266, 32, 523, 513, 530, 336, 44, 404, 32, 51, 381, 50, 48, 48, 55, 1351}));
  EXPECT_EQ(Tokenize(*t, kContractions),
            (Ids{279, 611, 32,  49,  50,  51,  52, 53,  304,  261, 39,
                 116, 9,   116, 697, 115, 10,  110, 1260, 315, 969}));
  EXPECT_EQ(Tokenize(*t, kNonAscii),
            (Ids{110, 97,  195, 175, 309, 264, 97,  102, 195, 169, 32,  226, 128,
                 148, 32,  195, 188, 110, 195, 175, 99,  195, 182, 100, 195, 169,
                 32,  226, 156, 147, 32,  230, 151, 165, 230, 156, 172}));
}

TEST(TokenizerReference, GranitemoeIsGpt2WithRefactPreTokenizer) {
  SKIP_WITHOUT_REFERENCE();
  auto t = LoadReference("granitemoe-f32.gguf");
  ASSERT_NE(t, nullptr);
  EXPECT_FALSE(t->add_bos());
  EXPECT_EQ(Tokenize(*t, kHello), (Ids{72, 101, 382, 111, 272, 260, 528}));
  EXPECT_EQ(Tokenize(*t, kLicense),
            (Ids{266, 32, 523, 513, 530, 336, 44, 404, 32, 51, 381, 50, 48, 48, 55, 1351}));
  EXPECT_EQ(Tokenize(*t, kContractions),
            (Ids{279, 611, 32,  49,  50,  51,  52, 53,  304,  261, 39,
                 116, 9,   116, 697, 115, 10,  110, 1260, 315, 969}));
  EXPECT_EQ(Tokenize(*t, kNonAscii),
            (Ids{110, 97,  195, 175, 309, 264, 97,  102, 195, 169, 32,  226, 128,
                 148, 32,  195, 188, 110, 195, 175, 99,  195, 182, 100, 195, 169,
                 32,  226, 156, 147, 32,  230, 151, 165, 230, 156, 172}));
}

// ---------------------------------------------------------------------------
// Behaviour on every reference vocabulary.

class TokenizerTest : public testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    SKIP_WITHOUT_REFERENCE();
    tokenizer_ = LoadReference(GetParam());
    ASSERT_NE(tokenizer_, nullptr);
  }
  std::unique_ptr<Tokenizer> tokenizer_;
};

INSTANTIATE_TEST_SUITE_P(ReferenceModels, TokenizerTest,
                         testing::Values("mixtral-f32.gguf", "olmoe-f32.gguf", "qwen2moe-f32.gguf",
                                         "granitemoe-f32.gguf"));

TEST_P(TokenizerTest, DecodeOfEncodeGivesTheTextBack) {
  const Tokenizer& t = *tokenizer_;
  for (const std::string& text :
       {std::string(kHello), std::string(kLicense), std::string(kContractions),
        std::string(kNonAscii), std::string("  leading and trailing  \n\n\t "),
        std::string("Ελληνικά, русский, 中文（简体）, emoji 🙂, ½ ² ٣")}) {
    EXPECT_EQ(t.Decode(t.Encode(text, false, false)), text);
    EXPECT_EQ(t.Decode(t.Encode(text, true, false)), text) << "with BOS";
  }
}

TEST_P(TokenizerTest, EmptyTextGivesNothingOrBos) {
  const Tokenizer& t = *tokenizer_;
  EXPECT_EQ(t.Encode("", false, false), Ids{});
  EXPECT_EQ(t.Encode("", false, true), Ids{});
  EXPECT_EQ(t.Encode("", true, false), t.bos_id() >= 0 ? Ids{t.bos_id()} : Ids{});
}

TEST_P(TokenizerTest, InvalidUtf8IsKeptByteForByte) {
  const Tokenizer& t = *tokenizer_;
  for (const std::string& text :
       {std::string("\xff"), std::string("a\xc3"), std::string("\xe2\x82 x"),
        std::string("\x80\x80\xbf"), std::string("\xed\xa0\x80 surrogate"),
        std::string("\xc0\xaf overlong"), std::string("ok \xf4\x90\x80\x80 too big"),
        std::string("\0 nul", 5)}) {
    const Ids ids = t.Encode(text, true, true);
    for (const int32_t id : ids) {
      ASSERT_GE(id, 0);
      ASSERT_LT(id, t.n_vocab());
    }
    EXPECT_EQ(t.Decode(ids), text);
  }
}

TEST_P(TokenizerTest, ArbitraryBytesDoNotCrash) {
  const Tokenizer& t = *tokenizer_;
  uint32_t state = 12345;
  for (int round = 0; round < 200; ++round) {
    std::string text(1 + round % 40, '\0');
    for (char& c : text) {
      state = state * 1664525u + 1013904223u;
      c = static_cast<char>(state >> 24);
    }
    const Ids ids = t.Encode(text, round % 2 == 0, round % 3 == 0);
    for (const int32_t id : ids) ASSERT_TRUE(id >= 0 && id < t.n_vocab());
  }
}

TEST_P(TokenizerTest, ControlTokensPrintAsNothing) {
  const Tokenizer& t = *tokenizer_;
  EXPECT_TRUE(t.IsEndOfGeneration(t.eos_id()));
  EXPECT_EQ(t.TokenToBytes(t.eos_id()), "");
  EXPECT_EQ(t.TokenToBytes(-1), "");
  EXPECT_EQ(t.TokenToBytes(t.n_vocab()), "");
  EXPECT_EQ(t.Piece(t.n_vocab()), "");
}

TEST_P(TokenizerTest, EncodesALicenseQuickly) {
  std::string text;
  while (text.size() < 35000) {
    text += std::string(kLicense) + "\n" + kContractions + " " + kNonAscii;
  }
  const auto start = std::chrono::steady_clock::now();
  const Ids ids = tokenizer_->Encode(text, true, false);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%s: %zu bytes -> %zu tokens in %.4f s (bound 1 s)\n", GetParam(), text.size(),
              ids.size(), seconds);
  EXPECT_LT(seconds, 1.0);
  EXPECT_EQ(tokenizer_->Decode(ids), text);
}

// ---------------------------------------------------------------------------
// llama (SentencePiece) specifics, on mixtral-f32.gguf.

class LlamaTokenizerTest : public testing::Test {
 protected:
  void SetUp() override {
    SKIP_WITHOUT_REFERENCE();
    t_ = LoadReference("mixtral-f32.gguf");
    ASSERT_NE(t_, nullptr);
  }
  std::unique_ptr<Tokenizer> t_;
};

TEST_F(LlamaTokenizerTest, VocabularyFacts) {
  EXPECT_EQ(t_->n_vocab(), 1000);
  EXPECT_EQ(t_->bos_id(), 1);
  EXPECT_EQ(t_->eos_id(), 2);
  EXPECT_EQ(t_->Piece(1), "<s>");
  EXPECT_EQ(t_->Piece(259), "\xE2\x96\x81");  // U+2581
  EXPECT_TRUE(t_->IsEndOfGeneration(2));
  EXPECT_FALSE(t_->IsEndOfGeneration(1));
}

TEST_F(LlamaTokenizerTest, ByteFallbackTokensDecodeToTheirBytes) {
  // "日" is not in the vocabulary: its three UTF-8 bytes become <0xE6><0x97><0xA5>,
  // and ids 3..258 are <0x00>..<0xFF>.
  EXPECT_EQ(t_->Encode("日", false, false), (Ids{259, 3 + 0xE6, 3 + 0x97, 3 + 0xA5}));
  EXPECT_EQ(t_->Piece(3 + 0xE6), "<0xE6>");
  EXPECT_EQ(t_->TokenToBytes(3 + 0xE6), "\xE6");
  EXPECT_EQ(t_->TokenToBytes(3 + 0x0A), "\n");
  EXPECT_EQ(t_->TokenToBytes(3), std::string(1, '\0'));
  EXPECT_EQ(t_->Decode(Ids{3 + 0xE6, 3 + 0x97, 3 + 0xA5}), "日");
}

TEST_F(LlamaTokenizerTest, SpaceMarkPrintsAsSpace) {
  EXPECT_EQ(t_->TokenToBytes(259), " ");
  EXPECT_EQ(t_->TokenToBytes(293), " H");  // "▁H"
  EXPECT_EQ(t_->TokenToBytes(1), "");       // BOS
}

TEST_F(LlamaTokenizerTest, SpecialTokenTextIsParsedOnlyWhenAsked) {
  // parse_special: "<s>" is BOS, and the text after it gets the space prefix again.
  Ids expected = {1};
  for (const int32_t id : t_->Encode("hi", false, false)) expected.push_back(id);
  EXPECT_EQ(t_->Encode("<s>hi", false, true), expected);

  // Otherwise "<s>" is ordinary text.
  const Ids plain = t_->Encode("<s>hi", false, false);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 1), 0);
  EXPECT_GT(plain.size(), 3u);
  EXPECT_EQ(t_->Decode(plain), "<s>hi");
}

TEST_F(LlamaTokenizerTest, SpacePrefixComesFirst) {
  // "▁" + "a": the prefix and the character merge into "▁a" (id 262).
  EXPECT_EQ(t_->Encode("a", false, false), Ids{262});
  EXPECT_EQ(t_->Encode("a", true, false), (Ids{1, 262}));
}

// ---------------------------------------------------------------------------
// gpt2 specifics, on olmoe-f32.gguf.

TEST(Gpt2TokenizerTest, EndOfTextIsSpecial) {
  SKIP_WITHOUT_REFERENCE();
  auto t = LoadReference("olmoe-f32.gguf");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->Piece(1499), "<|endoftext|>");
  EXPECT_TRUE(t->IsEndOfGeneration(1499));
  EXPECT_EQ(t->Encode("<|endoftext|>", false, true), Ids{1499});
  const Ids plain = t->Encode("<|endoftext|>", false, false);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 1499), 0);
  EXPECT_EQ(t->Decode(plain), "<|endoftext|>");
}

TEST(Gpt2TokenizerTest, BytePiecesMapBackToBytes) {
  SKIP_WITHOUT_REFERENCE();
  auto t = LoadReference("olmoe-f32.gguf");
  ASSERT_NE(t, nullptr);
  // Ids 0..255 spell bytes 0..255 in GPT-2's alphabet ("Ā" is byte 0, "Ġ" is ' ').
  EXPECT_EQ(t->Piece(0), "\xC4\x80");
  EXPECT_EQ(t->TokenToBytes(0), std::string(1, '\0'));
  EXPECT_EQ(t->TokenToBytes(32), " ");
  EXPECT_EQ(t->TokenToBytes(0xE6), "\xE6");
  EXPECT_EQ(t->TokenToBytes(266), " the");  // "Ġthe"
}

// ---------------------------------------------------------------------------
// Hand-built vocabularies.

std::string TempPath(const std::string& name) { return testing::TempDir() + "/" + name; }

// A SentencePiece vocabulary: <unk> <s> </s> ▁ a b ▁a ab ▁ab aa
gguf::Writer SmallLlamaVocab() {
  gguf::Writer w;
  w.SetString("tokenizer.ggml.model", "llama");
  w.SetStringArray("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>", "\xE2\x96\x81", "a", "b",
                                             "\xE2\x96\x81" "a", "ab", "\xE2\x96\x81" "ab", "aa"});
  w.SetF32Array("tokenizer.ggml.scores", {0, 0, 0, -1, -1, -1, -3, -2, -4, -2});
  w.SetI32Array("tokenizer.ggml.token_type", {2, 3, 3, 1, 1, 1, 1, 1, 1, 1});
  w.SetU32("tokenizer.ggml.bos_token_id", 1);
  w.SetU32("tokenizer.ggml.eos_token_id", 2);
  return w;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const gguf::Writer& w, const std::string& name,
                                                std::unique_ptr<gguf::File>* keep) {
  const std::string path = TempPath(name);
  if (auto s = w.WriteFile(path); !s.ok()) return s;
  auto file = gguf::File::Open(path);
  if (!file.ok()) return file.status();
  *keep = std::move(*file);
  return Tokenizer::FromGguf(**keep);
}

TEST(SmallVocabTest, HighestScoringPairMergesFirst) {
  std::unique_ptr<gguf::File> file;
  auto t = Load(SmallLlamaVocab(), "small_llama.gguf", &file);
  ASSERT_TRUE(t.ok()) << t.status();
  // "▁ab": pairs ▁a (-3) and ab (-2); ab wins, then ▁+ab -> ▁ab (-4).
  EXPECT_EQ((*t)->Encode("ab", false, false), Ids{8});
  // "▁aaa": ▁a (-3), aa (-2), aa (-2): the leftmost aa wins the tie; "▁aa" is not a token.
  EXPECT_EQ((*t)->Encode("aaa", false, false), (Ids{3, 9, 4}));
  // No byte tokens: an unknown character becomes <unk>, one per byte.
  EXPECT_EQ((*t)->Encode("\xC3\xA9", false, false), (Ids{3, 0, 0}));
}

TEST(SmallVocabTest, SpacePrefixCanBeTurnedOff) {
  gguf::Writer w = SmallLlamaVocab();
  w.SetBool("tokenizer.ggml.add_space_prefix", false);
  w.SetBool("tokenizer.ggml.add_bos_token", false);
  std::unique_ptr<gguf::File> file;
  auto t = Load(w, "small_llama_noprefix.gguf", &file);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_FALSE((*t)->add_bos());
  EXPECT_EQ((*t)->Encode("ab", false, false), Ids{7});
  EXPECT_EQ((*t)->Decode((*t)->Encode(" ab", false, false)), " ab");
}

TEST(SmallVocabTest, RejectsScoresOfTheWrongLength) {
  gguf::Writer w = SmallLlamaVocab();
  w.SetF32Array("tokenizer.ggml.scores", {0, 0, 0});
  std::unique_ptr<gguf::File> file;
  auto t = Load(w, "bad_scores.gguf", &file);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(t.status().message()).find("tokenizer.ggml.scores"), std::string::npos)
      << t.status();
}

TEST(SmallVocabTest, RejectsTokenTypesOfTheWrongLength) {
  gguf::Writer w = SmallLlamaVocab();
  w.SetI32Array("tokenizer.ggml.token_type", {1, 1});
  std::unique_ptr<gguf::File> file;
  auto t = Load(w, "bad_types.gguf", &file);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SmallVocabTest, RejectsSpecialIdsOutOfRange) {
  gguf::Writer w = SmallLlamaVocab();
  w.SetU32("tokenizer.ggml.eos_token_id", 10);
  std::unique_ptr<gguf::File> file;
  auto t = Load(w, "bad_eos.gguf", &file);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(std::string(t.status().message()).find("eos_token_id"), std::string::npos)
      << t.status();
}

TEST(SmallVocabTest, RejectsUnknownModelsAndPreTokenizers) {
  gguf::Writer w = SmallLlamaVocab();
  w.SetString("tokenizer.ggml.model", "bert");
  std::unique_ptr<gguf::File> file;
  EXPECT_FALSE(Load(w, "bad_model.gguf", &file).ok());

  gguf::Writer g;
  g.SetString("tokenizer.ggml.model", "gpt2");
  g.SetString("tokenizer.ggml.pre", "no-such-pre");
  g.SetStringArray("tokenizer.ggml.tokens", {"a", "b"});
  g.SetStringArray("tokenizer.ggml.merges", {"a b"});
  auto t = Load(g, "bad_pre.gguf", &file);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(std::string(t.status().message()).find("no-such-pre"), std::string::npos);
}

TEST(SmallVocabTest, Gpt2MergesFollowTheirRank) {
  // Tokens spell GPT-2 byte characters: "Ġ" is ' '.
  gguf::Writer g;
  g.SetString("tokenizer.ggml.model", "gpt2");
  g.SetString("tokenizer.ggml.pre", "gpt-2");
  g.SetStringArray("tokenizer.ggml.tokens",
                   {"a", "b", "c", "\xC4\xA0", "bc", "ab", "\xC4\xA0" "a", "\xC4\xA0" "abc"});
  // "b c" outranks "a b", so "abc" is a + bc, and " abc" ends as one token.
  g.SetStringArray("tokenizer.ggml.merges",
                   {"b c", "a b", "\xC4\xA0 a", "\xC4\xA0" "a bc", "\xC4\xA0" "a b"});
  std::unique_ptr<gguf::File> file;
  auto t = Load(g, "small_gpt2.gguf", &file);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->Encode("abc", false, false), (Ids{0, 4}));
  EXPECT_EQ((*t)->Encode(" abc", false, false), Ids{7});
  // " ab": "a b" (rank 1) beats "Ġ a" (rank 2), and "Ġ ab" is no merge.
  EXPECT_EQ((*t)->Encode("ab ab", false, false), (Ids{5, 3, 5}));
  EXPECT_EQ((*t)->Decode((*t)->Encode("ab ab", false, false)), "ab ab");
}

// Llama 3 (tokenizer.ggml.pre = llama-bpe) takes digits in runs of up to
// three; qwen2 takes them one by one. Merges never cross a word, so with the
// merges "1 2", "12 3", "4 5" the two split "12345" differently.
TEST(SmallVocabTest, Llama3GroupsDigitsByThreeAndQwen2ByOne) {
  auto vocab = [](const char* pre) {
    gguf::Writer g;
    g.SetString("tokenizer.ggml.model", "gpt2");
    g.SetString("tokenizer.ggml.pre", pre);
    g.SetStringArray("tokenizer.ggml.tokens", {"1", "2", "3", "4", "5", "12", "123", "45", "a", "\xC4\xA0"});
    g.SetStringArray("tokenizer.ggml.merges", {"1 2", "12 3", "4 5"});
    return g;
  };
  std::unique_ptr<gguf::File> f1, f2;
  auto llama3 = Load(vocab("llama-bpe"), "small_llama3.gguf", &f1);
  auto qwen2 = Load(vocab("qwen2"), "small_qwen2.gguf", &f2);
  ASSERT_TRUE(llama3.ok()) << llama3.status();
  ASSERT_TRUE(qwen2.ok()) << qwen2.status();
  EXPECT_EQ((*llama3)->Encode("12345", false, false), (Ids{6, 7}));        // "123" "45"
  EXPECT_EQ((*qwen2)->Encode("12345", false, false), (Ids{0, 1, 2, 3, 4}));  // one digit a word
  EXPECT_EQ((*llama3)->Encode("a1234", false, false), (Ids{8, 6, 3}));     // "a" "123" "4"
}

// Llama 3 takes a word that is itself a token without merging: here "abc" is a
// token although no merge sequence builds it.
TEST(SmallVocabTest, Llama3TakesWholeWordTokensWithoutMerging) {
  gguf::Writer g;
  g.SetString("tokenizer.ggml.model", "gpt2");
  g.SetString("tokenizer.ggml.pre", "llama-bpe");
  g.SetStringArray("tokenizer.ggml.tokens", {"a", "b", "c", "abc"});
  g.SetStringArray("tokenizer.ggml.merges", {"a b"});
  std::unique_ptr<gguf::File> file;
  auto t = Load(g, "small_llama3_whole.gguf", &file);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->Encode("abc", false, false), Ids{3});
  g.SetString("tokenizer.ggml.pre", "gpt2");
  auto gpt2 = Load(g, "small_gpt2_whole.gguf", &file);
  ASSERT_TRUE(gpt2.ok()) << gpt2.status();
  EXPECT_EQ((*gpt2)->Encode("abc", false, false), (Ids{0, 1, 2}));  // "ab" is no token: no merge applies
}

// The token counts behind the reference perplexity runs: llama-perplexity cut
// GPL-3 into floor(n_tokens / 128) chunks.
TEST(TokenizerReference, Gpl3TokenCountsMatchThePerplexityChunks) {
  std::ifstream in("/usr/share/common-licenses/GPL-3", std::ios::binary);
  if (!in) GTEST_SKIP() << "no /usr/share/common-licenses/GPL-3 here";
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  for (const auto& [name, chunks] :
       {std::pair<const char*, size_t>{"mixtral-f32.gguf", 201}, {"olmoe-f32.gguf", 71},
        {"qwen2moe-f32.gguf", 73}, {"granitemoe-f32.gguf", 71}}) {
    SKIP_WITHOUT_REFERENCE();
    auto t = LoadReference(name);
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(Tokenize(*t, text).size() / 128, chunks) << name;
  }
}

}  // namespace
}  // namespace micromoe::runtime
