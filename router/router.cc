#include "router/router.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "base/scratch.h"

namespace micromoe::router {

void RoutingPlan::Group() {
  group_begin.assign(n_experts + 1, 0);
  for (int32_t e : experts) ++group_begin[e + 1];
  for (int e = 0; e < n_experts; ++e) group_begin[e + 1] += group_begin[e];
  group_rows.resize(experts.size());
  group_slots.resize(experts.size());
  Scratch<int32_t> fill(static_cast<size_t>(n_experts));
  std::copy(group_begin.begin(), group_begin.end() - 1, fill.data());
  for (int r = 0; r < n_rows; ++r) {
    for (int k = 0; k < top_k; ++k) {
      const int slot = r * top_k + k;
      const int pos = fill[experts[slot]]++;
      group_rows[pos] = r;
      group_slots[pos] = slot;
    }
  }
}

Router::Router(kernels::MatrixView gate, GatingOptions options)
    : gate_(gate), options_(options), load_(new std::atomic<uint64_t>[options.n_experts]) {
  ResetLoad();
}

void Router::Route(const float* hidden, int64_t ld, int n_rows, RoutingPlan* plan) {
  Scratch<float> logits(static_cast<size_t>(n_rows) * options_.n_experts);
  kernels::MatMul(gate_, hidden, ld, n_rows, logits.data(), options_.n_experts);
  RouteLogits(logits.data(), n_rows, plan);
}

void Router::RouteLogits(const float* logits, int n_rows, RoutingPlan* plan) {
  const int n = options_.n_experts;
  const int k = options_.top_k;
  plan->n_rows = n_rows;
  plan->top_k = k;
  plan->n_experts = n;
  plan->experts.resize(static_cast<size_t>(n_rows) * k);
  plan->weights.resize(static_cast<size_t>(n_rows) * k);
  Scratch<float> scores(static_cast<size_t>(n));
  Scratch<int32_t> order(static_cast<size_t>(n));
  float* const score = scores.data();
  for (int r = 0; r < n_rows; ++r) {
    const float* l = logits + static_cast<size_t>(r) * n;
    if (options_.scoring == Scoring::kSigmoid) {
      for (int e = 0; e < n; ++e) score[e] = 1.0f / (1.0f + std::exp(-l[e]));
    } else if (options_.softmax_after_topk) {
      std::copy(l, l + n, score);
    } else {
      const float mx = *std::max_element(l, l + n);
      float sum = 0;
      for (int e = 0; e < n; ++e) sum += score[e] = std::exp(l[e] - mx);
      for (int e = 0; e < n; ++e) score[e] /= sum;
    }
    int32_t* const ids = order.data();
    std::iota(ids, ids + n, 0);
    // Highest score first; ties go to the lower expert id.
    std::partial_sort(ids, ids + k, ids + n, [&](int a, int b) {
      return score[a] > score[b] || (score[a] == score[b] && a < b);
    });
    int32_t* ex = &plan->experts[static_cast<size_t>(r) * k];
    float* w = &plan->weights[static_cast<size_t>(r) * k];
    for (int j = 0; j < k; ++j) {
      ex[j] = ids[j];
      w[j] = score[ids[j]];
    }
    if (options_.scoring == Scoring::kSoftmax && options_.softmax_after_topk) {
      const float mx = w[0];
      float sum = 0;
      for (int j = 0; j < k; ++j) sum += w[j] = std::exp(w[j] - mx);
      for (int j = 0; j < k; ++j) w[j] /= sum;
    } else if (options_.renormalize) {
      float sum = 0;
      for (int j = 0; j < k; ++j) sum += w[j];
      if (sum > 0) {
        for (int j = 0; j < k; ++j) w[j] /= sum;
      }
    }
    if (options_.scale != 1.0f) {
      for (int j = 0; j < k; ++j) w[j] *= options_.scale;
    }
    for (int j = 0; j < k; ++j) load_[ex[j]].fetch_add(1, std::memory_order_relaxed);
  }
  plan->Group();
}

std::vector<uint64_t> Router::Load() const {
  std::vector<uint64_t> out(options_.n_experts);
  for (int e = 0; e < options_.n_experts; ++e) out[e] = load_[e].load(std::memory_order_relaxed);
  return out;
}

void Router::ResetLoad() {
  for (int e = 0; e < options_.n_experts; ++e) load_[e].store(0, std::memory_order_relaxed);
}

}  // namespace micromoe::router
