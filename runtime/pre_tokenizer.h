// The pre-tokenizers of byte-level BPE vocabularies: text is cut into words,
// and merges never cross a word. Each tokenizer.ggml.pre value names the list
// of regexes llama.cpp runs for it; they are compiled once with PCRE2 and
// applied in turn, each re-splitting every piece the previous one left (its
// matches and the text between them each become a piece), as llama.cpp does.
//
// Thread-safety: a PreTokenizer is immutable after Create; Split is const and
// may be called from any thread.
#pragma once

#include <memory>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace micromoe::runtime {

class PreTokenizer {
 public:
  // The pre-tokenizer for a tokenizer.ggml.pre value: the GPT-2 regex ("gpt2",
  // "gpt-2", "olmo", "mpt", "jais", "phi-2", "roberta-bpe"), qwen2 ("qwen2",
  // "stablelm2", "deepseek-r1-qwen"), Llama 3 ("llama3", "llama-v3",
  // "llama-bpe") or refact ("refact", "starcoder", "command-r", "smollm",
  // "codeshell", "exaone", "minerva-7b"). InvalidArgument, naming `pre`, for
  // any other value; Internal, with PCRE2's message, if a pattern fails to compile.
  static absl::StatusOr<std::unique_ptr<PreTokenizer>> Create(std::string_view pre);

  ~PreTokenizer();
  PreTokenizer(const PreTokenizer&) = delete;
  PreTokenizer& operator=(const PreTokenizer&) = delete;

  // The words of `text`, in order: non-empty views into `text` that together
  // cover it exactly. Any bytes are accepted: an invalid UTF-8 byte counts as
  // U+FFFD (llama.cpp's decoding) but stays itself in the word.
  std::vector<std::string_view> Split(std::string_view text) const;

  // Whether a word that is itself a vocabulary token is taken whole, without
  // merges (llama.cpp's ignore_merges; true for Llama 3).
  bool ignore_merges() const { return ignore_merges_; }

 private:
  class Regex;  // one compiled PCRE2 pattern (pre_tokenizer.cc)

  PreTokenizer();

  std::vector<Regex> regexes_;  // applied in order
  bool ignore_merges_ = false;
};

}  // namespace micromoe::runtime
