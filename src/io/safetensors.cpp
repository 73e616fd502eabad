// safetensors (mor/io/safetensors.h): a memory-mapped reader that validates the whole header on
// open, and a streaming writer that commits by rename. The header JSON goes through nlohmann-json;
// a parser callback reports duplicate keys, which nlohmann would otherwise silently merge.
#include "mor/io/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <tuple>

#include "mor/core/error.h"
#include "mor/core/file.h"

namespace mor::io {

static_assert(std::endian::native == std::endian::little, "safetensors is little-endian; add byte swapping");

namespace {

using json = nlohmann::json;

struct DTypeEntry {
  DType dtype;
  const char* name;
  int64_t size;
};
constexpr std::array<DTypeEntry, 15> kDTypes{{
    {DType::kBool, "BOOL", 1},   {DType::kU8, "U8", 1},     {DType::kI8, "I8", 1},
    {DType::kI16, "I16", 2},     {DType::kU16, "U16", 2},   {DType::kF16, "F16", 2},
    {DType::kBF16, "BF16", 2},   {DType::kI32, "I32", 4},   {DType::kU32, "U32", 4},
    {DType::kF32, "F32", 4},     {DType::kF64, "F64", 8},   {DType::kI64, "I64", 8},
    {DType::kU64, "U64", 8},     {DType::kF8E4M3, "F8_E4M3", 1}, {DType::kF8E5M2, "F8_E5M2", 1},
}};

const DTypeEntry& dtype_entry(DType dtype) {
  const auto i = static_cast<size_t>(dtype);
  if (i >= kDTypes.size() || kDTypes[i].dtype != dtype) fail("invalid safetensors DType value ", static_cast<int>(dtype));
  return kDTypes[i];
}

std::optional<DType> parse_dtype(std::string_view name) {
  for (const auto& e : kDTypes) {
    if (name == e.name) return e.dtype;
  }
  return std::nullopt;
}

std::string known_dtypes() {
  std::string out;
  for (const auto& e : kDTypes) out += (out.empty() ? "" : ", ") + std::string(e.name);
  return out;
}

// Offset of the first byte that is not part of well-formed UTF-8 (no overlongs, no surrogates,
// nothing above U+10FFFF), or nullopt when all of `s` is valid.
std::optional<size_t> invalid_utf8_at(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const unsigned c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len = 0;
    unsigned lo = 0x80, hi = 0xBF;  // range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return i;
    }
    if (i + len > n || p[i + 1] < lo || p[i + 1] > hi) return i;
    for (size_t k = 2; k < len; ++k) {
      if (p[i + k] < 0x80 || p[i + k] > 0xBF) return i;
    }
    i += len;
  }
  return std::nullopt;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

// The product of the dimensions, or nullopt when it overflows int64.
std::optional<int64_t> checked_numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (const int64_t d : shape) {
    if (__builtin_mul_overflow(n, d, &n)) return std::nullopt;
  }
  return n;
}

// ---- reader helpers ------------------------------------------------------------------------------

// Tracks the keys of every open object during parsing and remembers the first duplicate.
struct DuplicateKeys {
  struct Frame {
    bool object = false;
    std::set<std::string> keys;
    std::string key;  // the key being parsed in this object
  };
  std::vector<Frame> frames;
  std::optional<std::string> first;  // "<where>: duplicate key '<key>'"

  bool on_event(json::parse_event_t event, const json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
        frames.push_back({true, {}, {}});
        break;
      case json::parse_event_t::array_start:
        frames.push_back({false, {}, {}});
        break;
      case json::parse_event_t::object_end:
      case json::parse_event_t::array_end:
        if (!frames.empty()) frames.pop_back();
        break;
      case json::parse_event_t::key: {
        if (frames.empty() || !frames.back().object || !parsed.is_string()) break;
        Frame& top = frames.back();
        top.key = parsed.get<std::string>();
        if (!top.keys.insert(top.key).second && !first) first = where() + "duplicate key '" + top.key + "'";
        break;
      }
      case json::parse_event_t::value:
        break;
    }
    return true;
  }

  // "header: " in the top-level object, "tensor 'w': " or "__metadata__: " one level down,
  // "tensor 'w'.a.b: " deeper.
  std::string where() const {
    if (frames.size() < 2) return "header: ";
    const std::string& outer = frames[0].key;
    std::string out = outer == "__metadata__" ? outer : "tensor '" + outer + "'";
    for (size_t i = 1; i + 1 < frames.size(); ++i) {
      if (frames[i].object) out += "." + frames[i].key;
    }
    return out + ": ";
  }
};

// A tensor entry's field: the messages name the file, the tensor and the field.
struct EntryContext {
  const std::string& path;
  const std::string& tensor;

  template <typename... Args>
  [[noreturn]] void fail_at(std::string_view field, Args&&... args) const {
    fail(path, ": tensor '", tensor, "': ", field, ": ", std::forward<Args>(args)...);
  }

  // A non-negative JSON integer.
  uint64_t non_negative(const json& v, const std::string& field) const {
    if (v.is_number_unsigned()) return v.get<uint64_t>();
    if (v.is_number_integer()) fail_at(field, "must not be negative (got ", v.get<int64_t>(), ")");
    fail_at(field, "must be a non-negative integer (got ", v.is_number() ? v.dump() : v.type_name(), ")");
  }

  TensorInfo parse(const json& entry, uint64_t data_size) const {
    if (!entry.is_object()) fail(path, ": tensor '", tensor, "': entry must be an object (got ", entry.type_name(), ")");
    TensorInfo info;
    info.name = tensor;

    const auto dt = entry.find("dtype");
    if (dt == entry.end()) fail_at("dtype", "missing");
    if (!dt->is_string()) fail_at("dtype", "must be a string (got ", dt->type_name(), ")");
    const auto& dtype_str = dt->get_ref<const std::string&>();
    const auto dtype = parse_dtype(dtype_str);
    if (!dtype) fail_at("dtype", "unknown dtype '", dtype_str, "' (known: ", known_dtypes(), ")");
    info.dtype = *dtype;

    const auto sh = entry.find("shape");
    if (sh == entry.end()) fail_at("shape", "missing");
    if (!sh->is_array()) fail_at("shape", "must be an array of integers (got ", sh->type_name(), ")");
    for (size_t i = 0; i < sh->size(); ++i) {
      const std::string field = "shape[" + std::to_string(i) + "]";
      const uint64_t d = non_negative((*sh)[i], field);
      if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) fail_at(field, "dimension ", d, " is too large");
      info.shape.push_back(static_cast<int64_t>(d));
    }
    const auto numel = checked_numel(info.shape);
    int64_t expected = 0;
    if (!numel || __builtin_mul_overflow(*numel, dtype_size(info.dtype), &expected)) {
      fail_at("shape", "the size of shape ", shape_string(info.shape), " overflows 64 bits");
    }

    const auto off = entry.find("data_offsets");
    if (off == entry.end()) fail_at("data_offsets", "missing");
    if (!off->is_array() || off->size() != 2) {
      fail_at("data_offsets", "must be an array of two integers [begin, end] (got ",
              off->is_array() ? std::to_string(off->size()) + " elements" : std::string(off->type_name()), ")");
    }
    info.begin = non_negative((*off)[0], "data_offsets[0]");
    info.end = non_negative((*off)[1], "data_offsets[1]");
    if (info.begin > info.end) fail_at("data_offsets", "begin ", info.begin, " is after end ", info.end);
    if (info.end > data_size) {
      fail_at("data_offsets", "end ", info.end, " is beyond the data buffer of ", data_size, " bytes (truncated file?)");
    }
    if (info.end - info.begin != static_cast<uint64_t>(expected)) {
      fail_at("data_offsets", "[", info.begin, ", ", info.end, ") holds ", info.end - info.begin, " bytes, but ",
              dtype_str, " ", shape_string(info.shape), " needs ", expected);
    }
    return info;
  }
};

void parse_metadata(const std::string& path, const json& m, std::map<std::string, std::string>& out) {
  if (!m.is_object()) fail(path, ": __metadata__: must be an object of strings (got ", m.type_name(), ")");
  for (const auto& [key, value] : m.items()) {
    if (!value.is_string()) fail(path, ": __metadata__: value of '", key, "' must be a string (got ", value.type_name(), ")");
    out.emplace(key, value.get<std::string>());
  }
}

// ---- writer helpers ------------------------------------------------------------------------------

void write_all(int fd, const char* p, size_t n, const std::string& path) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail("cannot write ", path, ": ", std::strerror(errno));
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
}

void fsync_parent_directory(const std::string& path) {
  const auto slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;  // best effort, as core::atomic_write
  ::fsync(fd);
  ::close(fd);
}

constexpr size_t kWriteBufferBytes = size_t{1} << 20;

}  // namespace

// ---- dtypes --------------------------------------------------------------------------------------

int64_t dtype_size(DType dtype) { return dtype_entry(dtype).size; }

const char* dtype_name(DType dtype) { return dtype_entry(dtype).name; }

DType dtype_from_name(std::string_view name) {
  const auto dtype = parse_dtype(name);
  if (!dtype) fail("unknown safetensors dtype '", name, "' (known: ", known_dtypes(), ")");
  return *dtype;
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (const int64_t d : shape) n *= d;
  return n;
}

// ---- SafetensorsReader ---------------------------------------------------------------------------

struct SafetensorsReader::Impl {
  std::string path;
  core::MappedFile file;
  uint64_t data_offset = 0;
  uint64_t data_size = 0;
  std::vector<TensorInfo> tensors;
  std::map<std::string, size_t, std::less<>> index;
  std::map<std::string, std::string> metadata;
};

SafetensorsReader::SafetensorsReader(const std::string& path) : impl_(std::make_unique<Impl>()) {
  Impl& s = *impl_;
  s.path = path;
  s.file = core::MappedFile::open(path);
  const uint64_t size = s.file.size();
  if (size < 8) fail(path, ": not a safetensors file: ", size, " bytes is shorter than the 8-byte header length");
  uint64_t n = 0;
  std::memcpy(&n, s.file.data(), 8);
  if (n == 0) fail(path, ": header length is 0 (not a safetensors file)");
  if (n > kSafetensorsMaxHeaderBytes) {
    fail(path, ": header length ", n, " exceeds the limit of ", kSafetensorsMaxHeaderBytes, " bytes (not a safetensors file?)");
  }
  if (n > size - 8) fail(path, ": header length ", n, " is beyond the end of the file (", size, " bytes; truncated?)");
  s.data_offset = 8 + n;
  s.data_size = size - s.data_offset;

  const std::string_view text = s.file.view().substr(8, n);
  if (const auto bad = invalid_utf8_at(text)) fail(path, ": header is not valid UTF-8 (byte ", 8 + *bad, " of the file)");
  DuplicateKeys dups;
  json root;
  try {
    root = json::parse(text.begin(), text.end(),
                       [&dups](int, json::parse_event_t event, json& parsed) { return dups.on_event(event, parsed); });
  } catch (const json::exception& e) {
    fail(path, ": header is not valid JSON: ", e.what());
  }
  if (dups.first) fail(path, ": ", *dups.first);
  if (!root.is_object()) fail(path, ": header must be a JSON object (got ", root.type_name(), ")");

  for (const auto& [name, entry] : root.items()) {
    if (name == "__metadata__") {
      parse_metadata(path, entry, s.metadata);
      continue;
    }
    s.tensors.push_back(EntryContext{path, name}.parse(entry, s.data_size));
  }
  std::sort(s.tensors.begin(), s.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  // Overlaps: empty tensors cover no bytes and overlap nothing.
  const TensorInfo* last = nullptr;
  for (const auto& t : s.tensors) {
    if (t.begin == t.end) continue;
    if (last != nullptr && t.begin < last->end) {
      fail(path, ": tensor '", t.name, "': data_offsets: [", t.begin, ", ", t.end, ") overlaps tensor '", last->name,
           "' at [", last->begin, ", ", last->end, ")");
    }
    if (last == nullptr || t.end > last->end) last = &t;
  }
  for (size_t i = 0; i < s.tensors.size(); ++i) s.index.emplace(s.tensors[i].name, i);
}

SafetensorsReader::SafetensorsReader(SafetensorsReader&&) noexcept = default;
SafetensorsReader& SafetensorsReader::operator=(SafetensorsReader&&) noexcept = default;
SafetensorsReader::~SafetensorsReader() = default;

const std::string& SafetensorsReader::path() const { return impl_->path; }
const std::vector<TensorInfo>& SafetensorsReader::tensors() const { return impl_->tensors; }
const std::map<std::string, std::string>& SafetensorsReader::metadata() const { return impl_->metadata; }
uint64_t SafetensorsReader::data_offset() const { return impl_->data_offset; }
uint64_t SafetensorsReader::data_size() const { return impl_->data_size; }

const TensorInfo* SafetensorsReader::find(std::string_view name) const {
  const auto it = impl_->index.find(name);
  return it == impl_->index.end() ? nullptr : &impl_->tensors[it->second];
}

const TensorInfo& SafetensorsReader::at(std::string_view name) const {
  const TensorInfo* t = find(name);
  if (t == nullptr) fail(impl_->path, ": no tensor '", name, "'");
  return *t;
}

std::span<const std::byte> SafetensorsReader::data(const TensorInfo& info) const {
  const Impl& s = *impl_;
  if (info.begin > info.end || info.end > s.data_size) {
    fail(s.path, ": tensor '", info.name, "': bytes [", info.begin, ", ", info.end, ") are outside the data buffer of ",
         s.data_size, " bytes");
  }
  return {s.file.data() + s.data_offset + info.begin, static_cast<size_t>(info.end - info.begin)};
}

// ---- SafetensorsWriter ---------------------------------------------------------------------------

struct SafetensorsWriter::Impl {
  std::string path;
  std::string tmp_path;
  int fd = -1;
  std::map<std::string, std::string> metadata;
  std::vector<TensorInfo> entries;
  std::map<std::string, size_t, std::less<>> index;
  uint64_t total = 0;  // bytes of all declared tensors
  bool begun = false;
  bool finished = false;
  bool failed = false;  // an I/O error happened; the file is abandoned
  size_t cur = 0;        // the tensor being written
  uint64_t written = 0;  // bytes of entries[cur] written so far
  std::vector<char> buffer;

  void check_open(const char* what) const {
    MOR_CHECK(!finished, path, ": ", what, " after finish()");
    MOR_CHECK(!failed && fd >= 0, path, ": ", what, " after an earlier write error");
  }
  void flush() {
    if (!buffer.empty()) write_all(fd, buffer.data(), buffer.size(), tmp_path);
    buffer.clear();
  }
  void append(const char* p, size_t n) {
    if (buffer.size() + n > kWriteBufferBytes) flush();
    if (n >= kWriteBufferBytes) {
      write_all(fd, p, n, tmp_path);
    } else {
      buffer.insert(buffer.end(), p, p + n);
    }
  }
  // Runs an I/O step; on failure the temporary file is removed and the writer is unusable.
  template <typename F>
  void io(F&& step) {
    try {
      step();
    } catch (...) {
      failed = true;
      abandon();
      throw;
    }
  }
  // Moves `cur` past complete tensors, at most up to `limit`.
  void skip_complete(size_t limit) {
    while (cur < limit && written == entries[cur].nbytes()) {
      ++cur;
      written = 0;
    }
  }
  void abandon() noexcept {
    if (fd >= 0) ::close(fd);
    fd = -1;
    if (!finished && !tmp_path.empty()) core::remove_file(tmp_path);
  }
};

SafetensorsWriter::SafetensorsWriter(std::string path) : impl_(std::make_unique<Impl>()) {
  Impl& s = *impl_;
  s.path = std::move(path);
  s.tmp_path = s.path + ".tmp";
  s.fd = ::open(s.tmp_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (s.fd < 0) fail("cannot create ", s.tmp_path, ": ", std::strerror(errno));
}

SafetensorsWriter::SafetensorsWriter(SafetensorsWriter&&) noexcept = default;

SafetensorsWriter::~SafetensorsWriter() {
  if (impl_) impl_->abandon();
}

const std::string& SafetensorsWriter::path() const { return impl_->path; }

void SafetensorsWriter::set_metadata(std::map<std::string, std::string> metadata) {
  Impl& s = *impl_;
  s.check_open("set_metadata");
  MOR_CHECK(!s.begun, s.path, ": set_metadata after begin()");
  for (const auto& [key, value] : metadata) {
    MOR_CHECK(!invalid_utf8_at(key), s.path, ": __metadata__: a key is not valid UTF-8");
    MOR_CHECK(!invalid_utf8_at(value), s.path, ": __metadata__: value of '", key, "' is not valid UTF-8");
  }
  s.metadata = std::move(metadata);
}

void SafetensorsWriter::declare(std::string name, DType dtype, std::vector<int64_t> shape) {
  Impl& s = *impl_;
  s.check_open("declare");
  MOR_CHECK(!s.begun, s.path, ": cannot declare tensor '", name, "' after begin()");
  MOR_CHECK(!name.empty(), s.path, ": cannot declare a tensor with an empty name");
  MOR_CHECK(!invalid_utf8_at(name), s.path, ": cannot declare tensor '", name, "': the name is not valid UTF-8");
  MOR_CHECK(!name.starts_with("__"), s.path, ": cannot declare tensor '", name,
            "': names starting with '__' are reserved (__metadata__)");
  MOR_CHECK(!s.index.contains(name), s.path, ": cannot declare tensor '", name, "' twice");
  const int64_t element = dtype_size(dtype);
  for (const int64_t d : shape) {
    MOR_CHECK(d >= 0, s.path, ": cannot declare tensor '", name, "': negative dimension ", d, " in shape ",
              shape_string(shape));
  }
  const auto numel = checked_numel(shape);
  int64_t bytes = 0;
  uint64_t end = 0;
  if (!numel || __builtin_mul_overflow(*numel, element, &bytes) ||
      __builtin_add_overflow(s.total, static_cast<uint64_t>(bytes), &end)) {
    fail(s.path, ": cannot declare tensor '", name, "': the size of shape ", shape_string(shape), " overflows 64 bits");
  }
  TensorInfo info;
  info.name = std::move(name);
  info.dtype = dtype;
  info.shape = std::move(shape);
  info.begin = s.total;
  info.end = end;
  s.total = end;
  s.index.emplace(info.name, s.entries.size());
  s.entries.push_back(std::move(info));
}

void SafetensorsWriter::begin() {
  Impl& s = *impl_;
  s.check_open("begin");
  MOR_CHECK(!s.begun, s.path, ": begin() called twice");
  // Deterministic: __metadata__ (sorted keys) first when present, then tensors in declaration
  // order with their fields in the reference order (dtype, shape, data_offsets).
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!s.metadata.empty()) {
    auto m = nlohmann::ordered_json::object();
    for (const auto& [key, value] : s.metadata) m[key] = value;
    header["__metadata__"] = std::move(m);
  }
  for (const auto& t : s.entries) {
    auto e = nlohmann::ordered_json::object();
    e["dtype"] = dtype_name(t.dtype);
    e["shape"] = t.shape;
    e["data_offsets"] = nlohmann::ordered_json::array({t.begin, t.end});
    header[t.name] = std::move(e);
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // the data buffer starts at a multiple of 8
  MOR_CHECK(text.size() <= kSafetensorsMaxHeaderBytes, s.path, ": the header of ", text.size(),
            " bytes exceeds the safetensors limit of ", kSafetensorsMaxHeaderBytes, " bytes (too many tensors)");
  const uint64_t n = text.size();
  s.io([&] {
    s.append(reinterpret_cast<const char*>(&n), 8);
    s.append(text.data(), text.size());
  });
  s.begun = true;
}

void SafetensorsWriter::write(std::string_view name, std::span<const std::byte> bytes) {
  Impl& s = *impl_;
  s.check_open("write");
  MOR_CHECK(s.begun, s.path, ": write of tensor '", name, "' before begin()");
  const auto it = s.index.find(name);
  if (it == s.index.end()) fail(s.path, ": write of tensor '", name, "', which was not declared");
  const size_t k = it->second;
  s.skip_complete(k);
  if (k < s.cur) fail(s.path, ": tensor '", name, "' was already written (tensors are written in declaration order)");
  if (k > s.cur) {
    const TensorInfo& c = s.entries[s.cur];
    fail(s.path, ": tensor '", name, "' written before tensor '", c.name, "' is complete (", s.written, " of ",
         c.nbytes(), " bytes; tensors are written in declaration order)");
  }
  const TensorInfo& t = s.entries[k];
  const uint64_t remaining = t.nbytes() - s.written;
  if (bytes.size() > remaining) {
    fail(s.path, ": tensor '", name, "': ", bytes.size(), " bytes given but only ", remaining, " of its ", t.nbytes(),
         " bytes (", dtype_name(t.dtype), " ", shape_string(t.shape), ") remain");
  }
  s.io([&] { s.append(reinterpret_cast<const char*>(bytes.data()), bytes.size()); });
  s.written += bytes.size();
}

void SafetensorsWriter::finish(bool fsync) {
  Impl& s = *impl_;
  s.check_open("finish");
  if (!s.begun) begin();
  s.skip_complete(s.entries.size());
  if (s.cur < s.entries.size()) {
    const TensorInfo& c = s.entries[s.cur];
    fail(s.path, ": tensor '", c.name, "' is incomplete at finish(): ", s.written, " of ", c.nbytes(), " bytes written");
  }
  s.io([&] {
    s.flush();
    if (fsync && ::fsync(s.fd) != 0) fail("cannot fsync ", s.tmp_path, ": ", std::strerror(errno));
    const int fd = s.fd;
    s.fd = -1;
    if (::close(fd) != 0) fail("cannot write ", s.tmp_path, ": ", std::strerror(errno));
    if (::rename(s.tmp_path.c_str(), s.path.c_str()) != 0) {
      fail("cannot rename ", s.tmp_path, " to ", s.path, ": ", std::strerror(errno));
    }
  });
  s.finished = true;
  if (fsync) fsync_parent_directory(s.path);
}

void write_safetensors(const std::string& path, const std::vector<TensorView>& tensors,
                       const std::map<std::string, std::string>& metadata, bool fsync) {
  SafetensorsWriter w(path);
  w.set_metadata(metadata);
  for (const auto& t : tensors) w.declare(t.name, t.dtype, t.shape);
  w.begin();
  for (const auto& t : tensors) {
    const int64_t bytes = checked_numel(t.shape).value_or(0) * dtype_size(t.dtype);  // declare() checked it
    MOR_CHECK(bytes == 0 || t.data != nullptr, path, ": tensor '", t.name, "': no data for ", bytes, " bytes");
    w.write(t.name, {static_cast<const std::byte*>(t.data), static_cast<size_t>(bytes)});
  }
  w.finish(fsync);
}

}  // namespace mor::io
