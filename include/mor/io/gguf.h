// GGUF (v2 and v3) reader: header, metadata key/values of every type (arrays included, nested too)
// and tensor infos (name, shape, ggml type, offset, byte size), all bounds-checked against the file.
// Tensor data is not read (dequantisation comes later): offsets and types are exposed.
// A byte-level BPE tokenizer is built from the tokenizer.ggml.* keys (model "gpt2").
// Every failure is a mor::Error naming the file and what is wrong ("x.gguf: truncated GGUF: ...").
// Layout (little-endian): "GGUF", u32 version, u64 tensor_count, u64 kv_count, kv pairs (string key,
// u32 type, value), tensor infos (string name, u32 n_dims, u64 dims[n_dims], u32 type, u64 offset),
// padding to general.alignment (default 32), then the data section; strings are u64 length + bytes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "mor/io/tokenizer.h"

namespace mor::io {

enum class GgufType : uint32_t {
  Uint8 = 0,
  Int8 = 1,
  Uint16 = 2,
  Int16 = 3,
  Uint32 = 4,
  Int32 = 5,
  Float32 = 6,
  Bool = 7,
  String = 8,
  Array = 9,
  Uint64 = 10,
  Int64 = 11,
  Float64 = 12,
};
const char* gguf_type_name(GgufType type);

// One metadata value. Unsigned integers are held as uint64_t, signed ones as int64_t, floats as
// double; `type` keeps the width the file used. Arrays hold their elements (element_type each).
struct GgufValue {
  GgufType type = GgufType::Uint8;
  GgufType element_type = GgufType::Uint8;  // arrays only
  std::variant<uint64_t, int64_t, double, bool, std::string, std::vector<GgufValue>> value;

  bool is_integer() const;
  // The integer as int64 (nullopt when not an integer or a uint64 above INT64_MAX).
  std::optional<int64_t> to_int() const;
  std::optional<double> to_double() const;      // integers and floats
  const std::string* string() const;            // nullptr unless a string
  const std::vector<GgufValue>* array() const;  // nullptr unless an array
};

struct GgufTensorInfo {
  std::string name;
  std::vector<uint64_t> shape;  // ne[0] first (the contiguous dimension), as stored
  uint32_t type = 0;            // ggml_type id
  std::string type_name;        // "F32", "Q4_1", ...
  uint64_t offset = 0;          // relative to the data section, as stored
  uint64_t file_offset = 0;     // data_offset() + offset
  uint64_t elements = 0;
  uint64_t nbytes = 0;
};

class GgufFile {
 public:
  // Reads header, metadata and tensor infos (memory-mapped while parsing, nothing kept open).
  static GgufFile open(const std::string& path);
  // Same from bytes in memory; `source_name` stands in for the file name in errors.
  static GgufFile parse(std::string_view bytes, const std::string& source_name);

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // start of the tensor data section
  uint64_t file_size() const { return file_size_; }

  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return metadata_; }
  const GgufValue* find(std::string_view key) const;  // nullptr when absent
  // Typed access; a missing key or a wrong type is a mor::Error naming the file and the key.
  const GgufValue& at(std::string_view key) const;
  std::string get_string(std::string_view key) const;
  int64_t get_int(std::string_view key) const;
  bool get_bool(std::string_view key) const;
  std::vector<std::string> get_strings(std::string_view key) const;
  std::vector<int64_t> get_ints(std::string_view key) const;

  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(std::string_view name) const;

 private:
  std::string path_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  uint64_t file_size_ = 0;
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::vector<GgufTensorInfo> tensors_;
  friend class GgufParser;
};

// The tokenizer.ggml.* scalars besides the vocabulary.
struct GgufTokenizerInfo {
  std::string model;  // tokenizer.ggml.model ("gpt2")
  std::string pre;    // tokenizer.ggml.pre ("smollm", "gpt2", "llama-bpe", ...)
  std::optional<int32_t> bos_id, eos_id, unknown_id, padding_id;
  std::optional<bool> add_bos, add_eos;
};
GgufTokenizerInfo gguf_tokenizer_info(const GgufFile& file);

// Builds the byte-level BPE tokenizer a GGUF carries: tokens (id = index), merges (rank = index),
// token_type 3 (control) -> special added tokens, 4 (user defined) -> added tokens, and the
// pre-tokenizer named by tokenizer.ggml.pre: "gpt2" (ByteLevel), "smollm" (Digits + ByteLevel),
// "llama-bpe"/"llama3" (Llama-3 Split + ByteLevel, ignore_merges). Others are a mor::Error.
Tokenizer tokenizer_from_gguf(const GgufFile& file);
Tokenizer tokenizer_from_gguf(const std::string& path);

}  // namespace mor::io
