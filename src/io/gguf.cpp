// GGUF reader (see include/mor/io/gguf.h): a bounds-checked cursor over the mapped file, metadata of
// every type, tensor infos with sizes from the ggml type table, and the tokenizer built from the
// tokenizer.ggml.* keys. No byte is read past the end; every count is checked against the bytes
// left before anything is allocated.
#include "mor/io/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>
#include <unordered_set>

#include "mor/core/error.h"
#include "tokenizer_internal.h"

namespace mor::io {

const char* gguf_type_name(GgufType type) {
  switch (type) {
    case GgufType::Uint8: return "UINT8";
    case GgufType::Int8: return "INT8";
    case GgufType::Uint16: return "UINT16";
    case GgufType::Int16: return "INT16";
    case GgufType::Uint32: return "UINT32";
    case GgufType::Int32: return "INT32";
    case GgufType::Float32: return "FLOAT32";
    case GgufType::Bool: return "BOOL";
    case GgufType::String: return "STRING";
    case GgufType::Array: return "ARRAY";
    case GgufType::Uint64: return "UINT64";
    case GgufType::Int64: return "INT64";
    case GgufType::Float64: return "FLOAT64";
  }
  return "?";
}

bool GgufValue::is_integer() const {
  return std::holds_alternative<uint64_t>(value) || std::holds_alternative<int64_t>(value);
}

std::optional<int64_t> GgufValue::to_int() const {
  if (const auto* u = std::get_if<uint64_t>(&value)) {
    if (*u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
    return static_cast<int64_t>(*u);
  }
  if (const auto* i = std::get_if<int64_t>(&value)) return *i;
  return std::nullopt;
}

std::optional<double> GgufValue::to_double() const {
  if (const auto* d = std::get_if<double>(&value)) return *d;
  if (const auto* u = std::get_if<uint64_t>(&value)) return static_cast<double>(*u);
  if (const auto* i = std::get_if<int64_t>(&value)) return static_cast<double>(*i);
  return std::nullopt;
}

const std::string* GgufValue::string() const {
  return std::get_if<std::string>(&value);
}
const std::vector<GgufValue>* GgufValue::array() const {
  return std::get_if<std::vector<GgufValue>>(&value);
}

namespace {

struct GgmlTypeInfo {
  uint32_t id;
  const char* name;
  uint64_t block;
  uint64_t type_size;
};
// ggml_type ids with elements per block and bytes per block (ggml.c's type_traits).
constexpr GgmlTypeInfo kGgmlTypes[] = {
    {0, "F32", 1, 4},         {1, "F16", 1, 2},         {2, "Q4_0", 32, 18},      {3, "Q4_1", 32, 20},
    {6, "Q5_0", 32, 22},      {7, "Q5_1", 32, 24},      {8, "Q8_0", 32, 34},      {9, "Q8_1", 32, 40},
    {10, "Q2_K", 256, 84},    {11, "Q3_K", 256, 110},   {12, "Q4_K", 256, 144},   {13, "Q5_K", 256, 176},
    {14, "Q6_K", 256, 210},   {15, "Q8_K", 256, 292},   {16, "IQ2_XXS", 256, 66}, {17, "IQ2_XS", 256, 74},
    {18, "IQ3_XXS", 256, 98}, {19, "IQ1_S", 256, 50},   {20, "IQ4_NL", 32, 18},   {21, "IQ3_S", 256, 110},
    {22, "IQ2_S", 256, 82},   {23, "IQ4_XS", 256, 136}, {24, "I8", 1, 1},         {25, "I16", 1, 2},
    {26, "I32", 1, 4},        {27, "I64", 1, 8},        {28, "F64", 1, 8},        {29, "IQ1_M", 256, 56},
    {30, "BF16", 1, 2},       {34, "TQ1_0", 256, 54},   {35, "TQ2_0", 256, 66},   {39, "MXFP4", 32, 17},
    {40, "NVFP4", 64, 36},    {41, "Q1_0", 128, 18},
};

const GgmlTypeInfo* ggml_type(uint32_t id) {
  for (const auto& t : kGgmlTypes) {
    if (t.id == id) return &t;
  }
  return nullptr;
}

constexpr int kMaxArrayDepth = 8;
constexpr uint32_t kMaxDims = 4;  // GGML_MAX_DIMS

}  // namespace

class GgufParser {
 public:
  GgufParser(std::string_view bytes, GgufFile& out) : bytes_(bytes), out_(out) {}

  void parse() {
    out_.file_size_ = bytes_.size();
    if (bytes_.size() < 4) truncated("the magic", 4);
    if (bytes_.substr(0, 4) != "GGUF") {
      fail(src(), ": not a GGUF file: bad magic ", quoted(bytes_.substr(0, 4)), " (expected \"GGUF\")");
    }
    pos_ = 4;
    const uint32_t version = read<uint32_t>("the version");
    if (version == 1) fail(src(), ": GGUF version 1 is not supported (only versions 2 and 3)");
    if (version != 2 && version != 3) {
      if ((version & 0xFFFF) == 0 && version != 0) fail(src(), ": big-endian GGUF files are not supported");
      fail(src(), ": unsupported GGUF version ", version, " (only versions 2 and 3)");
    }
    out_.version_ = version;
    const uint64_t tensor_count = read<uint64_t>("the tensor count");
    const uint64_t kv_count = read<uint64_t>("the metadata count");
    // A key/value takes at least 8 + 4 + 1 bytes, a tensor info 8 + 4 + 4 + 8.
    if (kv_count > remaining() / 13) {
      fail(src(), ": metadata count ", kv_count, " is impossible for a file of ", bytes_.size(), " bytes");
    }
    if (tensor_count > remaining() / 24) {
      fail(src(), ": tensor count ", tensor_count, " is impossible for a file of ", bytes_.size(), " bytes");
    }

    std::unordered_set<std::string> keys;
    out_.metadata_.reserve(kv_count);
    for (uint64_t i = 0; i < kv_count; ++i) {
      std::string key = read_string("metadata key #" + std::to_string(i));
      context_ = "metadata '" + key + "'";
      if (!keys.insert(key).second) fail(src(), ": ", context_, ": the key appears twice");
      const auto type = read_type("the value type");
      GgufValue value = read_value(type, 0);
      out_.metadata_.emplace_back(std::move(key), std::move(value));
    }
    if (const GgufValue* a = out_.find("general.alignment")) {
      if (a->type != GgufType::Uint32) {
        fail(src(), ": metadata 'general.alignment': expected UINT32, got ", gguf_type_name(a->type));
      }
      const uint64_t align = std::get<uint64_t>(a->value);
      if (align == 0 || (align & (align - 1)) != 0) {
        fail(src(), ": metadata 'general.alignment': ", align, " is not a power of two");
      }
      out_.alignment_ = align;
    }

    std::unordered_set<std::string> names;
    out_.tensors_.reserve(tensor_count);
    for (uint64_t i = 0; i < tensor_count; ++i) {
      GgufTensorInfo t;
      context_ = "tensor info #" + std::to_string(i);
      t.name = read_string("the tensor name");
      context_ = "tensor '" + t.name + "'";
      if (!names.insert(t.name).second) fail(src(), ": ", context_, ": the name appears twice");
      const uint32_t n_dims = read<uint32_t>("the number of dimensions");
      if (n_dims > kMaxDims) fail(src(), ": ", context_, ": ", n_dims, " dimensions (at most ", kMaxDims, ")");
      t.elements = 1;
      for (uint32_t d = 0; d < n_dims; ++d) {
        const uint64_t ne = read<uint64_t>("a dimension");
        if (ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
            (ne != 0 && t.elements > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / ne)) {
          fail(src(), ": ", context_, ": the shape overflows 64 bits");
        }
        t.shape.push_back(ne);
        t.elements *= ne;
      }
      t.type = read<uint32_t>("the tensor type");
      const GgmlTypeInfo* info = ggml_type(t.type);
      if (info == nullptr) fail(src(), ": ", context_, ": unknown ggml type ", t.type);
      t.type_name = info->name;
      const uint64_t row = t.shape.empty() ? 1 : t.shape[0];
      if (row % info->block != 0) {
        fail(src(), ": ", context_, ": the first dimension ", row, " is not a multiple of the ", info->name,
             " block size ", info->block);
      }
      t.nbytes = t.elements / info->block * info->type_size;
      t.offset = read<uint64_t>("the tensor offset");
      if (t.offset % out_.alignment_ != 0) {
        fail(src(), ": ", context_, ": offset ", t.offset, " is not a multiple of the alignment ", out_.alignment_);
      }
      out_.tensors_.push_back(std::move(t));
    }
    context_.clear();

    const uint64_t align = out_.alignment_;
    out_.data_offset_ = (pos_ + align - 1) / align * align;
    if (!out_.tensors_.empty() && out_.data_offset_ > bytes_.size()) {
      fail(src(), ": truncated GGUF: the tensor data section would start at byte ", out_.data_offset_,
           " but the file has ", bytes_.size(), " bytes");
    }
    const uint64_t data_size = bytes_.size() - std::min<uint64_t>(out_.data_offset_, bytes_.size());
    for (GgufTensorInfo& t : out_.tensors_) {
      t.file_offset = out_.data_offset_ + t.offset;
      if (t.offset > data_size || t.nbytes > data_size - t.offset) {
        fail(src(), ": tensor '", t.name, "': data [", t.offset, ", ", t.offset + t.nbytes,
             ") lies outside the data section of ", data_size, " bytes (truncated file?)");
      }
    }
  }

 private:
  const std::string& src() const { return out_.path_; }
  uint64_t remaining() const { return bytes_.size() - pos_; }

  static std::string quoted(std::string_view s) {
    std::string out = "\"";
    for (char c : s) {
      const auto b = static_cast<unsigned char>(c);
      if (b >= 0x20 && b < 0x7F) {
        out += c;
      } else {
        static const char* hex = "0123456789abcdef";
        out += "\\x";
        out += hex[b >> 4];
        out += hex[b & 15];
      }
    }
    return out + "\"";
  }

  [[noreturn]] void truncated(const std::string& what, uint64_t need) const {
    fail(src(), ": truncated GGUF: ", context_.empty() ? "" : context_ + ": ", what, " needs ", need,
         " bytes at offset ", pos_, " but the file has ", bytes_.size(), " bytes");
  }

  template <typename T>
  T read(const std::string& what) {
    if (remaining() < sizeof(T)) truncated(what, sizeof(T));
    T v;
    std::memcpy(&v, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  std::string read_string(const std::string& what) {
    const uint64_t len = read<uint64_t>(what + " length");
    if (len > remaining()) truncated(what + " (" + std::to_string(len) + " bytes)", len);
    std::string s(bytes_.data() + pos_, len);
    pos_ += len;
    return s;
  }

  GgufType read_type(const std::string& what) {
    const uint32_t t = read<uint32_t>(what);
    if (t > static_cast<uint32_t>(GgufType::Float64)) fail(src(), ": ", context_, ": unknown value type ", t);
    return static_cast<GgufType>(t);
  }

  static uint64_t min_size(GgufType t) {
    switch (t) {
      case GgufType::Uint8:
      case GgufType::Int8:
      case GgufType::Bool: return 1;
      case GgufType::Uint16:
      case GgufType::Int16: return 2;
      case GgufType::Uint32:
      case GgufType::Int32:
      case GgufType::Float32: return 4;
      case GgufType::String:
      case GgufType::Uint64:
      case GgufType::Int64:
      case GgufType::Float64: return 8;
      case GgufType::Array: return 12;
    }
    return 1;
  }

  GgufValue read_value(GgufType type, int depth) {
    GgufValue v;
    v.type = type;
    switch (type) {
      case GgufType::Uint8: v.value = uint64_t{read<uint8_t>("a UINT8")}; break;
      case GgufType::Int8: v.value = int64_t{read<int8_t>("an INT8")}; break;
      case GgufType::Uint16: v.value = uint64_t{read<uint16_t>("a UINT16")}; break;
      case GgufType::Int16: v.value = int64_t{read<int16_t>("an INT16")}; break;
      case GgufType::Uint32: v.value = uint64_t{read<uint32_t>("a UINT32")}; break;
      case GgufType::Int32: v.value = int64_t{read<int32_t>("an INT32")}; break;
      case GgufType::Uint64: v.value = read<uint64_t>("a UINT64"); break;
      case GgufType::Int64: v.value = read<int64_t>("an INT64"); break;
      case GgufType::Float32: v.value = double{read<float>("a FLOAT32")}; break;
      case GgufType::Float64: v.value = read<double>("a FLOAT64"); break;
      case GgufType::Bool: {
        const uint8_t b = read<uint8_t>("a BOOL");
        if (b > 1) fail(src(), ": ", context_, ": invalid BOOL value ", int{b});
        v.value = b == 1;
        break;
      }
      case GgufType::String: v.value = read_string("a STRING"); break;
      case GgufType::Array: {
        if (depth >= kMaxArrayDepth) fail(src(), ": ", context_, ": arrays nested deeper than ", kMaxArrayDepth);
        v.element_type = read_type("the array element type");
        const uint64_t count = read<uint64_t>("the array length");
        if (count > remaining() / min_size(v.element_type)) {
          fail(src(), ": truncated GGUF: ", context_, ": an array of ", count, " ", gguf_type_name(v.element_type),
               " cannot fit in the ", remaining(), " bytes left");
        }
        std::vector<GgufValue> items;
        items.reserve(count);
        for (uint64_t i = 0; i < count; ++i) items.push_back(read_value(v.element_type, depth + 1));
        v.value = std::move(items);
        break;
      }
    }
    return v;
  }

  std::string_view bytes_;
  GgufFile& out_;
  uint64_t pos_ = 0;
  std::string context_;
};

GgufFile GgufFile::parse(std::string_view bytes, const std::string& source_name) {
  GgufFile f;
  f.path_ = source_name;
  GgufParser(bytes, f).parse();
  return f;
}

GgufFile GgufFile::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, ": cannot open GGUF file: ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    fail(path, ": cannot stat GGUF file: ", std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, ": not a regular file");
  }
  const auto size = static_cast<size_t>(st.st_size);
  if (size == 0) {
    ::close(fd);
    return parse(std::string_view(), path);  // reports the truncation
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int err = errno;
  ::close(fd);
  if (map == MAP_FAILED) fail(path, ": cannot map GGUF file: ", std::strerror(err));
  struct Unmap {
    void* p;
    size_t n;
    ~Unmap() { ::munmap(p, n); }
  } unmap{map, size};
  return parse(std::string_view(static_cast<const char*>(map), size), path);
}

const GgufValue* GgufFile::find(std::string_view key) const {
  for (const auto& [k, v] : metadata_) {
    if (k == key) return &v;
  }
  return nullptr;
}

const GgufTensorInfo* GgufFile::find_tensor(std::string_view name) const {
  for (const auto& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

const GgufValue& GgufFile::at(std::string_view key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) fail(path_, ": metadata '", key, "' is missing");
  return *v;
}

std::string GgufFile::get_string(std::string_view key) const {
  const GgufValue& v = at(key);
  if (v.string() == nullptr) fail(path_, ": metadata '", key, "': expected STRING, got ", gguf_type_name(v.type));
  return *v.string();
}

int64_t GgufFile::get_int(std::string_view key) const {
  const GgufValue& v = at(key);
  const auto i = v.to_int();
  if (!i) fail(path_, ": metadata '", key, "': expected an integer, got ", gguf_type_name(v.type));
  return *i;
}

bool GgufFile::get_bool(std::string_view key) const {
  const GgufValue& v = at(key);
  if (!std::holds_alternative<bool>(v.value)) {
    fail(path_, ": metadata '", key, "': expected BOOL, got ", gguf_type_name(v.type));
  }
  return std::get<bool>(v.value);
}

std::vector<std::string> GgufFile::get_strings(std::string_view key) const {
  const GgufValue& v = at(key);
  if (v.array() == nullptr || v.element_type != GgufType::String) {
    fail(path_, ": metadata '", key, "': expected an ARRAY of STRING, got ", gguf_type_name(v.type),
         v.array() ? std::string(" of ") + gguf_type_name(v.element_type) : "");
  }
  std::vector<std::string> out;
  out.reserve(v.array()->size());
  for (const auto& e : *v.array()) out.push_back(*e.string());
  return out;
}

std::vector<int64_t> GgufFile::get_ints(std::string_view key) const {
  const GgufValue& v = at(key);
  if (v.array() == nullptr) fail(path_, ": metadata '", key, "': expected an ARRAY, got ", gguf_type_name(v.type));
  std::vector<int64_t> out;
  out.reserve(v.array()->size());
  for (size_t i = 0; i < v.array()->size(); ++i) {
    const auto x = (*v.array())[i].to_int();
    if (!x) fail(path_, ": metadata '", key, "'[", i, "]: expected an integer, got ", gguf_type_name(v.element_type));
    out.push_back(*x);
  }
  return out;
}

// ---- Tokenizer ---------------------------------------------------------------------------------

GgufTokenizerInfo gguf_tokenizer_info(const GgufFile& file) {
  GgufTokenizerInfo info;
  info.model = file.get_string("tokenizer.ggml.model");
  if (file.find("tokenizer.ggml.pre")) info.pre = file.get_string("tokenizer.ggml.pre");
  const GgufValue* tokens = file.find("tokenizer.ggml.tokens");
  const int64_t n_tokens = tokens && tokens->array() ? static_cast<int64_t>(tokens->array()->size()) : -1;
  auto id = [&](const char* key, std::optional<int32_t>& slot) {
    if (!file.find(key)) return;
    const int64_t v = file.get_int(key);
    if (v < 0 || (n_tokens >= 0 && v >= n_tokens)) {
      fail(file.path(), ": metadata '", key, "': id ", v, " is outside the vocabulary of ", n_tokens, " tokens");
    }
    slot = static_cast<int32_t>(v);
  };
  id("tokenizer.ggml.bos_token_id", info.bos_id);
  id("tokenizer.ggml.eos_token_id", info.eos_id);
  id("tokenizer.ggml.unknown_token_id", info.unknown_id);
  id("tokenizer.ggml.padding_token_id", info.padding_id);
  if (file.find("tokenizer.ggml.add_bos_token")) info.add_bos = file.get_bool("tokenizer.ggml.add_bos_token");
  if (file.find("tokenizer.ggml.add_eos_token")) info.add_eos = file.get_bool("tokenizer.ggml.add_eos_token");
  return info;
}

Tokenizer tokenizer_from_gguf(const GgufFile& file) {
  const std::string& src = file.path();
  const GgufTokenizerInfo info = gguf_tokenizer_info(file);
  if (info.model != "gpt2") {
    fail(src, ": metadata 'tokenizer.ggml.model' is '", info.model, "'; only 'gpt2' (byte-level BPE) is supported",
         info.model == "llama" ? " ('llama' is SentencePiece)" : "");
  }
  detail::TokenizerSpec spec;
  spec.source = src;
  spec.vocab_path = "metadata 'tokenizer.ggml.tokens'";
  spec.merges_path = "metadata 'tokenizer.ggml.merges'";
  spec.added_path = "metadata 'tokenizer.ggml.tokens' (control/user-defined)";

  std::vector<std::string> tokens = file.get_strings("tokenizer.ggml.tokens");
  spec.vocab.reserve(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (!detail::utf8_valid(tokens[i])) fail(src, ": metadata 'tokenizer.ggml.tokens'[", i, "]: not valid UTF-8");
    spec.vocab.emplace_back(tokens[i], static_cast<int32_t>(i));
  }
  if (file.find("tokenizer.ggml.merges")) {
    const std::vector<std::string> merges = file.get_strings("tokenizer.ggml.merges");
    spec.merges.reserve(merges.size());
    for (size_t i = 0; i < merges.size(); ++i) {
      const std::string& m = merges[i];
      const size_t space = m.find(' ');
      if (space == std::string::npos || m.find(' ', space + 1) != std::string::npos) {
        fail(src, ": metadata 'tokenizer.ggml.merges'[", i, "]: expected \"left right\" with one space, got '", m, "'");
      }
      spec.merges.emplace_back(m.substr(0, space), m.substr(space + 1));
    }
  }
  if (file.find("tokenizer.ggml.token_type")) {
    const std::vector<int64_t> types = file.get_ints("tokenizer.ggml.token_type");
    if (types.size() != tokens.size()) {
      fail(src, ": metadata 'tokenizer.ggml.token_type' has ", types.size(), " entries for ", tokens.size(), " tokens");
    }
    for (size_t i = 0; i < types.size(); ++i) {
      if (types[i] != 3 && types[i] != 4) continue;  // 3 control, 4 user defined
      detail::AddedTokenSpec a;
      a.id = static_cast<int32_t>(i);
      a.content = tokens[i];
      a.normalized = false;
      a.special = types[i] == 3;
      spec.added.push_back(std::move(a));
    }
  }

  detail::PreStep byte_level;
  byte_level.kind = detail::PreStep::Kind::ByteLevel;
  byte_level.add_prefix_space =
      file.find("tokenizer.ggml.add_space_prefix") ? file.get_bool("tokenizer.ggml.add_space_prefix") : false;
  if (info.pre == "gpt2") {
    spec.pre_steps = {byte_level};
  } else if (info.pre == "smollm") {
    detail::PreStep digits;
    digits.kind = detail::PreStep::Kind::Digits;
    digits.individual_digits = true;
    spec.pre_steps = {digits, byte_level};
    spec.pre_is_sequence = true;
  } else if (info.pre == "llama-bpe" || info.pre == "llama3") {
    detail::PreStep split;
    split.kind = detail::PreStep::Kind::Split;
    split.pattern = detail::kLlama3SplitPattern;
    byte_level.use_regex = false;
    spec.pre_steps = {split, byte_level};
    spec.pre_is_sequence = true;
    spec.ignore_merges = true;
  } else {
    fail(src, ": metadata 'tokenizer.ggml.pre' is ", info.pre.empty() ? "missing" : "'" + info.pre + "'",
         "; supported: gpt2, smollm, llama-bpe");
  }
  spec.post_processor_json = R"({"type":"ByteLevel","add_prefix_space":true,"trim_offsets":false,"use_regex":true})";
  return Tokenizer(Tokenizer::Impl::build(std::move(spec)));
}

Tokenizer tokenizer_from_gguf(const std::string& path) {
  return tokenizer_from_gguf(GgufFile::open(path));
}

}  // namespace mor::io
