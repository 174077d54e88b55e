#include "gguf/types.h"

#include <utility>

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
    {20, {"IQ4_NL", 32, 18}},  {23, {"IQ4_XS", 256, 136}},
    {30, {"BF16", 1, 2}},
};

// ggml's other type ids (ggml.h enum ggml_type).
constexpr std::pair<uint32_t, std::string_view> kUnreadable[] = {
    {16, "IQ2_XXS"}, {17, "IQ2_XS"}, {18, "IQ3_XXS"}, {19, "IQ1_S"}, {21, "IQ3_S"}, {22, "IQ2_S"},
    {24, "I8"},      {25, "I16"},    {26, "I32"},     {27, "I64"},   {28, "F64"},   {29, "IQ1_M"},
    {34, "TQ1_0"},   {35, "TQ2_0"},  {39, "MXFP4"},   {40, "NVFP4"}, {41, "Q1_0"},  {42, "Q2_0"},
};

}  // namespace

std::string_view UnreadableTypeName(uint32_t id) {
  for (const auto& [known, name] : kUnreadable) {
    if (known == id) return name;
  }
  return {};
}

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
