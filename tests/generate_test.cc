// Sampling, UTF-8 streaming of token bytes, and the generation loop.
#include <unistd.h>

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "gguf/writer.h"
#include "runtime/chat_template.h"
#include "runtime/generate.h"
#include "runtime/sampler.h"
#include "tools/model_builder.h"

namespace micromoe::runtime {
namespace {

const std::string kReplacement = "\xEF\xBF\xBD";

TEST(Utf8Stream, HoldsASplitCharacterUntilComplete) {
  Utf8Stream s;
  EXPECT_EQ(s.Push("a\xE2"), "a");
  EXPECT_EQ(s.Push("\x9C"), "");
  EXPECT_EQ(s.Push("\x93z"), "\xE2\x9C\x93z");  // U+2713
  EXPECT_EQ(s.Flush(), "");
}

TEST(Utf8Stream, InvalidBytesBecomeReplacementCharacters) {
  Utf8Stream s;
  EXPECT_EQ(s.Push("\xFF" "a"), kReplacement + "a");
  EXPECT_EQ(s.Push("\x80"), kReplacement);           // stray continuation byte
  EXPECT_EQ(s.Push("\xC3(" ), kReplacement + "(");    // lead without continuation
  EXPECT_EQ(s.Push("\xC0\xAF"), kReplacement + kReplacement);  // overlong '/'
  EXPECT_EQ(s.Push("\xED\xA0\x80"), kReplacement + kReplacement + kReplacement);  // surrogate
}

TEST(Utf8Stream, FlushReplacesAnIncompleteTail) {
  Utf8Stream s;
  EXPECT_EQ(s.Push("\xF0\x9F"), "");
  EXPECT_EQ(s.Flush(), kReplacement + kReplacement);
}

TEST(Sampler, ZeroTemperatureIsArgmax) {
  Sampler s({0.0f, 40, 0.95f, 1});
  const std::vector<float> logits = {0.1f, 2.0f, -1.0f, 1.9f};
  EXPECT_EQ(s.Sample(logits.data(), 4), 1);
}

TEST(Sampler, TopKOneAndTinyTopPAreGreedy) {
  const std::vector<float> logits = {0.1f, 2.0f, -1.0f, 1.9f};
  Sampler k1({1.0f, 1, 1.0f, 7});
  Sampler p({1.0f, 0, 0.01f, 7});
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(k1.Sample(logits.data(), 4), 1);
    EXPECT_EQ(p.Sample(logits.data(), 4), 1);
  }
}

TEST(Sampler, SameSeedSameDrawsAndEveryDrawIsAllowed) {
  const std::vector<float> logits = {0.5f, 0.4f, 0.3f, 0.2f, 0.1f, -5.0f};
  Sampler a({1.0f, 3, 1.0f, 42}), b({1.0f, 3, 1.0f, 42});
  std::vector<int> seen(6, 0);
  for (int i = 0; i < 200; ++i) {
    const int x = a.Sample(logits.data(), 6);
    EXPECT_EQ(x, b.Sample(logits.data(), 6));
    ++seen[x];
  }
  EXPECT_EQ(seen[3] + seen[4] + seen[5], 0);  // outside the top 3
  EXPECT_GT(seen[0], 0);
  EXPECT_GT(seen[2], 0);
}

TEST(Sampler, ValidationNamesTheField) {
  EXPECT_FALSE(ValidateSamplingOptions({-1.0f, 40, 0.95f, 0}).ok());
  EXPECT_FALSE(ValidateSamplingOptions({0.8f, -1, 0.95f, 0}).ok());
  const absl::Status s = ValidateSamplingOptions({0.8f, 40, 1.5f, 0});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(s.message()).find("top_p"), std::string::npos);
  EXPECT_TRUE(ValidateSamplingOptions({0.0f, 0, 1.0f, 0}).ok());
}

TEST(ChatTemplate, RecognisesChatMlAndTuluAndNamesAnythingElse) {
  EXPECT_EQ(*DetectChatFormat("{% for m in messages %}<|im_start|>{{ m.role }}..."), ChatFormat::kChatMl);
  EXPECT_EQ(*DetectChatFormat("{{ '<|user|>\\n' + m.content }}...<|assistant|>"), ChatFormat::kTulu);
  const auto other = DetectChatFormat("[INST] {{ m.content }} [/INST]");
  EXPECT_EQ(other.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(other.status().message()).find("[INST]"), std::string::npos);
  EXPECT_EQ(DetectChatFormat("").status().code(), absl::StatusCode::kNotFound);
}

TEST(ChatTemplate, FormatsTurnsAndOpensTheAssistantTurn) {
  const std::vector<ChatMessage> turns = {{"system", "Be brief."}, {"user", "Hi"}};
  EXPECT_EQ(*FormatChat(ChatFormat::kChatMl, turns),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(*FormatChat(ChatFormat::kTulu, turns), "<|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\n");
  EXPECT_EQ(FormatChat(ChatFormat::kChatMl, {{"tool", "x"}}).status().code(), absl::StatusCode::kInvalidArgument);
}

class GenerateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    gguf::Writer w;
    tools::BuildTinyModel({}, &w);
    // One file per process: ctest runs tests in parallel, and rewriting a file
    // another process has mapped would crash it.
    const std::string path = ::testing::TempDir() + "/generate_test_" + std::to_string(::getpid()) + ".gguf";
    ASSERT_TRUE(w.WriteFile(path).ok());
    auto m = Model::Load(path);
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = std::move(*m);
  }
  std::unique_ptr<Model> model_;
};

TEST_F(GenerateTest, StopsAfterMaxTokensAndIsDeterministicPerSeed) {
  GenerateOptions o;
  o.max_tokens = 10;
  o.sampling.seed = 3;
  std::vector<int32_t> a, b;
  auto ra = Generate(*model_, {1, 300, 301}, o, [&](int32_t t) { a.push_back(t); return true; });
  auto rb = Generate(*model_, {1, 300, 301}, o, [&](int32_t t) { b.push_back(t); return true; });
  ASSERT_TRUE(ra.ok() && rb.ok());
  EXPECT_EQ(a, b);
  EXPECT_EQ(ra->tokens, a);
  EXPECT_LE(a.size(), 10u);
  if (ra->finish == FinishReason::kLength) EXPECT_EQ(a.size(), 10u);
}

TEST_F(GenerateTest, CallbackCanCancel) {
  GenerateOptions o;
  o.max_tokens = 10;
  o.sampling.temperature = 0;
  int calls = 0;
  auto r = Generate(*model_, {1, 300}, o, [&](int32_t) { return ++calls < 3; });
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(r->finish, FinishReason::kCancelled);
}

TEST_F(GenerateTest, RejectsEmptyPromptAndBadOptions) {
  GenerateOptions o;
  EXPECT_EQ(Generate(*model_, {}, o, [](int32_t) { return true; }).status().code(), absl::StatusCode::kInvalidArgument);
  o.sampling.top_p = 0;
  EXPECT_EQ(Generate(*model_, {1}, o, [](int32_t) { return true; }).status().code(), absl::StatusCode::kInvalidArgument);
  o.sampling.top_p = 0.9f;
  o.max_tokens = 1000;  // the tiny model's context is 256
  o.n_ctx = 256;
  EXPECT_EQ(Generate(*model_, std::vector<int32_t>(300, 5), o, [](int32_t) { return true; }).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace micromoe::runtime
