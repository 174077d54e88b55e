#include "kernels/packed.h"

#include <cstring>
#include <new>

#include <tbb/parallel_for.h>

#include "kernels/quant.h"

namespace micromoe::kernels {

using gguf::TensorType;

namespace {

int ChunkCount(TensorType type) { return type == TensorType::kQ8_0 ? 8 : 4; }

// Packs rows [16g, 16g + 16) of w into `dst`.
void PackGroup(const MatrixView& w, int64_t g, uint8_t* dst) {
  const int64_t nb = w.cols / kQK;
  const int chunks = ChunkCount(w.type);
  uint8_t* quants = dst;
  uint16_t* scales = reinterpret_cast<uint16_t*>(dst + nb * chunks * 64);
  for (int i = 0; i < kPackRows; ++i) {
    const uint8_t* row = w.row(g * kPackRows + i);
    for (int64_t b = 0; b < nb; ++b) {
      uint8_t* qb = quants + b * chunks * 64;
      if (w.type == TensorType::kQ8_0) {
        const auto& block = reinterpret_cast<const BlockQ8_0*>(row)[b];
        scales[b * kPackRows + i] = block.d;
        for (int e = 0; e < kQK; ++e) {
          qb[(e / 4) * 64 + i * 4 + e % 4] = static_cast<uint8_t>(block.qs[e] ^ 0x80);
        }
      } else {
        const auto& block = reinterpret_cast<const BlockQ4_0*>(row)[b];
        scales[b * kPackRows + i] = block.d;
        for (int e = 0; e < kQK / 2; ++e) qb[(e / 4) * 64 + i * 4 + e % 4] = block.qs[e];
      }
    }
  }
}

}  // namespace

bool CanPack(TensorType type, const KernelSet& ks) {
  switch (type) {
    case TensorType::kQ8_0: return ks.gemm_q8_0_x16 != nullptr;
    case TensorType::kQ4_0: return ks.gemm_q4_0_x16 != nullptr;
    default: return false;
  }
}

uint64_t PackedGroupBytes(TensorType type, int64_t cols) {
  const uint64_t nb = static_cast<uint64_t>(cols / kQK);
  const uint64_t bytes = nb * (ChunkCount(type) * 64 + kPackRows * 2);
  return (bytes + 63) / 64 * 64;
}

PackedWeights PackedWeights::Pack(const MatrixView& w) {
  PackedWeights p;
  p.view_ = w;
  const int64_t groups = w.rows / kPackRows;
  if (groups == 0) return p;
  const uint64_t group_bytes = PackedGroupBytes(w.type, w.cols);
  p.size_ = group_bytes * static_cast<uint64_t>(groups);
  p.data_.reset(static_cast<uint8_t*>(std::aligned_alloc(64, p.size_)));
  if (!p.data_) throw std::bad_alloc();
  uint8_t* base = p.data_.get();
  tbb::parallel_for(int64_t{0}, groups, [&](int64_t g) {
    uint8_t* dst = base + static_cast<uint64_t>(g) * group_bytes;
    std::memset(dst, 0, group_bytes);  // the padding too, so the buffer is fully defined
    PackGroup(w, g, dst);
  });
  p.view_.packed = base;
  p.view_.packed_rows = groups * kPackRows;
  p.view_.packed_group_bytes = group_bytes;
  return p;
}

}  // namespace micromoe::kernels
