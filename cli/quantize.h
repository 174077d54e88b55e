// `micromoe quantize`: rewrites a GGUF model with its matrices in another
// weight type, per tensor class (experts, router, the rest).
#pragma once

#include <string>

namespace micromoe::cli {

struct QuantizeArgs {
  std::string input, output;
  std::string type;          // f32 | f16 | bf16 | q8_0 | q4_0: every matrix
  std::string experts_type;  // optional: the stacked expert tensors (*_exps)
  bool keep_router_f32 = false;
};

// Returns the exit code; progress on stderr.
int RunQuantize(const QuantizeArgs& args);

}  // namespace micromoe::cli
