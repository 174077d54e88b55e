#include "runtime/kv_cache.h"

#include "base/str_cat.h"

namespace micromoe::runtime {

KvCache::KvCache(int n_layer, int kv_dim, int n_ctx, int max_sequences)
    : n_layer_(n_layer), kv_dim_(kv_dim), n_ctx_(n_ctx), seqs_(max_sequences) {}

uint64_t KvCache::bytes_per_sequence() const {
  return static_cast<uint64_t>(n_layer_) * 2 * n_ctx_ * kv_dim_ * sizeof(float);
}

absl::Status KvCache::Start(int seq) {
  if (seq < 0 || seq >= max_sequences()) {
    return absl::OutOfRangeError(StrCat("sequence slot ", seq, " is outside [0, ", max_sequences(), ")"));
  }
  seqs_[seq].assign(bytes_per_sequence() / sizeof(float), 0.0f);
  return absl::OkStatus();
}

void KvCache::Release(int seq) { std::vector<float>().swap(seqs_[seq]); }

}  // namespace micromoe::runtime
