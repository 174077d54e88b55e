// Keys and values of past positions, per sequence and layer, in F32.
// Memory for a sequence is taken when it starts and returned when it ends.
// Each KV head's positions are consecutive rows of head_dim floats: the
// attention of one head streams one contiguous run (with rows of all heads
// side by side, a head's rows were 256 of every 1024 bytes on the bench
// model, and a decode step's attention read the cache at 23 GB/s at 1024
// positions of context).
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
  KvCache(int n_layer, int n_head_kv, int head_dim, int n_ctx, int max_sequences);

  int n_ctx() const { return n_ctx_; }
  int max_sequences() const { return static_cast<int>(seqs_.size()); }
  // Reserves storage for sequence `seq` (0 <= seq < max_sequences) and clears it.
  absl::Status Start(int seq);
  // Releases the storage of `seq`.
  void Release(int seq);
  bool active(int seq) const { return seqs_[seq] != nullptr; }

  // Keys / values of KV head `head` at position 0 of `layer`; position p at
  // + p * head_dim.
  float* k(int layer, int seq, int head) { return rows(layer, seq, head, 0); }
  float* v(int layer, int seq, int head) { return rows(layer, seq, head, 1); }
  // Bytes one sequence takes.
  uint64_t bytes_per_sequence() const;

 private:
  float* rows(int layer, int seq, int head, int which) {
    return seqs_[seq].get() + ((static_cast<size_t>(layer) * 2 + which) * n_head_kv_ + head) * n_ctx_ * head_dim_;
  }
  struct Unmap {
    size_t bytes = 0;
    void operator()(float* p) const;
  };
  int n_layer_, n_head_kv_, head_dim_, n_ctx_;
  // One anonymous mapping per live sequence: page-aligned, so the rows the
  // attention kernels stream start on cache lines (a malloc'd block sat 16
  // bytes off and every 64-byte load straddled two lines, half the speed in
  // kernels_bench attention/avx512); zero-filled by a write to every page at
  // Start, so no page faults or first-write traps land inside a forward pass.
  std::vector<std::unique_ptr<float, Unmap>> seqs_;
};

}  // namespace micromoe::runtime
