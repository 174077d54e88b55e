#include "gguf/writer.h"

#include <cstdio>
#include <cstring>
#include <memory>

#include "base/str_cat.h"

namespace micromoe::gguf {
namespace {

// (resize + memcpy: GCC 12 warns falsely, -Wstringop-overflow, on inserting
// a small array's range into an empty vector.)
template <typename T>
void Append(std::vector<uint8_t>& out, T v) {
  const size_t at = out.size();
  out.resize(at + sizeof(T));
  std::memcpy(out.data() + at, &v, sizeof(T));
}

void AppendString(std::vector<uint8_t>& out, std::string_view s) {
  Append<uint64_t>(out, s.size());
  out.insert(out.end(), s.begin(), s.end());
}

std::vector<uint8_t> Typed(ValueType t) {
  std::vector<uint8_t> b;
  Append<uint32_t>(b, static_cast<uint32_t>(t));
  return b;
}

}  // namespace

void Writer::Put(const std::string& key, std::vector<uint8_t> bytes) {
  for (Entry& e : kv_) {
    if (e.key == key) {
      e.bytes = std::move(bytes);
      return;
    }
  }
  kv_.push_back({key, std::move(bytes)});
}

void Writer::SetU32(const std::string& key, uint32_t v) { auto b = Typed(ValueType::kU32); Append(b, v); Put(key, b); }
void Writer::SetI32(const std::string& key, int32_t v) { auto b = Typed(ValueType::kI32); Append(b, v); Put(key, b); }
void Writer::SetU64(const std::string& key, uint64_t v) { auto b = Typed(ValueType::kU64); Append(b, v); Put(key, b); }
void Writer::SetF32(const std::string& key, float v) { auto b = Typed(ValueType::kF32); Append(b, v); Put(key, b); }
void Writer::SetBool(const std::string& key, bool v) { auto b = Typed(ValueType::kBool); Append<uint8_t>(b, v ? 1 : 0); Put(key, b); }
void Writer::SetString(const std::string& key, const std::string& v) { auto b = Typed(ValueType::kString); AppendString(b, v); Put(key, b); }

void Writer::SetStringArray(const std::string& key, const std::vector<std::string>& v) {
  auto b = Typed(ValueType::kArray);
  Append<uint32_t>(b, static_cast<uint32_t>(ValueType::kString));
  Append<uint64_t>(b, v.size());
  for (const auto& s : v) AppendString(b, s);
  Put(key, b);
}

void Writer::SetF32Array(const std::string& key, const std::vector<float>& v) {
  auto b = Typed(ValueType::kArray);
  Append<uint32_t>(b, static_cast<uint32_t>(ValueType::kF32));
  Append<uint64_t>(b, v.size());
  for (float x : v) Append(b, x);
  Put(key, b);
}

void Writer::SetI32Array(const std::string& key, const std::vector<int32_t>& v) {
  auto b = Typed(ValueType::kArray);
  Append<uint32_t>(b, static_cast<uint32_t>(ValueType::kI32));
  Append<uint64_t>(b, v.size());
  for (int32_t x : v) Append(b, x);
  Put(key, b);
}

void Writer::SetValue(const std::string& key, const Value& v) {
  auto b = Typed(v.type);
  switch (v.type) {
    case ValueType::kU8: case ValueType::kI8: case ValueType::kBool: Append<uint8_t>(b, static_cast<uint8_t>(v.u)); break;
    case ValueType::kU16: case ValueType::kI16: Append<uint16_t>(b, static_cast<uint16_t>(v.u)); break;
    case ValueType::kU32: case ValueType::kI32: Append<uint32_t>(b, static_cast<uint32_t>(v.u)); break;
    case ValueType::kU64: case ValueType::kI64: Append<uint64_t>(b, v.u); break;
    case ValueType::kF32: Append<float>(b, static_cast<float>(v.f)); break;
    case ValueType::kF64: Append<double>(b, v.f); break;
    case ValueType::kString: AppendString(b, v.str); break;
    case ValueType::kArray: {
      Append<uint32_t>(b, static_cast<uint32_t>(v.array_type));
      Append<uint64_t>(b, v.array_count);
      if (v.array_type == ValueType::kString) {
        for (auto s : v.strings) AppendString(b, s);
      } else {
        const uint64_t n = v.array_count * ((v.array_type == ValueType::kU8 || v.array_type == ValueType::kI8 || v.array_type == ValueType::kBool) ? 1
                                            : (v.array_type == ValueType::kU16 || v.array_type == ValueType::kI16) ? 2
                                            : (v.array_type == ValueType::kU64 || v.array_type == ValueType::kI64 || v.array_type == ValueType::kF64) ? 8 : 4);
        b.insert(b.end(), v.array_data, v.array_data + n);
      }
      break;
    }
  }
  Put(key, b);
}

void Writer::AddTensor(const std::string& name, TensorType type, std::vector<uint64_t> ne,
                       std::vector<uint8_t> data) {
  const uint64_t n_bytes = data.size();
  tensors_.push_back({name, type, std::move(ne), n_bytes, std::move(data), nullptr});
}

void Writer::AddTensor(const std::string& name, TensorType type, std::vector<uint64_t> ne, uint64_t n_bytes,
                       std::function<std::vector<uint8_t>()> produce) {
  tensors_.push_back({name, type, std::move(ne), n_bytes, {}, std::move(produce)});
}

std::vector<uint8_t> Writer::Header() const {
  std::vector<uint8_t> out;
  Append<uint32_t>(out, 0x46554747);
  Append<uint32_t>(out, 3);
  Append<uint64_t>(out, tensors_.size());
  Append<uint64_t>(out, kv_.size());
  for (const Entry& e : kv_) {
    AppendString(out, e.key);
    out.insert(out.end(), e.bytes.begin(), e.bytes.end());
  }
  uint64_t offset = 0;
  for (const Tensor& t : tensors_) {
    AppendString(out, t.name);
    Append<uint32_t>(out, static_cast<uint32_t>(t.ne.size()));
    for (uint64_t d : t.ne) Append<uint64_t>(out, d);
    Append<uint32_t>(out, static_cast<uint32_t>(t.type));
    Append<uint64_t>(out, offset);
    offset = Align(offset + t.n_bytes);
  }
  out.resize(Align(out.size()), 0);
  return out;
}

std::vector<uint8_t> Writer::Serialize() const {
  std::vector<uint8_t> out = Header();
  for (const Tensor& t : tensors_) {
    if (t.produce) {
      const std::vector<uint8_t> data = t.produce();
      out.insert(out.end(), data.begin(), data.end());
    } else {
      out.insert(out.end(), t.data.begin(), t.data.end());
    }
    out.resize(Align(out.size()), 0);
  }
  return out;
}

absl::Status Writer::WriteFile(const std::string& path) const {
  const std::string tmp = path + ".tmp";
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(tmp.c_str(), "wb"), &std::fclose);
  if (!f) return absl::InternalError(StrCat("cannot create '", tmp, "'"));
  auto fail = [&](const std::string& what) {
    f.reset();
    std::remove(tmp.c_str());
    return absl::InternalError(what);
  };
  auto write = [&](const uint8_t* p, uint64_t n) { return std::fwrite(p, 1, n, f.get()) == n; };
  const std::vector<uint8_t> header = Header();
  if (!write(header.data(), header.size())) return fail(StrCat("short write to '", tmp, "'"));
  const std::vector<uint8_t> zeros(alignment_, 0);
  for (const Tensor& t : tensors_) {
    std::vector<uint8_t> produced;
    if (t.produce) produced = t.produce();
    const std::vector<uint8_t>& data = t.produce ? produced : t.data;
    if (data.size() != t.n_bytes) {
      return fail(StrCat("tensor '", t.name, "' has ", data.size(), " bytes, expected ", t.n_bytes));
    }
    if (!write(data.data(), data.size()) || !write(zeros.data(), Align(t.n_bytes) - t.n_bytes)) {
      return fail(StrCat("short write to '", tmp, "'"));
    }
  }
  if (std::fclose(f.release()) != 0) {
    std::remove(tmp.c_str());
    return absl::InternalError(StrCat("cannot finish writing '", tmp, "'"));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return absl::InternalError(StrCat("cannot rename '", tmp, "' to '", path, "'"));
  }
  return absl::OkStatus();
}

}  // namespace micromoe::gguf
