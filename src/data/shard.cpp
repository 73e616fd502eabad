// Token shards in the llm.c layout (mor/data/shard.h): a buffered writer that commits by rename,
// and a memory-mapped reader that validates the header, the size and, when asked, every id.
#include "mor/data/shard.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <vector>

#include "mor/core/error.h"
#include "mor/core/file.h"

namespace mor::data {

static_assert(std::endian::native == std::endian::little, "shards are little-endian; add byte swapping");

namespace {

constexpr int64_t kMaxShardTokens = std::numeric_limits<int32_t>::max();  // header[2] is an int32
constexpr size_t kWriteBufferBytes = size_t{1} << 22;

int token_bytes_for_version(int32_t version) {
  switch (version) {
    case kShardVersionU16:
      return 2;
    case kShardVersionU32:
    case kLlmcLlama3Version:
      return 4;
    default:
      return 0;
  }
}

void write_all(int fd, const void* data, size_t n, const std::string& path) {
  const char* p = static_cast<const char*>(data);
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

// Throws naming the first id >= limit. The max is computed first with a loop the compiler
// vectorizes, so a valid shard costs one pass at memory bandwidth.
template <typename T>
void check_ids(const std::string& path, const std::byte* data, int64_t n, int64_t limit) {
  constexpr int64_t kBlock = 4096;
  T block[kBlock];
  for (int64_t begin = 0; begin < n; begin += kBlock) {
    const int64_t len = std::min(kBlock, n - begin);
    std::memcpy(block, data + begin * static_cast<int64_t>(sizeof(T)), static_cast<size_t>(len) * sizeof(T));
    T max = 0;
    for (int64_t i = 0; i < len; ++i) max = std::max(max, block[i]);
    if (static_cast<int64_t>(max) < limit) continue;
    for (int64_t i = 0; i < len; ++i) {
      if (static_cast<int64_t>(block[i]) >= limit) {
        fail(path, ": token id ", static_cast<uint64_t>(block[i]), " at position ", begin + i,
             " is >= the vocabulary size ", limit, " (corrupt shard or wrong tokenizer)");
      }
    }
  }
}

}  // namespace

int32_t shard_version_for_vocab(int64_t vocab_size) {
  MOR_CHECK(vocab_size >= 0 && vocab_size <= int64_t{1} << 31, "vocabulary size ", vocab_size,
            " cannot be stored in a token shard (ids are at most 32-bit signed)");
  return vocab_size <= kShardMaxVocabU16 ? kShardVersionU16 : kShardVersionU32;
}

int64_t shard_max_vocab(int32_t version) {
  return version == kShardVersionU16 ? kShardMaxVocabU16 : (int64_t{1} << 31);
}

// ---- ShardWriter -----------------------------------------------------------------------------

struct ShardWriter::Impl {
  std::string path;
  std::string tmp_path;
  int32_t version = kShardVersionU16;
  int64_t vocab_size = 0;
  int64_t limit = 0;  // exclusive id bound: min(vocab, what the version holds)
  int fd = -1;
  int64_t num_tokens = 0;
  bool finished = false;
  std::vector<char> buffer;

  void flush() {
    if (!buffer.empty()) write_all(fd, buffer.data(), buffer.size(), tmp_path);
    buffer.clear();
  }
  void abandon() noexcept {
    if (fd >= 0) ::close(fd);
    fd = -1;
    if (!finished && !tmp_path.empty()) core::remove_file(tmp_path);
  }
};

ShardWriter::ShardWriter(std::string path, int32_t version, int64_t vocab_size) : impl_(std::make_unique<Impl>()) {
  Impl& s = *impl_;
  s.path = std::move(path);
  s.tmp_path = s.path + ".tmp";
  MOR_CHECK(version == kShardVersionU16 || version == kShardVersionU32, s.path, ": cannot write shard version ",
            version, " (1: uint16 tokens, 2: uint32 tokens)");
  MOR_CHECK(vocab_size >= 0 && vocab_size <= shard_max_vocab(version), s.path, ": a vocabulary of ", vocab_size,
            " tokens does not fit shard version ", version, " (at most ", shard_max_vocab(version),
            "); use version 2 (uint32 tokens)");
  s.version = version;
  s.vocab_size = vocab_size;
  s.limit = vocab_size > 0 ? vocab_size : shard_max_vocab(version);
  s.fd = ::open(s.tmp_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (s.fd < 0) fail("cannot create ", s.tmp_path, ": ", std::strerror(errno));
  s.buffer.reserve(kWriteBufferBytes);
  const std::array<char, kShardHeaderBytes> zeros{};  // placeholder; finish() writes the header
  try {
    write_all(s.fd, zeros.data(), zeros.size(), s.tmp_path);
  } catch (...) {
    s.abandon();
    throw;
  }
}

ShardWriter::ShardWriter(ShardWriter&&) noexcept = default;

ShardWriter::~ShardWriter() {
  if (impl_) impl_->abandon();
}

void ShardWriter::append(std::span<const int32_t> tokens) {
  Impl& s = *impl_;
  MOR_CHECK(!s.finished && s.fd >= 0, s.path, ": append after finish");
  MOR_CHECK(s.num_tokens + static_cast<int64_t>(tokens.size()) <= kMaxShardTokens, s.path,
            ": a shard holds at most ", kMaxShardTokens, " tokens");
  const size_t width = s.version == kShardVersionU16 ? 2 : 4;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const int32_t id = tokens[i];
    if (id < 0 || id >= s.limit) {
      fail(s.path, ": token id ", id, " at position ", s.num_tokens + static_cast<int64_t>(i),
           id < 0 ? " is negative" : " is outside the vocabulary",
           s.vocab_size > 0 ? " of " + std::to_string(s.vocab_size) + " tokens" : std::string(),
           " (shard version ", s.version, " holds ids below ", shard_max_vocab(s.version), ")");
    }
  }
  size_t i = 0;
  while (i < tokens.size()) {
    const size_t room = (kWriteBufferBytes - s.buffer.size()) / width;
    const size_t n = std::min(room, tokens.size() - i);
    const size_t old = s.buffer.size();
    s.buffer.resize(old + n * width);
    char* out = s.buffer.data() + old;
    if (width == 2) {
      for (size_t k = 0; k < n; ++k) {
        const auto v = static_cast<uint16_t>(tokens[i + k]);
        std::memcpy(out + 2 * k, &v, 2);
      }
    } else {
      std::memcpy(out, tokens.data() + i, n * 4);
    }
    i += n;
    if (s.buffer.size() + width > kWriteBufferBytes) s.flush();
  }
  s.num_tokens += static_cast<int64_t>(tokens.size());
}

int64_t ShardWriter::num_tokens() const { return impl_->num_tokens; }

const std::string& ShardWriter::path() const { return impl_->path; }

void ShardWriter::finish() {
  Impl& s = *impl_;
  MOR_CHECK(!s.finished && s.fd >= 0, s.path, ": finish called twice");
  try {
    s.flush();
    std::array<int32_t, kShardHeaderBytes / 4> header{};
    header[0] = kShardMagic;
    header[1] = s.version;
    header[2] = static_cast<int32_t>(s.num_tokens);
    header[3] = static_cast<int32_t>(s.vocab_size);
    if (::lseek(s.fd, 0, SEEK_SET) != 0) fail("cannot seek in ", s.tmp_path, ": ", std::strerror(errno));
    write_all(s.fd, header.data(), kShardHeaderBytes, s.tmp_path);
    if (::fsync(s.fd) != 0) fail("cannot fsync ", s.tmp_path, ": ", std::strerror(errno));
    const int fd = s.fd;
    s.fd = -1;
    if (::close(fd) != 0) fail("cannot write ", s.tmp_path, ": ", std::strerror(errno));
    if (::rename(s.tmp_path.c_str(), s.path.c_str()) != 0) {
      fail("cannot rename ", s.tmp_path, " to ", s.path, ": ", std::strerror(errno));
    }
  } catch (...) {
    s.abandon();
    throw;
  }
  s.finished = true;
}

// ---- Shard -----------------------------------------------------------------------------------

struct Shard::Impl {
  core::MappedFile file;
  std::string path;
  int32_t version = 0;
  int token_bytes = 0;
  int64_t num_tokens = 0;
  int64_t vocab_size = 0;
  const std::byte* tokens = nullptr;
};

Shard::Shard(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Shard::Shard(Shard&&) noexcept = default;
Shard& Shard::operator=(Shard&&) noexcept = default;
Shard::~Shard() = default;

Shard Shard::open(const std::string& path, int64_t vocab_size) {
  auto s = std::make_unique<Impl>();
  s->path = path;
  s->file = core::MappedFile::open(path);
  const size_t size = s->file.size();
  if (size < static_cast<size_t>(kShardHeaderBytes)) {
    fail(path, ": not a token shard: ", size, " bytes is shorter than the ", kShardHeaderBytes, "-byte header");
  }
  std::array<int32_t, 4> h{};
  std::memcpy(h.data(), s->file.data(), sizeof(h));
  const bool llmc_llama3 = h[0] == kLlmcLlama3Magic && h[1] == kLlmcLlama3Version;
  if (h[0] != kShardMagic && !llmc_llama3) {
    fail(path, ": not a token shard: bad magic ", h[0], " (expected ", kShardMagic, ")");
  }
  s->version = h[1];
  s->token_bytes = token_bytes_for_version(h[1]);
  if (s->token_bytes == 0 || (h[0] == kShardMagic && h[1] == kLlmcLlama3Version)) {
    fail(path, ": unsupported shard version ", h[1], " (this build reads 1: uint16 and 2: uint32 tokens)");
  }
  s->num_tokens = h[2];
  if (h[2] < 0) fail(path, ": corrupt shard header: negative token count ", h[2]);
  const int64_t expected = kShardHeaderBytes + s->num_tokens * s->token_bytes;
  if (static_cast<int64_t>(size) != expected) {
    fail(path, ": size ", size, " bytes does not match the header (", kShardHeaderBytes, " + ", s->num_tokens,
         " tokens x ", s->token_bytes, " bytes = ", expected, "): the shard is truncated or corrupt");
  }
  s->vocab_size = llmc_llama3 ? 0 : h[3];
  if (s->vocab_size < 0 || (s->version == kShardVersionU16 && s->vocab_size > kShardMaxVocabU16)) {
    fail(path, ": corrupt shard header: vocabulary size ", h[3], " does not fit version ", s->version);
  }
  if (vocab_size > 0 && s->vocab_size > vocab_size) {
    fail(path, ": written for a vocabulary of ", s->vocab_size, " tokens, larger than the expected ", vocab_size,
         " (wrong tokenizer?)");
  }
  s->tokens = s->file.data() + kShardHeaderBytes;
  const int64_t limit = vocab_size > 0 ? vocab_size : s->vocab_size;
  if (limit > 0 && !(s->token_bytes == 2 && limit >= kShardMaxVocabU16)) {
    if (s->token_bytes == 2) {
      check_ids<uint16_t>(path, s->tokens, s->num_tokens, limit);
    } else {
      check_ids<uint32_t>(path, s->tokens, s->num_tokens, limit);
    }
  }
  return Shard(std::move(s));
}

const std::string& Shard::path() const { return impl_->path; }
int32_t Shard::version() const { return impl_->version; }
int Shard::token_bytes() const { return impl_->token_bytes; }
int64_t Shard::num_tokens() const { return impl_->num_tokens; }
int64_t Shard::vocab_size() const { return impl_->vocab_size; }
const std::byte* Shard::token_data() const { return impl_->tokens; }

void Shard::read(int64_t start, std::span<int32_t> out) const {
  const Impl& s = *impl_;
  const auto n = static_cast<int64_t>(out.size());
  MOR_CHECK(start >= 0 && n >= 0 && start + n <= s.num_tokens, s.path, ": read of tokens [", start, ", ",
            start + n, ") is outside the shard's ", s.num_tokens, " tokens");
  if (s.token_bytes == 2) {
    const std::byte* p = s.tokens + start * 2;
    for (int64_t i = 0; i < n; ++i) {
      uint16_t v;
      std::memcpy(&v, p + i * 2, 2);
      out[static_cast<size_t>(i)] = v;
    }
  } else {
    std::memcpy(out.data(), s.tokens + start * 4, static_cast<size_t>(n) * 4);
  }
}

}  // namespace mor::data
