#include "runtime/kv_cache.h"

#include <sys/mman.h>

#include <cstring>

#include "base/str_cat.h"

namespace micromoe::runtime {

KvCache::KvCache(int n_layer, int n_head_kv, int head_dim, int n_ctx, int max_sequences)
    : n_layer_(n_layer), n_head_kv_(n_head_kv), head_dim_(head_dim), n_ctx_(n_ctx), seqs_(max_sequences) {}

uint64_t KvCache::bytes_per_sequence() const {
  return static_cast<uint64_t>(n_layer_) * 2 * n_ctx_ * n_head_kv_ * head_dim_ * sizeof(float);
}

absl::Status KvCache::Start(int seq) {
  if (seq < 0 || seq >= max_sequences()) {
    return absl::OutOfRangeError(StrCat("sequence slot ", seq, " is outside [0, ", max_sequences(), ")"));
  }
  seqs_[seq].reset();
  const size_t bytes = bytes_per_sequence();
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    return absl::ResourceExhaustedError(StrCat("no memory for the KV cache of sequence ", seq, " (", bytes, " bytes)"));
  }
  // Huge pages where the kernel has them, and every page written once here
  // rather than at the first write of a forward pass. On this project's VMs a
  // page the kernel populated (MAP_POPULATE) still cost a trap of 1.6-3 us at
  // the process's first write to it, in every decode step that started a new
  // page (70 us of a 2.9 ms Q4_0 bench step); written from here, 64 MiB took
  // 5 ms with huge pages against 115 ms populated.
  madvise(p, bytes, MADV_HUGEPAGE);
  std::memset(p, 0, bytes);
  seqs_[seq] = std::unique_ptr<float, Unmap>(static_cast<float*>(p), Unmap{bytes});
  return absl::OkStatus();
}

void KvCache::Release(int seq) { seqs_[seq].reset(); }

void KvCache::Unmap::operator()(float* p) const { munmap(p, bytes); }

}  // namespace micromoe::runtime
