// The CPU's vector features, read once with cpuid. Kernels are picked from these.
#pragma once

#include <string>

namespace micromoe::kernels {

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512vnni = false, avx512bf16 = false;
  bool amx_tile = false, amx_int8 = false, amx_bf16 = false;
  std::string brand;
};

// Detected on first call; immutable afterwards.
const CpuFeatures& GetCpuFeatures();

}  // namespace micromoe::kernels
