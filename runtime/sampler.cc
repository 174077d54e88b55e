#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>

#include "base/str_cat.h"

namespace micromoe::runtime {

absl::Status ValidateSamplingOptions(const SamplingOptions& o) {
  if (!(o.temperature >= 0) || !std::isfinite(o.temperature)) {
    return absl::InvalidArgumentError(StrCat("temperature ", o.temperature, " must be a finite number >= 0"));
  }
  if (o.top_k < 0) return absl::InvalidArgumentError(StrCat("top_k ", o.top_k, " must be >= 0"));
  if (!(o.top_p > 0 && o.top_p <= 1)) {
    return absl::InvalidArgumentError(StrCat("top_p ", o.top_p, " must be in (0, 1]"));
  }
  return absl::OkStatus();
}

Sampler::Sampler(const SamplingOptions& options) : options_(options), rng_(options.seed) {}

int32_t Sampler::Sample(const float* logits, int n_vocab) {
  if (options_.temperature == 0) {
    return static_cast<int32_t>(std::max_element(logits, logits + n_vocab) - logits);
  }
  candidates_.resize(n_vocab);
  for (int i = 0; i < n_vocab; ++i) candidates_[i] = {logits[i], i};
  const auto by_logit = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
  size_t n = candidates_.size();
  if (options_.top_k > 0 && static_cast<size_t>(options_.top_k) < n) n = options_.top_k;
  std::partial_sort(candidates_.begin(), candidates_.begin() + n, candidates_.end(), by_logit);
  // Softmax over the kept candidates at temperature 1 for the nucleus cut.
  // The weights live in a member, so a step allocates nothing once it has run.
  const float mx = candidates_[0].first;
  weights_.resize(n);
  double sum = 0;
  for (size_t i = 0; i < n; ++i) sum += weights_[i] = std::exp(static_cast<double>(candidates_[i].first - mx));
  if (options_.top_p < 1) {
    double cum = 0;
    for (size_t i = 0; i < n; ++i) {
      cum += weights_[i] / sum;
      if (cum >= options_.top_p) {
        n = i + 1;
        break;
      }
    }
  }
  // Draw from the kept candidates in proportion to their weights at the
  // temperature: the first whose running total passes a uniform draw.
  double total = 0;
  for (size_t i = 0; i < n; ++i) total += weights_[i] = std::exp(static_cast<double>(candidates_[i].first - mx) / options_.temperature);
  const double u = std::uniform_real_distribution<double>(0.0, total)(rng_);
  double cum = 0;
  for (size_t i = 0; i + 1 < n; ++i) {
    cum += weights_[i];
    if (u < cum) return candidates_[i].second;
  }
  return candidates_[n - 1].second;
}

}  // namespace micromoe::runtime
