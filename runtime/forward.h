// The model forward pass over a batch of rows from one or more sequences.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "runtime/expert_executor.h"
#include "runtime/kv_cache.h"
#include "runtime/model.h"

namespace micromoe::runtime {

struct BatchRow {
  int32_t token = 0;
  int32_t pos = 0;   // position in its sequence; rows of a sequence come in increasing order
  int32_t seq = 0;   // KV cache slot (must be started)
  bool want_logits = false;
};

struct ForwardOptions {
  ExpertFailurePolicy expert_failure = ExpertFailurePolicy::kFail;
};

struct ForwardReport {
  std::vector<DroppedExpert> dropped;  // rows index the batch
};

// Runs the rows through the model, writing their keys and values into `kv`.
// `logits` receives n_vocab floats for each row with want_logits, in row order.
// Fails with InvalidArgument naming the row for an out-of-range token, position
// or sequence; UNAVAILABLE when a remote expert fails under kFail. `report`
// (may be null) lists experts dropped under kDegrade.
absl::Status Forward(const Model& model, const std::vector<BatchRow>& rows, KvCache& kv,
                     std::vector<float>* logits, const ForwardOptions& options = {},
                     ForwardReport* report = nullptr);

}  // namespace micromoe::runtime
