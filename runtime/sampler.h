// Picks the next token from logits: greedy at temperature 0, otherwise
// top-k, then top-p (nucleus), then temperature, then a draw from a seeded RNG.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "absl/status/status.h"

namespace micromoe::runtime {

struct SamplingOptions {
  float temperature = 0.8f;  // 0: greedy
  int top_k = 40;            // 0: all tokens
  float top_p = 0.95f;       // 1: no nucleus cut
  uint64_t seed = 0;
};

// InvalidArgument naming the bad field (negative temperature, top_p outside (0, 1], ...).
absl::Status ValidateSamplingOptions(const SamplingOptions& options);

class Sampler {
 public:
  explicit Sampler(const SamplingOptions& options);
  int32_t Sample(const float* logits, int n_vocab);

 private:
  SamplingOptions options_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> candidates_;
  std::vector<double> weights_;
};

}  // namespace micromoe::runtime
