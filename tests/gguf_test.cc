// Specification of the GGUF reader (gguf/gguf.h) and writer (gguf/writer.h).
//
// Good files made by gguf::Writer must read back exactly; every real file in
// the reference folder must open; and every malformed file must be rejected
// with InvalidArgument and a message naming the field at fault -- without a
// crash, a hang, or an allocation sized by a count the file merely claims.
#include <fstream>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <new>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "gguf/gguf.h"
#include "gguf/types.h"
#include "gguf/writer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

// The largest single allocation since the last reset. Replacing the global
// operator new is the only way a test can see that the reader sizes its
// buffers by what the file holds, not by a count the file claims.
namespace {
std::atomic<size_t> largest_allocation{0};
}  // namespace

__attribute__((noinline)) void* operator new(std::size_t n) {
  size_t seen = largest_allocation.load(std::memory_order_relaxed);
  while (n > seen && !largest_allocation.compare_exchange_weak(seen, n, std::memory_order_relaxed)) {
  }
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
__attribute__((noinline)) void operator delete(void* p) noexcept { std::free(p); }
__attribute__((noinline)) void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace micromoe::gguf {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

// ---------------------------------------------------------------------------
// Helpers: byte layout of the GGUF header and a little byte builder.
// ---------------------------------------------------------------------------

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as little-endian u32
constexpr size_t kMagicAt = 0;
constexpr size_t kVersionAt = 4;
constexpr size_t kTensorCountAt = 8;
constexpr size_t kMetadataCountAt = 16;
constexpr uint32_t kDefaultAlignment = 32;

constexpr uint32_t kTypeU8 = static_cast<uint32_t>(ValueType::kU8);
constexpr uint32_t kTypeU32 = static_cast<uint32_t>(ValueType::kU32);
constexpr uint32_t kTypeF32 = static_cast<uint32_t>(ValueType::kF32);
constexpr uint32_t kTypeBool = static_cast<uint32_t>(ValueType::kBool);
constexpr uint32_t kTypeString = static_cast<uint32_t>(ValueType::kString);
constexpr uint32_t kTypeArray = static_cast<uint32_t>(ValueType::kArray);
constexpr uint32_t kTypeU64 = static_cast<uint32_t>(ValueType::kU64);

constexpr uint32_t kTensorF32 = static_cast<uint32_t>(TensorType::kF32);
constexpr uint32_t kTensorQ8_0 = static_cast<uint32_t>(TensorType::kQ8_0);

// Appends little-endian fields; used to hand-assemble files the Writer would never produce.
class Bytes {
 public:
  Bytes& U8(uint8_t v) { return Put(v); }
  Bytes& U32(uint32_t v) { return Put(v); }
  Bytes& U64(uint64_t v) { return Put(v); }
  Bytes& F32(float v) { return Put(v); }
  // A GGUF string: u64 length, then the bytes.
  Bytes& Str(std::string_view s) {
    U64(s.size());
    out_.insert(out_.end(), s.begin(), s.end());
    return *this;
  }
  Bytes& Append(const Bytes& other) {
    out_.insert(out_.end(), other.out_.begin(), other.out_.end());
    return *this;
  }
  Bytes& Zeros(size_t n) {
    out_.resize(out_.size() + n, 0);
    return *this;
  }
  Bytes& PadTo(size_t alignment) {
    out_.resize((out_.size() + alignment - 1) / alignment * alignment, 0);
    return *this;
  }
  size_t size() const { return out_.size(); }
  const std::vector<uint8_t>& bytes() const { return out_; }

 private:
  template <typename T>
  Bytes& Put(T v) {
    uint8_t b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T));
    out_.insert(out_.end(), b, b + sizeof(T));
    return *this;
  }
  std::vector<uint8_t> out_;
};

Bytes Header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
  Bytes b;
  b.U32(kMagic).U32(version).U64(n_tensors).U64(n_kv);
  return b;
}

// A file with no tensors and one metadata entry: key, type id, then `value` verbatim.
std::vector<uint8_t> OneKeyFile(std::string_view key, uint32_t type, const Bytes& value) {
  Bytes b = Header(0, 1);
  b.Str(key).U32(type).Append(value).PadTo(kDefaultAlignment);
  return b.bytes();
}

struct TensorInfoSpec {
  std::string name = "w";
  std::vector<uint64_t> ne = {8};  // n_dims is ne.size()
  uint32_t type = kTensorF32;
  uint64_t offset = 0;
};

// A file with no metadata, the given tensor infos, padding, then `data_bytes` zero bytes.
std::vector<uint8_t> TensorFile(const std::vector<TensorInfoSpec>& tensors, uint64_t data_bytes) {
  Bytes b = Header(tensors.size(), 0);
  for (const TensorInfoSpec& t : tensors) {
    b.Str(t.name).U32(static_cast<uint32_t>(t.ne.size()));
    for (uint64_t d : t.ne) b.U64(d);
    b.U32(t.type).U64(t.offset);
  }
  b.PadTo(kDefaultAlignment).Zeros(data_bytes);
  return b.bytes();
}

template <typename T>
void Patch(std::vector<uint8_t>& image, size_t at, T v) {
  ASSERT_LE(at + sizeof(T), image.size());
  std::memcpy(image.data() + at, &v, sizeof(T));
}

absl::StatusOr<std::unique_ptr<File>> Parse(const std::vector<uint8_t>& image) {
  return File::FromMemory(image.data(), image.size());
}

absl::Status ParseStatus(const std::vector<uint8_t>& image) { return Parse(image).status(); }

std::string Message(const absl::Status& s) { return std::string(s.message()); }

std::vector<uint8_t> Iota(size_t n, uint8_t start = 1) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(start + i);
  return v;
}

Value Scalar(ValueType type, uint64_t u, int64_t i = 0, double f = 0) {
  Value v;
  v.type = type;
  v.u = u;
  v.i = i;
  v.f = f;
  return v;
}

Value NumericArray(ValueType element_type, uint64_t count, const void* packed) {
  Value v;
  v.type = ValueType::kArray;
  v.array_type = element_type;
  v.array_count = count;
  v.array_data = static_cast<const uint8_t*>(packed);
  return v;
}

// A small valid file with metadata of several kinds and two tensors. Its last
// tensor ends exactly at the end of the file (no trailing padding), so every
// strict prefix of it is a truncated file.
std::vector<uint8_t> SmallValidFile() {
  Writer w;
  w.SetString("general.architecture", "llama");
  w.SetU32("llama.block_count", 2);
  w.SetF32("llama.rope.freq_base", 10000.0f);
  w.SetBool("llama.flag", true);
  w.SetStringArray("tokenizer.ggml.tokens", {"<s>", "a", "bc"});
  w.SetI32Array("tokenizer.ggml.token_type", {1, 2, 3});
  w.AddTensor("a", TensorType::kQ8_0, {32, 1}, Iota(34));
  w.AddTensor("b", TensorType::kF32, {8}, Iota(32));  // 32 bytes: a multiple of the alignment
  return w.Serialize();
}

// ---------------------------------------------------------------------------
// Round trips of files written by gguf::Writer.
// ---------------------------------------------------------------------------

TEST(GgufRoundTrip, UnsignedIntegersOfEveryWidthReadBack) {
  Writer w;
  w.SetValue("u8", Scalar(ValueType::kU8, 200));
  w.SetValue("u16", Scalar(ValueType::kU16, 60000));
  w.SetU32("u32", 4000000000u);
  w.SetU64("u64", (uint64_t{1} << 63) + 5);
  const std::vector<uint8_t> image = w.Serialize();
  auto f = Parse(image);
  ASSERT_TRUE(f.ok()) << f.status();

  EXPECT_EQ((*f)->Find("u8")->type, ValueType::kU8);
  EXPECT_EQ((*f)->Find("u16")->type, ValueType::kU16);
  EXPECT_EQ((*f)->Find("u32")->type, ValueType::kU32);
  EXPECT_EQ((*f)->Find("u64")->type, ValueType::kU64);
  EXPECT_EQ(*(*f)->GetUint("u8"), 200u);
  EXPECT_EQ(*(*f)->GetUint("u16"), 60000u);
  EXPECT_EQ(*(*f)->GetUint("u32"), 4000000000u);
  EXPECT_EQ(*(*f)->GetUint("u64"), (uint64_t{1} << 63) + 5);
}

TEST(GgufRoundTrip, SignedIntegersOfEveryWidthReadBack) {
  Writer w;
  w.SetValue("i8", Scalar(ValueType::kI8, static_cast<uint64_t>(int64_t{-100})));
  w.SetValue("i16", Scalar(ValueType::kI16, static_cast<uint64_t>(int64_t{-30000})));
  w.SetI32("i32", -2000000000);
  w.SetValue("i64", Scalar(ValueType::kI64, static_cast<uint64_t>(-(int64_t{1} << 40))));
  const std::vector<uint8_t> image = w.Serialize();
  auto f = Parse(image);
  ASSERT_TRUE(f.ok()) << f.status();

  EXPECT_EQ((*f)->Find("i8")->type, ValueType::kI8);
  EXPECT_EQ((*f)->Find("i16")->type, ValueType::kI16);
  EXPECT_EQ((*f)->Find("i32")->type, ValueType::kI32);
  EXPECT_EQ((*f)->Find("i64")->type, ValueType::kI64);
  EXPECT_EQ((*f)->Find("i8")->i, -100);
  EXPECT_EQ((*f)->Find("i16")->i, -30000);
  EXPECT_EQ((*f)->Find("i32")->i, -2000000000);
  EXPECT_EQ((*f)->Find("i64")->i, -(int64_t{1} << 40));
  EXPECT_EQ(*(*f)->GetFloat("i16"), -30000.0);
}

TEST(GgufRoundTrip, FloatsAndBoolsReadBack) {
  Writer w;
  w.SetF32("f32", 1.5f);
  w.SetValue("f64", Scalar(ValueType::kF64, 0, 0, -2.25e100));
  w.SetBool("yes", true);
  w.SetBool("no", false);
  const std::vector<uint8_t> image = w.Serialize();
  auto f = Parse(image);
  ASSERT_TRUE(f.ok()) << f.status();

  EXPECT_EQ((*f)->Find("f32")->type, ValueType::kF32);
  EXPECT_EQ((*f)->Find("f64")->type, ValueType::kF64);
  EXPECT_EQ(*(*f)->GetFloat("f32"), 1.5);
  EXPECT_EQ(*(*f)->GetFloat("f64"), -2.25e100);
  EXPECT_EQ((*f)->Find("yes")->type, ValueType::kBool);
  EXPECT_TRUE(*(*f)->GetBool("yes"));
  EXPECT_FALSE(*(*f)->GetBool("no"));
}

TEST(GgufRoundTrip, StringsReadBackIncludingEmptyAndUtf8) {
  Writer w;
  w.SetString("general.architecture", "mixtral");
  w.SetString("empty", "");
  w.SetString("utf8", "h\xc3\xa9llo \xe2\x96\x81world");
  const std::vector<uint8_t> image = w.Serialize();
  auto f = Parse(image);
  ASSERT_TRUE(f.ok()) << f.status();

  EXPECT_EQ(*(*f)->GetString("general.architecture"), "mixtral");
  EXPECT_EQ(*(*f)->GetString("empty"), "");
  EXPECT_EQ(*(*f)->GetString("utf8"), "h\xc3\xa9llo \xe2\x96\x81world");
}

TEST(GgufRoundTrip, NumericArraysReadBack) {
  const uint8_t u8s[] = {0, 7, 255};
  const int16_t i16s[] = {-32768, 0, 32767};
  const uint64_t u64s[] = {uint64_t{1} << 40, 3};
  const double f64s[] = {0.25, -1e300};
  Writer w;
  w.SetF32Array("f32s", {1.0f, -2.5f, 3.25f});
  w.SetI32Array("i32s", {-1, 0, 2147483647});
  w.SetValue("u8s", NumericArray(ValueType::kU8, 3, u8s));
  w.SetValue("i16s", NumericArray(ValueType::kI16, 3, i16s));
  w.SetValue("u64s", NumericArray(ValueType::kU64, 2, u64s));
  w.SetValue("f64s", NumericArray(ValueType::kF64, 2, f64s));
  w.SetF32Array("none", {});
  const std::vector<uint8_t> image = w.Serialize();
  auto f = Parse(image);
  ASSERT_TRUE(f.ok()) << f.status();

  const Value* f32s = (*f)->Find("f32s");
  ASSERT_NE(f32s, nullptr);
  EXPECT_EQ(f32s->type, ValueType::kArray);
  EXPECT_EQ(f32s->array_type, ValueType::kF32);
  ASSERT_EQ(f32s->array_count, 3u);
  EXPECT_EQ(ArrayElementAsDouble(*f32s, 1), -2.5);
  EXPECT_EQ(ArrayElementAsDouble(*f32s, 2), 3.25);

  const Value* i32s = (*f)->Find("i32s");
  ASSERT_EQ(i32s->array_count, 3u);
  EXPECT_EQ(i32s->array_type, ValueType::kI32);
  EXPECT_EQ(ArrayElementAsInt(*i32s, 0), -1);
  EXPECT_EQ(ArrayElementAsInt(*i32s, 2), 2147483647);

  EXPECT_EQ(ArrayElementAsInt(*(*f)->Find("u8s"), 2), 255);
  EXPECT_EQ(ArrayElementAsInt(*(*f)->Find("i16s"), 0), -32768);
  EXPECT_EQ(ArrayElementAsInt(*(*f)->Find("u64s"), 0), int64_t{1} << 40);
  EXPECT_EQ(ArrayElementAsDouble(*(*f)->Find("f64s"), 1), -1e300);
  EXPECT_EQ((*f)->Find("none")->array_count, 0u);
}

TEST(GgufRoundTrip, StringArraysReadBack) {
  Writer w;
  w.SetStringArray("tokens", {"<s>", "", "\xe2\x96\x81the"});
  w.SetStringArray("none", {});
  const std::vector<uint8_t> image = w.Serialize();
  auto f = Parse(image);
  ASSERT_TRUE(f.ok()) << f.status();

  const Value* tokens = (*f)->Find("tokens");
  ASSERT_NE(tokens, nullptr);
  EXPECT_EQ(tokens->array_type, ValueType::kString);
  EXPECT_EQ(tokens->array_count, 3u);
  EXPECT_THAT(tokens->strings, ::testing::ElementsAre("<s>", "", "\xe2\x96\x81the"));
  EXPECT_TRUE((*f)->Find("none")->strings.empty());
}

TEST(GgufRoundTrip, TypedGettersReportMissingKeysAndWrongTypes) {
  Writer w;
  w.SetString("name", "x");
  w.SetI32("negative", -1);
  const std::vector<uint8_t> image = w.Serialize();
  auto f = Parse(image);
  ASSERT_TRUE(f.ok()) << f.status();

  EXPECT_EQ((*f)->GetUint("absent").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(*(*f)->GetUintOr("absent", 7), 7u);
  const absl::Status wrong = (*f)->GetUint("name").status();
  EXPECT_EQ(wrong.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(wrong), AllOf(HasSubstr("'name'"), HasSubstr("string")));
  EXPECT_THAT(Message((*f)->GetUint("negative").status()), HasSubstr("negative"));
}

TEST(GgufRoundTrip, TensorsOfEachTypeHaveShapeSizeAndData) {
  struct Case {
    const char* name;
    TensorType type;
    std::vector<uint64_t> ne;
    uint64_t n_bytes;  // by hand from the block layout
  };
  const Case cases[] = {
      {"f32", TensorType::kF32, {4, 3}, 4 * 3 * 4},
      {"f16", TensorType::kF16, {8, 2}, 8 * 2 * 2},
      {"bf16", TensorType::kBF16, {16}, 16 * 2},
      {"q8_0", TensorType::kQ8_0, {64, 2}, 2 * 2 * 34},  // 2 blocks of 32 per row
      {"q4_0", TensorType::kQ4_0, {32, 3, 2}, 6 * 18},  // 1 block per row, 6 rows
  };
  Writer w;
  uint8_t start = 1;
  for (const Case& c : cases) {
    w.AddTensor(c.name, c.type, c.ne, Iota(c.n_bytes, start));
    start += 40;
  }
  const std::vector<uint8_t> image = w.Serialize();
  auto f = Parse(image);
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_EQ((*f)->tensors().size(), std::size(cases));

  start = 1;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const TensorInfo* t = (*f)->FindTensor(c.name);
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->type, c.type);
    EXPECT_EQ(t->n_dims, c.ne.size());
    uint64_t n_elements = 1;
    for (size_t d = 0; d < 4; ++d) {
      const uint64_t want = d < c.ne.size() ? c.ne[d] : 1;
      EXPECT_EQ(t->ne[d], want) << "dimension " << d;
      n_elements *= want;
    }
    EXPECT_EQ(t->n_elements, n_elements);
    EXPECT_EQ(t->n_bytes, c.n_bytes);
    EXPECT_EQ(t->row_bytes(), c.n_bytes / (n_elements / c.ne[0]));
    const std::vector<uint8_t> want = Iota(c.n_bytes, start);
    EXPECT_EQ(std::memcmp(t->data, want.data(), want.size()), 0);
    start += 40;
  }
  EXPECT_EQ((*f)->FindTensor("absent"), nullptr);
}

TEST(GgufRoundTrip, TensorDataIsAlignedToTheDefault32Bytes) {
  Writer w;
  w.SetString("general.architecture", "llama");  // makes the header end unaligned
  w.AddTensor("odd", TensorType::kF16, {3}, Iota(6));  // 6 bytes: the next tensor needs padding
  w.AddTensor("next", TensorType::kF32, {5}, Iota(20));
  const std::vector<uint8_t> image = w.Serialize();
  auto f = Parse(image);
  ASSERT_TRUE(f.ok()) << f.status();

  EXPECT_EQ((*f)->alignment(), 32u);
  EXPECT_EQ((*f)->data_offset() % 32, 0u);
  for (const TensorInfo& t : (*f)->tensors()) {
    EXPECT_EQ(static_cast<uint64_t>(t.data - image.data()) % 32, 0u) << t.name;
    EXPECT_EQ(t.data, image.data() + (*f)->data_offset() + t.offset) << t.name;
  }
}

TEST(GgufRoundTrip, CustomAlignmentOf64IsHonouredInTheMapping) {
  Writer w;
  w.set_alignment(64);
  w.AddTensor("a", TensorType::kF32, {3}, Iota(12));
  w.AddTensor("b", TensorType::kF32, {5}, Iota(20, 100));
  const std::string path = testing::TempDir() + "/gguf_test_alignment64.gguf";
  ASSERT_TRUE(w.WriteFile(path).ok());
  auto f = File::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();

  EXPECT_EQ((*f)->alignment(), 64u);
  EXPECT_EQ(*(*f)->GetUint("general.alignment"), 64u);
  EXPECT_EQ((*f)->data_offset() % 64, 0u);
  for (const TensorInfo& t : (*f)->tensors()) {
    EXPECT_EQ(t.offset % 64, 0u) << t.name;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % 64, 0u) << t.name;  // the mapping is page-aligned
  }
  const std::vector<uint8_t> want = Iota(20, 100);
  EXPECT_EQ(std::memcmp((*f)->FindTensor("b")->data, want.data(), want.size()), 0);
  std::remove(path.c_str());
}

TEST(GgufRoundTrip, Version2HeaderIsAccepted) {
  std::vector<uint8_t> image = SmallValidFile();
  Patch<uint32_t>(image, kVersionAt, 2);
  auto f = Parse(image);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->version(), 2u);
  EXPECT_EQ((*f)->tensors().size(), 2u);
}

TEST(GgufRoundTrip, ValueCopiedWithSetValueIsIdentical) {
  const std::vector<uint8_t> first = SmallValidFile();
  auto f = Parse(first);
  ASSERT_TRUE(f.ok()) << f.status();
  Writer w;
  for (const auto& [key, value] : (*f)->metadata()) w.SetValue(key, value);
  const std::vector<uint8_t> copy = w.Serialize();
  auto g = Parse(copy);
  ASSERT_TRUE(g.ok()) << g.status();

  EXPECT_EQ(*(*g)->GetString("general.architecture"), "llama");
  EXPECT_EQ(*(*g)->GetUint("llama.block_count"), 2u);
  EXPECT_EQ(*(*g)->GetFloat("llama.rope.freq_base"), 10000.0);
  EXPECT_TRUE(*(*g)->GetBool("llama.flag"));
  EXPECT_THAT((*g)->Find("tokenizer.ggml.tokens")->strings, ::testing::ElementsAre("<s>", "a", "bc"));
  EXPECT_EQ(ArrayElementAsInt(*(*g)->Find("tokenizer.ggml.token_type"), 2), 3);
}

// ---------------------------------------------------------------------------
// Every real file in the reference folder opens.
// ---------------------------------------------------------------------------

struct ReferenceFile {
  const char* file;
  const char* architecture;
};

class GgufReferenceFile : public testing::TestWithParam<ReferenceFile> {};

TEST_P(GgufReferenceFile, OpensWithArchitectureAndTensorsInsideTheFile) {
  const std::string path = std::string(MICROMOE_REFERENCE_DIR "/") + GetParam().file;
  if (!std::ifstream(path).good()) GTEST_SKIP() << "no reference file " << path;
  auto f = File::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();

  EXPECT_EQ(*(*f)->GetString("general.architecture"), GetParam().architecture);
  ASSERT_GT((*f)->tensors().size(), 0u);
  for (const TensorInfo& t : (*f)->tensors()) {
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % (*f)->alignment(), 0u) << t.name;
    EXPECT_LE((*f)->data_offset() + t.offset + t.n_bytes, (*f)->size()) << t.name;
  }
}

INSTANTIATE_TEST_SUITE_P(
    All, GgufReferenceFile,
    testing::Values(ReferenceFile{"mixtral-f32.gguf", "llama"},
                    ReferenceFile{"mixtral-f16.gguf", "llama"},
                    ReferenceFile{"mixtral-q8_0.gguf", "llama"},
                    ReferenceFile{"mixtral-q4_0.gguf", "llama"},
                    ReferenceFile{"mixtral-q4_k_m.gguf", "llama"},
                    ReferenceFile{"mixtral-q6_k.gguf", "llama"},
                    ReferenceFile{"olmoe-f32.gguf", "olmoe"},
                    ReferenceFile{"qwen2moe-f32.gguf", "qwen2moe"},
                    ReferenceFile{"granitemoe-f32.gguf", "granitemoe"}),
    [](const testing::TestParamInfo<ReferenceFile>& info) {
      std::string name = info.param.file;
      name = name.substr(0, name.find('.'));
      for (char& ch : name) {
        if (ch == '-') ch = '_';
      }
      return name;
    });

// ---------------------------------------------------------------------------
// Malformed files: each is rejected with InvalidArgument naming the fault.
// ---------------------------------------------------------------------------

TEST(GgufRejects, BadMagic) {
  std::vector<uint8_t> image = SmallValidFile();
  Patch<uint32_t>(image, kMagicAt, 0x47554747);  // "GGUG"
  const absl::Status s = ParseStatus(image);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), HasSubstr("bad magic"));
}

TEST(GgufRejects, Version1) {
  std::vector<uint8_t> image = SmallValidFile();
  Patch<uint32_t>(image, kVersionAt, 1);
  const absl::Status s = ParseStatus(image);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), HasSubstr("version 1"));
}

TEST(GgufRejects, Version4) {
  std::vector<uint8_t> image = SmallValidFile();
  Patch<uint32_t>(image, kVersionAt, 4);
  const absl::Status s = ParseStatus(image);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), HasSubstr("version 4"));
}

TEST(GgufRejects, BigEndianVersion) {
  std::vector<uint8_t> image = SmallValidFile();
  Patch<uint32_t>(image, kVersionAt, 0x03000000);  // version 3 written big-endian
  const absl::Status s = ParseStatus(image);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), HasSubstr("big-endian"));
}

TEST(GgufRejects, TensorCountBeyondWhatTheFileCanHold) {
  Bytes b = Header(uint64_t{1} << 60, 0);
  b.Zeros(76);  // a 100-byte file
  const absl::Status s = ParseStatus(b.bytes());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), AllOf(HasSubstr("tensor count"), HasSubstr("cannot fit")));
}

TEST(GgufRejects, MetadataCountBeyondWhatTheFileCanHold) {
  Bytes b = Header(0, uint64_t{1} << 60);
  b.Zeros(76);
  const absl::Status s = ParseStatus(b.bytes());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), AllOf(HasSubstr("metadata count"), HasSubstr("cannot fit")));
}

TEST(GgufRejects, HugeKeyLength) {
  Bytes b = Header(0, 1);
  b.U64(uint64_t{1} << 62).Zeros(64);
  const absl::Status s = ParseStatus(b.bytes());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), AllOf(HasSubstr("metadata key #0"), HasSubstr("string length")));
}

TEST(GgufRejects, HugeStringValueLength) {
  const absl::Status s =
      ParseStatus(OneKeyFile("general.name", kTypeString, Bytes().U64(uint64_t{1} << 62)));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), AllOf(HasSubstr("'general.name'"), HasSubstr("string length")));
}

TEST(GgufRejects, StringValueLongerThanTheRestOfTheFile) {
  const absl::Status s = ParseStatus(OneKeyFile("general.name", kTypeString, Bytes().U64(1000)));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), AllOf(HasSubstr("'general.name'"), HasSubstr("string length 1000")));
}

TEST(GgufRejects, HugeStringArrayCount) {
  const absl::Status s = ParseStatus(OneKeyFile(
      "tokenizer.ggml.tokens", kTypeArray, Bytes().U32(kTypeString).U64(uint64_t{1} << 60)));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), AllOf(HasSubstr("'tokenizer.ggml.tokens'"), HasSubstr("cannot fit")));
}

TEST(GgufRejects, NumericArrayCountBeyondTheRestOfTheFile) {
  const absl::Status s =
      ParseStatus(OneKeyFile("scores", kTypeArray, Bytes().U32(kTypeF32).U64(1000)));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), AllOf(HasSubstr("'scores'"), HasSubstr("does not fit")));
}

TEST(GgufRejects, NumericArrayByteSizeOverflowing64Bits) {
  // 2^62 elements of 8 bytes: the byte count wraps to 0 if computed unchecked.
  const absl::Status s =
      ParseStatus(OneKeyFile("scores", kTypeArray, Bytes().U32(kTypeU64).U64(uint64_t{1} << 62)));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), AllOf(HasSubstr("'scores'"), HasSubstr("does not fit")));
}

TEST(GgufRejects, UnknownValueType) {
  const absl::Status s = ParseStatus(OneKeyFile("k", 13, Bytes().U32(0)));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), AllOf(HasSubstr("'k'"), HasSubstr("unknown value type 13")));
}

TEST(GgufRejects, UnknownArrayElementType) {
  const absl::Status s = ParseStatus(OneKeyFile("k", kTypeArray, Bytes().U32(0xFFFFFFFF).U64(0)));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), AllOf(HasSubstr("'k'"), HasSubstr("unknown array element type")));
}

TEST(GgufRejects, NestedArray) {
  const absl::Status s = ParseStatus(OneKeyFile(
      "k", kTypeArray, Bytes().U32(kTypeArray).U64(1).U32(kTypeU32).U64(1).U32(7)));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), AllOf(HasSubstr("'k'"), HasSubstr("nested arrays")));
}

TEST(GgufRejects, BoolValueTwo) {
  const absl::Status s = ParseStatus(OneKeyFile("flag", kTypeBool, Bytes().U8(2)));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), AllOf(HasSubstr("'flag'"), HasSubstr("bool value 2")));
}

TEST(GgufRejects, EmptyKey) {
  const absl::Status s = ParseStatus(OneKeyFile("", kTypeU32, Bytes().U32(1)));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), HasSubstr("metadata key #0 is empty"));
}

TEST(GgufRejects, DuplicateMetadataKeys) {
  Bytes b = Header(0, 2);
  b.Str("llama.block_count").U32(kTypeU32).U32(2);
  b.Str("llama.block_count").U32(kTypeU32).U32(3);
  b.PadTo(kDefaultAlignment);
  const absl::Status s = ParseStatus(b.bytes());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), HasSubstr("duplicate metadata key 'llama.block_count'"));
}

TEST(GgufRejects, AlignmentZero) {
  const absl::Status s = ParseStatus(OneKeyFile("general.alignment", kTypeU32, Bytes().U32(0)));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), AllOf(HasSubstr("general.alignment"), HasSubstr("power of two")));
}

TEST(GgufRejects, AlignmentNotAPowerOfTwo) {
  const absl::Status s = ParseStatus(OneKeyFile("general.alignment", kTypeU32, Bytes().U32(3)));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), AllOf(HasSubstr("general.alignment = 3"), HasSubstr("power of two")));
}

TEST(GgufRejects, AlignmentAboveTheLimit) {
  const absl::Status s =
      ParseStatus(OneKeyFile("general.alignment", kTypeU64, Bytes().U64(uint64_t{1} << 40)));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), HasSubstr("general.alignment"));
}

TEST(GgufRejects, AlignmentThatIsNotAnInteger) {
  const absl::Status s =
      ParseStatus(OneKeyFile("general.alignment", kTypeF32, Bytes().F32(32.0f)));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), AllOf(HasSubstr("general.alignment"), HasSubstr("integer")));
}

TEST(GgufRejects, HugeTensorNameLength) {
  Bytes b = Header(1, 0);
  b.U64(uint64_t{1} << 62).Zeros(64);
  const absl::Status s = ParseStatus(b.bytes());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), AllOf(HasSubstr("tensor #0 name"), HasSubstr("string length")));
}

TEST(GgufRejects, ZeroDimensions) {
  const absl::Status s = ParseStatus(TensorFile({{.name = "w", .ne = {}}}, 64));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), AllOf(HasSubstr("tensor 'w'"), HasSubstr("dimension count 0")));
}

TEST(GgufRejects, FiveDimensions) {
  const absl::Status s = ParseStatus(TensorFile({{.name = "w", .ne = {1, 1, 1, 1, 1}}}, 64));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), AllOf(HasSubstr("tensor 'w'"), HasSubstr("dimension count 5")));
}

TEST(GgufRejects, ADimensionOfSizeZero) {
  const absl::Status s = ParseStatus(TensorFile({{.name = "w", .ne = {8, 0}}}, 64));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), AllOf(HasSubstr("tensor 'w'"), HasSubstr("dimension 1 has invalid size 0")));
}

TEST(GgufRejects, ElementCountOverflowing64Bits) {
  const uint64_t k = uint64_t{1} << 32;
  const absl::Status s = ParseStatus(TensorFile({{.name = "w", .ne = {k, k}}}, 64));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), AllOf(HasSubstr("tensor 'w'"), HasSubstr("overflows 64 bits")));
}

TEST(GgufRejects, ByteSizeOverflowing64Bits) {
  // 2^62 F32 elements fit in 64 bits; their 2^64 bytes do not.
  const uint64_t k = uint64_t{1} << 31;
  const absl::Status s = ParseStatus(TensorFile({{.name = "w", .ne = {k, k}}}, 64));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), AllOf(HasSubstr("tensor 'w'"), HasSubstr("byte size overflows")));
}

TEST(GgufRejects, UnknownTensorType99) {
  const absl::Status s = ParseStatus(TensorFile({{.name = "w", .type = 99}}, 64));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), AllOf(HasSubstr("tensor 'w'"), HasSubstr("unknown tensor type 99")));
}

TEST(GgufRejects, UnsupportedTensorTypeIsNamed) {
  const absl::Status s = ParseStatus(TensorFile({{.name = "w", .type = 16}}, 64));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), AllOf(HasSubstr("tensor 'w'"), HasSubstr("tensor type IQ2_XXS (16) is not supported")));
}

TEST(GgufRejects, UnknownTensorTypeAllOnes) {
  const absl::Status s = ParseStatus(TensorFile({{.name = "w", .type = 0xFFFFFFFF}}, 64));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), AllOf(HasSubstr("tensor 'w'"), HasSubstr("unknown tensor type 4294967295")));
}

TEST(GgufRejects, RowLengthNotAMultipleOfTheBlockSize) {
  const absl::Status s =
      ParseStatus(TensorFile({{.name = "w", .ne = {33, 2}, .type = kTensorQ8_0}}, 256));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), AllOf(HasSubstr("tensor 'w'"), HasSubstr("row length 33"),
                                HasSubstr("Q8_0 block size 32")));
}

TEST(GgufRejects, TensorOffsetNotAMultipleOfTheAlignment) {
  const absl::Status s = ParseStatus(TensorFile({{.name = "w", .offset = 4}}, 64));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), AllOf(HasSubstr("tensor 'w'"), HasSubstr("offset 4"),
                                HasSubstr("not a multiple of the alignment 32")));
}

TEST(GgufRejects, TensorDataPastTheEndOfTheFile) {
  // 8 F32 elements need 32 bytes; the file holds 16.
  const absl::Status s = ParseStatus(TensorFile({{.name = "w", .ne = {8}}}, 16));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), AllOf(HasSubstr("tensor 'w'"), HasSubstr("past the end")));
}

TEST(GgufRejects, TensorOffsetPlusSizeOverflowing64Bits) {
  // An aligned offset so close to 2^64 that offset + 32 bytes wraps around to 0.
  const uint64_t offset = ~uint64_t{0} - 31;
  const absl::Status s = ParseStatus(TensorFile({{.name = "w", .ne = {8}, .offset = offset}}, 64));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), AllOf(HasSubstr("tensor 'w'"), HasSubstr("past the end")));
}

TEST(GgufRejects, DuplicateTensorNames) {
  const absl::Status s =
      ParseStatus(TensorFile({{.name = "w", .offset = 0}, {.name = "w", .offset = 32}}, 64));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), HasSubstr("duplicate tensor name 'w'"));
}

TEST(GgufRejects, HeaderEndingPastTheEndOfTheFile) {
  // Tensor infos present but the file stops before the aligned data section.
  std::vector<uint8_t> image = TensorFile({{.name = "w"}}, 0);
  ASSERT_EQ(image.size() % 32, 0u);
  image.pop_back();
  const absl::Status s = ParseStatus(image);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), HasSubstr("data section"));
}

TEST(GgufRejects, FileTruncatedAtEveryByteOffset) {
  const std::vector<uint8_t> image = SmallValidFile();
  {
    auto whole = Parse(image);
    ASSERT_TRUE(whole.ok()) << whole.status();
    const TensorInfo& last = (*whole)->tensors().back();
    ASSERT_EQ((*whole)->data_offset() + last.offset + last.n_bytes, image.size())
        << "the file must end with tensor data, not padding";
  }
  for (size_t n = 0; n < image.size(); ++n) {
    // An exact-size copy, so a sanitizer sees any read past the end.
    const std::vector<uint8_t> prefix(image.begin(), image.begin() + n);
    const absl::Status s = File::FromMemory(prefix.data(), prefix.size()).status();
    ASSERT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << "prefix of " << n << " bytes: " << s;
    ASSERT_FALSE(s.message().empty());
  }
}

TEST(GgufRejects, RandomByteMutationsOpenOrFailCleanly) {
  const std::vector<uint8_t> image = SmallValidFile();
  std::mt19937_64 rng(20240601);
  int opened = 0;
  for (int trial = 0; trial < 2000; ++trial) {
    std::vector<uint8_t> m = image;
    const int n_changes = 1 + static_cast<int>(rng() % 4);
    for (int c = 0; c < n_changes; ++c) {
      const size_t at = rng() % m.size();
      switch (rng() % 3) {
        case 0: m[at] ^= static_cast<uint8_t>(1u << (rng() % 8)); break;  // one bit
        case 1: m[at] = static_cast<uint8_t>(rng()); break;              // any byte
        default: m[at] = (rng() % 2) ? 0xFF : 0x00; break;               // extremes
      }
    }
    largest_allocation = 0;
    auto f = File::FromMemory(m.data(), m.size());
    const size_t largest = largest_allocation;
    ASSERT_LE(largest, 16 * m.size() + 4096) << "trial " << trial;
    if (!f.ok()) {
      ASSERT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument) << "trial " << trial;
      continue;
    }
    ++opened;
    // Whatever opened must only point inside the image.
    const uint8_t* end = m.data() + m.size();
    for (const TensorInfo& t : (*f)->tensors()) {
      ASSERT_GE(t.data, m.data() + (*f)->data_offset()) << "trial " << trial;
      ASSERT_LE(t.n_bytes, static_cast<uint64_t>(end - t.data)) << "trial " << trial;
    }
    for (const auto& [key, v] : (*f)->metadata()) {
      if (v.type == ValueType::kString) {
        ASSERT_TRUE(v.str.empty() || (reinterpret_cast<const uint8_t*>(v.str.data()) >= m.data() &&
                                      reinterpret_cast<const uint8_t*>(v.str.data()) + v.str.size() <= end));
      }
    }
  }
  // Some mutations (inside tensor data or string bytes) leave the file valid.
  EXPECT_GT(opened, 0);
}

TEST(GgufRejects, NoAllocationSizedByAClaimedCount) {
  const std::vector<std::vector<uint8_t>> hostile = {
      Header(uint64_t{1} << 30, 0).Zeros(76).bytes(),
      Header(0, uint64_t{1} << 30).Zeros(76).bytes(),
      OneKeyFile("k", kTypeArray, Bytes().U32(kTypeString).U64(uint64_t{1} << 30)),
      OneKeyFile("k", kTypeArray, Bytes().U32(kTypeU8).U64(uint64_t{1} << 30)),
      OneKeyFile("k", kTypeString, Bytes().U64(uint64_t{1} << 30)),
      TensorFile({{.name = "w", .ne = {uint64_t{1} << 30}}}, 64),
  };
  for (size_t i = 0; i < hostile.size(); ++i) {
    largest_allocation = 0;
    const absl::Status s = ParseStatus(hostile[i]);
    const size_t largest = largest_allocation;
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << "file " << i;
    EXPECT_LT(largest, size_t{64} << 10) << "file " << i << ": " << s;
  }
}

// ---------------------------------------------------------------------------
// File::Open on the file system.
// ---------------------------------------------------------------------------

TEST(GgufOpen, MissingPathIsNotFound) {
  auto f = File::Open(testing::TempDir() + "/gguf_test_does_not_exist.gguf");
  EXPECT_EQ(f.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(f.status()), HasSubstr("gguf_test_does_not_exist.gguf"));
}

TEST(GgufOpen, DirectoryIsAnError) {
  auto f = File::Open(testing::TempDir());
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(f.status()), HasSubstr("not a regular file"));
}

TEST(GgufOpen, FileShorterThanTheHeaderIsAnError) {
  const std::string path = testing::TempDir() + "/gguf_test_short.gguf";
  {
    std::unique_ptr<FILE, int (*)(FILE*)> out(std::fopen(path.c_str(), "wb"), &std::fclose);
    ASSERT_NE(out, nullptr);
    std::fwrite("GGUF", 1, 4, out.get());
  }
  auto f = File::Open(path);
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(f.status()), HasSubstr("too small"));
  std::remove(path.c_str());
}

TEST(GgufOpen, ErrorsFromAMappedFileNameThePathAndTheField) {
  std::vector<uint8_t> image = SmallValidFile();
  Patch<uint32_t>(image, kVersionAt, 7);
  const std::string path = testing::TempDir() + "/gguf_test_version7.gguf";
  {
    std::unique_ptr<FILE, int (*)(FILE*)> out(std::fopen(path.c_str(), "wb"), &std::fclose);
    ASSERT_NE(out, nullptr);
    ASSERT_EQ(std::fwrite(image.data(), 1, image.size(), out.get()), image.size());
  }
  auto f = File::Open(path);
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(f.status()), AllOf(HasSubstr("gguf_test_version7.gguf"), HasSubstr("version 7")));
  std::remove(path.c_str());
}


// Tensors produced while the file is written (quantize holds one at a time):
// the file equals Serialize(), a producer of the wrong size fails the write,
// and a failed write leaves no partial file and an existing file untouched.
TEST(GgufWriter, ProducedTensorsStreamAndFailedWritesLeaveNothing) {
  const std::string path = ::testing::TempDir() + "/writer_stream_" + std::to_string(::getpid()) + ".gguf";
  auto read_all = [](const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  };
  int calls = 0;
  Writer w;
  w.SetString("general.architecture", "llama");
  w.AddTensor("a", TensorType::kQ8_0, {32, 1}, 34, [&] { ++calls; return Iota(34); });
  w.AddTensor("b", TensorType::kF32, {8}, Iota(32));
  ASSERT_TRUE(w.WriteFile(path).ok());
  EXPECT_EQ(calls, 1);
  const std::vector<uint8_t> written = read_all(path);
  EXPECT_EQ(written, w.Serialize());
  auto f = Parse(written);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(std::vector<uint8_t>((*f)->FindTensor("a")->data, (*f)->FindTensor("a")->data + 34), Iota(34));

  Writer bad;
  bad.AddTensor("a", TensorType::kQ8_0, {32, 1}, 34, [] { return Iota(33); });
  const absl::Status s = bad.WriteFile(path);
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(s.message(), HasSubstr("tensor 'a' has 33 bytes, expected 34"));
  EXPECT_EQ(read_all(path), written) << "the existing file must stay as it was";
  EXPECT_FALSE(std::ifstream(path + ".tmp").good()) << "no partial file left behind";
  std::remove(path.c_str());
}

}  // namespace
}  // namespace micromoe::gguf
