// Keys and values of past positions, per sequence and layer, in F32.
// Memory for a sequence is taken when it starts and returned when it ends.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"

namespace micromoe::runtime {

class KvCache {
 public:
  // n_ctx positions per sequence; at most max_sequences alive at once.
  KvCache(int n_layer, int kv_dim, int n_ctx, int max_sequences);

  int n_ctx() const { return n_ctx_; }
  int max_sequences() const { return static_cast<int>(seqs_.size()); }
  // Reserves storage for sequence `seq` (0 <= seq < max_sequences) and clears it.
  absl::Status Start(int seq);
  // Releases the storage of `seq`.
  void Release(int seq);
  bool active(int seq) const { return seqs_[seq] != nullptr; }

  float* k(int layer, int seq, int pos) { return row(layer, seq, pos, 0); }
  float* v(int layer, int seq, int pos) { return row(layer, seq, pos, 1); }
  // Bytes one sequence takes.
  uint64_t bytes_per_sequence() const;

 private:
  float* row(int layer, int seq, int pos, int which) {
    return seqs_[seq].get() + ((static_cast<size_t>(layer) * 2 + which) * n_ctx_ + pos) * kv_dim_;
  }
  struct Unmap {
    size_t bytes = 0;
    void operator()(float* p) const;
  };
  int n_layer_, kv_dim_, n_ctx_;
  // One anonymous mapping per live sequence: page-aligned, so the rows the
  // attention kernels stream start on cache lines (a malloc'd block sat 16
  // bytes off and every 64-byte load straddled two lines, half the speed in
  // kernels_bench attention/avx512); zero-filled by a write to every page at
  // Start, so no page faults or first-write traps land inside a forward pass.
  std::vector<std::unique_ptr<float, Unmap>> seqs_;
};

}  // namespace micromoe::runtime
