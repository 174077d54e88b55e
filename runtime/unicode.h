// Unicode helpers for the tokenizer: a UTF-8 decoder that never fails, and
// GPT-2's byte <-> code point table. (Character classes are PCRE2's: see
// pre_tokenizer.h.)
//
// Thread-safety: all functions are pure and may be called from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace micromoe::runtime {

inline constexpr uint32_t kReplacementCharacter = 0xFFFD;

struct Utf8Char {
  uint32_t cp = 0;     // the code point; kReplacementCharacter when !valid
  uint32_t len = 1;    // bytes consumed, 1..4
  bool valid = false;  // false: a malformed, overlong, surrogate or truncated sequence
};

// Decodes the character starting at text[pos]; needs pos < text.size(). A bad
// sequence consumes exactly one byte, so every input splits into characters.
Utf8Char DecodeUtf8(std::string_view text, size_t pos);

// Appends the UTF-8 encoding of `cp` (cp <= 0x10FFFF) to `out`.
void AppendUtf8(uint32_t cp, std::string* out);

// GPT-2's bytes_to_unicode(): printable bytes map to themselves, the other 68
// bytes to U+0100 onwards in byte order (so ' ' becomes U+0120 'Ġ').
uint32_t ByteToGpt2Codepoint(uint8_t byte);
// The inverse; -1 when `cp` is not the image of any byte.
int Gpt2CodepointToByte(uint32_t cp);

}  // namespace micromoe::runtime
