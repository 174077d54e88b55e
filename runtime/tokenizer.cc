#include "runtime/tokenizer.h"

#include <algorithm>
#include <array>
#include <limits>
#include <optional>
#include <queue>

#include "base/str_cat.h"
#include "runtime/unicode.h"

namespace micromoe::runtime {
namespace {

constexpr std::string_view kSpaceMark = "\xE2\x96\x81";  // U+2581, SentencePiece's space

bool IsNumeric(gguf::ValueType t) {
  switch (t) {
    case gguf::ValueType::kBool: case gguf::ValueType::kString: case gguf::ValueType::kArray:
      return false;
    default:
      return static_cast<uint32_t>(t) <= static_cast<uint32_t>(gguf::ValueType::kF64);
  }
}

// The numeric array under `key`, or null when absent; an error when it is not
// a numeric array of `n` elements.
absl::StatusOr<const gguf::Value*> NumericArray(const gguf::File& file, std::string_view key,
                                                uint64_t n) {
  const gguf::Value* v = file.Find(key);
  if (v == nullptr) return v;
  if (v->type != gguf::ValueType::kArray || !IsNumeric(v->array_type)) {
    return absl::InvalidArgumentError(StrCat("tokenizer: '", key, "' must be a numeric array"));
  }
  if (v->array_count != n) {
    return absl::InvalidArgumentError(StrCat("tokenizer: '", key, "' has ", v->array_count,
                                             " entries but tokenizer.ggml.tokens has ", n));
  }
  return v;
}

// Reads an optional token id; `id` keeps its value when the key is absent.
absl::Status ReadTokenId(const gguf::File& file, std::string_view key, size_t n_vocab,
                         int32_t* id) {
  if (file.Find(key) == nullptr) return absl::OkStatus();
  auto v = file.GetUint(key);
  if (!v.ok()) return v.status();
  if (*v >= n_vocab) {
    return absl::InvalidArgumentError(
        StrCat("tokenizer: '", key, "' = ", *v, " is out of range for ", n_vocab, " tokens"));
  }
  *id = static_cast<int32_t>(*v);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromGguf(const gguf::File& file) {
  std::unique_ptr<Tokenizer> t(new Tokenizer());

  auto model = file.GetString("tokenizer.ggml.model");
  if (!model.ok()) return model.status();
  if (*model == "llama") {
    t->model_ = Model::kLlama;
  } else if (*model == "gpt2") {
    t->model_ = Model::kGpt2;
  } else {
    return absl::InvalidArgumentError(StrCat("tokenizer: unsupported tokenizer.ggml.model '",
                                             *model, "' (supported: llama, gpt2)"));
  }
  const bool llama = t->model_ == Model::kLlama;

  const gguf::Value* tokens = file.Find("tokenizer.ggml.tokens");
  if (tokens == nullptr || tokens->type != gguf::ValueType::kArray ||
      tokens->array_type != gguf::ValueType::kString) {
    return absl::InvalidArgumentError("tokenizer: 'tokenizer.ggml.tokens' must be a string array");
  }
  const size_t n = tokens->strings.size();
  if (n == 0 || n != tokens->array_count ||
      n > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return absl::InvalidArgumentError(
        StrCat("tokenizer: 'tokenizer.ggml.tokens' has a bad size ", tokens->array_count));
  }
  auto scores = NumericArray(file, "tokenizer.ggml.scores", n);
  if (!scores.ok()) return scores.status();
  auto types = NumericArray(file, "tokenizer.ggml.token_type", n);
  if (!types.ok()) return types.status();

  t->pieces_.reserve(n);
  t->scores_.resize(n, 0.0f);
  t->types_.resize(n, kNormal);
  for (size_t i = 0; i < n; ++i) {
    t->pieces_.emplace_back(tokens->strings[i]);
    if (*scores) t->scores_[i] = static_cast<float>(gguf::ArrayElementAsDouble(**scores, i));
    if (*types) {
      const int64_t type = gguf::ArrayElementAsInt(**types, i);
      t->types_[i] = (type >= kNormal && type <= kByte) ? static_cast<TokenType>(type) : kUndefined;
    }
  }
  // pieces_ is complete: views into it stay valid from here on.
  t->piece_to_id_.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    if (!t->pieces_[i].empty()) t->piece_to_id_[t->pieces_[i]] = static_cast<int32_t>(i);
  }

  if (llama) {
    // SentencePiece defaults, kept only where the vocabulary is large enough.
    t->bos_id_ = n > 1 ? 1 : -1;
    t->eos_id_ = n > 2 ? 2 : -1;
    t->unk_id_ = 0;
  }
  int32_t eot_id = -1;
  int32_t eom_id = -1;
  const std::pair<std::string_view, int32_t*> kIds[] = {
      {"tokenizer.ggml.bos_token_id", &t->bos_id_},
      {"tokenizer.ggml.eos_token_id", &t->eos_id_},
      {"tokenizer.ggml.unknown_token_id", &t->unk_id_},
      {"tokenizer.ggml.eot_token_id", &eot_id},
      {"tokenizer.ggml.eom_token_id", &eom_id},
  };
  for (const auto& [key, id] : kIds) {
    if (auto s = ReadTokenId(file, key, n, id); !s.ok()) return s;
  }

  auto add_bos = file.GetBoolOr("tokenizer.ggml.add_bos_token", llama);
  if (!add_bos.ok()) return add_bos.status();
  t->add_bos_ = *add_bos && t->bos_id_ >= 0;
  auto space_prefix = file.GetBoolOr("tokenizer.ggml.add_space_prefix", llama);
  if (!space_prefix.ok()) return space_prefix.status();
  t->add_space_prefix_ = llama && *space_prefix;

  if (!llama) {
    auto pre = file.GetString("tokenizer.ggml.pre");
    if (!pre.ok()) return pre.status();
    auto pre_tokenizer = PreTokenizer::Create(*pre);
    if (!pre_tokenizer.ok()) return pre_tokenizer.status();
    t->pre_tokenizer_ = std::move(*pre_tokenizer);
    const gguf::Value* merges = file.Find("tokenizer.ggml.merges");
    if (merges == nullptr || merges->type != gguf::ValueType::kArray ||
        merges->array_type != gguf::ValueType::kString) {
      return absl::InvalidArgumentError(
          "tokenizer: 'tokenizer.ggml.merges' must be a string array");
    }
    t->merge_ranks_.reserve(merges->strings.size());
    for (size_t i = 0; i < merges->strings.size(); ++i) {
      const std::string_view m = merges->strings[i];
      // "left right", split at the first space after the first byte (llama.cpp's rule).
      if (m.size() < 3 || m.find(' ', 1) == std::string_view::npos) continue;
      t->merge_ranks_.emplace(std::string(m), static_cast<int32_t>(i));
    }
  }

  // End of generation: the special ids, and the tokens llama.cpp recognises by
  // their text (which it also forces to control type).
  for (int32_t id : {t->eos_id_, eot_id, eom_id}) {
    if (id >= 0) t->eog_ids_.push_back(id);
  }
  static constexpr std::string_view kEogTexts[] = {
      "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>",
      "<EOT>", "<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>",  // DeepSeek
  };
  for (const std::string_view text : kEogTexts) {
    const int32_t id = t->Find(text);
    if (id < 0) continue;
    t->eog_ids_.push_back(id);
    t->types_[id] = kControl;
  }
  std::sort(t->eog_ids_.begin(), t->eog_ids_.end());
  t->eog_ids_.erase(std::unique(t->eog_ids_.begin(), t->eog_ids_.end()), t->eog_ids_.end());

  for (size_t i = 0; i < n; ++i) {
    const TokenType type = t->types_[i];
    if ((type == kControl || type == kUserDefined || type == kUnknown) && !t->pieces_[i].empty()) {
      t->special_ids_.push_back(static_cast<int32_t>(i));
    }
  }
  std::stable_sort(t->special_ids_.begin(), t->special_ids_.end(), [&](int32_t a, int32_t b) {
    return t->pieces_[a].size() > t->pieces_[b].size();
  });

  if (llama) {
    t->byte_to_id_.assign(256, -1);
    static constexpr char kHex[] = "0123456789ABCDEF";
    for (int b = 0; b < 256; ++b) {
      const char name[] = {'<', '0', 'x', kHex[b >> 4], kHex[b & 15], '>'};
      int32_t id = t->Find(std::string_view(name, sizeof(name)));
      if (id < 0) id = t->Find(std::string_view(std::string(1, static_cast<char>(b))));
      t->byte_to_id_[b] = id >= 0 ? id : t->unk_id_;
    }
  }
  return t;
}

int32_t Tokenizer::Find(std::string_view piece) const {
  const auto it = piece_to_id_.find(piece);
  return it == piece_to_id_.end() ? -1 : it->second;
}

int Tokenizer::MergeRank(std::string_view left, std::string_view right,
                         std::string* scratch) const {
  scratch->assign(left);
  scratch->push_back(' ');
  scratch->append(right);
  const auto it = merge_ranks_.find(*scratch);
  return it == merge_ranks_.end() ? -1 : it->second;
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text, bool add_bos,
                                       bool parse_special) const {
  std::vector<int32_t> out;
  if (add_bos && bos_id_ >= 0) out.push_back(bos_id_);
  if (text.empty()) return out;

  // Cut the text at special tokens, longest first, as llama.cpp does.
  struct Fragment {
    size_t offset = 0;
    size_t length = 0;
    int32_t token = -1;  // -1: raw text
  };
  std::vector<Fragment> fragments = {{0, text.size(), -1}};
  std::vector<Fragment> next;
  for (const int32_t id : special_ids_) {
    if (!parse_special && (types_[id] == kControl || types_[id] == kUnknown)) continue;
    const std::string_view special = pieces_[id];
    bool found = false;
    for (const Fragment& f : fragments) {
      if (f.token < 0 && text.substr(f.offset, f.length).find(special) != std::string_view::npos) {
        found = true;
        break;
      }
    }
    if (!found) continue;
    next.clear();
    for (const Fragment& f : fragments) {
      if (f.token >= 0) {
        next.push_back(f);
        continue;
      }
      const std::string_view raw = text.substr(f.offset, f.length);
      size_t pos = 0;
      for (size_t m; (m = raw.find(special, pos)) != std::string_view::npos;) {
        if (m > pos) next.push_back({f.offset + pos, m - pos, -1});
        next.push_back({0, 0, id});
        pos = m + special.size();
      }
      if (pos < raw.size()) next.push_back({f.offset + pos, raw.size() - pos, -1});
    }
    fragments.swap(next);
  }

  bool prev_special = true;  // SentencePiece prefixes a space to text after a special token
  for (const Fragment& f : fragments) {
    if (f.token >= 0) {
      out.push_back(f.token);
      prev_special = true;
      continue;
    }
    const std::string_view raw = text.substr(f.offset, f.length);
    if (model_ == Model::kLlama) {
      EncodeSpm(raw, add_space_prefix_ && prev_special, &out);
    } else {
      EncodeBpe(raw, &out);
    }
    prev_special = false;
  }
  return out;
}

namespace {

// A run of bytes in the text being merged; symbols form a linked list.
struct Symbol {
  int32_t prev;
  int32_t next;
  size_t start;
  size_t n;  // 0 once merged into its left neighbour
};

// Links `syms` into a list and cuts `text` into characters (bad bytes alone).
void SplitCharacters(std::string_view text, std::vector<Symbol>* syms) {
  syms->clear();
  for (size_t pos = 0; pos < text.size();) {
    const size_t len = DecodeUtf8(text, pos).len;
    const int32_t index = static_cast<int32_t>(syms->size());
    syms->push_back({index - 1, index + 1, pos, len});
    pos += len;
  }
  if (!syms->empty()) syms->back().next = -1;
}

// Merges the right symbol of a bigram into the left one.
void MergeInto(std::vector<Symbol>& syms, int32_t left, int32_t right) {
  syms[left].n += syms[right].n;
  syms[right].n = 0;
  syms[left].next = syms[right].next;
  if (syms[right].next >= 0) syms[syms[right].next].prev = left;
}

// Merges adjacent symbols greedily, the pair with the highest priority first
// (ties: the leftmost pair), until no adjacent pair can merge.
// priority(left, right) gives std::nullopt for a pair that cannot merge.
template <typename Priority>
void MergeGreedily(std::vector<Symbol>& syms, Priority priority) {
  struct Bigram {
    double priority;
    int32_t left;
    int32_t right;
    size_t size;
  };
  const auto worse = [](const Bigram& a, const Bigram& b) {
    return a.priority < b.priority || (a.priority == b.priority && a.left > b.left);
  };
  std::priority_queue<Bigram, std::vector<Bigram>, decltype(worse)> queue(worse);
  const auto try_add = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    if (const std::optional<double> p = priority(left, right)) {
      queue.push({*p, left, right, syms[left].n + syms[right].n});
    }
  };
  for (int32_t i = 1; i < static_cast<int32_t>(syms.size()); ++i) try_add(i - 1, i);
  while (!queue.empty()) {
    const Bigram b = queue.top();
    queue.pop();
    const Symbol& l = syms[b.left];
    const Symbol& r = syms[b.right];
    if (l.n == 0 || r.n == 0 || l.n + r.n != b.size) continue;  // stale
    MergeInto(syms, b.left, b.right);
    try_add(syms[b.left].prev, b.left);
    try_add(b.left, syms[b.left].next);
  }
}

}  // namespace

void Tokenizer::EncodeSpm(std::string_view raw, bool space_prefix,
                          std::vector<int32_t>* out) const {
  std::string text;
  text.reserve(raw.size() + 8);
  if (space_prefix) text += kSpaceMark;
  for (const char c : raw) {
    if (c == ' ') {
      text += kSpaceMark;
    } else {
      text += c;
    }
  }
  std::vector<Symbol> syms;
  SplitCharacters(text, &syms);
  if (syms.empty()) return;

  // Highest vocabulary score first.
  MergeGreedily(syms, [&](int32_t left, int32_t right) -> std::optional<double> {
    const std::string_view pair(text.data() + syms[left].start, syms[left].n + syms[right].n);
    const int32_t id = Find(pair);
    if (id < 0) return std::nullopt;
    return scores_[id];
  });
  for (int32_t i = 0; i != -1; i = syms[i].next) {
    const std::string_view piece(text.data() + syms[i].start, syms[i].n);
    const int32_t id = Find(piece);
    if (id >= 0) {
      out->push_back(id);
      continue;
    }
    // Only single characters can be unknown (merges always form tokens): byte fallback.
    for (const char c : piece) {
      const int32_t byte_id = byte_to_id_[static_cast<uint8_t>(c)];
      if (byte_id >= 0) out->push_back(byte_id);
    }
  }
}

void Tokenizer::EncodeBpe(std::string_view text, std::vector<int32_t>* out) const {
  for (const std::string_view word : pre_tokenizer_->Split(text)) BpeWord(word, out);
}

void Tokenizer::BpeWord(std::string_view word, std::vector<int32_t>* out) const {
  // Work on the word spelled in GPT-2's byte alphabet: one character per byte.
  std::string text;
  text.reserve(word.size() * 2);
  for (const char c : word) AppendUtf8(ByteToGpt2Codepoint(static_cast<uint8_t>(c)), &text);
  // Llama 3 vocabularies take a whole word that is a token as is, without
  // merging (llama.cpp's ignore_merges).
  if (pre_tokenizer_->ignore_merges()) {
    if (const int32_t id = Find(text); id >= 0) {
      out->push_back(id);
      return;
    }
  }
  std::vector<Symbol> syms;
  SplitCharacters(text, &syms);
  if (syms.empty()) return;

  // Lowest merge rank first.
  std::string scratch;
  MergeGreedily(syms, [&](int32_t left, int32_t right) -> std::optional<double> {
    const std::string_view l(text.data() + syms[left].start, syms[left].n);
    const std::string_view r(text.data() + syms[right].start, syms[right].n);
    const int rank = MergeRank(l, r, &scratch);
    if (rank < 0) return std::nullopt;
    return -static_cast<double>(rank);
  });
  for (int32_t i = 0; i != -1; i = syms[i].next) {
    const std::string_view piece(text.data() + syms[i].start, syms[i].n);
    const int32_t id = Find(piece);
    if (id >= 0) {
      out->push_back(id);
      continue;
    }
    // As llama.cpp: fall back to single-byte tokens of the spelled piece, where they exist.
    for (size_t j = 0; j < piece.size(); ++j) {
      const int32_t byte_id = Find(piece.substr(j, 1));
      if (byte_id >= 0) out->push_back(byte_id);
    }
  }
}

std::string Tokenizer::TokenToBytes(int32_t id) const {
  if (id < 0 || id >= n_vocab()) return "";
  const std::string& piece = pieces_[id];
  const TokenType type = types_[id];
  if (type == kUserDefined) return piece;
  if (type != kNormal && type != kByte) return "";  // control, unknown, unused, undefined
  std::string out;
  if (model_ == Model::kLlama) {
    if (type == kByte) {
      // "<0xXX>"
      unsigned value = 0;
      bool ok = piece.size() == 6 && piece.compare(0, 3, "<0x") == 0 && piece[5] == '>';
      for (size_t i = 3; ok && i < 5; ++i) {
        const char c = piece[i];
        const int digit = (c >= '0' && c <= '9') ? c - '0'
                          : (c >= 'A' && c <= 'F') ? c - 'A' + 10
                          : (c >= 'a' && c <= 'f') ? c - 'a' + 10
                                                   : -1;
        ok = digit >= 0;
        value = value * 16 + static_cast<unsigned>(digit);
      }
      return ok ? std::string(1, static_cast<char>(value)) : piece;
    }
    out.reserve(piece.size());
    for (size_t pos = 0; pos < piece.size();) {
      if (piece.compare(pos, kSpaceMark.size(), kSpaceMark) == 0) {
        out.push_back(' ');
        pos += kSpaceMark.size();
      } else {
        out.push_back(piece[pos++]);
      }
    }
    return out;
  }
  // GPT-2 byte-level: each character is one byte; others are kept as they are.
  for (size_t pos = 0; pos < piece.size();) {
    const Utf8Char ch = DecodeUtf8(piece, pos);
    const int byte = ch.valid ? Gpt2CodepointToByte(ch.cp) : -1;
    if (byte >= 0) {
      out.push_back(static_cast<char>(byte));
    } else {
      out.append(piece, pos, ch.len);
    }
    pos += ch.len;
  }
  return out;
}

std::string Tokenizer::Decode(std::span<const int32_t> ids) const {
  std::string out;
  bool strip_space = model_ == Model::kLlama && add_space_prefix_;
  for (const int32_t id : ids) {
    std::string bytes = TokenToBytes(id);
    if (strip_space && !bytes.empty()) {
      if (bytes[0] == ' ') bytes.erase(0, 1);
      strip_space = false;
    }
    out += bytes;
  }
  return out;
}

std::string_view Tokenizer::Piece(int32_t id) const {
  if (id < 0 || id >= n_vocab()) return {};
  return pieces_[id];
}

bool Tokenizer::IsEndOfGeneration(int32_t id) const {
  return std::binary_search(eog_ids_.begin(), eog_ids_.end(), id);
}

}  // namespace micromoe::runtime
