// Token shards in the llm.c layout: a 1024-byte header of 256 little-endian int32, then the tokens.
//   header[0] = 20240520 (magic), header[1] = version (1: uint16 tokens, 2: uint32 tokens — our
//   extension for vocabularies above 65,535), header[2] = number of tokens, header[3] = vocabulary
//   size (0 = unknown; llm.c leaves it 0), the rest 0.
// Writers write "<path>.tmp" and rename on finish(), so a partial shard never looks complete.
// Readers memory-map and validate on open (magic, version, size == header, ids < vocabulary).
// Readers also accept llm.c's Llama-3 shards (magic 20240801, version 7, uint32 tokens).
// docs/formats/shards.md describes the layout, the manifest and how to read shards from Python.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

namespace mor::data {

inline constexpr int32_t kShardMagic = 20240520;
inline constexpr int64_t kShardHeaderBytes = 1024;
inline constexpr int32_t kShardVersionU16 = 1;
inline constexpr int32_t kShardVersionU32 = 2;
inline constexpr int64_t kShardMaxVocabU16 = 65536;  // ids 0..65535 fit uint16
inline constexpr int32_t kLlmcLlama3Magic = 20240801;  // read-only compatibility
inline constexpr int32_t kLlmcLlama3Version = 7;

// Version 1 when every id fits in uint16, else 2.
int32_t shard_version_for_vocab(int64_t vocab_size);
// Largest vocabulary a shard version holds (65,536 for version 1, 2^31 for version 2).
int64_t shard_max_vocab(int32_t version);

class ShardWriter {
 public:
  ShardWriter(std::string path, int32_t version, int64_t vocab_size);
  ShardWriter(ShardWriter&&) noexcept;
  ~ShardWriter();  // an unfinished writer removes its temporary file
  // Throws mor::Error when an id does not fit the version or is >= vocab_size.
  void append(std::span<const int32_t> tokens);
  int64_t num_tokens() const;
  const std::string& path() const;  // the final path (the data goes to "<path>.tmp" until finish())
  void finish();  // writes the header, fsyncs, renames <path>.tmp to <path>
  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

class Shard {
 public:
  // vocab_size > 0: every id is checked (the file is named in the error). 0: header value used
  // (ids are checked against header[3] when it is non-zero).
  static Shard open(const std::string& path, int64_t vocab_size = 0);
  Shard(Shard&&) noexcept;
  Shard& operator=(Shard&&) noexcept;
  ~Shard();
  const std::string& path() const;
  int32_t version() const;
  int token_bytes() const;  // 2 (version 1) or 4
  int64_t num_tokens() const;
  int64_t vocab_size() const;  // from the header (0 = unknown)
  // The mapped little-endian token array (num_tokens() x token_bytes()), valid while *this lives.
  const std::byte* token_data() const;
  // Copies tokens [start, start + out.size()) into out; throws when out of range.
  void read(int64_t start, std::span<int32_t> out) const;
  struct Impl;

 private:
  explicit Shard(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mor::data
