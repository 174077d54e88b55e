// The expert interface: a feed-forward block that maps a batch of hidden-state
// rows to output rows. The model calls only this; whether an expert computes
// here (LocalExpert) or on another node (RemoteExpert) is not its concern.
#pragma once

#include <cstdint>
#include <future>
#include <vector>

#include "absl/status/status.h"

namespace micromoe::experts {

class ExpertGroup;

class Expert {
 public:
  virtual ~Expert() = default;
  // in: n_rows rows of dim() floats (contiguous); out: n_rows rows of dim() floats,
  // overwritten. Safe to call concurrently on different buffers.
  virtual absl::Status Forward(const float* in, int64_t n_rows, float* out) const = 0;
  virtual int64_t dim() const = 0;
  // Non-null for experts that live elsewhere: experts of one group (one node and
  // its replicas) are sent together in one call per layer, started before local
  // work so the round trip overlaps it.
  virtual ExpertGroup* group() const { return nullptr; }
  bool is_remote() const { return group() != nullptr; }
};

// One expert's share of a batched call.
struct ExpertCall {
  int expert = 0;
  const float* in = nullptr;  // n_rows x dim
  int64_t n_rows = 0;
  float* out = nullptr;       // n_rows x dim, overwritten
};

// Experts reachable through one endpoint set (a node and its replicas).
class ExpertGroup {
 public:
  virtual ~ExpertGroup() = default;
  // Runs every call of one layer in a single request. UNAVAILABLE (or
  // DEADLINE_EXCEEDED) when no endpoint of the group answered in time.
  virtual absl::Status ForwardBatch(int layer, const std::vector<ExpertCall>& calls) = 0;
  // Starts ForwardBatch without blocking the caller (the buffers of `calls`
  // must stay valid until the future is ready). The default runs it on a new
  // thread; groups that are called often keep a thread of their own.
  virtual std::future<absl::Status> StartBatch(int layer, std::vector<ExpertCall> calls) {
    return std::async(std::launch::async, [this, layer, calls = std::move(calls)] { return ForwardBatch(layer, calls); });
  }
};

}  // namespace micromoe::experts
