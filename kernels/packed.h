// Weights repacked once at load for the packed kernels: sixteen rows are
// interleaved per 32-column block, so one 64-byte load holds four consecutive
// weights of each of 16 rows and the products land one row per 32-bit lane
// (no horizontal sums; one load brings the 16 rows' block scales).
//
// One group of 16 rows with nb = cols / 32 blocks is laid out as pairs of
// blocks (the last one alone when nb is odd), each pair
//   one 64-byte line of scales: block 2p's 16 fp16 scales (row i at position
//           i), then block 2p+1's (or 32 bytes of padding);
//   the two blocks' quants: 8 (Q8_0) or 4 (Q4_0) chunks of 64 bytes each; in
//           chunk k of a block, bytes 4i..4i+3 belong to row i:
//     Q8_0: 8 chunks; byte j is weight 4k+j of the block as an unsigned byte
//           (int8 value + 128), so that u8 x s8 dot products apply;
//     Q4_0: 4 chunks; byte j is GGUF's nibble byte 4k+j (low nibble: weight
//           4k+j, high nibble: weight 16+4k+j, each stored + 8);
//     Q5_0: Q4_0's 4 chunks (the low 4 bits, each weight stored + 16), then
//           a line of fifth bits: byte 4i + j bit k is that of row i's
//           weight 4k + j (qh bit 4k + j);
//     IQ4_NL: as Q4_0 (its nibbles index the 16 values).
// A group is then one sequential stream: with all scales after the quants
// (a second stream per group) a core streamed packed Q4_0 5-9% slower.
//
// BF16 and F16 (cols a multiple of 32): one 64-byte line per pair of columns
// 2p, 2p+1, bytes 4i..4i+3 holding row i's two values (the pairs VDPBF16PS
// multiplies and the B-tile layout of AMX's TDPBF16PS: a 32-column block is
// 16 lines, one 1 KiB tile); no scales.
//
// Q4_K and Q5_K (cols a multiple of 256): per super-block of 256 columns,
// 2304 (Q4_K) or 2816 (Q5_K) bytes, the 16 rows' blocks rearranged:
//   one line: the 16 rows' d (fp16, row i at 2i), then their dmin;
//   three lines: the 12 scale bytes, byte b of row i at 16 b + i, so each
//           byte of all 16 rows is one 16-byte vector (scales and mins are
//           unpacked for 16 rows at once);
//   per pair of sub-blocks t = 0..3, 8 lines of quants: in line k, bytes
//           4i..4i+3 are row i's qs[32t + 4k .. 32t + 4k + 3] (low nibbles:
//           elements 4k.. of sub-block 2t; high: of 2t + 1); for Q5_K then
//           two lines of fifth bits: in line u, byte 4i + m holds those of
//           row i's element 4k + m of sub-block 2t (bit 2 (k - 4u)) and of
//           sub-block 2t + 1 (bit 2 (k - 4u) + 1), for k = 4u .. 4u + 3.
//
// Q6_K (cols a multiple of 256): first the 16 rows' d (fp16) of every
// super-block, 32 bytes per super-block (row i at 2i), padded to whole lines;
// then per super-block 3328 bytes (52 lines):
//   four lines of scales: sub-block j's int8 scale of row i at 16 j + i;
//   three lines per sub-block j of 16 elements (its 6-bit values q, stored
//           without the -32): in the first, byte 4i + m holds the low 4 bits
//           of row i's elements 16j + m (low nibble) and 16j + 4 + m (high);
//           in the second those of 16j + 8 + m and 16j + 12 + m; in the
//           third, byte 4i + m holds the top 2 bits of elements 16j + m,
//           16j + 4 + m, 16j + 8 + m and 16j + 12 + m (bits 0-1, 2-3, 4-5, 6-7).
// A group is the file's bytes plus at most 32 bytes of padding.
//
// Q3_K (cols a multiple of 256): the 16 rows' d of every super-block first,
// as Q6_K's; then per super-block 1728 bytes (27 lines):
//   three lines of scales: byte b of row i at 16 b + i;
//   per 32 elements q = 0..7 (elements 32q..32q+31, sub-blocks 2q and
//           2q + 1), three lines: two of 2-bit quants, in line u byte 4i + m
//           holding at bits 2p, 2p + 1 those of row i's element 32q + 4 (4u +
//           p) + m; then one of third bits, byte 4i + m bit k that of
//           element 32q + 4k + m.
//
// Q2_K (cols a multiple of 256): per super-block 1344 bytes (21 lines, the
// file's bytes): one line of the 16 rows' d (fp16, row i at 2i) and dmin (at
// 32 + 2i); four lines of scale bytes (scale low, min high), that of
// sub-block s of row i at 64 + 16 s + i; then per 32 elements two lines of
// 2-bit quants as Q3_K's.
//
// IQ4_XS (cols a multiple of 256): per super-block 2176 bytes (34 lines, the
// file's bytes): one line of the 16 rows' d (fp16, row i at 2i) and then
// their scales_h (uint16, at 32 + 2i); one line of scales_l, byte b of row i
// at 16 b + i; per pair of sub-blocks t = 0..3, 8 lines of nibbles as packed
// Q4_K's: in line k, bytes 4i..4i+3 hold in their low nibbles row i's
// elements 4k..4k+3 of sub-block 2t and in their high nibbles those of
// sub-block 2t + 1 (the file pairs a sub-block's elements j and 16 + j).
//
// Rows past the last full group stay in the original layout.
#pragma once

#include <cstdint>

#include "gguf/types.h"
#include "kernels/kernels.h"

namespace micromoe::kernels {

constexpr int kPackRows = 16;

// Offsets within a packed Q8_0 / Q4_0 / Q5_0 group of block b's scales and
// quants; chunk_bytes: a block's quants (512 for Q8_0, 256 for Q4_0, 320 for
// Q5_0).
constexpr uint64_t PackedScalesOffset(int64_t b, int chunk_bytes) {
  return static_cast<uint64_t>(b / 2) * (64 + 2 * chunk_bytes) + (b % 2) * 32;
}
constexpr uint64_t PackedQuantsOffset(int64_t b, int chunk_bytes) {
  return static_cast<uint64_t>(b / 2) * (64 + 2 * chunk_bytes) + 64 + (b % 2) * chunk_bytes;
}

// Within one packed Q4_K / Q5_K super-block: the scale lines and the lines
// of pair t (its quants, then Q5_K's fifth bits); the super-block's bytes.
constexpr uint64_t kPackedK4ScalesOffset = 64;
constexpr uint64_t PackedK4PairOffset(bool q5, int t) { return 256 + static_cast<uint64_t>(t) * (q5 ? 640 : 512); }
constexpr uint64_t PackedK4Bytes(bool q5) { return q5 ? 16 * 176 : 16 * 144; }

// Within one packed Q2_K super-block: its bytes and the lines of elements 32q.. .
constexpr uint64_t kPackedQ2_KBytes = 16 * 84;
constexpr uint64_t PackedQ2_KQuantsOffset(int q) { return 320 + static_cast<uint64_t>(q) * 128; }

// Within one packed IQ4_XS super-block: the scales_l line and the lines of pair t.
constexpr uint64_t kPackedIQ4_XSBytes = 16 * 136;
constexpr uint64_t kPackedIQ4_XSScalesOffset = 64;
constexpr uint64_t PackedIQ4_XSPairOffset(int t) { return 128 + static_cast<uint64_t>(t) * 512; }

// Offsets within a packed Q6_K or Q3_K group of nb super-blocks of
// super-block s's d (16 fp16) and of its scale lines (then its other lines).
constexpr uint64_t kPackedQ6_KBytes = 52 * 64;  // one super-block of 16 rows, less the d
constexpr uint64_t kPackedQ3_KBytes = 27 * 64;
constexpr uint64_t PackedDsFirstDOffset(int64_t s) { return static_cast<uint64_t>(s) * 32; }
constexpr uint64_t PackedDsFirstBlockOffset(int64_t nb, int64_t s, uint64_t block_bytes) {
  return (static_cast<uint64_t>(nb) * 32 + 63) / 64 * 64 + static_cast<uint64_t>(s) * block_bytes;
}
constexpr uint64_t PackedQ6_KBlockOffset(int64_t nb, int64_t s) {
  return PackedDsFirstBlockOffset(nb, s, kPackedQ6_KBytes);
}
constexpr uint64_t PackedQ3_KBlockOffset(int64_t nb, int64_t s) {
  return PackedDsFirstBlockOffset(nb, s, kPackedQ3_KBytes);
}

// Row i's super-block s of a packed K-quant or IQ4_XS group of nb
// super-blocks, back in the file's block layout (a BlockQ2_K, BlockQ3_K,
// BlockQ4_K, BlockQ5_K, BlockQ6_K or BlockIQ4_XS at `block`): the inverse of packing, for the
// scalar kernels.
void UnpackKQuantBlock(gguf::TensorType type, const uint8_t* group, int64_t nb, int64_t s, int i, void* block);

// Whether weights of `type` have a packed form that `ks` computes with.
bool CanPack(gguf::TensorType type, const KernelSet& ks = Active());

// Bytes of one packed group of 16 rows of `cols` columns of `type`.
uint64_t PackedGroupBytes(gguf::TensorType type, int64_t cols);

// Memory for packed matrices: one reservation of address space (nothing is
// resident until written), backed by transparent huge pages where the system
// allows them (fewer page faults while packing, fewer TLB misses while
// streaming weights), handed out in 64-byte aligned pieces. Not thread-safe:
// one loader packs into it; the packed data is then read-only.
class PackedArena {
 public:
  explicit PackedArena(uint64_t capacity_bytes);
  ~PackedArena();
  PackedArena(const PackedArena&) = delete;
  PackedArena& operator=(const PackedArena&) = delete;

  // Packs the full groups of w (whose type must satisfy CanPack) with oneTBB
  // workers and returns w with `packed`, `packed_rows` and
  // `packed_group_bytes` set. Returns w unchanged when it has fewer than 16
  // rows or the arena lacks room.
  MatrixView Pack(const MatrixView& w);

  uint64_t used_bytes() const { return used_; }

 private:
  uint8_t* base_ = nullptr;
  uint64_t capacity_ = 0;
  uint64_t used_ = 0;
};

// An upper bound of the arena bytes that packing the full groups of `rows` x
// `cols` of `type` takes.
uint64_t PackedBytes(gguf::TensorType type, int64_t rows, int64_t cols);

}  // namespace micromoe::kernels
