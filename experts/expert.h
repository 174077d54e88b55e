// The expert interface: a feed-forward block that maps a batch of hidden-state
// rows to output rows. The model calls only this; whether an expert computes
// here (LocalExpert) or on another node (RemoteExpert) is not its concern.
#pragma once

#include <cstdint>

#include "absl/status/status.h"

namespace micromoe::experts {

class Expert {
 public:
  virtual ~Expert() = default;
  // in: n_rows rows of dim() floats (contiguous); out: n_rows rows of dim() floats,
  // overwritten. Safe to call concurrently on different buffers.
  virtual absl::Status Forward(const float* in, int64_t n_rows, float* out) const = 0;
  virtual int64_t dim() const = 0;
  // Remote experts are started first so their round trip overlaps local work.
  virtual bool is_remote() const { return false; }
};

}  // namespace micromoe::experts
