// GGUF tensor types: ids as the format defines them and the block layout of
// each (elements per block, bytes per block). Data, not switches.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace micromoe::gguf {

enum class TensorType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kIQ4_NL = 20,
  kIQ4_XS = 23,
  kBF16 = 30,
};

struct TypeTraits {
  std::string_view name;
  uint32_t block_elements;  // elements per block (1 for plain floats)
  uint32_t block_bytes;     // bytes per block
};

// The layout of `id`, or nullptr when micromoe does not know the type. Unknown
// ids in a file are rejected before any table lookup indexes with them.
const TypeTraits* FindTypeTraits(uint32_t id);

// The name GGUF engines give a type id micromoe does not read (the IQ grid
// types, integer and F64 tensors), for messages; empty for an id no engine uses.
std::string_view UnreadableTypeName(uint32_t id);

// Name for messages; "type <id>" style text is produced by callers for unknown ids.
std::string_view TypeName(TensorType type);

}  // namespace micromoe::gguf
