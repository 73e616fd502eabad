// safetensors reader and writer (mor/io/safetensors.h): round trips of every dtype (0-rank and empty
// tensors, metadata), the exact bytes the writer produces (deterministic, 8-byte aligned data), a
// file assembled byte by byte in the test, every validation failure of the reader (the message names
// the file and the tensor / field), streaming writes in pieces, and writer misuse.
#include "mor/io/safetensors.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

#include "error_testing.h"
#include "mor/core/file.h"

namespace mor::io {
namespace {

using mor::testing::expect_error;

constexpr DType kAllDTypes[] = {DType::kBool, DType::kU8,  DType::kI8,  DType::kI16,    DType::kU16,
                                DType::kF16,  DType::kBF16, DType::kI32, DType::kU32,    DType::kF32,
                                DType::kF64,  DType::kI64, DType::kU64, DType::kF8E4M3, DType::kF8E5M2};

std::string read_all(const std::string& path) { return mor::core::read_file(path); }

std::vector<std::byte> pattern(size_t n, int seed) {
  std::vector<std::byte> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<std::byte>((i * 31 + static_cast<size_t>(seed) * 7 + 3) & 0xFF);
  return out;
}

std::string as_string(std::span<const std::byte> bytes) {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

// u64 little-endian, assembled byte by byte (independent of the writer and of the host order).
std::string u64_le(uint64_t v) {
  std::string out;
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
  return out;
}

// Expects `fn` to throw a mor::Error whose message contains every fragment.
template <typename Fn>
void expect_error_with(Fn&& fn, const std::vector<std::string>& fragments) {
  const std::string message = expect_error(fn);
  for (const auto& f : fragments) {
    EXPECT_NE(message.find(f), std::string::npos) << "message: " << message << "\nmissing: " << f;
  }
}

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "mor_safetensors_test_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::system(("rm -rf '" + dir_ + "'").c_str()); }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }

  // Writes raw bytes to a file and returns its path.
  std::string raw(const std::string& name, const std::string& bytes) const {
    std::ofstream out(path(name), std::ios::binary);
    out << bytes;
    return path(name);
  }
  // u64 header length, the header, the data.
  std::string file(const std::string& name, const std::string& header, const std::string& data) const {
    return raw(name, u64_le(header.size()) + header + data);
  }
  // Expects opening `file` to fail with a message naming the file and every fragment.
  void expect_read_error(const std::string& file, std::vector<std::string> fragments) const {
    fragments.push_back(file + ": ");
    expect_error_with([&] { SafetensorsReader r(file); }, fragments);
  }

  std::string dir_;
};

TEST_F(SafetensorsTest, DTypeNamesAndSizes) {
  const char* names[] = {"BOOL", "U8", "I8", "I16", "U16", "F16", "BF16", "I32",
                         "U32",  "F32", "F64", "I64", "U64", "F8_E4M3", "F8_E5M2"};
  const int64_t sizes[] = {1, 1, 1, 2, 2, 2, 2, 4, 4, 4, 8, 8, 8, 1, 1};
  for (size_t i = 0; i < std::size(kAllDTypes); ++i) {
    EXPECT_STREQ(dtype_name(kAllDTypes[i]), names[i]);
    EXPECT_EQ(dtype_size(kAllDTypes[i]), sizes[i]) << names[i];
    EXPECT_EQ(dtype_from_name(names[i]), kAllDTypes[i]);
  }
  expect_error_with([] { dtype_from_name("f32"); }, {"unknown safetensors dtype 'f32'", "F32"});
  expect_error_with([] { dtype_from_name("F8_E8M0"); }, {"'F8_E8M0'"});
  expect_error_with([] { dtype_size(static_cast<DType>(99)); }, {"99"});
  TensorInfo scalar{"s", DType::kF32, {}, 0, 4};
  EXPECT_EQ(scalar.numel(), 1);
  EXPECT_EQ(scalar.nbytes(), 4u);
  EXPECT_EQ((TensorInfo{"e", DType::kF32, {3, 0, 2}, 4, 4}.numel()), 0);
}

TEST_F(SafetensorsTest, RoundTripEveryDTypeScalarsEmptiesAndMetadata) {
  std::vector<TensorView> views;
  std::vector<std::vector<std::byte>> storage;
  const std::vector<std::vector<int64_t>> shapes = {{2, 3}, {}, {0}, {5}, {1, 1, 4}, {3, 0, 2}, {7}};
  for (size_t i = 0; i < std::size(kAllDTypes); ++i) {
    const auto& shape = shapes[i % shapes.size()];
    const int64_t numel = std::accumulate(shape.begin(), shape.end(), int64_t{1}, std::multiplies<>());
    storage.push_back(pattern(static_cast<size_t>(numel * dtype_size(kAllDTypes[i])), static_cast<int>(i)));
  }
  for (size_t i = 0; i < std::size(kAllDTypes); ++i) {
    views.push_back({std::string("t.") + dtype_name(kAllDTypes[i]), kAllDTypes[i], shapes[i % shapes.size()],
                     storage[i].empty() ? nullptr : storage[i].data()});
  }
  const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"note", "ünïcode \"quoted\"\n"}, {"", "x"}};
  write_safetensors(path("a.safetensors"), views, metadata, /*fsync=*/false);
  EXPECT_FALSE(mor::core::file_exists(path("a.safetensors.tmp")));

  SafetensorsReader r(path("a.safetensors"));
  EXPECT_EQ(r.path(), path("a.safetensors"));
  EXPECT_EQ(r.metadata(), metadata);
  ASSERT_EQ(r.tensors().size(), views.size());
  uint64_t offset = 0;
  for (size_t i = 0; i < views.size(); ++i) {
    const TensorInfo& t = r.tensors()[i];  // declaration order == offset order
    EXPECT_EQ(t.name, views[i].name);
    EXPECT_EQ(t.dtype, views[i].dtype);
    EXPECT_EQ(t.shape, views[i].shape);
    EXPECT_EQ(t.begin, offset);
    EXPECT_EQ(t.nbytes(), storage[i].size());
    offset = t.end;
    EXPECT_EQ(as_string(r.data(t)), as_string(storage[i])) << t.name;
    EXPECT_EQ(&r.at(t.name), &t);
    EXPECT_EQ(r.find(t.name), &t);
  }
  EXPECT_EQ(r.data_size(), offset);  // no trailing bytes
  EXPECT_EQ(r.data_offset() + r.data_size(), static_cast<uint64_t>(mor::core::file_size(r.path())));
  EXPECT_EQ(r.at("t.U8").shape, std::vector<int64_t>{});  // 0-rank
  EXPECT_EQ(r.at("t.U32").numel(), 1);
  EXPECT_EQ(r.at("t.U32").nbytes(), 4u);
  EXPECT_EQ(r.at("t.I8").shape, std::vector<int64_t>{0});  // empty
  EXPECT_EQ(r.at("t.F16").shape, (std::vector<int64_t>{3, 0, 2}));
  EXPECT_EQ(r.at("t.F16").nbytes(), 0u);
  EXPECT_EQ(r.find("nope"), nullptr);
  expect_error_with([&] { r.at("nope"); }, {path("a.safetensors") + ": no tensor 'nope'"});

  // The reader is movable and the mapping moves with it.
  const std::string first = as_string(r.data(r.tensors()[0]));
  SafetensorsReader moved(std::move(r));
  EXPECT_EQ(as_string(moved.data(moved.tensors()[0])), first);
  TensorInfo forged = moved.tensors()[0];
  forged.end = moved.data_size() + 1;
  expect_error_with([&] { moved.data(forged); }, {path("a.safetensors"), "tensor 't.BOOL'", "outside"});
}

TEST_F(SafetensorsTest, ExactBytesDeterministicAndAligned) {
  const float values[2] = {1.5f, -2.0f};
  write_safetensors(path("a.st"), {{"a", DType::kF32, {2}, values}}, {{"k", "v"}}, false);
  const std::string json = R"({"__metadata__":{"k":"v"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  std::string header = json + std::string((8 - json.size() % 8) % 8, ' ');
  std::string data(8, '\0');
  std::memcpy(data.data(), values, 8);
  EXPECT_EQ(read_all(path("a.st")), u64_le(header.size()) + header + data);

  // No "__metadata__" when there is none; an empty file is just "{}" padded.
  write_safetensors(path("b.st"), {{"a", DType::kF32, {2}, values}}, {}, false);
  EXPECT_EQ(read_all(path("b.st")).find("__metadata__"), std::string::npos);
  write_safetensors(path("empty.st"), {}, {}, false);
  EXPECT_EQ(read_all(path("empty.st")), u64_le(8) + "{}      ");
  SafetensorsReader empty(path("empty.st"));
  EXPECT_TRUE(empty.tensors().empty());
  EXPECT_TRUE(empty.metadata().empty());

  // Same input, byte-identical output; the data buffer starts at a multiple of 8 for any names.
  for (int len = 1; len <= 24; ++len) {
    const std::string name(static_cast<size_t>(len), 'n');
    const auto bytes = pattern(6, len);
    const std::vector<TensorView> views = {{name, DType::kU16, {3}, bytes.data()}, {"z", DType::kU8, {0}, nullptr}};
    write_safetensors(path("x.st"), views, {{"m", std::string(static_cast<size_t>(len % 5), 'q')}}, false);
    write_safetensors(path("y.st"), views, {{"m", std::string(static_cast<size_t>(len % 5), 'q')}}, false);
    const std::string x = read_all(path("x.st"));
    EXPECT_EQ(x, read_all(path("y.st")));
    SafetensorsReader r(path("x.st"));
    EXPECT_EQ(r.data_offset() % 8, 0u) << len;
    const std::string h = x.substr(8, r.data_offset() - 8);  // JSON, then fewer than 8 spaces
    const size_t close = h.find_last_of('}');
    EXPECT_EQ(h.find_first_not_of(' ', close + 1), std::string::npos);
    EXPECT_LT(h.size() - close - 1, 8u);
    EXPECT_EQ(as_string(r.data(r.at(name))), as_string(bytes));
  }
}

TEST_F(SafetensorsTest, ReadsHandBuiltFileWithGapsTrailingBytesAndUnalignedHeader) {
  // b: I16 [3] at [0,6); 2 gap bytes; a: F64 scalar at [8,16); "é": U8 [0] at [16,16); 4 trailing bytes.
  const std::string header =
      "{\"a\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[8,16]}, \"__metadata__\":{\"format\":\"pt\"},"
      "\"b\":{\"shape\":[3],\"dtype\":\"I16\",\"data_offsets\":[0,6],\"extra\":{\"ignored\":[1]}},"
      "\"\xC3\xA9\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[16,16]}}";
  ASSERT_NE(header.size() % 8, 0u);
  std::string data;
  for (int16_t v : {int16_t{1}, int16_t{-2}, int16_t{300}}) {
    data.push_back(static_cast<char>(static_cast<uint16_t>(v) & 0xFF));
    data.push_back(static_cast<char>(static_cast<uint16_t>(v) >> 8));
  }
  data += "GG";
  const double a = 3.5;  // IEEE-754 0x400C000000000000
  data += u64_le(0x400C000000000000ull);
  data += "TAIL";
  const std::string f = file("hand.safetensors", header, data);

  SafetensorsReader r(f);
  EXPECT_EQ(r.data_offset(), 8 + header.size());
  EXPECT_EQ(r.data_size(), data.size());
  EXPECT_EQ(r.metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));
  ASSERT_EQ(r.tensors().size(), 3u);
  EXPECT_EQ(r.tensors()[0].name, "b");  // sorted by offset
  EXPECT_EQ(r.tensors()[1].name, "a");
  EXPECT_EQ(r.tensors()[2].name, "\xC3\xA9");
  const TensorInfo& b = r.at("b");
  EXPECT_EQ(b.dtype, DType::kI16);
  EXPECT_EQ(b.shape, std::vector<int64_t>{3});
  int16_t bv[3];
  std::memcpy(bv, r.data(b).data(), 6);
  EXPECT_EQ(bv[0], 1);
  EXPECT_EQ(bv[1], -2);
  EXPECT_EQ(bv[2], 300);
  double av = 0;
  ASSERT_EQ(r.data(r.at("a")).size(), 8u);
  std::memcpy(&av, r.data(r.at("a")).data(), 8);
  EXPECT_EQ(av, a);
  EXPECT_TRUE(r.data(r.at("\xC3\xA9")).empty());
}

TEST_F(SafetensorsTest, RejectsBadFramesNamingTheFile) {
  expect_read_error(raw("empty.st", ""), {"0 bytes", "shorter than the 8-byte header length"});
  expect_read_error(raw("short.st", "abcde"), {"5 bytes"});
  expect_read_error(raw("zero.st", u64_le(0) + "{}"), {"header length is 0"});
  expect_read_error(raw("huge.st", u64_le(100'000'001) + "{}"), {"header length 100000001", "limit"});
  expect_read_error(raw("huge2.st", u64_le(~0ull) + "{}"), {"header length 18446744073709551615"});
  expect_read_error(raw("beyond.st", u64_le(40) + "{}      "), {"header length 40", "beyond the end of the file"});
  expect_error_with([&] { SafetensorsReader r(path("missing.st")); }, {"cannot open", path("missing.st")});
}

TEST_F(SafetensorsTest, RejectsBadHeadersNamingFileTensorAndField) {
  struct Case {
    std::string header;
    std::vector<std::string> fragments;
  };
  const std::string ok_w = R"("w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  auto entry = [](const std::string& body) { return "{\"w\":{" + body + "}}"; };
  const std::vector<Case> cases = {
      // Not UTF-8 / not JSON / not an object.
      {"{\"w\xFF\":{}}", {"not valid UTF-8", "byte 11"}},
      {"{\"\xC0\xAF\":{}}", {"not valid UTF-8"}},          // overlong
      {"{\"\xED\xA0\x80\":{}}", {"not valid UTF-8"}},      // surrogate
      {"{\"\xF4\x90\x80\x80\":{}}", {"not valid UTF-8"}},  // above U+10FFFF
      {"{\"\xE2\x82\":{}}", {"not valid UTF-8"}},          // truncated sequence
      {"{", {"not valid JSON"}},
      {"{} x", {"not valid JSON"}},
      {"{\"w\":1,}", {"not valid JSON"}},
      {"[]", {"header must be a JSON object", "array"}},
      {"\"w\"", {"header must be a JSON object", "string"}},
      // Duplicate keys.
      {"{" + ok_w + "," + ok_w + "}", {"header: duplicate key 'w'"}},
      {entry(R"("dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8])"), {"tensor 'w': duplicate key 'dtype'"}},
      {R"({"__metadata__":{"k":"a","k":"b"}})", {"__metadata__: duplicate key 'k'"}},
      // Entries and their fields.
      {R"({"w":[1]})", {"tensor 'w': entry must be an object", "array"}},
      {R"({"w":null})", {"tensor 'w': entry must be an object", "null"}},
      {entry(R"("shape":[2],"data_offsets":[0,8])"), {"tensor 'w': dtype: missing"}},
      {entry(R"("dtype":4,"shape":[2],"data_offsets":[0,8])"), {"tensor 'w': dtype: must be a string", "number"}},
      {entry(R"("dtype":"F31","shape":[2],"data_offsets":[0,8])"), {"tensor 'w': dtype: unknown dtype 'F31'"}},
      {entry(R"("dtype":"F32","data_offsets":[0,8])"), {"tensor 'w': shape: missing"}},
      {entry(R"("dtype":"F32","shape":2,"data_offsets":[0,8])"), {"tensor 'w': shape: must be an array", "number"}},
      {entry(R"("dtype":"F32","shape":[2.5],"data_offsets":[0,8])"), {"tensor 'w': shape[0]: must be a non-negative integer", "2.5"}},
      {entry(R"("dtype":"F32","shape":[1,"2"],"data_offsets":[0,8])"), {"tensor 'w': shape[1]: must be a non-negative integer", "string"}},
      {entry(R"("dtype":"F32","shape":[-2],"data_offsets":[0,8])"), {"tensor 'w': shape[0]: must not be negative (got -2)"}},
      {entry(R"("dtype":"F32","shape":[18446744073709551615],"data_offsets":[0,8])"), {"tensor 'w': shape[0]", "too large"}},
      {entry(R"("dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8])"), {"tensor 'w': shape: ", "overflows"}},
      {entry(R"("dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,8])"), {"tensor 'w': shape: ", "overflows"}},
      {entry(R"("dtype":"F32","shape":[2])"), {"tensor 'w': data_offsets: missing"}},
      {entry(R"("dtype":"F32","shape":[2],"data_offsets":8)"), {"tensor 'w': data_offsets: must be an array of two", "number"}},
      {entry(R"("dtype":"F32","shape":[2],"data_offsets":[0])"), {"tensor 'w': data_offsets: ", "1 elements"}},
      {entry(R"("dtype":"F32","shape":[2],"data_offsets":[0,8,16])"), {"tensor 'w': data_offsets: ", "3 elements"}},
      {entry(R"("dtype":"F32","shape":[2],"data_offsets":[-1,7])"), {"tensor 'w': data_offsets[0]: must not be negative"}},
      {entry(R"("dtype":"F32","shape":[2],"data_offsets":[0,8.0])"), {"tensor 'w': data_offsets[1]: must be a non-negative integer"}},
      {entry(R"("dtype":"F32","shape":[2],"data_offsets":[0,null])"), {"tensor 'w': data_offsets[1]", "null"}},
      {entry(R"("dtype":"F32","shape":[0],"data_offsets":[8,0])"), {"tensor 'w': data_offsets: begin 8 is after end 0"}},
      {entry(R"("dtype":"F32","shape":[6],"data_offsets":[0,24])"), {"tensor 'w': data_offsets: end 24 is beyond the data buffer of 16 bytes"}},
      {entry(R"("dtype":"F32","shape":[3],"data_offsets":[0,8])"), {"tensor 'w': data_offsets: [0, 8) holds 8 bytes", "F32 [3] needs 12"}},
      {entry(R"("dtype":"F32","shape":[],"data_offsets":[0,0])"), {"tensor 'w': data_offsets", "needs 4"}},
      // Overlaps (empty tensors overlap nothing).
      {"{" + ok_w + R"(,"v":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})", {"tensor 'v'", "overlaps tensor 'w' at [0, 8)"}},
      {"{" + ok_w + R"(,"v":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}})", {"overlaps", "'v'", "'w'"}},
      // __metadata__.
      {R"({"__metadata__":[]})", {"__metadata__: must be an object of strings", "array"}},
      {R"({"__metadata__":null})", {"__metadata__: must be an object of strings", "null"}},
      {R"({"__metadata__":{"a":"x","b":1}})", {"__metadata__: value of 'b' must be a string", "number"}},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE("case " + std::to_string(i) + ": " + cases[i].header);
    expect_read_error(file("bad" + std::to_string(i) + ".st", cases[i].header, std::string(16, '\0')), cases[i].fragments);
  }
  // Sanity: the same frame with a valid header reads, and empty tensors may sit anywhere.
  SafetensorsReader ok(file("ok.st", "{" + ok_w + R"(,"e":{"dtype":"F32","shape":[0,3],"data_offsets":[4,4]}})",
                            std::string(16, '\0')));
  EXPECT_EQ(ok.tensors().size(), 2u);
}

TEST_F(SafetensorsTest, StreamingInPiecesEqualsOneShot) {
  const auto big = pattern(3'000'000 + 5, 1);  // U8, larger than the writer's buffer
  const auto f32 = pattern(1000 * 3 * 4, 2);
  const auto bf16 = pattern(6, 3);
  const std::vector<TensorView> views = {{"big", DType::kU8, {3'000'005}, big.data()},
                                         {"empty", DType::kI64, {0, 4}, nullptr},
                                         {"f32", DType::kF32, {1000, 3}, f32.data()},
                                         {"bf16", DType::kBF16, {3}, bf16.data()}};
  write_safetensors(path("one.st"), views, {{"a", "b"}}, false);

  SafetensorsWriter w(path("pieces.st"));
  EXPECT_EQ(w.path(), path("pieces.st"));
  w.set_metadata({{"a", "b"}});
  for (const auto& v : views) w.declare(v.name, v.dtype, v.shape);
  w.begin();
  const std::span<const std::byte> b(big);
  w.write("big", b.subspan(0, 1));
  w.write("big", b.subspan(1, 0));
  w.write("big", b.subspan(1, 2'000'000));
  w.write("big", b.subspan(2'000'001, 7));
  w.write("big", b.subspan(2'000'008));
  w.write("empty", {});  // optional for 0-byte tensors
  const std::span<const std::byte> f(f32);
  for (size_t at = 0; at < f.size(); at += 4096) w.write("f32", f.subspan(at, std::min<size_t>(4096, f.size() - at)));
  w.write("bf16", bf16);
  EXPECT_FALSE(mor::core::file_exists(path("pieces.st")));
  w.finish();
  EXPECT_FALSE(mor::core::file_exists(path("pieces.st.tmp")));
  EXPECT_EQ(read_all(path("pieces.st")), read_all(path("one.st")));
  SafetensorsReader r(path("pieces.st"));
  EXPECT_EQ(as_string(r.data(r.at("big"))), as_string(big));
}

TEST_F(SafetensorsTest, WriterMisuseIsAnErrorNamingFileAndTensor) {
  const std::string p = path("m.st");
  SafetensorsWriter w(p);
  w.declare("a", DType::kF32, {2});
  w.declare("b", DType::kU8, {3});
  w.declare("c", DType::kU8, {0});
  w.declare("d", DType::kU8, {1});
  expect_error_with([&] { w.declare("a", DType::kF32, {1}); }, {p, "'a'", "twice"});
  expect_error_with([&] { w.declare("__x", DType::kF32, {1}); }, {p, "'__x'", "reserved"});
  expect_error_with([&] { w.declare("__metadata__", DType::kF32, {1}); }, {p, "reserved"});
  expect_error_with([&] { w.declare("", DType::kF32, {1}); }, {p, "empty name"});
  expect_error_with([&] { w.declare("bad\xFF", DType::kF32, {1}); }, {p, "UTF-8"});
  expect_error_with([&] { w.declare("neg", DType::kF32, {2, -1}); }, {p, "'neg'", "negative dimension -1", "[2, -1]"});
  expect_error_with([&] { w.declare("ovf", DType::kF64, {int64_t{1} << 40, int64_t{1} << 30}); }, {p, "'ovf'", "overflows"});
  expect_error_with([&] { w.set_metadata({{"k", "\xC3"}}); }, {p, "__metadata__", "'k'", "UTF-8"});
  const std::vector<std::byte> eight(8), one(1);
  expect_error_with([&] { w.write("a", eight); }, {p, "'a'", "before begin()"});
  w.begin();
  expect_error_with([&] { w.begin(); }, {p, "twice"});
  expect_error_with([&] { w.declare("e", DType::kU8, {1}); }, {p, "'e'", "after begin()"});
  expect_error_with([&] { w.set_metadata({}); }, {p, "after begin()"});
  expect_error_with([&] { w.write("zz", one); }, {p, "'zz'", "not declared"});
  w.write("a", std::span(eight).first(3));
  expect_error_with([&] { w.write("b", one); }, {p, "'b' written before tensor 'a' is complete", "3 of 8 bytes"});
  expect_error_with([&] { w.write("a", eight); }, {p, "tensor 'a': 8 bytes given but only 5 of its 8 bytes", "F32 [2]"});
  w.write("a", std::span(eight).first(5));
  w.write("b", one);
  expect_error_with([&] { w.write("a", one); }, {p, "'a' was already written"});
  expect_error_with([&] { w.finish(); }, {p, "tensor 'b' is incomplete", "1 of 3 bytes"});
  EXPECT_FALSE(mor::core::file_exists(p));
  w.write("b", std::span(eight).first(2));  // the writer is still usable after those errors
  expect_error_with([&] { w.finish(); }, {p, "tensor 'd' is incomplete", "0 of 1 bytes"});  // 'c' is empty
  w.write("d", one);
  w.finish(false);
  expect_error_with([&] { w.write("d", one); }, {p, "after finish()"});
  expect_error_with([&] { w.finish(); }, {p, "after finish()"});
  SafetensorsReader r(p);
  EXPECT_EQ(r.tensors().size(), 4u);
  expect_error_with([&] { write_safetensors(path("n.st"), {{"x", DType::kF32, {1}, nullptr}}); }, {"'x'", "no data"});
  expect_error_with([&] { SafetensorsWriter bad(path("no/such/dir/x.st")); }, {"cannot create", "no/such/dir/x.st.tmp"});
}

TEST_F(SafetensorsTest, UnfinishedWriterLeavesNoFile) {
  { SafetensorsWriter w(path("a.st")); }
  EXPECT_FALSE(mor::core::file_exists(path("a.st")));
  EXPECT_FALSE(mor::core::file_exists(path("a.st.tmp")));
  {
    SafetensorsWriter w(path("b.st"));
    w.declare("x", DType::kF32, {1000});
    w.begin();
    w.write("x", pattern(400, 0));
    EXPECT_TRUE(mor::core::file_exists(path("b.st.tmp")));
  }
  EXPECT_FALSE(mor::core::file_exists(path("b.st")));
  EXPECT_FALSE(mor::core::file_exists(path("b.st.tmp")));
  // An existing file under the final name is left as it was; a moved-from writer does nothing.
  mor::core::atomic_write(path("c.st"), "old");
  {
    SafetensorsWriter w(path("c.st"));
    SafetensorsWriter moved(std::move(w));
    moved.declare("x", DType::kU8, {1});
    moved.begin();
  }
  EXPECT_EQ(read_all(path("c.st")), "old");
  EXPECT_FALSE(mor::core::file_exists(path("c.st.tmp")));
}

}  // namespace
}  // namespace mor::io
