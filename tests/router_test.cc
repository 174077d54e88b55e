// Specification of the gating network (router/router.h).
//
// Every expectation is computed by hand from the definition: softmax or
// sigmoid scores, the k best experts (ties to the lower id), optional
// renormalisation over the k chosen, then the scale factor; and the plan's
// per-expert grouping of rows.
#include <cmath>
#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/kernels.h"
#include "router/router.h"

namespace micromoe::router {
namespace {

constexpr float kTol = 1e-6f;

// RouteLogits never reads the gate matrix; a valid empty view is enough.
Router MakeRouter(GatingOptions options) { return Router(kernels::MatrixView{}, options); }

GatingOptions Options(int n_experts, int top_k) {
  GatingOptions o;
  o.n_experts = n_experts;
  o.top_k = top_k;
  return o;
}

double Sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

TEST(RouterTest, SoftmaxTopTwoRenormalised) {
  Router router = MakeRouter(Options(4, 2));
  const float logits[] = {1, 3, 2, 0};
  RoutingPlan plan;
  router.RouteLogits(logits, 1, &plan);
  EXPECT_EQ(plan.n_rows, 1);
  EXPECT_EQ(plan.top_k, 2);
  EXPECT_EQ(plan.n_experts, 4);
  ASSERT_EQ(plan.experts, (std::vector<int32_t>{1, 2}));
  const double e3 = std::exp(3.0), e2 = std::exp(2.0);
  ASSERT_EQ(plan.weights.size(), 2u);
  EXPECT_NEAR(plan.weights[0], e3 / (e3 + e2), kTol);
  EXPECT_NEAR(plan.weights[1], e2 / (e3 + e2), kTol);
}

TEST(RouterTest, SoftmaxWithoutRenormalisationKeepsProbabilities) {
  GatingOptions o = Options(4, 2);
  o.renormalize = false;
  Router router = MakeRouter(o);
  const float logits[] = {1, 3, 2, 0};
  RoutingPlan plan;
  router.RouteLogits(logits, 1, &plan);
  ASSERT_EQ(plan.experts, (std::vector<int32_t>{1, 2}));
  const double z = std::exp(0.0) + std::exp(1.0) + std::exp(2.0) + std::exp(3.0);
  EXPECT_NEAR(plan.weights[0], std::exp(3.0) / z, kTol);
  EXPECT_NEAR(plan.weights[1], std::exp(2.0) / z, kTol);
}

TEST(RouterTest, SoftmaxAfterTopKEqualsRenormalisedSoftmax) {
  GatingOptions after = Options(6, 3);
  after.softmax_after_topk = true;
  Router a = MakeRouter(after);
  Router b = MakeRouter(Options(6, 3));
  const float logits[] = {0.5f, -1.0f, 2.25f, 1.75f, -0.25f, 2.0f,
                          -3.0f, 4.0f, 0.0f, 1.0f, 3.5f, -2.0f};
  RoutingPlan pa, pb;
  a.RouteLogits(logits, 2, &pa);
  b.RouteLogits(logits, 2, &pb);
  ASSERT_EQ(pa.experts, (std::vector<int32_t>{2, 5, 3, 1, 4, 3}));
  EXPECT_EQ(pa.experts, pb.experts);
  for (size_t i = 0; i < pa.weights.size(); ++i) EXPECT_NEAR(pa.weights[i], pb.weights[i], kTol) << i;
  // Row 0 by hand: softmax over {2.25, 2.0, 1.75}.
  const double z = std::exp(2.25) + std::exp(2.0) + std::exp(1.75);
  EXPECT_NEAR(pa.weights[0], std::exp(2.25) / z, kTol);
  EXPECT_NEAR(pa.weights[1], std::exp(2.0) / z, kTol);
  EXPECT_NEAR(pa.weights[2], std::exp(1.75) / z, kTol);
}

TEST(RouterTest, SigmoidRenormalised) {
  GatingOptions o = Options(4, 2);
  o.scoring = Scoring::kSigmoid;
  Router router = MakeRouter(o);
  const float logits[] = {1, 3, 2, 0};
  RoutingPlan plan;
  router.RouteLogits(logits, 1, &plan);
  ASSERT_EQ(plan.experts, (std::vector<int32_t>{1, 2}));
  const double s3 = Sigmoid(3), s2 = Sigmoid(2);
  EXPECT_NEAR(plan.weights[0], s3 / (s3 + s2), kTol);
  EXPECT_NEAR(plan.weights[1], s2 / (s3 + s2), kTol);
}

TEST(RouterTest, SigmoidWithoutRenormalisationKeepsScores) {
  GatingOptions o = Options(4, 2);
  o.scoring = Scoring::kSigmoid;
  o.renormalize = false;
  Router router = MakeRouter(o);
  const float logits[] = {1, 3, 2, 0};
  RoutingPlan plan;
  router.RouteLogits(logits, 1, &plan);
  ASSERT_EQ(plan.experts, (std::vector<int32_t>{1, 2}));
  EXPECT_NEAR(plan.weights[0], Sigmoid(3), kTol);
  EXPECT_NEAR(plan.weights[1], Sigmoid(2), kTol);
}

TEST(RouterTest, ScaleMultipliesFinalWeights) {
  GatingOptions o = Options(4, 2);
  o.scale = 2.5f;
  Router router = MakeRouter(o);
  const float logits[] = {1, 3, 2, 0};
  RoutingPlan plan;
  router.RouteLogits(logits, 1, &plan);
  const double e3 = std::exp(3.0), e2 = std::exp(2.0);
  EXPECT_NEAR(plan.weights[0], 2.5 * e3 / (e3 + e2), 4 * kTol);
  EXPECT_NEAR(plan.weights[1], 2.5 * e2 / (e3 + e2), 4 * kTol);

  GatingOptions s = Options(4, 2);
  s.scoring = Scoring::kSigmoid;
  s.renormalize = false;
  s.scale = 0.5f;
  Router sig = MakeRouter(s);
  sig.RouteLogits(logits, 1, &plan);
  EXPECT_NEAR(plan.weights[0], 0.5 * Sigmoid(3), kTol);
  EXPECT_NEAR(plan.weights[1], 0.5 * Sigmoid(2), kTol);
}

TEST(RouterTest, TiesGoToTheLowerExpertId) {
  Router router = MakeRouter(Options(4, 2));
  RoutingPlan plan;
  const float all_equal[] = {5, 5, 5, 5};
  router.RouteLogits(all_equal, 1, &plan);
  EXPECT_EQ(plan.experts, (std::vector<int32_t>{0, 1}));
  EXPECT_NEAR(plan.weights[0], 0.5, kTol);
  EXPECT_NEAR(plan.weights[1], 0.5, kTol);

  const float tie_at_cut[] = {3, 1, 3, 3};
  router.RouteLogits(tie_at_cut, 1, &plan);
  EXPECT_EQ(plan.experts, (std::vector<int32_t>{0, 2}));

  const float tie_for_first[] = {1, 4, 2, 4};
  router.RouteLogits(tie_for_first, 1, &plan);
  EXPECT_EQ(plan.experts, (std::vector<int32_t>{1, 3}));

  GatingOptions o = Options(4, 1);
  o.scoring = Scoring::kSigmoid;
  Router sig = MakeRouter(o);
  const float sig_tie[] = {-1, 2, 0, 2};
  sig.RouteLogits(sig_tie, 1, &plan);
  EXPECT_EQ(plan.experts, (std::vector<int32_t>{1}));
}

// Rows: 0 -> {1, 2}, 1 -> {3, 1}, 2 -> {1, 3}; expert 0 gets no row.
const float kBatchLogits[] = {0, 3, 2, 1,
                              0, 2, 1, 3,
                              1, 4, 0, 2};

TEST(RouterTest, GroupedPlanListsEachExpertsRowsInOrder) {
  Router router = MakeRouter(Options(4, 2));
  RoutingPlan plan;
  router.RouteLogits(kBatchLogits, 3, &plan);
  ASSERT_EQ(plan.experts, (std::vector<int32_t>{1, 2, 3, 1, 1, 3}));
  EXPECT_EQ(plan.group_begin, (std::vector<int32_t>{0, 0, 3, 4, 6}));
  EXPECT_EQ(plan.group_rows, (std::vector<int32_t>{0, 1, 2, 0, 1, 2}));
  EXPECT_EQ(plan.group_slots, (std::vector<int32_t>{0, 3, 4, 1, 2, 5}));
  EXPECT_EQ(plan.rows_for(0), 0);
  EXPECT_EQ(plan.rows_for(1), 3);
  EXPECT_EQ(plan.rows_for(2), 1);
  EXPECT_EQ(plan.rows_for(3), 2);
  // Each slot points back at its own expert.
  for (int e = 0; e < 4; ++e) {
    for (int i = plan.group_begin[e]; i < plan.group_begin[e + 1]; ++i) {
      EXPECT_EQ(plan.experts[plan.group_slots[i]], e);
      EXPECT_EQ(plan.group_slots[i] / plan.top_k, plan.group_rows[i]);
    }
  }
}

TEST(RouterTest, ReusedPlanIsRebuiltForASmallerBatch) {
  Router router = MakeRouter(Options(4, 2));
  RoutingPlan plan;
  router.RouteLogits(kBatchLogits, 3, &plan);
  router.RouteLogits(kBatchLogits + 4, 1, &plan);  // row 1 alone: {3, 1}
  EXPECT_EQ(plan.n_rows, 1);
  EXPECT_EQ(plan.experts, (std::vector<int32_t>{3, 1}));
  EXPECT_EQ(plan.group_begin, (std::vector<int32_t>{0, 0, 1, 1, 2}));
  EXPECT_EQ(plan.group_rows, (std::vector<int32_t>{0, 0}));
  EXPECT_EQ(plan.group_slots, (std::vector<int32_t>{1, 0}));
}

TEST(RouterTest, LoadCountsAcrossCallsAndResets) {
  Router router = MakeRouter(Options(4, 2));
  EXPECT_EQ(router.Load(), (std::vector<uint64_t>{0, 0, 0, 0}));
  RoutingPlan plan;
  router.RouteLogits(kBatchLogits, 3, &plan);
  EXPECT_EQ(router.Load(), (std::vector<uint64_t>{0, 3, 1, 2}));
  router.RouteLogits(kBatchLogits, 3, &plan);
  EXPECT_EQ(router.Load(), (std::vector<uint64_t>{0, 6, 2, 4}));
  router.ResetLoad();
  EXPECT_EQ(router.Load(), (std::vector<uint64_t>{0, 0, 0, 0}));
  router.RouteLogits(kBatchLogits + 8, 1, &plan);  // row 2: {1, 3}
  EXPECT_EQ(router.Load(), (std::vector<uint64_t>{0, 1, 0, 1}));
}

TEST(RouterTest, RouteWithF32GateEqualsRouteLogitsOnHandLogits) {
  constexpr int kExperts = 5, kCols = 8, kRows = 3;
  // Small integers: every product and sum is exact in float on any back-end.
  std::vector<float> gate(kExperts * kCols);
  for (int e = 0; e < kExperts; ++e) {
    for (int c = 0; c < kCols; ++c) gate[e * kCols + c] = static_cast<float>((e * 3 + c * 5) % 7 - 3);
  }
  constexpr int kLd = kCols + 2;  // a row stride wider than the row
  std::vector<float> hidden(kRows * kLd, 1000.0f);
  for (int r = 0; r < kRows; ++r) {
    for (int c = 0; c < kCols; ++c) hidden[r * kLd + c] = static_cast<float>((r + 2 * c) % 5 - 2);
  }
  std::vector<float> logits(kRows * kExperts);
  for (int r = 0; r < kRows; ++r) {
    for (int e = 0; e < kExperts; ++e) {
      double s = 0;
      for (int c = 0; c < kCols; ++c) s += static_cast<double>(gate[e * kCols + c]) * hidden[r * kLd + c];
      logits[r * kExperts + e] = static_cast<float>(s);
    }
  }
  kernels::MatrixView view;
  view.type = gguf::TensorType::kF32;
  view.data = reinterpret_cast<const uint8_t*>(gate.data());
  view.rows = kExperts;
  view.cols = kCols;
  view.row_bytes = kCols * sizeof(float);

  GatingOptions o = Options(kExperts, 2);
  Router routed(view, o);
  Router by_hand = MakeRouter(o);
  RoutingPlan a, b;
  routed.Route(hidden.data(), kLd, kRows, &a);
  by_hand.RouteLogits(logits.data(), kRows, &b);
  EXPECT_EQ(a.experts, b.experts);
  ASSERT_EQ(a.weights.size(), b.weights.size());
  for (size_t i = 0; i < a.weights.size(); ++i) EXPECT_NEAR(a.weights[i], b.weights[i], kTol) << i;
  EXPECT_EQ(a.group_begin, b.group_begin);
  EXPECT_EQ(a.group_rows, b.group_rows);
  EXPECT_EQ(a.group_slots, b.group_slots);
  EXPECT_EQ(routed.Load(), by_hand.Load());
}

TEST(RouterTest, TopKEqualToExpertCountSelectsAllInOrder) {
  Router router = MakeRouter(Options(3, 3));
  const float logits[] = {0.5f, -1.0f, 2.0f};
  RoutingPlan plan;
  router.RouteLogits(logits, 1, &plan);
  ASSERT_EQ(plan.experts, (std::vector<int32_t>{2, 0, 1}));
  const double z = std::exp(0.5) + std::exp(-1.0) + std::exp(2.0);
  EXPECT_NEAR(plan.weights[0], std::exp(2.0) / z, kTol);
  EXPECT_NEAR(plan.weights[1], std::exp(0.5) / z, kTol);
  EXPECT_NEAR(plan.weights[2], std::exp(-1.0) / z, kTol);
  EXPECT_EQ(plan.group_begin, (std::vector<int32_t>{0, 1, 2, 3}));
  EXPECT_EQ(router.Load(), (std::vector<uint64_t>{1, 1, 1}));
}

}  // namespace
}  // namespace micromoe::router
