// The gating network: turns hidden states of a batch of rows into a
// RoutingPlan (per row its experts and weights; per expert its rows, grouped so
// each expert runs once per batch). Knows nothing of how experts run.
//
// Thread-safety: Route may be called concurrently; load counters are atomic.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/kernels.h"

namespace micromoe::router {

enum class Scoring {
  kSoftmax,  // probabilities over all experts (Mixtral, OLMoE, Qwen2-MoE)
  kSigmoid,  // independent scores per expert
};

struct GatingOptions {
  int n_experts = 0;
  int top_k = 0;
  Scoring scoring = Scoring::kSoftmax;
  // Take the top-k of the raw logits, then softmax over just those k
  // (equal to renormalised softmax, kept for models that define it this way).
  bool softmax_after_topk = false;
  bool renormalize = true;  // divide the k selected weights by their sum
  float scale = 1.0f;       // multiply the final weights
};

struct RoutingPlan {
  int n_rows = 0;
  int top_k = 0;
  int n_experts = 0;
  std::vector<int32_t> experts;  // [n_rows * top_k], row-major, best first
  std::vector<float> weights;    // [n_rows * top_k]
  // Rows grouped by expert: expert e handles group_rows[group_begin[e] .. group_begin[e+1]),
  // in increasing row order; group_slots gives each entry's index into experts/weights.
  std::vector<int32_t> group_begin;  // [n_experts + 1]
  std::vector<int32_t> group_rows;
  std::vector<int32_t> group_slots;

  int rows_for(int e) const { return group_begin[e + 1] - group_begin[e]; }
  // Builds group_* from experts (call after filling experts).
  void Group();
};

class Router {
 public:
  // `gate` has one row per expert and hidden-size columns.
  Router(kernels::MatrixView gate, GatingOptions options);

  // hidden: n_rows rows of gate.cols floats, row stride ld.
  void Route(const float* hidden, int64_t ld, int n_rows, RoutingPlan* plan);
  // Gating from precomputed logits ([n_rows * n_experts]).
  void RouteLogits(const float* logits, int n_rows, RoutingPlan* plan);

  const GatingOptions& options() const { return options_; }
  // Tokens routed to each expert since construction (or ResetLoad).
  std::vector<uint64_t> Load() const;
  void ResetLoad();

 private:
  kernels::MatrixView gate_;
  GatingOptions options_;
  std::unique_ptr<std::atomic<uint64_t>[]> load_;
};

}  // namespace micromoe::router
