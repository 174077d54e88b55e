#include "gguf/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "base/str_cat.h"

namespace micromoe::gguf {
namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" little-endian
constexpr uint64_t kMaxKeyBytes = 65535;
constexpr uint32_t kMaxDims = 4;
constexpr uint64_t kMaxAlignment = 1 << 20;

size_t ScalarSize(ValueType t) {
  switch (t) {
    case ValueType::kU8: case ValueType::kI8: case ValueType::kBool: return 1;
    case ValueType::kU16: case ValueType::kI16: return 2;
    case ValueType::kU32: case ValueType::kI32: case ValueType::kF32: return 4;
    case ValueType::kU64: case ValueType::kI64: case ValueType::kF64: return 8;
    default: return 0;
  }
}

bool KnownValueType(uint32_t t) { return t <= 12; }

// Bounds-checked little-endian cursor over the file image.
class Cursor {
 public:
  Cursor(const uint8_t* base, uint64_t size) : base_(base), size_(size) {}
  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }
  const uint8_t* here() const { return base_ + pos_; }

  absl::Status Need(uint64_t n, std::string_view what) const {
    if (n > remaining()) {
      return absl::InvalidArgumentError(StrCat(
          what, ": needs ", n, " bytes at offset ", pos_, " but the file has only ",
          remaining(), " left (truncated file?)"));
    }
    return absl::OkStatus();
  }
  template <typename T>
  absl::StatusOr<T> Read(std::string_view what) {
    if (auto s = Need(sizeof(T), what); !s.ok()) return s;
    T v;
    std::memcpy(&v, base_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  absl::StatusOr<std::string_view> ReadString(std::string_view what, uint64_t max_len) {
    auto len = Read<uint64_t>(what);
    if (!len.ok()) return len.status();
    if (*len > max_len) {
      return absl::InvalidArgumentError(
          StrCat(what, ": string length ", *len, " exceeds the limit of ", max_len));
    }
    if (auto s = Need(*len, what); !s.ok()) return s;
    std::string_view sv(reinterpret_cast<const char*>(base_ + pos_), *len);
    pos_ += *len;
    return sv;
  }
  absl::Status Skip(uint64_t n, std::string_view what) {
    if (auto s = Need(n, what); !s.ok()) return s;
    pos_ += n;
    return absl::OkStatus();
  }

 private:
  const uint8_t* base_;
  uint64_t size_;
  uint64_t pos_ = 0;
};

bool MulOverflows(uint64_t a, uint64_t b, uint64_t* out) {
  return __builtin_mul_overflow(a, b, out);
}

absl::Status ReadValue(Cursor& c, ValueType type, const std::string& key, Value* out) {
  out->type = type;
  switch (type) {
    case ValueType::kString: {
      auto s = c.ReadString(StrCat("metadata '", key, "'"), c.remaining());
      if (!s.ok()) return s.status();
      out->str = *s;
      return absl::OkStatus();
    }
    case ValueType::kArray: {
      auto et = c.Read<uint32_t>(StrCat("metadata '", key, "' array type"));
      if (!et.ok()) return et.status();
      if (!KnownValueType(*et)) {
        return absl::InvalidArgumentError(
            StrCat("metadata '", key, "': unknown array element type ", *et));
      }
      if (static_cast<ValueType>(*et) == ValueType::kArray) {
        return absl::InvalidArgumentError(
            StrCat("metadata '", key, "': nested arrays are not supported"));
      }
      auto n = c.Read<uint64_t>(StrCat("metadata '", key, "' array length"));
      if (!n.ok()) return n.status();
      out->array_type = static_cast<ValueType>(*et);
      out->array_count = *n;
      if (out->array_type == ValueType::kString) {
        // Each string takes at least its 8-byte length: bound the count by the file.
        if (*n > c.remaining() / 8) {
          return absl::InvalidArgumentError(StrCat(
              "metadata '", key, "': array of ", *n, " strings cannot fit in the ",
              c.remaining(), " bytes left in the file"));
        }
        out->strings.reserve(*n);
        for (uint64_t i = 0; i < *n; ++i) {
          auto s = c.ReadString(StrCat("metadata '", key, "' element ", i), c.remaining());
          if (!s.ok()) return s.status();
          out->strings.push_back(*s);
        }
        return absl::OkStatus();
      }
      const size_t es = ScalarSize(out->array_type);
      uint64_t bytes;
      if (MulOverflows(*n, es, &bytes) || bytes > c.remaining()) {
        return absl::InvalidArgumentError(StrCat(
            "metadata '", key, "': array of ", *n, " elements of ", es,
            " bytes does not fit in the ", c.remaining(), " bytes left in the file"));
      }
      out->array_data = c.here();
      return c.Skip(bytes, key);
    }
    default: {
      const std::string what = StrCat("metadata '", key, "'");
      switch (type) {
        case ValueType::kU8: { auto v = c.Read<uint8_t>(what); if (!v.ok()) return v.status(); out->u = *v; out->i = *v; out->f = *v; break; }
        case ValueType::kI8: { auto v = c.Read<int8_t>(what); if (!v.ok()) return v.status(); out->i = *v; out->u = static_cast<uint64_t>(*v); out->f = *v; break; }
        case ValueType::kU16: { auto v = c.Read<uint16_t>(what); if (!v.ok()) return v.status(); out->u = *v; out->i = *v; out->f = *v; break; }
        case ValueType::kI16: { auto v = c.Read<int16_t>(what); if (!v.ok()) return v.status(); out->i = *v; out->u = static_cast<uint64_t>(*v); out->f = *v; break; }
        case ValueType::kU32: { auto v = c.Read<uint32_t>(what); if (!v.ok()) return v.status(); out->u = *v; out->i = *v; out->f = *v; break; }
        case ValueType::kI32: { auto v = c.Read<int32_t>(what); if (!v.ok()) return v.status(); out->i = *v; out->u = static_cast<uint64_t>(*v); out->f = *v; break; }
        case ValueType::kU64: { auto v = c.Read<uint64_t>(what); if (!v.ok()) return v.status(); out->u = *v; out->i = static_cast<int64_t>(*v); out->f = static_cast<double>(*v); break; }
        case ValueType::kI64: { auto v = c.Read<int64_t>(what); if (!v.ok()) return v.status(); out->i = *v; out->u = static_cast<uint64_t>(*v); out->f = static_cast<double>(*v); break; }
        case ValueType::kF32: { auto v = c.Read<float>(what); if (!v.ok()) return v.status(); out->f = *v; break; }
        case ValueType::kF64: { auto v = c.Read<double>(what); if (!v.ok()) return v.status(); out->f = *v; break; }
        case ValueType::kBool: {
          auto v = c.Read<uint8_t>(what);
          if (!v.ok()) return v.status();
          if (*v > 1) return absl::InvalidArgumentError(StrCat(what, ": bool value ", int(*v), " is not 0 or 1"));
          out->u = *v; out->i = *v; break;
        }
        default: break;
      }
      return absl::OkStatus();
    }
  }
}

}  // namespace

std::string_view ValueTypeName(ValueType t) {
  static constexpr std::string_view kNames[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32",
                                                "bool", "string", "array", "u64", "i64", "f64"};
  const auto i = static_cast<uint32_t>(t);
  return i < std::size(kNames) ? kNames[i] : "unknown";
}

bool Value::is_integer() const {
  switch (type) {
    case ValueType::kU8: case ValueType::kI8: case ValueType::kU16: case ValueType::kI16:
    case ValueType::kU32: case ValueType::kI32: case ValueType::kU64: case ValueType::kI64:
      return true;
    default:
      return false;
  }
}

double ArrayElementAsDouble(const Value& v, uint64_t i) {
  const uint8_t* p = v.array_data + i * ScalarSize(v.array_type);
  switch (v.array_type) {
    case ValueType::kF32: { float f; std::memcpy(&f, p, 4); return f; }
    case ValueType::kF64: { double d; std::memcpy(&d, p, 8); return d; }
    default: return static_cast<double>(ArrayElementAsInt(v, i));
  }
}

int64_t ArrayElementAsInt(const Value& v, uint64_t i) {
  const uint8_t* p = v.array_data + i * ScalarSize(v.array_type);
  switch (v.array_type) {
    case ValueType::kU8: case ValueType::kBool: return *p;
    case ValueType::kI8: return static_cast<int8_t>(*p);
    case ValueType::kU16: { uint16_t x; std::memcpy(&x, p, 2); return x; }
    case ValueType::kI16: { int16_t x; std::memcpy(&x, p, 2); return x; }
    case ValueType::kU32: { uint32_t x; std::memcpy(&x, p, 4); return x; }
    case ValueType::kI32: { int32_t x; std::memcpy(&x, p, 4); return x; }
    case ValueType::kU64: { uint64_t x; std::memcpy(&x, p, 8); return static_cast<int64_t>(x); }
    case ValueType::kI64: { int64_t x; std::memcpy(&x, p, 8); return x; }
    case ValueType::kF32: { float f; std::memcpy(&f, p, 4); return static_cast<int64_t>(f); }
    case ValueType::kF64: { double d; std::memcpy(&d, p, 8); return static_cast<int64_t>(d); }
    default: return 0;
  }
}

absl::StatusOr<std::unique_ptr<File>> File::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::NotFoundError(StrCat("cannot open '", path, "': ", std::strerror(errno)));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(StrCat("'", path, "' is not a regular file"));
  }
  if (st.st_size < 24) {
    ::close(fd);
    return absl::InvalidArgumentError(StrCat(
        "'", path, "': file of ", st.st_size, " bytes is too small to be GGUF (header is 24 bytes)"));
  }
  void* p = ::mmap(nullptr, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) {
    return absl::InternalError(StrCat("cannot map '", path, "': ", std::strerror(errno)));
  }
  std::unique_ptr<File> f(new File());
  f->base_ = static_cast<const uint8_t*>(p);
  f->size_ = st.st_size;
  f->mapped_ = true;
  if (auto s = f->Parse(); !s.ok()) {
    return absl::Status(s.code(), StrCat("'", path, "': ", s.message()));
  }
  return f;
}

absl::StatusOr<std::unique_ptr<File>> File::FromMemory(const uint8_t* data, size_t size) {
  std::unique_ptr<File> f(new File());
  f->base_ = data;
  f->size_ = size;
  if (auto s = f->Parse(); !s.ok()) return s;
  return f;
}

File::~File() {
  if (mapped_) ::munmap(const_cast<uint8_t*>(base_), size_);
}

void File::DropPages(const uint8_t* data, uint64_t n) const {
  if (!mapped_) return;
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  uint64_t begin = static_cast<uint64_t>(data - base_);
  uint64_t end = begin + n;
  begin = (begin + page - 1) / page * page;  // only whole pages inside the range
  end = end / page * page;
  if (end > begin) ::madvise(const_cast<uint8_t*>(base_) + begin, end - begin, MADV_DONTNEED);
}

void File::MapPages(const uint8_t* data, uint64_t n) const {
  if (!mapped_ || n == 0) return;
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t begin = static_cast<uint64_t>(data - base_) / page * page;
#ifdef MADV_POPULATE_READ  // Linux 5.14, glibc 2.35
  ::madvise(const_cast<uint8_t*>(base_) + begin, static_cast<uint64_t>(data - base_) + n - begin, MADV_POPULATE_READ);
#endif
  // A page the kernel populated still cost a trap of microseconds at this
  // process's first access on the project's VMs (see runtime/kv_cache.cc), so
  // every page is also read once from here.
  uint8_t sum = 0;
  for (uint64_t off = begin; off < static_cast<uint64_t>(data - base_) + n; off += page) sum += base_[off];
  volatile uint8_t sink = sum;
  (void)sink;
}

absl::Status File::Parse() {
  Cursor c(base_, size_);
  auto magic = c.Read<uint32_t>("magic");
  if (!magic.ok()) return magic.status();
  if (*magic != kMagic) {
    return absl::InvalidArgumentError("bad magic: not a GGUF file (expected the bytes 'GGUF')");
  }
  auto version = c.Read<uint32_t>("version");
  if (!version.ok()) return version.status();
  if (*version != 2 && *version != 3) {
    if (*version == 1) return absl::InvalidArgumentError("GGUF version 1 is not supported (need 2 or 3)");
    if ((*version & 0xFFFF) == 0 && *version != 0)
      return absl::InvalidArgumentError(StrCat("GGUF version ", *version, " looks big-endian; only little-endian files are supported"));
    return absl::InvalidArgumentError(StrCat("unsupported GGUF version ", *version, " (need 2 or 3)"));
  }
  version_ = *version;
  auto n_tensors = c.Read<uint64_t>("tensor count");
  if (!n_tensors.ok()) return n_tensors.status();
  auto n_kv = c.Read<uint64_t>("metadata count");
  if (!n_kv.ok()) return n_kv.status();
  // Smallest possible entries: kv = 8 (key len) + 4 (type) + 1; tensor info = 8 + 4 + 8 + 4 + 8.
  if (*n_kv > c.remaining() / 13) {
    return absl::InvalidArgumentError(StrCat(
        "metadata count ", *n_kv, " cannot fit in a file of ", size_, " bytes"));
  }
  if (*n_tensors > c.remaining() / 32) {
    return absl::InvalidArgumentError(StrCat(
        "tensor count ", *n_tensors, " cannot fit in a file of ", size_, " bytes"));
  }

  for (uint64_t k = 0; k < *n_kv; ++k) {
    auto key = c.ReadString(StrCat("metadata key #", k), kMaxKeyBytes);
    if (!key.ok()) return key.status();
    if (key->empty()) return absl::InvalidArgumentError(StrCat("metadata key #", k, " is empty"));
    std::string name(*key);
    auto type = c.Read<uint32_t>(StrCat("metadata '", name, "' type"));
    if (!type.ok()) return type.status();
    if (!KnownValueType(*type)) {
      return absl::InvalidArgumentError(StrCat("metadata '", name, "': unknown value type ", *type));
    }
    Value v;
    if (auto s = ReadValue(c, static_cast<ValueType>(*type), name, &v); !s.ok()) return s;
    if (kv_.count(name)) return absl::InvalidArgumentError(StrCat("duplicate metadata key '", name, "'"));
    kv_.emplace(std::move(name), std::move(v));
  }

  if (const Value* a = Find("general.alignment")) {
    if (!a->is_integer()) return absl::InvalidArgumentError("general.alignment must be an integer");
    if (a->u == 0 || (a->u & (a->u - 1)) != 0 || a->u > kMaxAlignment) {
      return absl::InvalidArgumentError(StrCat(
          "general.alignment = ", a->i, " is not a power of two between 1 and ", kMaxAlignment));
    }
    alignment_ = a->u;
  }

  tensors_.reserve(*n_tensors);
  for (uint64_t t = 0; t < *n_tensors; ++t) {
    TensorInfo info;
    auto name = c.ReadString(StrCat("tensor #", t, " name"), kMaxKeyBytes);
    if (!name.ok()) return name.status();
    info.name = std::string(*name);
    const std::string what = StrCat("tensor '", info.name, "'");
    auto n_dims = c.Read<uint32_t>(what + " dimension count");
    if (!n_dims.ok()) return n_dims.status();
    if (*n_dims == 0 || *n_dims > kMaxDims) {
      return absl::InvalidArgumentError(StrCat(what, ": dimension count ", *n_dims, " is not between 1 and ", kMaxDims));
    }
    info.n_dims = *n_dims;
    uint64_t n_el = 1;
    for (uint32_t d = 0; d < *n_dims; ++d) {
      auto ne = c.Read<uint64_t>(what + " dimension");
      if (!ne.ok()) return ne.status();
      if (*ne == 0 || *ne > (uint64_t{1} << 62)) {
        return absl::InvalidArgumentError(StrCat(what, ": dimension ", d, " has invalid size ", *ne));
      }
      info.ne[d] = *ne;
      if (MulOverflows(n_el, *ne, &n_el)) {
        return absl::InvalidArgumentError(StrCat(what, ": element count overflows 64 bits"));
      }
    }
    info.n_elements = n_el;
    auto type = c.Read<uint32_t>(what + " type");
    if (!type.ok()) return type.status();
    const TypeTraits* traits = FindTypeTraits(*type);
    if (traits == nullptr) {
      const std::string_view name = UnreadableTypeName(*type);
      if (!name.empty()) {
        return absl::InvalidArgumentError(StrCat(what, ": tensor type ", name, " (", *type, ") is not supported"));
      }
      return absl::InvalidArgumentError(StrCat(what, ": unknown tensor type ", *type));
    }
    info.type = static_cast<TensorType>(*type);
    if (info.ne[0] % traits->block_elements != 0) {
      return absl::InvalidArgumentError(StrCat(
          what, ": row length ", info.ne[0], " is not a multiple of the ", traits->name,
          " block size ", traits->block_elements));
    }
    if (MulOverflows(n_el / traits->block_elements, traits->block_bytes, &info.n_bytes)) {
      return absl::InvalidArgumentError(StrCat(what, ": byte size overflows 64 bits"));
    }
    auto offset = c.Read<uint64_t>(what + " offset");
    if (!offset.ok()) return offset.status();
    info.offset = *offset;
    if (info.offset % alignment_ != 0) {
      return absl::InvalidArgumentError(StrCat(
          what, ": data offset ", info.offset, " is not a multiple of the alignment ", alignment_));
    }
    if (tensor_index_.count(info.name)) {
      return absl::InvalidArgumentError(StrCat("duplicate tensor name '", info.name, "'"));
    }
    tensor_index_.emplace(info.name, tensors_.size());
    tensors_.push_back(std::move(info));
  }

  data_offset_ = (c.pos() + alignment_ - 1) / alignment_ * alignment_;
  // A file without tensors (e.g. vocabulary only) may end without padding.
  if (tensors_.empty()) data_offset_ = std::min(data_offset_, size_);
  if (data_offset_ > size_) {
    return absl::InvalidArgumentError(StrCat(
        "data section starts at ", data_offset_, " past the end of the file (", size_, " bytes)"));
  }
  const uint64_t data_size = size_ - data_offset_;
  for (TensorInfo& info : tensors_) {
    uint64_t end;
    if (__builtin_add_overflow(info.offset, info.n_bytes, &end) || end > data_size) {
      return absl::InvalidArgumentError(StrCat(
          "tensor '", info.name, "': data [", info.offset, ", +", info.n_bytes,
          ") lies past the end of the data section (", data_size, " bytes; truncated file?)"));
    }
    info.data = base_ + data_offset_ + info.offset;
  }
  return absl::OkStatus();
}

const Value* File::Find(std::string_view key) const {
  auto it = kv_.find(key);
  return it == kv_.end() ? nullptr : &it->second;
}

const TensorInfo* File::FindTensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

absl::StatusOr<uint64_t> File::GetUint(std::string_view key) const {
  const Value* v = Find(key);
  if (!v) return absl::NotFoundError(StrCat("missing metadata key '", key, "'"));
  if (!v->is_integer()) {
    return absl::InvalidArgumentError(StrCat("metadata '", key, "' has type ",
                                                   ValueTypeName(v->type), ", expected an integer"));
  }
  if (v->i < 0 && v->type != ValueType::kU64) {
    return absl::InvalidArgumentError(StrCat("metadata '", key, "' = ", v->i, " must not be negative"));
  }
  return v->u;
}

absl::StatusOr<double> File::GetFloat(std::string_view key) const {
  const Value* v = Find(key);
  if (!v) return absl::NotFoundError(StrCat("missing metadata key '", key, "'"));
  if (v->type != ValueType::kF32 && v->type != ValueType::kF64 && !v->is_integer()) {
    return absl::InvalidArgumentError(StrCat("metadata '", key, "' has type ",
                                                   ValueTypeName(v->type), ", expected a number"));
  }
  return v->is_integer() ? static_cast<double>(v->i) : v->f;
}

absl::StatusOr<std::string_view> File::GetString(std::string_view key) const {
  const Value* v = Find(key);
  if (!v) return absl::NotFoundError(StrCat("missing metadata key '", key, "'"));
  if (v->type != ValueType::kString) {
    return absl::InvalidArgumentError(StrCat("metadata '", key, "' has type ",
                                                   ValueTypeName(v->type), ", expected a string"));
  }
  return v->str;
}

absl::StatusOr<bool> File::GetBool(std::string_view key) const {
  const Value* v = Find(key);
  if (!v) return absl::NotFoundError(StrCat("missing metadata key '", key, "'"));
  if (v->type != ValueType::kBool) {
    return absl::InvalidArgumentError(StrCat("metadata '", key, "' has type ",
                                                   ValueTypeName(v->type), ", expected a bool"));
  }
  return v->u != 0;
}

absl::StatusOr<uint64_t> File::GetUintOr(std::string_view key, uint64_t fallback) const {
  return Find(key) ? GetUint(key) : fallback;
}
absl::StatusOr<double> File::GetFloatOr(std::string_view key, double fallback) const {
  return Find(key) ? GetFloat(key) : fallback;
}
absl::StatusOr<bool> File::GetBoolOr(std::string_view key, bool fallback) const {
  return Find(key) ? GetBool(key) : fallback;
}

}  // namespace micromoe::gguf
