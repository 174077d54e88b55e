#include "runtime/expert_executor.h"

#include <algorithm>

#include <tbb/task_group.h>

#include "base/str_cat.h"

namespace micromoe::runtime {

absl::Status ExpertExecutor::Run(const router::RoutingPlan& plan, const float* x, int64_t dim,
                                 const std::vector<const experts::Expert*>& experts, float* out) {
  const size_t n_entries = plan.group_rows.size();
  std::vector<float> in(n_entries * dim), y(n_entries * dim);
  std::vector<absl::Status> status(plan.n_experts);

  auto run_expert = [&](int e) {
    const int begin = plan.group_begin[e], n = plan.rows_for(e);
    float* xe = in.data() + static_cast<size_t>(begin) * dim;
    for (int i = 0; i < n; ++i) {
      std::copy_n(x + static_cast<size_t>(plan.group_rows[begin + i]) * dim, dim, xe + i * dim);
    }
    status[e] = experts[e]->Forward(xe, n, y.data() + static_cast<size_t>(begin) * dim);
  };

  std::vector<int> active;
  for (int e = 0; e < plan.n_experts; ++e) {
    if (plan.rows_for(e) > 0) active.push_back(e);
  }
  // Remote experts first: their calls then overlap the local ones.
  std::stable_partition(active.begin(), active.end(), [&](int e) { return experts[e]->is_remote(); });
  if (active.size() == 1) {
    run_expert(active[0]);
  } else {
    tbb::task_group tg;
    for (int e : active) tg.run([&, e] { run_expert(e); });
    tg.wait();
  }
  for (int e : active) {
    if (!status[e].ok()) {
      return absl::Status(status[e].code(), StrCat("expert ", e, ": ", status[e].message()));
    }
  }

  // Combine per row in slot order (best expert first).
  std::vector<int32_t> pos_of_slot(n_entries);
  for (size_t p = 0; p < n_entries; ++p) pos_of_slot[plan.group_slots[p]] = static_cast<int32_t>(p);
  for (int r = 0; r < plan.n_rows; ++r) {
    float* o = out + static_cast<size_t>(r) * dim;
    std::fill_n(o, dim, 0.0f);
    for (int k = 0; k < plan.top_k; ++k) {
      const int slot = r * plan.top_k + k;
      const float w = plan.weights[slot];
      const float* ye = y.data() + static_cast<size_t>(pos_of_slot[slot]) * dim;
      for (int64_t i = 0; i < dim; ++i) o[i] += w * ye[i];
    }
  }
  return absl::OkStatus();
}

}  // namespace micromoe::runtime
