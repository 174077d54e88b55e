#include "gguf/types.h"

namespace micromoe::gguf {
namespace {

struct Entry {
  uint32_t id;
  TypeTraits traits;
};

// Block layouts from the GGUF specification (ggml-common.h block_* structs).
constexpr Entry kTypes[] = {
    {0, {"F32", 1, 4}},        {1, {"F16", 1, 2}},
    {2, {"Q4_0", 32, 18}},     {3, {"Q4_1", 32, 20}},
    {6, {"Q5_0", 32, 22}},     {7, {"Q5_1", 32, 24}},
    {8, {"Q8_0", 32, 34}},     {9, {"Q8_1", 32, 36}},
    {10, {"Q2_K", 256, 84}},   {11, {"Q3_K", 256, 110}},
    {12, {"Q4_K", 256, 144}},  {13, {"Q5_K", 256, 176}},
    {14, {"Q6_K", 256, 210}},  {15, {"Q8_K", 256, 292}},
    {20, {"IQ4_NL", 32, 18}},  {30, {"BF16", 1, 2}},
};

}  // namespace

const TypeTraits* FindTypeTraits(uint32_t id) {
  for (const Entry& e : kTypes) {
    if (e.id == id) return &e.traits;
  }
  return nullptr;
}

std::string_view TypeName(TensorType type) {
  const TypeTraits* t = FindTypeTraits(static_cast<uint32_t>(type));
  return t ? t->name : std::string_view("unknown");
}

}  // namespace micromoe::gguf
