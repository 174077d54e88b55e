#include "runtime/unicode.h"

#include <array>

namespace micromoe::runtime {
namespace {

// bytes_to_unicode() as a table, built at compile time.
struct Gpt2ByteTable {
  std::array<uint16_t, 256> to_cp{};
  std::array<int16_t, 324> to_byte{};  // indexed by code point; every image is < 324
};

constexpr bool IsGpt2Printable(int b) {
  return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

constexpr Gpt2ByteTable MakeGpt2ByteTable() {
  Gpt2ByteTable t;
  for (auto& v : t.to_byte) v = -1;
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    const int cp = IsGpt2Printable(b) ? b : next++;
    t.to_cp[b] = static_cast<uint16_t>(cp);
    t.to_byte[cp] = static_cast<int16_t>(b);
  }
  return t;
}

constexpr Gpt2ByteTable kGpt2Bytes = MakeGpt2ByteTable();

}  // namespace

Utf8Char DecodeUtf8(std::string_view text, size_t pos) {
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(text[i]); };
  const uint8_t b0 = byte(pos);
  if (b0 < 0x80) return {b0, 1, true};
  uint32_t len;
  uint32_t cp;
  uint32_t min_cp;
  if ((b0 & 0xE0) == 0xC0) {
    len = 2; cp = b0 & 0x1F; min_cp = 0x80;
  } else if ((b0 & 0xF0) == 0xE0) {
    len = 3; cp = b0 & 0x0F; min_cp = 0x800;
  } else if ((b0 & 0xF8) == 0xF0) {
    len = 4; cp = b0 & 0x07; min_cp = 0x10000;
  } else {
    return {kReplacementCharacter, 1, false};  // a stray continuation byte or 0xF8..0xFF
  }
  if (len > text.size() - pos) return {kReplacementCharacter, 1, false};
  for (uint32_t i = 1; i < len; ++i) {
    const uint8_t b = byte(pos + i);
    if ((b & 0xC0) != 0x80) return {kReplacementCharacter, 1, false};
    cp = (cp << 6) | (b & 0x3F);
  }
  if (cp < min_cp || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
    return {kReplacementCharacter, 1, false};
  }
  return {cp, len, true};
}

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

uint32_t ByteToGpt2Codepoint(uint8_t byte) { return kGpt2Bytes.to_cp[byte]; }

int Gpt2CodepointToByte(uint32_t cp) {
  return cp < kGpt2Bytes.to_byte.size() ? kGpt2Bytes.to_byte[cp] : -1;
}

}  // namespace micromoe::runtime
