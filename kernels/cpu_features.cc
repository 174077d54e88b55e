#include "kernels/cpu_features.h"

#include <cpuid.h>

#include <cstring>

namespace micromoe::kernels {
namespace {

bool OsSavesAvx512State() {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE)) return false;
  unsigned lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (lo & 0xE6) == 0xE6;  // XMM, YMM, opmask, ZMM_Hi256, Hi16_ZMM
}

bool OsSavesAvxState() {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE)) return false;
  unsigned lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (lo & 0x6) == 0x6;
}

CpuFeatures Detect() {
  CpuFeatures f;
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid(1, &a, &b, &c, &d)) {
    const bool avx_os = OsSavesAvxState();
    f.fma = avx_os && (c & bit_FMA);
    f.f16c = avx_os && (c & bit_F16C);
  }
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
    const bool avx_os = OsSavesAvxState();
    const bool z_os = OsSavesAvx512State();
    f.avx2 = avx_os && (b & bit_AVX2);
    f.avx512f = z_os && (b & bit_AVX512F);
    f.avx512bw = z_os && (b & bit_AVX512BW);
    f.avx512vl = z_os && (b & bit_AVX512VL);
    f.avx512vnni = z_os && (c & bit_AVX512VNNI);
    f.amx_tile = d & (1u << 24);
    f.amx_int8 = d & (1u << 25);
    f.amx_bf16 = d & (1u << 22);
    unsigned a1, b1, c1, d1;
    if (__get_cpuid_count(7, 1, &a1, &b1, &c1, &d1)) f.avx512bf16 = z_os && (a1 & (1u << 5));
  }
  char brand[49] = {};
  if (__get_cpuid_max(0x80000000, nullptr) >= 0x80000004) {
    for (unsigned i = 0; i < 3; ++i) {
      __get_cpuid(0x80000002 + i, &a, &b, &c, &d);
      std::memcpy(brand + 16 * i, &a, 4);
      std::memcpy(brand + 16 * i + 4, &b, 4);
      std::memcpy(brand + 16 * i + 8, &c, 4);
      std::memcpy(brand + 16 * i + 12, &d, 4);
    }
  }
  f.brand = brand;
  while (!f.brand.empty() && f.brand.back() == ' ') f.brand.pop_back();
  return f;
}

}  // namespace

const CpuFeatures& GetCpuFeatures() {
  static const CpuFeatures features = Detect();
  return features;
}

}  // namespace micromoe::kernels
