// `micromoe quantize`: rewrites a GGUF model with its matrices in another
// weight type, per tensor class (experts, router, the rest).
#pragma once

#include <string>

namespace micromoe::cli {

struct QuantizeArgs {
  std::string input, output;
  // f32 | f16 | bf16 | q8_0 | q4_0 | q4_k | q5_k | q6_k: every matrix. Rows
  // that the type's blocks do not divide are written as Q8_0 for the K-quants
  // (rows of 32k), else F16; stderr names each such tensor.
  std::string type;
  std::string experts_type;  // optional: the stacked expert tensors (*_exps)
  bool keep_router_f32 = false;
};

// Returns the exit code; progress on stderr. general.file_type names the type
// that holds the most matrix elements. Rows are converted in parallel.
int RunQuantize(const QuantizeArgs& args);

}  // namespace micromoe::cli
