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

// 64-byte lines of one packed block of a 32-element type.
int ChunkCount(TensorType type) { return type == TensorType::kQ8_0 ? 8 : type == TensorType::kQ5_0 ? 5 : 4; }

bool IsHalf(TensorType type) { return type == TensorType::kBF16 || type == TensorType::kF16; }

// Where packed.h puts the pieces of row i of a K-quant super-block: a byte
// offset within the super-block's bytes (for Q6_K and Q3_K, from the end of
// the d's)
// and the bit the piece starts at.
struct Place {
  uint64_t byte;
  int shift;
};

// Q4_K / Q5_K: quant byte qs[c]; the fifth bit of element l of sub-block j.
Place K4QuantByte(bool q5, int i, int c) {
  return {PackedK4PairOffset(q5, c / 32) + 64 * (c % 32 / 4) + 4 * i + c % 4, 0};
}
Place K4FifthBit(int i, int j, int l) {
  const int k = l / 4;
  return {PackedK4PairOffset(true, j / 2) + 512 + 64 * (k / 4) + 4 * i + l % 4, 2 * (k % 4) + j % 2};
}

// Q6_K: the low 4 bits and the top 2 bits of element e.
Place Q6_KLowBits(int i, int e) {
  const int quad = e % 16 / 4;
  return {256 + 192 * static_cast<uint64_t>(e / 16) + 64 * (quad / 2) + 4 * i + e % 4, 4 * (quad % 2)};
}
Place Q6_KTopBits(int i, int e) {
  return {256 + 192 * static_cast<uint64_t>(e / 16) + 128 + 4 * i + e % 4, 2 * (e % 16 / 4)};
}

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
      for (int c = 0; c < kQK_K / 2; ++c) sb[K4QuantByte(kQ5, i, c).byte] = block.qs[c];
      if constexpr (kQ5) {
        for (int j = 0; j < 8; ++j) {
          for (int l = 0; l < 32; ++l) {
            const Place p = K4FifthBit(i, j, l);
            sb[p.byte] |= static_cast<uint8_t>(((block.qh[l] >> j) & 1) << p.shift);
          }
        }
      }
    }
  }
}

// Q2_K / Q3_K: the 2-bit quant of row i's element e, for quant lines of the
// super-block's elements 32q.. at base(q) (packed.h); Q3_K's third bit.
template <uint64_t (*kBase)(int q)>
Place LowKQuantBits(int i, int e) {
  const int k = e % 32 / 4;
  return {kBase(e / 32) + 64 * (k / 4) + 4 * i + e % 4, 2 * (k % 4)};
}
constexpr uint64_t Q3_KLinesOffset(int q) { return 192 + 192 * static_cast<uint64_t>(q); }
Place Q3_KThirdBit(int i, int e) { return {Q3_KLinesOffset(e / 32) + 128 + 4 * i + e % 4, e % 32 / 4}; }

// Packs rows [16g, 16g + 16) of a Q2_K matrix into `dst`.
void PackQ2_KGroup(const MatrixView& w, int64_t g, uint8_t* dst) {
  for (int i = 0; i < kPackRows; ++i) {
    const auto* blocks = reinterpret_cast<const BlockQ2_K*>(w.row(g * kPackRows + i));
    for (int64_t s = 0; s < w.cols / kQK_K; ++s) {
      const BlockQ2_K& block = blocks[s];
      uint8_t* sb = dst + s * kPackedQ2_KBytes;
      std::memcpy(sb + 2 * i, &block.d, 2);
      std::memcpy(sb + 32 + 2 * i, &block.dmin, 2);
      for (int b = 0; b < 16; ++b) sb[64 + 16 * b + i] = block.scales[b];
      for (int e = 0; e < kQK_K; ++e) {
        const Place p = LowKQuantBits<PackedQ2_KQuantsOffset>(i, e);
        sb[p.byte] |= static_cast<uint8_t>(LowKQuant(block, e) << p.shift);
      }
    }
  }
}

// Packs rows [16g, 16g + 16) of a Q3_K matrix into `dst`.
void PackQ3_KGroup(const MatrixView& w, int64_t g, uint8_t* dst) {
  const int64_t nb = w.cols / kQK_K;
  for (int i = 0; i < kPackRows; ++i) {
    const auto* blocks = reinterpret_cast<const BlockQ3_K*>(w.row(g * kPackRows + i));
    for (int64_t s = 0; s < nb; ++s) {
      const BlockQ3_K& block = blocks[s];
      std::memcpy(dst + PackedDsFirstDOffset(s) + 2 * i, &block.d, 2);
      uint8_t* sb = dst + PackedQ3_KBlockOffset(nb, s);
      for (int b = 0; b < 12; ++b) sb[16 * b + i] = block.scales[b];
      for (int e = 0; e < kQK_K; ++e) {
        const int h = e / 128, j = e % 128 / 32, l = e % 32;
        const Place quant = LowKQuantBits<Q3_KLinesOffset>(i, e), third = Q3_KThirdBit(i, e);
        sb[quant.byte] |= static_cast<uint8_t>(((block.qs[32 * h + l] >> (2 * j)) & 3) << quant.shift);
        sb[third.byte] |= static_cast<uint8_t>(((block.hmask[l] >> (4 * h + j)) & 1) << third.shift);
      }
    }
  }
}

// IQ4_XS: the byte holding element l of sub-block j of row i, and its nibble.
Place IQ4_XSQuant(int i, int j, int l) {
  return {PackedIQ4_XSPairOffset(j / 2) + 64 * (l / 4) + 4 * i + l % 4, 4 * (j % 2)};
}

// Packs rows [16g, 16g + 16) of an IQ4_XS matrix into `dst`.
void PackIQ4_XSGroup(const MatrixView& w, int64_t g, uint8_t* dst) {
  for (int i = 0; i < kPackRows; ++i) {
    const auto* blocks = reinterpret_cast<const BlockIQ4_XS*>(w.row(g * kPackRows + i));
    for (int64_t s = 0; s < w.cols / kQK_K; ++s) {
      const BlockIQ4_XS& block = blocks[s];
      uint8_t* sb = dst + s * kPackedIQ4_XSBytes;
      std::memcpy(sb + 2 * i, &block.d, 2);
      std::memcpy(sb + 32 + 2 * i, &block.scales_h, 2);
      for (int b = 0; b < 4; ++b) sb[kPackedIQ4_XSScalesOffset + 16 * b + i] = block.scales_l[b];
      for (int j = 0; j < 8; ++j) {
        for (int l = 0; l < 32; ++l) {
          const uint8_t byte = block.qs[16 * j + l % 16];
          const Place p = IQ4_XSQuant(i, j, l);
          sb[p.byte] |= static_cast<uint8_t>(((l < 16 ? byte : byte >> 4) & 0x0F) << p.shift);
        }
      }
    }
  }
}

// Packs rows [16g, 16g + 16) of a Q6_K matrix into `dst`.
void PackQ6_KGroup(const MatrixView& w, int64_t g, uint8_t* dst) {
  const int64_t nb = w.cols / kQK_K;
  for (int i = 0; i < kPackRows; ++i) {
    const auto* blocks = reinterpret_cast<const BlockQ6_K*>(w.row(g * kPackRows + i));
    for (int64_t s = 0; s < nb; ++s) {
      const BlockQ6_K& block = blocks[s];
      std::memcpy(dst + PackedDsFirstDOffset(s) + 2 * i, &block.d, 2);
      uint8_t* sb = dst + PackedQ6_KBlockOffset(nb, s);
      for (int j = 0; j < 16; ++j) sb[16 * j + i] = static_cast<uint8_t>(block.scales[j]);
      for (int e = 0; e < kQK_K; ++e) {
        const int q = Q6_KValue(block, e);
        const Place low = Q6_KLowBits(i, e), top = Q6_KTopBits(i, e);
        sb[low.byte] |= static_cast<uint8_t>((q & 0x0F) << low.shift);
        sb[top.byte] |= static_cast<uint8_t>((q >> 4) << top.shift);
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
  if (w.type == TensorType::kQ6_K) return PackQ6_KGroup(w, g, dst);
  if (w.type == TensorType::kIQ4_XS) return PackIQ4_XSGroup(w, g, dst);
  if (w.type == TensorType::kQ3_K) return PackQ3_KGroup(w, g, dst);
  if (w.type == TensorType::kQ2_K) return PackQ2_KGroup(w, g, dst);
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
      } else if (w.type == TensorType::kQ5_0) {
        const auto& block = reinterpret_cast<const BlockQ5_0*>(row)[b];
        scales[i] = block.d;
        for (int e = 0; e < kQK / 2; ++e) qb[(e / 4) * 64 + i * 4 + e % 4] = block.qs[e];
        for (int e = 0; e < kQK; ++e) {
          qb[256 + i * 4 + e % 4] |= static_cast<uint8_t>(((block.qh[e / 8] >> (e % 8)) & 1) << (e / 4));
        }
      } else {  // Q4_0, or IQ4_NL: the same bytes
        const auto& block = reinterpret_cast<const BlockQ4_0*>(row)[b];
        scales[i] = block.d;
        for (int e = 0; e < kQK / 2; ++e) qb[(e / 4) * 64 + i * 4 + e % 4] = block.qs[e];
      }
    }
  }
}

}  // namespace

void UnpackKQuantBlock(TensorType type, const uint8_t* group, int64_t nb, int64_t s, int i, void* block) {
  if (type == TensorType::kQ2_K) {
    BlockQ2_K& b = *static_cast<BlockQ2_K*>(block);
    b = BlockQ2_K{};
    const uint8_t* sb = group + s * kPackedQ2_KBytes;
    std::memcpy(&b.d, sb + 2 * i, 2);
    std::memcpy(&b.dmin, sb + 32 + 2 * i, 2);
    for (int k = 0; k < 16; ++k) b.scales[k] = sb[64 + 16 * k + i];
    for (int e = 0; e < kQK_K; ++e) {
      const int h = e / 128, j = e % 128 / 32, l = e % 32;
      const Place p = LowKQuantBits<PackedQ2_KQuantsOffset>(i, e);
      b.qs[32 * h + l] |= static_cast<uint8_t>(((sb[p.byte] >> p.shift) & 3) << (2 * j));
    }
    return;
  }
  if (type == TensorType::kQ3_K) {
    BlockQ3_K& b = *static_cast<BlockQ3_K*>(block);
    b = BlockQ3_K{};
    std::memcpy(&b.d, group + PackedDsFirstDOffset(s) + 2 * i, 2);
    const uint8_t* sb = group + PackedQ3_KBlockOffset(nb, s);
    for (int k = 0; k < 12; ++k) b.scales[k] = sb[16 * k + i];
    for (int e = 0; e < kQK_K; ++e) {
      const int h = e / 128, j = e % 128 / 32, l = e % 32;
      const Place quant = LowKQuantBits<Q3_KLinesOffset>(i, e), third = Q3_KThirdBit(i, e);
      b.qs[32 * h + l] |= static_cast<uint8_t>(((sb[quant.byte] >> quant.shift) & 3) << (2 * j));
      b.hmask[l] |= static_cast<uint8_t>(((sb[third.byte] >> third.shift) & 1) << (4 * h + j));
    }
    return;
  }
  if (type == TensorType::kIQ4_XS) {
    BlockIQ4_XS& b = *static_cast<BlockIQ4_XS*>(block);
    b = BlockIQ4_XS{};
    const uint8_t* sb = group + s * kPackedIQ4_XSBytes;
    std::memcpy(&b.d, sb + 2 * i, 2);
    std::memcpy(&b.scales_h, sb + 32 + 2 * i, 2);
    for (int k = 0; k < 4; ++k) b.scales_l[k] = sb[kPackedIQ4_XSScalesOffset + 16 * k + i];
    for (int j = 0; j < 8; ++j) {
      for (int l = 0; l < 32; ++l) {
        const Place p = IQ4_XSQuant(i, j, l);
        b.qs[16 * j + l % 16] |= static_cast<uint8_t>(((sb[p.byte] >> p.shift) & 0x0F) << (l < 16 ? 0 : 4));
      }
    }
    return;
  }
  if (type == TensorType::kQ6_K) {
    BlockQ6_K& b = *static_cast<BlockQ6_K*>(block);
    b = BlockQ6_K{};
    std::memcpy(&b.d, group + PackedDsFirstDOffset(s) + 2 * i, 2);
    const uint8_t* sb = group + PackedQ6_KBlockOffset(nb, s);
    for (int j = 0; j < 16; ++j) b.scales[j] = static_cast<int8_t>(sb[16 * j + i]);
    for (int e = 0; e < kQK_K; ++e) {
      const Place low = Q6_KLowBits(i, e), top = Q6_KTopBits(i, e);
      SetQ6_KValue(b, e, ((sb[low.byte] >> low.shift) & 0x0F) | (((sb[top.byte] >> top.shift) & 3) << 4));
    }
    return;
  }
  // Q4_K and Q5_K blocks share d, dmin and scales; their qs lie at different offsets.
  const bool q5 = type == TensorType::kQ5_K;
  const uint8_t* sb = group + s * PackedK4Bytes(q5);
  auto unpack = [&](auto& b) {
    std::memcpy(&b.d, sb + 2 * i, 2);
    std::memcpy(&b.dmin, sb + 32 + 2 * i, 2);
    for (int k = 0; k < 12; ++k) b.scales[k] = sb[kPackedK4ScalesOffset + 16 * k + i];
    for (int c = 0; c < kQK_K / 2; ++c) b.qs[c] = sb[K4QuantByte(q5, i, c).byte];
  };
  if (!q5) return unpack(*static_cast<BlockQ4_K*>(block));
  BlockQ5_K& b = *static_cast<BlockQ5_K*>(block);
  b = BlockQ5_K{};
  unpack(b);
  for (int j = 0; j < 8; ++j) {
    for (int l = 0; l < 32; ++l) {
      const Place p = K4FifthBit(i, j, l);
      b.qh[l] |= static_cast<uint8_t>(((sb[p.byte] >> p.shift) & 1) << j);
    }
  }
}

bool CanPack(TensorType type, const KernelSet& ks) {
  switch (type) {
    case TensorType::kQ8_0: return ks.gemm_q8_0_x16 != nullptr;
    case TensorType::kQ4_0: return ks.gemm_q4_0_x16 != nullptr;
    case TensorType::kQ5_0: return ks.gemm_q5_0_x16 != nullptr;
    case TensorType::kIQ4_NL: return ks.gemm_iq4_nl_x16 != nullptr;
    case TensorType::kBF16: return ks.gemm_bf16_x16 != nullptr;
    case TensorType::kF16: return ks.gemm_f16_x16 != nullptr;
    case TensorType::kQ4_K: return ks.gemm_q4_K_x16 != nullptr;
    case TensorType::kQ5_K: return ks.gemm_q5_K_x16 != nullptr;
    case TensorType::kQ6_K: return ks.gemm_q6_K_x16 != nullptr;
    case TensorType::kIQ4_XS: return ks.gemm_iq4_xs_x16 != nullptr;
    case TensorType::kQ3_K: return ks.gemm_q3_K_x16 != nullptr;
    case TensorType::kQ2_K: return ks.gemm_q2_K_x16 != nullptr;
    default: return false;
  }
}

uint64_t PackedGroupBytes(TensorType type, int64_t cols) {
  if (type == TensorType::kQ4_K || type == TensorType::kQ5_K) {
    return static_cast<uint64_t>(cols / kQK_K) * PackedK4Bytes(type == TensorType::kQ5_K);
  }
  if (type == TensorType::kQ6_K) return PackedQ6_KBlockOffset(cols / kQK_K, cols / kQK_K);
  if (type == TensorType::kIQ4_XS) return static_cast<uint64_t>(cols / kQK_K) * kPackedIQ4_XSBytes;
  if (type == TensorType::kQ3_K) return PackedQ3_KBlockOffset(cols / kQK_K, cols / kQK_K);
  if (type == TensorType::kQ2_K) return static_cast<uint64_t>(cols / kQK_K) * kPackedQ2_KBytes;
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
  // defined, and the packers of the K-quants and IQ4_XS can OR their bits
  // into place.
  tbb::parallel_for(int64_t{0}, groups, [&](int64_t g) { PackGroup(w, g, base + static_cast<uint64_t>(g) * group_bytes); });
  MatrixView v = w;
  v.packed = base;
  v.packed_rows = groups * kPackRows;
  v.packed_group_bytes = group_bytes;
  return v;
}

}  // namespace micromoe::kernels
