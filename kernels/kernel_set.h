// A kernel back-end: the row-level primitives every higher op is built from,
// as a table of functions (one table per instruction set). Private to kernels/.
#pragma once

#include <cstdint>

namespace micromoe::kernels {

struct KernelSet {
  const char* name;
  // sum_i a[i] * b[i]
  float (*dot_f32)(const float* a, const float* b, int64_t n);
  // y[i] += a * x[i]
  void (*axpy_f32)(float a, const float* x, float* y, int64_t n);
  // Row conversions to F32; n is a multiple of the type's block size.
  void (*f16_to_f32)(const void* src, float* dst, int64_t n);
  void (*bf16_to_f32)(const void* src, float* dst, int64_t n);
  void (*q8_0_to_f32)(const void* src, float* dst, int64_t n);
  void (*q4_0_to_f32)(const void* src, float* dst, int64_t n);
};

// Plain C++ reference; always available.
const KernelSet& ScalarKernels();
// nullptr when the CPU lacks the instruction set.
const KernelSet* Avx2Kernels();
const KernelSet* Avx512Kernels();

}  // namespace micromoe::kernels
