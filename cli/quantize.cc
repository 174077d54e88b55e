#include "cli/quantize.h"

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <cstdio>
#include <map>
#include <vector>

#include "base/str_cat.h"
#include "gguf/gguf.h"
#include "gguf/writer.h"
#include "kernels/kernels.h"
#include "kernels/quantize.h"
#include "runtime/model.h"

namespace micromoe::cli {
namespace {

using gguf::TensorType;

struct TypeName {
  const char* name;
  TensorType type;
  uint32_t file_type;  // general.file_type as GGUF engines number it
};

// K-quant file types as the "mostly" (_S) variants: those name files whose
// matrices are all of the one type.
constexpr TypeName kTypes[] = {
    {"f32", TensorType::kF32, 0},   {"f16", TensorType::kF16, 1},   {"bf16", TensorType::kBF16, 32},
    {"q8_0", TensorType::kQ8_0, 7}, {"q4_0", TensorType::kQ4_0, 2}, {"q4_1", TensorType::kQ4_1, 3},
    {"q5_0", TensorType::kQ5_0, 8}, {"q5_1", TensorType::kQ5_1, 9}, {"q4_k", TensorType::kQ4_K, 14},
    {"q5_k", TensorType::kQ5_K, 16}, {"q6_k", TensorType::kQ6_K, 18},
};
constexpr const char* kTypeList = "f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k";

const TypeName* ParseType(const std::string& s) {
  for (const TypeName& t : kTypes) {
    if (s == t.name) return &t;
  }
  return nullptr;
}

bool EndsWith(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The type that rows of `cols` are written in when `wanted` cannot hold them:
// a K-quant (blocks of 256) falls back to the 32-element type llama.cpp's
// quantizer picks for it, so the files match theirs (Q4_K -> Q5_0, Q5_K ->
// Q5_1, Q6_K -> Q8_0); anything else, or rows that 32 does not divide
// either, to F16.
TensorType Fallback(TensorType wanted, uint64_t cols) {
  TensorType fallback = TensorType::kF16;
  switch (wanted) {
    case TensorType::kQ4_K: fallback = TensorType::kQ5_0; break;
    case TensorType::kQ5_K: fallback = TensorType::kQ5_1; break;
    case TensorType::kQ6_K: fallback = TensorType::kQ8_0; break;
    default: break;
  }
  if (cols % gguf::FindTypeTraits(static_cast<uint32_t>(fallback))->block_elements != 0) return TensorType::kF16;
  return fallback;
}

int Fail(const std::string& msg) {
  std::fprintf(stderr, "error: %s\n", msg.c_str());
  return 1;
}

}  // namespace

int RunQuantize(const QuantizeArgs& a) {
  const TypeName* type = ParseType(a.type);
  if (!type) return Fail(StrCat("unknown type '", a.type, "' (", kTypeList, ")"));
  const TypeName* experts_type = a.experts_type.empty() ? type : ParseType(a.experts_type);
  if (!experts_type) return Fail(StrCat("unknown --experts-type '", a.experts_type, "' (", kTypeList, ")"));
  if (a.input == a.output) return Fail("the output must be a different file from the input");
  // Loading the model validates the input completely before anything is written.
  runtime::LoadOptions load;
  load.load_tokenizer = false;
  load.pack_weights = false;  // the tensors are only read once, from the file's layout
  auto model = runtime::Model::Load(a.input, load);
  if (!model.ok()) return Fail(std::string(model.status().message()));
  const gguf::File& in = (*model)->file();

  gguf::Writer out;
  for (const auto& [key, value] : in.metadata()) {
    if (key != "general.file_type" && key != "general.alignment") out.SetValue(key, value);
  }
  out.SetU32("general.file_type", type->file_type);  // replaced below by the predominant type
  out.SetU32("general.quantization_version", 2);

  std::map<TensorType, uint64_t> matrix_elements;  // per written type, for general.file_type
  size_t index = 0;
  for (const gguf::TensorInfo& t : in.tensors()) {
    ++index;
    TensorType target = type->type;
    if (t.n_dims == 1) {
      target = TensorType::kF32;  // norms and biases
    } else if (EndsWith(t.name, "_exps.weight")) {
      target = experts_type->type;
    } else if (a.keep_router_f32 && (EndsWith(t.name, "ffn_gate_inp.weight") || EndsWith(t.name, "ffn_gate_inp_shexp.weight"))) {
      target = TensorType::kF32;
    }
    const gguf::TypeTraits* traits = gguf::FindTypeTraits(static_cast<uint32_t>(target));
    if (t.ne[0] % traits->block_elements != 0) {
      const TensorType fallback = Fallback(target, t.ne[0]);
      std::fprintf(stderr, "note: %s has rows of %llu, not a multiple of %u: written as %s\n", t.name.c_str(),
                   static_cast<unsigned long long>(t.ne[0]), traits->block_elements,
                   std::string(gguf::TypeName(fallback)).c_str());
      target = fallback;
      traits = gguf::FindTypeTraits(static_cast<uint32_t>(target));
    }
    const int64_t cols = static_cast<int64_t>(t.ne[0]);
    const int64_t rows = static_cast<int64_t>(t.n_elements / t.ne[0]);
    const uint64_t out_row_bytes = cols / traits->block_elements * traits->block_bytes;
    if (t.n_dims > 1) matrix_elements[target] += t.n_elements;
    std::vector<uint64_t> ne(t.ne.begin(), t.ne.begin() + t.n_dims);
    // Converted while the file is written, one tensor in memory at a time.
    const size_t n_tensors = in.tensors().size();
    out.AddTensor(t.name, target, ne, out_row_bytes * rows, [&in, &t, target, cols, rows, out_row_bytes, index, n_tensors] {
      std::vector<uint8_t> data(out_row_bytes * rows);
      const uint64_t in_row_bytes = t.n_bytes / rows;
      // Rows are independent; the K-quants' searches make this the slow part.
      tbb::parallel_for(tbb::blocked_range<int64_t>(0, rows), [&](const tbb::blocked_range<int64_t>& range) {
        std::vector<float> row(cols);
        for (int64_t r = range.begin(); r < range.end(); ++r) {
          kernels::DequantizeRow(t.type, t.data + r * in_row_bytes, row.data(), cols);
          kernels::QuantizeRow(target, row.data(), data.data() + r * out_row_bytes, cols);
        }
      });
      in.DropPages(t.data, t.n_bytes);  // read once: resident memory stays about one tensor in and out
      std::fprintf(stderr, "[%zu/%zu] %-36s %-5s -> %s\n", index, n_tensors, t.name.c_str(),
                   std::string(gguf::TypeName(t.type)).c_str(), std::string(gguf::TypeName(target)).c_str());
      return data;
    });
  }
  // general.file_type names the type that holds most of the matrices (with
  // --experts-type, usually the experts' type), as the "mostly" in GGUF
  // engines' names for it means.
  TensorType predominant = type->type;
  uint64_t most = 0;
  for (const auto& [written, elements] : matrix_elements) {
    if (elements > most) {
      most = elements;
      predominant = written;
    }
  }
  for (const TypeName& tn : kTypes) {
    if (tn.type == predominant) out.SetU32("general.file_type", tn.file_type);
  }
  if (auto s = out.WriteFile(a.output); !s.ok()) return Fail(std::string(s.message()));
  // The result must load as a model, as any GGUF engine would read it.
  auto check = runtime::Model::Load(a.output, load);
  if (!check.ok()) return Fail(StrCat("the written file does not load: ", check.status().message()));
  std::fprintf(stderr, "wrote %s: %.1f MiB -> %.1f MiB\n", a.output.c_str(), in.size() / 1048576.0,
               (*check)->file().size() / 1048576.0);
  return 0;
}

}  // namespace micromoe::cli
