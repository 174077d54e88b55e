#include "runtime/pre_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <array>
#include <new>
#include <span>
#include <string>
#include <utility>

#include "base/str_cat.h"
#include "runtime/unicode.h"

namespace micromoe::runtime {
namespace {

struct CodeFree {
  void operator()(pcre2_code* code) const { pcre2_code_free(code); }
};
struct MatchDataFree {
  void operator()(pcre2_match_data* data) const { pcre2_match_data_free(data); }
};
using CodePtr = std::unique_ptr<pcre2_code, CodeFree>;
using MatchDataPtr = std::unique_ptr<pcre2_match_data, MatchDataFree>;

// The regexes, exactly as llama.cpp's llama-vocab.cpp lists them.
//
// GPT-2 (tokenizer.json's pattern ends in "|\s+"; llama.cpp drops it, since a
// lone white-space character that nothing matches becomes a piece anyway).
constexpr std::string_view kGpt2 =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S))";
// Llama 3 and qwen2 ("(?i:'s|...)" in tokenizer.json, spelled out so that the
// long s U+017F does not match 's' as a caseless UTF-8 match would).
constexpr std::string_view kLlama3 =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwen2 =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// refact and friends: each digit alone first.
constexpr std::string_view kDigit = R"(\p{N})";

constexpr size_t kReplacementLength = 3;  // bytes of U+FFFD in UTF-8

// \s as llama.cpp's tables mean it (Unicode White_Space): PCRE2's \s also
// takes U+180E, a format character since Unicode 6.3. Class bodies, without brackets.
constexpr std::string_view kAsciiSpace = R"(\t-\r )";
constexpr std::string_view kOtherSpace =
    R"(\x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000})";

// A replacement of one piece of pattern syntax.
struct Spelling {
  std::string_view from;
  std::string to;
};

// The regexes' classes as llama.cpp's own splitters see them (GPT-2 and
// Llama 3 have hand-written ones): \p{L} and \p{N} as Unicode has them, \s
// as above.
std::vector<Spelling> UnicodeClasses() {
  const std::string space = StrCat(kAsciiSpace, kOtherSpace);
  return {
      {R"([^\s\p{L}\p{N}])", StrCat("[^", space, R"(\p{L}\p{N}])")},
      {R"(\s)", StrCat("[", space, "]")},
      {R"(\S)", StrCat("[^", space, "]")},
  };
}

// llama.cpp runs the qwen2 regex through std::regex on a "collapsed" text in
// which each non-ASCII code point stands for its class: numbers and
// punctuation keep theirs, white space becomes \v, and everything else
// (symbols, marks, unassigned...) counts as a letter. These are the same
// classes over the real text; ASCII is as Unicode has it.
std::vector<Spelling> Qwen2Classes() {
  constexpr std::string_view kAsciiNotLetters = R"(\x00-@\[-`{-\x7F)";
  return {
      // not white space, letter or number: ASCII punctuation, symbols and
      // controls, and non-ASCII punctuation
      {R"([^\s\p{L}\p{N}])", R"([\x00-\x08\x0E-\x1F!-/:-@\[-`{-\x7F\p{P}])"},
      // not CR, LF, letter or number: the above, and all other white space
      {R"([^\r\n\p{L}\p{N}])",
       StrCat(R"([\x00-\x09\x0B\x0C\x0E-\x1F -/:-@\[-`{-\x7F)", kOtherSpace, R"(\p{P}])")},
      // ASCII letters, and non-ASCII that is not white space, number or punctuation
      {R"(\p{L})", StrCat("[^", kAsciiNotLetters, kAsciiSpace, kOtherSpace, R"(\p{N}\p{P}])")},
      {R"(\s)", StrCat("[", kAsciiSpace, kOtherSpace, "]")},
      {R"(\S)", StrCat("[^", kAsciiSpace, kOtherSpace, "]")},
  };
}

// `pattern` with each `from` (the first that matches at a position, so list
// whole bracket classes before the escapes they contain) replaced by its `to`.
std::string Respell(std::string_view pattern, std::span<const Spelling> spellings) {
  std::string out;
  for (size_t i = 0; i < pattern.size();) {
    const Spelling* hit = nullptr;
    for (const Spelling& s : spellings) {
      if (pattern.substr(i).starts_with(s.from)) {
        hit = &s;
        break;
      }
    }
    if (hit != nullptr) {
      out += hit->to;
      i += hit->from.size();
      continue;
    }
    const size_t n = (pattern[i] == '\\' && i + 1 < pattern.size()) ? 2 : 1;  // escapes stay whole
    out.append(pattern.substr(i, n));
    i += n;
  }
  return out;
}

// Whether DecodeUtf8 accepts every character of `text` (the same rules as
// PCRE2's: no overlong forms, surrogates, code points past U+10FFFF or
// truncated sequences).
bool IsValidUtf8(std::string_view text) {
  for (size_t pos = 0; pos < text.size();) {
    const Utf8Char ch = DecodeUtf8(text, pos);
    if (!ch.valid) return false;
    pos += ch.len;
  }
  return true;
}

}  // namespace

class PreTokenizer::Regex {
 public:
  static absl::StatusOr<Regex> Compile(std::string_view name, std::string_view pattern) {
    int error = 0;
    PCRE2_SIZE offset = 0;
    // PCRE2_UCP: \p{..}, \s and caseless matching by Unicode properties.
    // PCRE2_MATCH_INVALID_UTF: any bytes may be matched without UB (Split
    // hands over valid UTF-8; this is the guard should that ever fail).
    CodePtr code(pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                               PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &error, &offset,
                               nullptr));
    if (code == nullptr) {
      std::array<PCRE2_UCHAR, 256> message{};
      pcre2_get_error_message(error, message.data(), message.size());
      return absl::InternalError(StrCat("tokenizer: PCRE2 rejects the ", name,
                                        " pre-tokenizer regex at offset ", offset, ": ",
                                        reinterpret_cast<const char*>(message.data()),
                                        " (pattern: ", pattern, ")"));
    }
    // Without JIT (PCRE2 built without it, or no executable memory) the
    // interpreter gives the same matches, only slower.
    pcre2_jit_compile(code.get(), PCRE2_JIT_COMPLETE);
    return Regex(std::move(code));
  }

  // Appends to `ends` the end offset of each piece that [begin, end) of
  // `text` splits into: each match, and each stretch between matches.
  void Split(std::string_view text, size_t begin, size_t end, pcre2_match_data* match,
             std::vector<size_t>* ends) const {
    // The piece is the whole subject: lookaheads such as (?!\S) see its end
    // as the end of text, as llama.cpp's per-piece matching does.
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data() + begin);
    const size_t length = end - begin;
    size_t done = 0;  // the piece is split up to here
    size_t from = 0;  // where the next search starts
    while (from < length) {
      int rc = pcre2_match(code_.get(), subject, length, from, 0, match, nullptr);
      if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
        // The interpreter keeps its backtracking state on the heap instead.
        rc = pcre2_match(code_.get(), subject, length, from, PCRE2_NO_JIT, match, nullptr);
      }
      if (rc < 0) break;  // no further match (or a resource limit): the rest is one piece
      const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match);
      const size_t match_begin = ovector[0];
      const size_t match_end = ovector[1];
      if (match_end == match_begin) {
        // No pattern here matches empty text; step over a character to be safe.
        if (match_begin >= length) break;
        from = match_begin + DecodeUtf8(text, begin + match_begin).len;
        continue;
      }
      if (match_begin > done) ends->push_back(begin + match_begin);
      ends->push_back(begin + match_end);
      done = from = match_end;
    }
    if (done < length) ends->push_back(end);
  }

 private:
  explicit Regex(CodePtr code) : code_(std::move(code)) {}

  CodePtr code_;
};

PreTokenizer::PreTokenizer() = default;
PreTokenizer::~PreTokenizer() = default;

absl::StatusOr<std::unique_ptr<PreTokenizer>> PreTokenizer::Create(std::string_view pre) {
  enum class Kind { kNone, kGpt2, kQwen2, kLlama3, kRefact };
  static constexpr std::pair<std::string_view, Kind> kNames[] = {
      {"gpt-2", Kind::kGpt2},        {"gpt2", Kind::kGpt2},
      {"olmo", Kind::kGpt2},         {"mpt", Kind::kGpt2},
      {"jais", Kind::kGpt2},         {"phi-2", Kind::kGpt2},
      {"roberta-bpe", Kind::kGpt2},  {"qwen2", Kind::kQwen2},
      {"stablelm2", Kind::kQwen2},   {"deepseek-r1-qwen", Kind::kQwen2},
      {"llama3", Kind::kLlama3},     {"llama-v3", Kind::kLlama3},
      {"llama-bpe", Kind::kLlama3},
      {"refact", Kind::kRefact},     {"starcoder", Kind::kRefact},
      {"command-r", Kind::kRefact},  {"smollm", Kind::kRefact},
      {"codeshell", Kind::kRefact},  {"exaone", Kind::kRefact},
      {"minerva-7b", Kind::kRefact},
  };
  Kind kind = Kind::kNone;
  for (const auto& [name, k] : kNames) {
    if (pre == name) kind = k;
  }
  if (kind == Kind::kNone) {
    return absl::InvalidArgumentError(StrCat(
        "tokenizer: unsupported tokenizer.ggml.pre '", pre,
        "' (supported: the gpt2 regex (gpt-2, olmo, mpt, jais, ...), qwen2, llama3 (llama-bpe), refact)"));
  }

  const std::vector<Spelling> unicode = UnicodeClasses();
  std::vector<std::pair<std::string_view, std::string>> patterns;  // name, PCRE2 pattern
  switch (kind) {
    case Kind::kGpt2:
      patterns.emplace_back("gpt2", Respell(kGpt2, unicode));
      break;
    case Kind::kQwen2:
      patterns.emplace_back("qwen2", Respell(kQwen2, Qwen2Classes()));
      break;
    case Kind::kLlama3:
      patterns.emplace_back("llama3", Respell(kLlama3, unicode));
      break;
    case Kind::kRefact:
      patterns.emplace_back("refact digit", std::string(kDigit));
      patterns.emplace_back("gpt2", Respell(kGpt2, unicode));
      break;
    case Kind::kNone:
      break;
  }

  std::unique_ptr<PreTokenizer> p(new PreTokenizer());
  p->ignore_merges_ = kind == Kind::kLlama3;
  for (const auto& [name, pattern] : patterns) {
    auto regex = Regex::Compile(name, pattern);
    if (!regex.ok()) return regex.status();
    p->regexes_.push_back(std::move(*regex));
  }
  return p;
}

std::vector<std::string_view> PreTokenizer::Split(std::string_view text) const {
  if (text.empty()) return {};

  // llama.cpp decodes each invalid byte as U+FFFD, and that is what the
  // regexes see: match a copy in which it is, and map offsets back.
  const bool valid = IsValidUtf8(text);
  std::string clean;
  if (!valid) {
    clean.reserve(text.size() + 16);
    for (size_t pos = 0; pos < text.size();) {
      const Utf8Char ch = DecodeUtf8(text, pos);
      if (ch.valid) {
        clean.append(text, pos, ch.len);
      } else {
        AppendUtf8(kReplacementCharacter, &clean);
      }
      pos += ch.len;
    }
  }
  const std::string_view subject = valid ? text : std::string_view(clean);

  MatchDataPtr match(pcre2_match_data_create(1, nullptr));
  if (match == nullptr) throw std::bad_alloc();
  std::vector<size_t> ends = {subject.size()};
  std::vector<size_t> next;
  for (const Regex& regex : regexes_) {
    next.clear();
    size_t begin = 0;
    for (const size_t end : ends) {
      regex.Split(subject, begin, end, match.get(), &next);
      begin = end;
    }
    ends.swap(next);
  }

  std::vector<std::string_view> words;
  words.reserve(ends.size());
  size_t begin = 0;      // in `text`
  size_t pos = 0;        // in `text`, in step with...
  size_t clean_pos = 0;  // ...this offset in `subject`
  for (const size_t end : ends) {
    if (valid) {
      pos = end;
    } else {
      while (clean_pos < end) {  // ends fall between characters of both
        const Utf8Char ch = DecodeUtf8(text, pos);
        clean_pos += ch.valid ? ch.len : kReplacementLength;
        pos += ch.len;
      }
    }
    words.push_back(text.substr(begin, pos - begin));
    begin = pos;
  }
  return words;
}

}  // namespace micromoe::runtime
