// GGUF v3 writer: builds a file from metadata and tensors. Used by tests to
// make model files and by `micromoe quantize`.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gguf/gguf.h"

namespace micromoe::gguf {

class Writer {
 public:
  void SetU32(const std::string& key, uint32_t v);
  void SetI32(const std::string& key, int32_t v);
  void SetU64(const std::string& key, uint64_t v);
  void SetF32(const std::string& key, float v);
  void SetBool(const std::string& key, bool v);
  void SetString(const std::string& key, const std::string& v);
  void SetStringArray(const std::string& key, const std::vector<std::string>& v);
  void SetF32Array(const std::string& key, const std::vector<float>& v);
  void SetI32Array(const std::string& key, const std::vector<int32_t>& v);
  // Copies a value read from another file (any type).
  void SetValue(const std::string& key, const Value& v);

  // `data` holds the tensor in `type`'s block layout; `ne` lists dimensions, ne[0] contiguous.
  void AddTensor(const std::string& name, TensorType type, std::vector<uint64_t> ne,
                 std::vector<uint8_t> data);
  // A tensor of n_bytes whose data `produce` returns when the file is written,
  // so WriteFile holds one tensor at a time (quantizing a model larger than
  // memory). A result of another size fails WriteFile.
  void AddTensor(const std::string& name, TensorType type, std::vector<uint64_t> ne, uint64_t n_bytes,
                 std::function<std::vector<uint8_t>()> produce);

  void set_alignment(uint32_t a) { alignment_ = a; SetU32("general.alignment", a); }

  std::vector<uint8_t> Serialize() const;
  // Writes to `path`.tmp and renames it to `path` once complete, so a failed
  // write leaves no partial file (and an existing `path` untouched).
  absl::Status WriteFile(const std::string& path) const;

 private:
  struct Entry {
    std::string key;
    std::vector<uint8_t> bytes;  // type id + encoded value
  };
  struct Tensor {
    std::string name;
    TensorType type;
    std::vector<uint64_t> ne;
    uint64_t n_bytes = 0;
    std::vector<uint8_t> data;                       // or
    std::function<std::vector<uint8_t>()> produce;  // called once per write
  };
  void Put(const std::string& key, std::vector<uint8_t> bytes);
  // Everything before the first tensor's data: header, metadata, tensor infos, padding.
  std::vector<uint8_t> Header() const;
  uint64_t Align(uint64_t x) const { return (x + alignment_ - 1) / alignment_ * alignment_; }

  uint32_t alignment_ = 32;
  std::vector<Entry> kv_;
  std::vector<Tensor> tensors_;
};

}  // namespace micromoe::gguf
