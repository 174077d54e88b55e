// Runs the experts a RoutingPlan chose, each once on its grouped rows: remote
// groups first (one call per node per layer, so their round trips overlap local
// work), local experts in parallel on oneTBB workers; then combines outputs
// with the gate weights in a fixed order so results never depend on timing.
#pragma once

#include <vector>

#include "absl/status/status.h"
#include "experts/expert.h"
#include "router/router.h"

namespace micromoe::runtime {

// What to do when a remote expert cannot be reached.
enum class ExpertFailurePolicy {
  kFail,     // the forward pass fails with UNAVAILABLE
  kDegrade,  // drop the expert for the affected rows; renormalise the remaining gate weights
};

// Experts dropped under kDegrade: expert id and the rows of the batch that lost it.
struct DroppedExpert {
  int layer = 0;
  int expert = 0;
  std::vector<int> rows;
};

class ExpertExecutor {
 public:
  // x: plan.n_rows rows of `dim` floats; experts[e] implements expert e of `layer`.
  // out: plan.n_rows rows of `dim` floats = sum over k of weight * expert(x).
  // Fails with the first failing expert's status (in expert order); remote
  // failures under kDegrade are appended to `dropped` instead (may be null).
  static absl::Status Run(const router::RoutingPlan& plan, const float* x, int64_t dim, int layer,
                          const std::vector<const experts::Expert*>& experts, float* out,
                          ExpertFailurePolicy policy = ExpertFailurePolicy::kFail,
                          std::vector<DroppedExpert>* dropped = nullptr);
};

}  // namespace micromoe::runtime
