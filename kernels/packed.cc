#include "kernels/packed.h"

#include <cstring>
#include <new>
#include <type_traits>

#include <sys/mman.h>

#include <tbb/parallel_for.h>

#include "kernels/quant.h"

namespace micromoe::kernels {

using gguf::TensorType;

namespace {

int ChunkCount(TensorType type) { return type == TensorType::kQ8_0 ? 8 : 4; }

bool IsHalf(TensorType type) { return type == TensorType::kBF16 || type == TensorType::kF16; }

// Packs rows [16g, 16g + 16) of a Q4_K or Q5_K matrix into `dst`.
template <class Block>
void PackK4Group(const MatrixView& w, int64_t g, uint8_t* dst) {
  constexpr bool kQ5 = std::is_same_v<Block, BlockQ5_K>;
  for (int i = 0; i < kPackRows; ++i) {
    const Block* blocks = reinterpret_cast<const Block*>(w.row(g * kPackRows + i));
    for (int64_t s = 0; s < w.cols / kQK_K; ++s) {
      const Block& block = blocks[s];
      uint8_t* sb = dst + s * PackedK4Bytes(kQ5);
      std::memcpy(sb + 2 * i, &block.d, 2);
      std::memcpy(sb + 32 + 2 * i, &block.dmin, 2);
      for (int b = 0; b < 12; ++b) sb[kPackedK4ScalesOffset + 16 * b + i] = block.scales[b];
      for (int t = 0; t < 4; ++t) {
        uint8_t* lines = sb + PackedK4PairOffset(kQ5, t);
        for (int c = 0; c < 32; ++c) lines[(c / 4) * 64 + 4 * i + c % 4] = block.qs[32 * t + c];
        if constexpr (kQ5) {
          for (int half = 0; half < 2; ++half) {  // element l of sub-block 2t + half
            for (int l = 0; l < 32; ++l) {
              const int k = l / 4, bit = (block.qh[l] >> (2 * t + half)) & 1;
              lines[512 + (k / 4) * 64 + 4 * i + l % 4] |= static_cast<uint8_t>(bit << (2 * (k % 4) + half));
            }
          }
        }
      }
    }
  }
}

// Packs rows [16g, 16g + 16) of w into `dst`.
void PackGroup(const MatrixView& w, int64_t g, uint8_t* dst) {
  if (IsHalf(w.type)) {
    for (int i = 0; i < kPackRows; ++i) {
      const uint8_t* row = w.row(g * kPackRows + i);
      for (int64_t c = 0; c < w.cols; ++c) std::memcpy(dst + (c / 2) * 64 + i * 4 + (c % 2) * 2, row + 2 * c, 2);
    }
    return;
  }
  if (w.type == TensorType::kQ4_K) return PackK4Group<BlockQ4_K>(w, g, dst);
  if (w.type == TensorType::kQ5_K) return PackK4Group<BlockQ5_K>(w, g, dst);
  if (w.type == TensorType::kQ6_K) {
    const int64_t nb = w.cols / kQK_K;
    for (int i = 0; i < kPackRows; ++i) {
      const auto* blocks = reinterpret_cast<const BlockQ6_K*>(w.row(g * kPackRows + i));
      for (int64_t s = 0; s < nb; ++s) {
        const BlockQ6_K& block = blocks[s];
        std::memcpy(dst + PackedQ6_KDOffset(s) + 2 * i, &block.d, 2);
        uint8_t* sb = dst + PackedQ6_KBlockOffset(nb, s);
        for (int j = 0; j < 16; ++j) {
          sb[16 * j + i] = static_cast<uint8_t>(block.scales[j]);
          uint8_t* lines = sb + 256 + 192 * j;
          for (int e = 0; e < 16; ++e) {  // element 16j + e: quad e / 4, position m = e % 4
            const int q = Q6_KValue(block, 16 * j + e), quad = e / 4, m = e % 4;
            lines[(quad / 2) * 64 + 4 * i + m] |= static_cast<uint8_t>((q & 0x0F) << (4 * (quad % 2)));
            lines[128 + 4 * i + m] |= static_cast<uint8_t>((q >> 4) << (2 * quad));
          }
        }
      }
    }
    return;
  }
  const int64_t nb = w.cols / kQK;
  const int chunk_bytes = ChunkCount(w.type) * 64;
  for (int i = 0; i < kPackRows; ++i) {
    const uint8_t* row = w.row(g * kPackRows + i);
    for (int64_t b = 0; b < nb; ++b) {
      uint8_t* qb = dst + PackedQuantsOffset(b, chunk_bytes);
      uint16_t* scales = reinterpret_cast<uint16_t*>(dst + PackedScalesOffset(b, chunk_bytes));
      if (w.type == TensorType::kQ8_0) {
        const auto& block = reinterpret_cast<const BlockQ8_0*>(row)[b];
        scales[i] = block.d;
        for (int e = 0; e < kQK; ++e) {
          qb[(e / 4) * 64 + i * 4 + e % 4] = static_cast<uint8_t>(block.qs[e] ^ 0x80);
        }
      } else {
        const auto& block = reinterpret_cast<const BlockQ4_0*>(row)[b];
        scales[i] = block.d;
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
    case TensorType::kBF16: return ks.gemm_bf16_x16 != nullptr;
    case TensorType::kF16: return ks.gemm_f16_x16 != nullptr;
    case TensorType::kQ4_K: return ks.gemm_q4_K_x16 != nullptr;
    case TensorType::kQ5_K: return ks.gemm_q5_K_x16 != nullptr;
    case TensorType::kQ6_K: return ks.gemm_q6_K_x16 != nullptr;
    default: return false;
  }
}

uint64_t PackedGroupBytes(TensorType type, int64_t cols) {
  if (type == TensorType::kQ4_K || type == TensorType::kQ5_K) {
    return static_cast<uint64_t>(cols / kQK_K) * PackedK4Bytes(type == TensorType::kQ5_K);
  }
  if (type == TensorType::kQ6_K) return PackedQ6_KBlockOffset(cols / kQK_K, cols / kQK_K);
  const uint64_t nb = static_cast<uint64_t>(cols / kQK);
  if (IsHalf(type)) return nb * 16 * 64;
  return (nb + 1) / 2 * 64 + nb * ChunkCount(type) * 64;  // scale lines and quants
}

uint64_t PackedBytes(TensorType type, int64_t rows, int64_t cols) {
  return PackedGroupBytes(type, cols) * static_cast<uint64_t>(rows / kPackRows);
}

PackedArena::PackedArena(uint64_t capacity_bytes) {
  if (capacity_bytes == 0) return;
  void* p = mmap(nullptr, capacity_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return;  // Pack then leaves every matrix unpacked
  madvise(p, capacity_bytes, MADV_HUGEPAGE);
  base_ = static_cast<uint8_t*>(p);
  capacity_ = capacity_bytes;
}

PackedArena::~PackedArena() {
  if (base_ != nullptr) munmap(base_, capacity_);
}

MatrixView PackedArena::Pack(const MatrixView& w) {
  const int64_t groups = w.rows / kPackRows;
  const uint64_t group_bytes = PackedGroupBytes(w.type, w.cols);
  const uint64_t size = group_bytes * static_cast<uint64_t>(groups);
  // BF16 and F16 pack whole 32-column blocks (AMX tiles) only.
  const bool whole_blocks = !IsHalf(w.type) || w.cols % kQK == 0;
  if (groups == 0 || !whole_blocks || base_ == nullptr || size > capacity_ - used_) return w;
  uint8_t* base = base_ + used_;
  used_ += size;  // group_bytes is a multiple of 64, so the next piece stays aligned
  // Fresh anonymous pages are zero, so the padding after each group is
  // defined, and the Q5_K and Q6_K packers can OR their bits into place.
  tbb::parallel_for(int64_t{0}, groups, [&](int64_t g) { PackGroup(w, g, base + static_cast<uint64_t>(g) * group_bytes); });
  MatrixView v = w;
  v.packed = base;
  v.packed_rows = groups * kPackRows;
  v.packed_group_bytes = group_bytes;
  return v;
}

}  // namespace micromoe::kernels
