// Text <-> token ids for the vocabularies GGUF files carry, matching
// llama.cpp's tokenizers token for token:
//  - "llama": SentencePiece BPE (score-ordered merges of UTF-8 characters,
//    spaces as U+2581, byte fallback to <0xXX> tokens);
//  - "gpt2": byte-level BPE (ranked merges over GPT-2's byte alphabet) within
//    the words of the pre-tokenizer tokenizer.ggml.pre names ("gpt2"/"olmo"/
//    "mpt"/"jais", "qwen2"/"stablelm2"/"deepseek-r1-qwen", "llama-bpe",
//    "refact"/"starcoder"/...; see pre_tokenizer.h).
//
// Thread-safety: a Tokenizer is immutable after FromGguf; every method is const
// and may be called from any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "gguf/gguf.h"
#include "runtime/pre_tokenizer.h"

namespace micromoe::runtime {

class Tokenizer {
 public:
  // Reads tokenizer.ggml.* from `file` and copies what it needs (the File may
  // be closed afterwards). InvalidArgument, naming the key, when the model type
  // or pre-tokenizer is unknown, an array is missing or has the wrong element
  // type, scores/token_type lengths differ from tokens, or a special id is out
  // of range.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromGguf(const gguf::File& file);

  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Token ids of `text`: BOS first when `add_bos` (and the vocabulary has one);
  // the text of special tokens (control and unknown tokens such as "<s>") is
  // parsed as those tokens only when `parse_special`; user-defined tokens are
  // always matched first, as llama.cpp does. Empty text gives [] or [BOS].
  // Any bytes are accepted: invalid UTF-8 is handled one byte at a time.
  std::vector<int32_t> Encode(std::string_view text, bool add_bos, bool parse_special) const;

  // The bytes token `id` stands for in output: <0xXX> byte tokens give that
  // byte, U+2581 becomes ' ' (llama), GPT-2 byte-level pieces are mapped back
  // to bytes (gpt2), user-defined tokens give their text, and control,
  // unknown and unused tokens (BOS/EOS...) give "". "" for ids out of range.
  std::string TokenToBytes(int32_t id) const;

  // Concatenated TokenToBytes of `ids`, less the one leading space that
  // Encode's space prefix put in front of the first text (llama models), so
  // that Decode(Encode(t, ...)) == t for text without special tokens.
  std::string Decode(std::span<const int32_t> ids) const;

  // The raw vocabulary string of `id`; "" for ids out of range.
  std::string_view Piece(int32_t id) const;

  int32_t n_vocab() const { return static_cast<int32_t>(pieces_.size()); }
  int32_t bos_id() const { return bos_id_; }  // -1 when the vocabulary has none
  int32_t eos_id() const { return eos_id_; }  // -1 when the vocabulary has none
  // Whether prompts for this model start with BOS (tokenizer.ggml.add_bos_token;
  // default true for llama, false for gpt2).
  bool add_bos() const { return add_bos_; }
  // True for EOS, EOT and EOM ids and for tokens llama.cpp treats as end of
  // generation by their text ("<|endoftext|>", "<|im_end|>", "<|eot_id|>", ...).
  bool IsEndOfGeneration(int32_t id) const;

 private:
  enum class Model : uint8_t { kLlama, kGpt2 };
  // Values of tokenizer.ggml.token_type.
  enum TokenType : uint8_t {
    kUndefined = 0, kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5,
    kByte = 6,
  };

  Tokenizer() = default;

  int32_t Find(std::string_view piece) const;  // -1 when not in the vocabulary
  int MergeRank(std::string_view left, std::string_view right, std::string* scratch) const;
  void EncodeSpm(std::string_view text, bool space_prefix, std::vector<int32_t>* out) const;
  void EncodeBpe(std::string_view text, std::vector<int32_t>* out) const;
  void BpeWord(std::string_view word, std::vector<int32_t>* out) const;

  Model model_ = Model::kLlama;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;  // gpt2 only
  std::vector<std::string> pieces_;  // never resized after FromGguf: piece_to_id_ views into it
  std::vector<float> scores_;
  std::vector<TokenType> types_;
  std::unordered_map<std::string_view, int32_t> piece_to_id_;  // the last id wins on duplicates
  // "left right" -> rank (index in tokenizer.ggml.merges); the first occurrence wins.
  std::unordered_map<std::string, int32_t> merge_ranks_;
  // Control, user-defined and unknown tokens, longest text first, for Encode's partition.
  std::vector<int32_t> special_ids_;
  std::vector<int32_t> byte_to_id_;  // llama: the token for each byte in byte fallback, -1 if none
  std::vector<int32_t> eog_ids_;     // sorted
  int32_t bos_id_ = -1;
  int32_t eos_id_ = -1;
  int32_t unk_id_ = -1;
  bool add_bos_ = false;
  bool add_space_prefix_ = false;
};

}  // namespace micromoe::runtime
