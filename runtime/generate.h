// Single-sequence generation and perplexity on top of the forward pass.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/model.h"
#include "runtime/sampler.h"

namespace micromoe::runtime {

struct GenerateOptions {
  int max_tokens = 64;
  int n_ctx = 0;  // 0: prompt + max_tokens, at most the model's training context
  SamplingOptions sampling;
};

enum class FinishReason { kEndOfSequence, kLength, kCancelled };
const char* FinishReasonName(FinishReason r);

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated tokens, end-of-sequence excluded
  FinishReason finish = FinishReason::kLength;
  double prefill_seconds = 0;
  double decode_seconds = 0;
};

// Runs `prompt` (non-empty) then samples up to max_tokens tokens, calling
// on_token for each; on_token returning false stops with kCancelled.
absl::StatusOr<GenerateResult> Generate(const Model& model, const std::vector<int32_t>& prompt,
                                        const GenerateOptions& options,
                                        const std::function<bool(int32_t)>& on_token);

struct PerplexityResult {
  double ppl = 0;
  double ppl_stderr = 0;
  int n_chunks = 0;
  uint64_t n_scored = 0;
};

// llama.cpp's protocol: consecutive chunks of n_ctx tokens (partial last chunk
// dropped), the first token of each replaced by BOS when the model adds BOS,
// positions n_ctx/2 .. n_ctx-2 predicting the next token. on_chunk(i, ppl_so_far).
absl::StatusOr<PerplexityResult> Perplexity(const Model& model, const std::vector<int32_t>& tokens,
                                            int n_ctx,
                                            const std::function<void(int, double)>& on_chunk);

// Turns a stream of token bytes into complete UTF-8 characters: bytes of a
// character split across tokens are released once complete; invalid bytes
// become U+FFFD.
class Utf8Stream {
 public:
  // Appends bytes; returns the text that is complete now.
  std::string Push(std::string_view bytes);
  // Returns whatever is pending (an incomplete tail becomes U+FFFD).
  std::string Flush();

 private:
  std::string pending_;
};

}  // namespace micromoe::runtime
