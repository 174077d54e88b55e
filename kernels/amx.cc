// AMX tiles for the prompt path of packed weights (layout in packed.h):
// AMX-INT8 for Q8_0 / Q4_0, AMX-BF16 for BF16. Everything else is the AVX-512
// back-end's.
//
// One 32-column block is one tile product: A = the block's activation codes of
// up to 16 activation rows (M x 32 signed bytes), B = the packed block (8 rows
// of 64 bytes: row k holds weights 4k..4k+3 of each of the 16 weight rows, the
// dword layout TDPBSUD reads), C = M x 16 int32. The packed weights are
// unsigned (value + 128 for Q8_0, + 8 for Q4_0), so TDPBSUD (signed x
// unsigned) applies and the activation-side terms remove the offset, as in the
// VNNI kernel. Q4_0 blocks are unpacked to bytes first (low nibbles are B rows
// 0..3, high nibbles rows 4..7). C is stored after each block and scaled in
// float with AVX-512, since every block carries its own scales.
//
// BF16: a 32-column block is A = M x 32 BF16 activations, B = the block's 16
// packed lines (row k holds column pair k of the 16 weight rows, the pairs
// TDPBF16PS reads); with no scales, C accumulates over all blocks (even
// blocks in C0, odd ones in C1) and is stored once.
//
// The kernel is written once over a tile interface with two implementations:
// the instructions, and a plain C++ emulation that follows Intel's pseudo-code.
// Tests run the emulated form on any AVX-512 machine; on an AMX machine the
// instruction form is checked against it at start-up before it is used.
#include <immintrin.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>

#include "kernels/cpu_features.h"
#include "kernels/kernel_set.h"
#include "kernels/packed_avx512.h"
#include "kernels/quant.h"

namespace micromoe::kernels {
namespace {

// The 64-byte tile configuration LDTILECFG reads (palette 1).
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};
static_assert(sizeof(TileConfig) == 64);

// Tiles: C0, C1 (results of an even and an odd block), A0, A1, B0, B1.
enum Tile : int { kC0 = 0, kC1 = 1, kA0 = 2, kA1 = 3, kB0 = 4, kB1 = 5 };

// m activation rows; a_bytes bytes of each per block (32 INT8 codes or 32
// BF16 values); B rows of 64 bytes, b_rows of them (8 INT8 or 16 BF16).
TileConfig ConfigFor(int m, int a_bytes, int b_rows) {
  TileConfig c;
  for (int t : {kC0, kC1}) c.rows[t] = m, c.colsb[t] = 64;
  for (int t : {kA0, kA1}) c.rows[t] = m, c.colsb[t] = a_bytes;
  for (int t : {kB0, kB1}) c.rows[t] = b_rows, c.colsb[t] = 64;
  return c;
}

// GCC's tile intrinsics paste the tile number into the instruction text, so
// it must be a literal: FOR_TILE picks the literal equal to T.
#define MICROMOE_FOR_TILE(F) \
  if constexpr (T == kC0) F(0); \
  else if constexpr (T == kC1) F(1); \
  else if constexpr (T == kA0) F(2); \
  else if constexpr (T == kA1) F(3); \
  else if constexpr (T == kB0) F(4); \
  else F(5)

struct HardwareTiles {
  // GCC 12's tile intrinsics do not declare the memory they read (only 8
  // bytes of the config, nothing for tileloadd), so the compiler could drop
  // the stores that fill it; the empty asm with a memory clobber keeps them.
  static void Configure(const TileConfig& c) {
    asm volatile("" ::: "memory");
    _tile_loadconfig(&c);
  }
  static void Release() { _tile_release(); }
  template <int T>
  static void Zero() {
#define MICROMOE_ZERO(n) _tile_zero(n)
    MICROMOE_FOR_TILE(MICROMOE_ZERO);
#undef MICROMOE_ZERO
  }
  template <int T>
  static void Load(const void* p, uint64_t stride) {
    asm volatile("" ::: "memory");
#define MICROMOE_LOAD(n) _tile_loadd(n, p, stride)
    MICROMOE_FOR_TILE(MICROMOE_LOAD);
#undef MICROMOE_LOAD
  }
  template <int T>
  static void Store(void* p, uint64_t stride) {
#define MICROMOE_STORE(n) _tile_stored(n, p, stride)
    MICROMOE_FOR_TILE(MICROMOE_STORE);
#undef MICROMOE_STORE
  }
  template <int C, int A, int B>
  static void DotSignedUnsigned() {
    static_assert((C == kC0 && A == kA0 && B == kB0) || (C == kC1 && A == kA1 && B == kB1));
    if constexpr (C == kC0) {
      _tile_dpbsud(0, 2, 4);
    } else {
      _tile_dpbsud(1, 3, 5);
    }
  }
  template <int C, int A, int B>
  static void DotBf16() {
    static_assert((C == kC0 && A == kA0 && B == kB0) || (C == kC1 && A == kA1 && B == kB1));
    if constexpr (C == kC0) {
      _tile_dpbf16ps(0, 2, 4);
    } else {
      _tile_dpbf16ps(1, 3, 5);
    }
  }
};
#undef MICROMOE_FOR_TILE

struct TileRegister {
  int rows = 0, colsb = 0;
  uint8_t bytes[16][64] = {};
};
thread_local TileRegister emulated_tiles[8];

// Intel's pseudo-code for the same operations, on per-thread tile registers.
struct EmulatedTiles {
  static void Configure(const TileConfig& c) {
    for (int t = 0; t < 8; ++t) emulated_tiles[t].rows = c.rows[t], emulated_tiles[t].colsb = c.colsb[t];
  }
  static void Release() {
    for (TileRegister& r : emulated_tiles) r = TileRegister{};
  }
  template <int T>
  static void Zero() { std::memset(emulated_tiles[T].bytes, 0, sizeof(emulated_tiles[T].bytes)); }
  template <int T>
  static void Load(const void* p, uint64_t stride) {
    TileRegister& r = emulated_tiles[T];
    std::memset(r.bytes, 0, sizeof(r.bytes));
    for (int i = 0; i < r.rows; ++i) std::memcpy(r.bytes[i], static_cast<const uint8_t*>(p) + i * stride, r.colsb);
  }
  template <int T>
  static void Store(void* p, uint64_t stride) {
    const TileRegister& r = emulated_tiles[T];
    for (int i = 0; i < r.rows; ++i) std::memcpy(static_cast<uint8_t*>(p) + i * stride, r.bytes[i], r.colsb);
  }
  template <int C, int A, int B>
  static void DotSignedUnsigned() {
    TileRegister& c = emulated_tiles[C];
    const TileRegister& a = emulated_tiles[A];
    const TileRegister& b = emulated_tiles[B];
    for (int m = 0; m < c.rows; ++m) {
      for (int k = 0; k < a.colsb / 4; ++k) {
        for (int n = 0; n < c.colsb / 4; ++n) {
          int32_t acc;
          std::memcpy(&acc, c.bytes[m] + 4 * n, 4);
          for (int i = 0; i < 4; ++i) {
            acc += static_cast<int8_t>(a.bytes[m][4 * k + i]) * static_cast<int32_t>(b.bytes[k][4 * n + i]);
          }
          std::memcpy(c.bytes[m] + 4 * n, &acc, 4);
        }
      }
    }
  }
  // The products of two BF16 values are exact in float; denormal inputs and
  // results (flushed to zero by the instruction) do not occur in the checks.
  template <int C, int A, int B>
  static void DotBf16() {
    TileRegister& c = emulated_tiles[C];
    const TileRegister& a = emulated_tiles[A];
    const TileRegister& b = emulated_tiles[B];
    auto value = [](const uint8_t* p) {
      uint16_t h;
      std::memcpy(&h, p, 2);
      return Bf16ToFp32(h);
    };
    for (int m = 0; m < c.rows; ++m) {
      for (int k = 0; k < a.colsb / 4; ++k) {
        for (int n = 0; n < c.colsb / 4; ++n) {
          float acc;
          std::memcpy(&acc, c.bytes[m] + 4 * n, 4);
          acc += value(a.bytes[m] + 4 * k) * value(b.bytes[k] + 4 * n);
          acc += value(a.bytes[m] + 4 * k + 2) * value(b.bytes[k] + 4 * n + 2);
          std::memcpy(c.bytes[m] + 4 * n, &acc, 4);
        }
      }
    }
  }
};

// Unpacks packed Q4_0 block `q` (4 chunks of 64 bytes) into the 8 B rows.
inline void UnpackQ4Block(const uint8_t* q, uint8_t* b_rows) {
  __m512i w[8];
  LoadPackedBlock<true>(q, w);
  for (int k = 0; k < 8; ++k) _mm512_store_si512(b_rows + k * 64, w[k]);
}

// acc[r] += (C[r] - offset term) * d_x * d_w for block b, as the VNNI kernel.
inline void ScaleBlock(const int32_t* c, int m, const float* terms, uint64_t terms_stride, int64_t b, __m512 dw,
                       __m512* acc) {
  for (int r = 0; r < m; ++r) {
    const float* t = terms + r * terms_stride + 2 * b;
    const __m512 dot = _mm512_sub_ps(_mm512_cvtepi32_ps(_mm512_load_si512(c + 16 * r)), _mm512_set1_ps(t[1]));
    acc[r] = _mm512_fmadd_ps(_mm512_mul_ps(dot, _mm512_set1_ps(t[0])), dw, acc[r]);
  }
}

template <class Tiles, bool kQ4>
void GemmTiles(const uint8_t* group, int64_t nb, const uint8_t* xq, uint64_t xq_stride, const float* terms,
               uint64_t terms_stride, int m, float* out) {
  constexpr int kChunkBytes = (kQ4 ? 4 : 8) * 64;
  alignas(64) uint8_t b_rows[2][8 * 64];
  alignas(64) int32_t c[2][kMaxPackedTileRows * 16];
  __m512 acc[kMaxPackedTileRows];
  for (int r = 0; r < m; ++r) acc[r] = _mm512_setzero_ps();
  Tiles::Configure(ConfigFor(m, 32, 8));
  // Activation codes of block b: 32 bytes after the fp16 scale, rows xq_stride apart.
  auto codes = [&](int64_t b) { return xq + b * sizeof(BlockQ8_0) + 2; };
  auto weights = [&](int64_t b, int slot) -> const uint8_t* {
    const uint8_t* q = group + PackedQuantsOffset(b, kChunkBytes);
    if constexpr (!kQ4) return q;
    UnpackQ4Block(q, b_rows[slot]);
    return b_rows[slot];
  };
  auto dw = [&](int64_t b) { return LoadBlockScales<kChunkBytes>(group, b); };
  int64_t b = 0;
  for (; b + 2 <= nb; b += 2) {  // two blocks in flight on separate tiles
    Tiles::template Zero<kC0>();
    Tiles::template Zero<kC1>();
    Tiles::template Load<kA0>(codes(b), xq_stride);
    Tiles::template Load<kB0>(weights(b, 0), 64);
    Tiles::template Load<kA1>(codes(b + 1), xq_stride);
    Tiles::template Load<kB1>(weights(b + 1, 1), 64);
    Tiles::template DotSignedUnsigned<kC0, kA0, kB0>();
    Tiles::template DotSignedUnsigned<kC1, kA1, kB1>();
    Tiles::template Store<kC0>(c[0], 64);
    Tiles::template Store<kC1>(c[1], 64);
    ScaleBlock(c[0], m, terms, terms_stride, b, dw(b), acc);
    ScaleBlock(c[1], m, terms, terms_stride, b + 1, dw(b + 1), acc);
  }
  if (b < nb) {
    Tiles::template Zero<kC0>();
    Tiles::template Load<kA0>(codes(b), xq_stride);
    Tiles::template Load<kB0>(weights(b, 0), 64);
    Tiles::template DotSignedUnsigned<kC0, kA0, kB0>();
    Tiles::template Store<kC0>(c[0], 64);
    ScaleBlock(c[0], m, terms, terms_stride, b, dw(b), acc);
  }
  Tiles::Release();
  for (int r = 0; r < m; ++r) _mm512_storeu_ps(out + r * 16, acc[r]);
}

// Up to four activation rows go to the VNNI kernel (decode is bound by memory,
// not arithmetic); five to sixteen are one pass of tiles over the group.
template <class Tiles, bool kQ4>
void Gemm(const uint8_t* group, int64_t nb, const uint8_t* xq, uint64_t xq_stride, const float* terms,
          uint64_t terms_stride, int n_x, float* out) {
  if (n_x <= 4) {
    const KernelSet& vnni = *Avx512Kernels();
    return (kQ4 ? vnni.gemm_q4_0_x16 : vnni.gemm_q8_0_x16)(group, nb, xq, xq_stride, terms, terms_stride, n_x, out);
  }
  GemmTiles<Tiles, kQ4>(group, nb, xq, xq_stride, terms, terms_stride, n_x, out);
}

// BF16: blocks b and b + 1 on separate tiles, both accumulating over the group.
template <class Tiles>
void GemmBf16Tiles(const uint8_t* group, int64_t nb, const uint8_t* x, uint64_t x_stride, int m, float* out) {
  alignas(64) float c[2][kMaxPackedTileRows * 16];
  Tiles::Configure(ConfigFor(m, 64, 16));
  Tiles::template Zero<kC0>();
  Tiles::template Zero<kC1>();
  // Block b: 64 bytes of activations at x + 64 b, rows x_stride apart; 16 lines of weights.
  for (int64_t b = 0; b < nb; b += 2) {
    Tiles::template Load<kA0>(x + b * 64, x_stride);
    Tiles::template Load<kB0>(group + b * 1024, 64);
    Tiles::template DotBf16<kC0, kA0, kB0>();
    if (b + 1 == nb) break;
    Tiles::template Load<kA1>(x + (b + 1) * 64, x_stride);
    Tiles::template Load<kB1>(group + (b + 1) * 1024, 64);
    Tiles::template DotBf16<kC1, kA1, kB1>();
  }
  Tiles::template Store<kC0>(c[0], 64);
  Tiles::template Store<kC1>(c[1], 64);
  Tiles::Release();
  for (int r = 0; r < m; ++r) {
    _mm512_storeu_ps(out + r * 16, _mm512_add_ps(_mm512_load_ps(c[0] + 16 * r), _mm512_load_ps(c[1] + 16 * r)));
  }
}

template <class Tiles>
void GemmBf16(const uint8_t* group, int64_t nb, const uint8_t* xq, uint64_t xq_stride, const float* terms,
              uint64_t terms_stride, int n_x, float* out) {
  if (n_x <= 4) return Avx512Kernels()->gemm_bf16_x16(group, nb, xq, xq_stride, terms, terms_stride, n_x, out);
  GemmBf16Tiles<Tiles>(group, nb, xq, xq_stride, n_x, out);
}

// bf16: whether BF16 prompt tiles use AMX-BF16; otherwise they stay on the
// AVX-512 kernels (AVX512-BF16, or the file layout without it).
template <class Tiles>
KernelSet WithTiles(const char* name, bool bf16) {
  KernelSet set = *Avx512Kernels();
  set.name = name;
  set.gemm_q8_0_x16 = Gemm<Tiles, false>;
  set.gemm_q4_0_x16 = Gemm<Tiles, true>;
  if (bf16) set.gemm_bf16_x16 = GemmBf16<Tiles>;
  set.packed_tile_rows = kMaxPackedTileRows;
  return set;
}

// Linux hands out the tile data state only on request (arch_prctl
// ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA), once per process.
bool RequestTileState() {
  constexpr int kArchReqXcompPerm = 0x1023;
  constexpr int kXfeatureXtileData = 18;
  unsigned lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  const bool os_enabled = (lo & (3u << 17)) == (3u << 17);  // XTILECFG, XTILEDATA
  return os_enabled && syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtileData) == 0;
}

// Runs the instruction form against the emulation on random packed groups;
// they share all float code, so the results must match bit for bit.
template <bool kQ4>
bool InstructionsMatchEmulationOn(std::mt19937& rng) {
  std::uniform_int_distribution<int> byte(0, 255), code(-127, 127);
  constexpr int64_t kBlocks = 5;  // an odd count covers the tail block
  constexpr int64_t kChunkBytes = (kQ4 ? 4 : 8) * 64;
  constexpr uint64_t kGroupBytes = PackedQuantsOffset(kBlocks - 1, kChunkBytes) + kChunkBytes;
  alignas(64) uint8_t group[kGroupBytes];
  for (uint64_t i = 0; i < kGroupBytes; ++i) group[i] = static_cast<uint8_t>(byte(rng));
  for (int64_t b = 0; b < kBlocks; ++b) {
    uint16_t* scales = reinterpret_cast<uint16_t*>(group + PackedScalesOffset(b, kChunkBytes));
    for (int i = 0; i < 16; ++i) scales[i] = 0x3000 + static_cast<uint16_t>(byte(rng));  // ~0.1..0.2
  }
  constexpr int kRows = 11;
  BlockQ8_0 x[kRows * kBlocks];
  float terms[kRows * 2 * kBlocks];
  for (int64_t i = 0; i < kRows * kBlocks; ++i) {
    x[i].d = 0x2C00;  // 0.0625
    for (int8_t& q : x[i].qs) q = static_cast<int8_t>(code(rng));
    terms[2 * i] = 0.0625f;
    terms[2 * i + 1] = static_cast<float>(code(rng));
  }
  const auto* xq = reinterpret_cast<const uint8_t*>(x);
  const uint64_t stride = kBlocks * sizeof(BlockQ8_0);
  float got[kMaxPackedTileRows * 16], want[kMaxPackedTileRows * 16];
  GemmTiles<HardwareTiles, kQ4>(group, kBlocks, xq, stride, terms, 2 * kBlocks, kRows, got);
  GemmTiles<EmulatedTiles, kQ4>(group, kBlocks, xq, stride, terms, 2 * kBlocks, kRows, want);
  return std::memcmp(got, want, sizeof(float) * kRows * 16) == 0;
}

bool Int8InstructionsMatchEmulation() {
  std::mt19937 rng(7);
  return InstructionsMatchEmulationOn<false>(rng) && InstructionsMatchEmulationOn<true>(rng);
}

// BF16 on small integers, where every sum is exact in float whatever the
// order, so the comparison checks the operands' layout, not the rounding.
bool Bf16InstructionsMatchEmulation() {
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> small(-8, 8);
  constexpr int64_t kBlocks = 3;  // an odd count: C1 sees one block less
  constexpr int kRows = 13;
  alignas(64) uint16_t group[kBlocks * 512];
  for (int64_t i = 0; i < kBlocks * 512; ++i) group[i] = Fp32ToBf16(static_cast<float>(small(rng)));
  uint16_t x[kRows * kBlocks * 32];
  for (uint16_t& v : x) v = Fp32ToBf16(static_cast<float>(small(rng)));
  const auto* xq = reinterpret_cast<const uint8_t*>(x);
  const auto* g = reinterpret_cast<const uint8_t*>(group);
  float got[kMaxPackedTileRows * 16], want[kMaxPackedTileRows * 16];
  GemmBf16Tiles<HardwareTiles>(g, kBlocks, xq, kBlocks * 64, kRows, got);
  GemmBf16Tiles<EmulatedTiles>(g, kBlocks, xq, kBlocks * 64, kRows, want);
  return std::memcmp(got, want, sizeof(float) * kRows * 16) == 0;
}

thread_local sigjmp_buf probe_jump;

void OnProbeFault(int) { siglongjmp(probe_jump, 1); }

// Runs `check` with SIGILL and SIGSEGV caught (for the microseconds it takes),
// so tile instructions the CPU or kernel refuse (#UD, #GP) read as a failed
// check instead of a crash.
bool PassesWithoutFault(bool (*check)()) {
  struct sigaction on_fault = {}, old_ill = {}, old_segv = {};
  on_fault.sa_handler = OnProbeFault;
  sigemptyset(&on_fault.sa_mask);
  sigaction(SIGILL, &on_fault, &old_ill);
  sigaction(SIGSEGV, &on_fault, &old_segv);
  volatile bool passed = false;
  if (sigsetjmp(probe_jump, 1) == 0) passed = check();
  sigaction(SIGILL, &old_ill, nullptr);
  sigaction(SIGSEGV, &old_segv, nullptr);
  return passed;
}

}  // namespace

// Both checks run AVX-512 code around the tiles (this file is compiled for
// AVX-512), which the fault guard does not cover on CPUs without it.
bool AmxSelfCheckPasses() {
  return Avx512Kernels() != nullptr && PassesWithoutFault(Int8InstructionsMatchEmulation);
}

bool AmxBf16SelfCheckPasses() {
  return Avx512Kernels() != nullptr && Avx512Kernels()->gemm_bf16_x16 != nullptr &&
         PassesWithoutFault(Bf16InstructionsMatchEmulation);
}

const KernelSet* AmxKernels() {
  static const KernelSet* set = []() -> const KernelSet* {
    const CpuFeatures& f = GetCpuFeatures();
    if (Avx512Kernels() == nullptr || !f.amx_tile || !f.amx_int8 || !RequestTileState()) return nullptr;
    if (!AmxSelfCheckPasses()) {
      std::fprintf(stderr, "micromoe: AMX tiles fault or disagree with their emulation; using the avx512 kernels\n");
      return nullptr;
    }
    bool bf16 = f.amx_bf16 && Avx512Kernels()->gemm_bf16_x16 != nullptr;
    if (bf16 && !AmxBf16SelfCheckPasses()) {
      std::fprintf(stderr, "micromoe: AMX-BF16 tiles fault or disagree with their emulation; BF16 prompts use avx512\n");
      bf16 = false;
    }
    static const KernelSet amx = WithTiles<HardwareTiles>("amx", bf16);
    return &amx;
  }();
  return set;
}

const KernelSet* AmxEmulatedKernels() {
  if (Avx512Kernels() == nullptr) return nullptr;
  static const KernelSet set = WithTiles<EmulatedTiles>("amx-emulated", Avx512Kernels()->gemm_bf16_x16 != nullptr);
  return &set;
}

}  // namespace micromoe::kernels
