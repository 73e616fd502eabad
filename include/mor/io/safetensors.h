// safetensors files (Hugging Face): a torch-free, memory-mapped reader and a streaming writer.
// Layout: u64 little-endian N, N bytes of UTF-8 JSON header
//   {"__metadata__": {str: str} (optional),
//    "<name>": {"dtype": "F32", "shape": [d0, ...], "data_offsets": [begin, end]}, ...}
// then the data buffer; offsets are relative to its start (file offset 8 + N).
// Invariants:
//   - SafetensorsReader validates everything on open (header bounds, UTF-8, JSON, duplicate keys,
//     every entry's fields, sizes against dtype x shape, ranges inside the buffer, no overlaps);
//     every failure is a mor::Error "<file>: [tensor '<name>': <field>: ]<what>". Gaps between
//     tensors and bytes after the last tensor are accepted (the reference Rust reader rejects them).
//   - SafetensorsWriter writes "<path>.tmp" and renames it on finish(), so a half-written file never
//     appears under the final name; tensors lie in declaration order, contiguous, the data buffer
//     8-byte aligned (header padded with spaces), and the same input gives a byte-identical file.
// docs/formats/safetensors.md has the details.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace mor::io {

enum class DType { kBool, kU8, kI8, kI16, kU16, kF16, kBF16, kI32, kU32, kF32, kF64, kI64, kU64, kF8E4M3, kF8E5M2 };

int64_t dtype_size(DType dtype);          // bytes per element
const char* dtype_name(DType dtype);      // "F32", "BF16", "F8_E4M3", ...
DType dtype_from_name(std::string_view name);  // throws mor::Error for unknown names (case-sensitive)

// Largest header the reader accepts (as the reference implementation: 100 MB).
inline constexpr uint64_t kSafetensorsMaxHeaderBytes = 100'000'000;

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;   // empty: a 0-rank tensor (one element)
  uint64_t begin = 0, end = 0;  // byte offsets relative to the data buffer
  int64_t numel() const;        // product of shape (1 for rank 0)
  uint64_t nbytes() const { return end - begin; }
};

class SafetensorsReader {
 public:
  // Maps the file read-only and validates it; throws mor::Error naming the file (see above).
  explicit SafetensorsReader(const std::string& path);
  SafetensorsReader(SafetensorsReader&&) noexcept;
  SafetensorsReader& operator=(SafetensorsReader&&) noexcept;
  SafetensorsReader(const SafetensorsReader&) = delete;
  SafetensorsReader& operator=(const SafetensorsReader&) = delete;
  ~SafetensorsReader();

  const std::string& path() const;
  const std::vector<TensorInfo>& tensors() const;       // sorted by begin offset (then end, name)
  const TensorInfo* find(std::string_view name) const;  // nullptr if absent
  const TensorInfo& at(std::string_view name) const;    // throws "<file>: no tensor '<name>'"
  // The tensor's bytes inside the mapping, valid while *this lives. The buffer starts at
  // data_offset(); files from other writers may leave it unaligned, so copy before typed access
  // unless data_offset() and begin are multiples of the element size.
  std::span<const std::byte> data(const TensorInfo& info) const;
  const std::map<std::string, std::string>& metadata() const;
  uint64_t data_offset() const;  // 8 + N
  uint64_t data_size() const;    // file size - data_offset()

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Streaming writer: declare every tensor first (the header is written by begin()), then write the
// bytes in declaration order; no tensor needs to be in memory whole.
class SafetensorsWriter {
 public:
  // Creates "<path>.tmp" now (throws when it cannot); renamed to `path` by finish().
  explicit SafetensorsWriter(std::string path);
  SafetensorsWriter(SafetensorsWriter&&) noexcept;
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;
  ~SafetensorsWriter();  // unfinished: closes and removes the temporary file

  const std::string& path() const;
  void set_metadata(std::map<std::string, std::string> metadata);  // before begin()
  // Before begin(). Throws for a duplicate, empty or "__"-prefixed name, a negative dimension, a
  // size that overflows, or a name / metadata string that is not valid UTF-8 (checked in begin()).
  void declare(std::string name, DType dtype, std::vector<int64_t> shape);
  void begin();  // writes the header
  // Bytes of the next declared tensor that is not complete; several calls may stream one tensor in
  // pieces, their total must equal its size (more is an error; nothing is written then). Tensors
  // of 0 bytes need no call. Out-of-order names are errors naming both tensors.
  void write(std::string_view name, std::span<const std::byte> bytes);
  // Checks that every tensor is complete (calls begin() if not yet called), flushes, fsyncs the
  // file and its directory when `fsync`, renames "<path>.tmp" to `path`.
  void finish(bool fsync = true);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Convenience: whole tensors from memory (`data` holds numel x dtype_size bytes; may be null when
// that is 0), written in the given order.
struct TensorView {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
};
void write_safetensors(const std::string& path, const std::vector<TensorView>& tensors,
                       const std::map<std::string, std::string>& metadata = {}, bool fsync = true);

}  // namespace mor::io
