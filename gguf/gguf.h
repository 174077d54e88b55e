// GGUF v2/v3 reader: maps the file, validates every header field before use,
// and hands out zero-copy views of metadata and tensor data.
//
// Thread-safety: a File is immutable after Open and may be read from any thread.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gguf/types.h"

namespace micromoe::gguf {

enum class ValueType : uint32_t {
  kU8 = 0, kI8 = 1, kU16 = 2, kI16 = 3, kU32 = 4, kI32 = 5, kF32 = 6,
  kBool = 7, kString = 8, kArray = 9, kU64 = 10, kI64 = 11, kF64 = 12,
};

std::string_view ValueTypeName(ValueType t);

// One metadata value. Scalars are held decoded; strings and arrays are views
// into the mapping (valid while the File lives).
struct Value {
  ValueType type = ValueType::kU8;
  // Scalars (integers widened; bool as 0/1).
  uint64_t u = 0;
  int64_t i = 0;
  double f = 0;
  std::string_view str;                 // kString
  ValueType array_type = ValueType::kU8;  // kArray: element type
  uint64_t array_count = 0;             // kArray: number of elements
  const uint8_t* array_data = nullptr;  // kArray of numbers: packed little-endian
  std::vector<std::string_view> strings;  // kArray of strings

  bool is_integer() const;
};

struct TensorInfo {
  std::string name;
  TensorType type = TensorType::kF32;
  uint32_t n_dims = 0;
  std::array<uint64_t, 4> ne = {1, 1, 1, 1};  // ne[0] is the contiguous dimension
  uint64_t offset = 0;                         // relative to the data section
  uint64_t n_elements = 0;
  uint64_t n_bytes = 0;
  const uint8_t* data = nullptr;               // into the mapping
  // Bytes of one row (ne[0] elements).
  uint64_t row_bytes() const { return n_bytes / (n_elements / ne[0]); }
};

class File {
 public:
  // Maps and validates `path`. Fails with a message naming the field at fault.
  static absl::StatusOr<std::unique_ptr<File>> Open(const std::string& path);
  // Validates an in-memory image (the caller keeps `data` alive). For tests and fuzzing.
  static absl::StatusOr<std::unique_ptr<File>> FromMemory(const uint8_t* data, size_t size);

  ~File();
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  uint32_t version() const { return version_; }
  uint64_t size() const { return size_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }

  const std::map<std::string, Value, std::less<>>& metadata() const { return kv_; }
  const Value* Find(std::string_view key) const;
  // Typed look-ups: NotFound when absent, InvalidArgument naming the key on a type mismatch.
  absl::StatusOr<uint64_t> GetUint(std::string_view key) const;
  absl::StatusOr<double> GetFloat(std::string_view key) const;
  absl::StatusOr<std::string_view> GetString(std::string_view key) const;
  absl::StatusOr<bool> GetBool(std::string_view key) const;
  // Defaults when absent; errors on a wrong type.
  absl::StatusOr<uint64_t> GetUintOr(std::string_view key, uint64_t fallback) const;
  absl::StatusOr<double> GetFloatOr(std::string_view key, double fallback) const;
  absl::StatusOr<bool> GetBoolOr(std::string_view key, bool fallback) const;

  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* FindTensor(std::string_view name) const;

  // Releases the pages of [data, data+n) back to the kernel (they fault in again on use).
  void DropPages(const uint8_t* data, uint64_t n) const;
  // Maps the pages of [data, data+n) into this process now, for data read
  // sparsely later (the token embeddings: one row per token), so those reads
  // do not each wait on a page fault.
  void MapPages(const uint8_t* data, uint64_t n) const;

 private:
  File() = default;
  absl::Status Parse();

  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  bool mapped_ = false;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::map<std::string, Value, std::less<>> kv_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
};

// Reads numeric array element `i` of `v` (any integer or float element type) as double.
double ArrayElementAsDouble(const Value& v, uint64_t i);
int64_t ArrayElementAsInt(const Value& v, uint64_t i);

}  // namespace micromoe::gguf
