// micromoe against another engine's figures on the models in
// ../shared/reference (see its README and expected.md): perplexity,
// tokenization and greedy continuation. Skipped when the folder is absent.
#include <cmath>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <tbb/global_control.h>

#include "runtime/generate.h"
#include "runtime/model.h"

namespace micromoe {
namespace {

const std::string kDir = MICROMOE_REFERENCE_DIR;

struct Expected {
  std::map<std::string, double> ppl;             // file -> PPL
  std::map<std::string, std::string> greedy;     // file -> text printed by the other engine
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

const Expected& LoadExpected() {
  static const Expected e = [] {
    Expected e;
    std::istringstream in(ReadFile(kDir + "/expected.md"));
    std::string line;
    const std::regex ppl_row(R"(^\| (\S+\.gguf) \| \S+ \| \S+ \| \d+ \| ([0-9.]+) \|)");
    const std::regex greedy_row(R"(^- (\S+\.gguf): `(.*)`$)");
    std::smatch m;
    while (std::getline(in, line)) {
      if (std::regex_search(line, m, ppl_row)) e.ppl[m[1]] = std::stod(m[2]);
      if (std::regex_search(line, m, greedy_row)) e.greedy[m[1]] = m[2];
    }
    return e;
  }();
  return e;
}

// Engines print the same token bytes but show broken UTF-8 and control bytes
// differently (raw, U+FFFD, dropped): drop controls, turn each run of non-ASCII
// bytes into one '?', trim the end.
std::string Normalise(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c >= 0x80) {
      if (out.empty() || out.back() != '?') out += '?';
    } else if (c >= 0x20) {
      out += static_cast<char>(c);
    }
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

class ReferenceModelTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (!std::ifstream(kDir + "/expected.md")) GTEST_SKIP() << "no reference folder at " << kDir;
  }
};

TEST_P(ReferenceModelTest, PerplexityAgreesWithOtherEngine) {
  const std::string file = GetParam() + ".gguf";
  ASSERT_TRUE(LoadExpected().ppl.count(file)) << "expected.md has no perplexity for " << file;
  const double want = LoadExpected().ppl.at(file);
  auto model = runtime::Model::Load(kDir + "/" + file);
  ASSERT_TRUE(model.ok()) << model.status();
  const auto& tok = (*model)->tokenizer();
  const auto tokens = tok.Encode(ReadFile("/usr/share/common-licenses/GPL-3"), tok.add_bos(), false);
  tbb::global_control threads(tbb::global_control::max_allowed_parallelism, 2);
  auto r = runtime::Perplexity(**model, tokens, 128, [](int, double) {});
  ASSERT_TRUE(r.ok()) << r.status();
  // F32 files pin the exact arithmetic (0.2%); quantized ones allow 1%.
  const bool exact = GetParam().find("f32") != std::string::npos;
  const double rel = std::fabs(r->ppl / want - 1);
  EXPECT_LT(rel, exact ? 0.002 : 0.01) << "micromoe " << r->ppl << " vs other engine " << want;
}

TEST_P(ReferenceModelTest, GreedyContinuationAgreesWithOtherEngine) {
  const std::string file = GetParam() + ".gguf";
  ASSERT_TRUE(LoadExpected().greedy.count(file));
  std::string want = LoadExpected().greedy.at(file);
  for (const std::string prefix : {"<s> The license", "The license"}) {
    if (want.rfind(prefix, 0) == 0) {
      want = want.substr(prefix.size());
      break;
    }
  }
  auto model = runtime::Model::Load(kDir + "/" + file);
  ASSERT_TRUE(model.ok()) << model.status();
  const auto& tok = (*model)->tokenizer();
  runtime::GenerateOptions opts;
  opts.max_tokens = 24;
  opts.sampling.temperature = 0;
  std::string got;
  auto r = runtime::Generate(**model, tok.Encode("The license", tok.add_bos(), false), opts, [&](int32_t id) {
    got += tok.TokenToBytes(id);
    return true;
  });
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(Normalise(got), Normalise(want));
}

INSTANTIATE_TEST_SUITE_P(Files, ReferenceModelTest,
                         ::testing::Values("mixtral-f32", "mixtral-f16", "mixtral-q8_0", "mixtral-q4_0",
                                           "mixtral-q4_k_m", "mixtral-q6_k", "olmoe-f32", "qwen2moe-f32",
                                           "granitemoe-f32"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& c : n) c = std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
                           return n;
                         });

}  // namespace
}  // namespace micromoe
