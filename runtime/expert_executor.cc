#include "runtime/expert_executor.h"

#include <algorithm>
#include <future>
#include <map>

#include <tbb/task_group.h>

#include "base/scratch.h"
#include "base/str_cat.h"
#include "experts/local_expert.h"

namespace micromoe::runtime {

absl::Status ExpertExecutor::Run(const router::RoutingPlan& plan, const float* x, int64_t dim, int layer,
                                 const std::vector<const experts::Expert*>& experts, float* out,
                                 ExpertFailurePolicy policy, std::vector<DroppedExpert>* dropped) {
  const size_t n_entries = plan.group_rows.size();
  // Scratch, not vectors: this runs once per layer of every step.
  Scratch<float> in(n_entries * dim), y(n_entries * dim);
  Scratch<absl::Status> status(static_cast<size_t>(plan.n_experts));
  for (int e = 0; e < plan.n_experts; ++e) status.data()[e] = absl::OkStatus();
  auto rows_in = [&](int e) { return in.data() + static_cast<size_t>(plan.group_begin[e]) * dim; };
  auto rows_out = [&](int e) { return y.data() + static_cast<size_t>(plan.group_begin[e]) * dim; };

  // Gather each active expert's rows; split them into remote groups and local experts.
  std::map<experts::ExpertGroup*, std::vector<int>> remote;
  Scratch<int> local(static_cast<size_t>(plan.n_experts));
  int n_local = 0;
  for (int e = 0; e < plan.n_experts; ++e) {
    const int n = plan.rows_for(e);
    if (n == 0) continue;
    float* xe = rows_in(e);
    for (int i = 0; i < n; ++i) {
      std::copy_n(x + static_cast<size_t>(plan.group_rows[plan.group_begin[e] + i]) * dim, dim, xe + i * dim);
    }
    if (experts::ExpertGroup* g = experts[e]->group()) {
      remote[g].push_back(e);
    } else {
      local.data()[n_local++] = e;
    }
  }

  // Remote calls first, off this thread (they mostly wait on the network), so
  // they overlap the local experts even with one worker thread.
  std::vector<std::pair<std::future<absl::Status>, const std::vector<int>*>> remote_calls;
  // The remote calls read `in` and write `y`: should the local experts throw,
  // they are waited for before those buffers go back to the pool.
  struct WaitForRemoteCalls {
    decltype(remote_calls)& calls;
    ~WaitForRemoteCalls() {
      for (auto& call : calls) {
        if (call.first.valid()) call.first.wait();
      }
    }
  } wait_for_remote_calls{remote_calls};
  for (auto& [group, ids] : remote) {
    std::vector<experts::ExpertCall> calls;
    for (int e : ids) calls.push_back({e, rows_in(e), plan.rows_for(e), rows_out(e)});
    remote_calls.emplace_back(group->StartBatch(layer, std::move(calls)), &ids);
  }
  // Local experts on this node's weights run together (ForwardLocalExperts);
  // other local implementations run one task each beside them (on this
  // thread, in tg.wait(), while a decode step's WorkerTeam holds the workers).
  Scratch<experts::LocalExpertCall> together(static_cast<size_t>(n_local));
  size_t n_together = 0;
  tbb::task_group tg;
  for (int i = 0; i < n_local; ++i) {
    const int e = local.data()[i];
    if (const auto* le = dynamic_cast<const experts::LocalExpert*>(experts[e])) {
      together.data()[n_together++] = {le, rows_in(e), plan.rows_for(e), rows_out(e)};
    } else {
      tg.run([&, e] { status.data()[e] = experts[e]->Forward(rows_in(e), plan.rows_for(e), rows_out(e)); });
    }
  }
  if (n_together > 0) experts::ForwardLocalExperts(together.data(), n_together);
  tg.wait();
  for (auto& [call, ids] : remote_calls) {
    const absl::Status s = call.get();
    for (int e : *ids) status.data()[e] = s;
  }

  Scratch<bool> lost(static_cast<size_t>(plan.n_experts));
  std::fill_n(lost.data(), plan.n_experts, false);
  for (int e = 0; e < plan.n_experts; ++e) {
    const absl::Status& st = status.data()[e];
    if (st.ok()) continue;
    const bool remote_failure = experts[e]->is_remote() && (st.code() == absl::StatusCode::kUnavailable ||
                                                            st.code() == absl::StatusCode::kDeadlineExceeded);
    if (policy == ExpertFailurePolicy::kDegrade && remote_failure) {
      lost.data()[e] = true;
      if (dropped) {
        DroppedExpert d{layer, e, {}};
        for (int i = 0; i < plan.rows_for(e); ++i) d.rows.push_back(plan.group_rows[plan.group_begin[e] + i]);
        dropped->push_back(std::move(d));
      }
      continue;
    }
    return absl::Status(remote_failure ? absl::StatusCode::kUnavailable : st.code(),
                        StrCat("layer ", layer, " expert ", e, ": ", st.message()));
  }

  // Combine per row in slot order (best expert first); lost experts' weights
  // are left out and the remaining ones renormalised to their original sum.
  Scratch<int32_t> pos_of_slot(n_entries);
  for (size_t p = 0; p < n_entries; ++p) pos_of_slot.data()[plan.group_slots[p]] = static_cast<int32_t>(p);
  for (int r = 0; r < plan.n_rows; ++r) {
    float* o = out + static_cast<size_t>(r) * dim;
    std::fill_n(o, dim, 0.0f);
    float total = 0, kept = 0;
    for (int k = 0; k < plan.top_k; ++k) {
      const int slot = r * plan.top_k + k;
      total += plan.weights[slot];
      if (!lost.data()[plan.experts[slot]]) kept += plan.weights[slot];
    }
    const float rescale = kept == total ? 1.0f : (kept > 0 ? total / kept : 0.0f);
    for (int k = 0; k < plan.top_k; ++k) {
      const int slot = r * plan.top_k + k;
      if (lost.data()[plan.experts[slot]]) continue;
      const float w = plan.weights[slot] * rescale;
      const float* ye = y.data() + static_cast<size_t>(pos_of_slot.data()[slot]) * dim;
      for (int64_t i = 0; i < dim; ++i) o[i] += w * ye[i];
    }
  }
  return absl::OkStatus();
}

}  // namespace micromoe::runtime
