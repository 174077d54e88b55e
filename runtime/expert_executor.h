// Runs the experts a RoutingPlan chose, each once on its grouped rows, in
// parallel on oneTBB workers (remote experts started first so their round
// trips overlap local work), then combines outputs with the gate weights in a
// fixed order so results never depend on timing.
#pragma once

#include <vector>

#include "absl/status/status.h"
#include "experts/expert.h"
#include "router/router.h"

namespace micromoe::runtime {

class ExpertExecutor {
 public:
  // x: plan.n_rows rows of `dim` floats; experts[e] implements expert e.
  // out: plan.n_rows rows of `dim` floats = sum over k of weight * expert(x).
  // Fails with the first failing expert's status (in expert order).
  static absl::Status Run(const router::RoutingPlan& plan, const float* x, int64_t dim,
                          const std::vector<const experts::Expert*>& experts, float* out);
};

}  // namespace micromoe::runtime
