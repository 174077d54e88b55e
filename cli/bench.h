// `micromoe bench`: prompt (pp) and generation (tg) throughput per thread
// count, as the markdown table engines are compared with, plus the memory
// bandwidth bound for generation measured in the same run.
#pragma once

#include <string>
#include <vector>

namespace micromoe::cli {

struct BenchArgs {
  std::string model;
  int n_prompt = 128;
  int n_gen = 64;
  int depth = 0;  // tokens already in the KV cache when each test starts
  std::vector<int> threads = {1, 2};
  int repetitions = 3;
  bool json = false;
  bool repack = true;  // false: compute from the mapped layout (for old-vs-new comparisons)
};

int RunBench(const BenchArgs& args);

}  // namespace micromoe::cli
