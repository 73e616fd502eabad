// The training data loader: memory-mapped token shards packed into rows, shuffled per epoch,
// sliced per data-parallel rank, with a cursor that resumes exactly (also on another rank count).
//
// Packing. The shards are one token stream, in the order the paths resolve to. Row i is the
// seq_len + 1 tokens starting at token i * seq_len (llm.c style: consecutive rows share one
// token, so every token after the first is a target exactly once). Rows read across shard
// boundaries. num_rows = (total_tokens - 1) / seq_len; the remainder that does not fill a row is
// dropped. inputs = row[0, seq_len), targets = row[1, seq_len + 1).
//
// Order. The row stream is the infinite concatenation of epochs; epoch e is a permutation of all
// rows, a function of (seed, e) only (splitmix64 + Fisher-Yates, shuffle_permutation below), or the
// identity when shuffle is off. Stream position p is row perm_{p / N}[p % N], N = num_rows.
// A global batch is global_rows = rows_per_rank * world_size consecutive stream positions; rank r
// takes [r * rows_per_rank, (r + 1) * rows_per_rank) of it: disjoint, equal-sized slices. A global
// batch may wrap into the next epoch (no row is skipped; every row is used once per epoch).
//
// Cursor. The state is one global stream position (epoch, rows consumed in it), identical on every
// rank, so a cursor saved on any rank restores onto any world size / rows_per_rank: the next
// global batch starts where the previous layout stopped. Restoring checks the data fingerprint,
// seq_len, total rows, seed and shuffle, and throws mor::Error naming the field that differs.
//
// Shapes: Batch::inputs/targets/doc_ids are row-major [rows x seq_len] int32. Not thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace mor::data {

inline constexpr int32_t kLoaderCursorVersion = 1;

struct LoaderOptions {
  // Shard files, directories (every "*.bin" file below, recursively, hidden names skipped) or glob
  // patterns, expanded by core::list_files and sorted by path; entries keep their order. An entry
  // naming no shard, or a shard listed twice, is an error.
  std::vector<std::string> shards;
  int64_t vocab_size = 0;  // > 0: every token id is validated against it; 0: header value used
  int64_t seq_len = 0;     // tokens per row of inputs (each row reads seq_len + 1 tokens)
  int64_t rows_per_rank = 1;  // micro-batch rows returned by next() on this rank
  int64_t rank = 0;
  int64_t world_size = 1;
  uint64_t seed = 0;
  bool shuffle = true;
  bool document_ids = false;  // also return per-token document indices (needs eos_id)
  int64_t eos_id = -1;
};

struct Batch {
  int64_t rows = 0;                // == rows_per_rank
  int64_t seq_len = 0;
  std::vector<int32_t> inputs;     // [rows x seq_len]
  std::vector<int32_t> targets;    // [rows x seq_len]; targets[r][j] == inputs[r][j + 1]
  // [rows x seq_len] when LoaderOptions::document_ids, else empty. 0 at each row start, +1 after
  // every EOS among the inputs: the EOS belongs to the document it ends.
  std::vector<int32_t> doc_ids;
  std::vector<int64_t> row_ids;    // [rows] packed row index (in [0, num_rows)) of each row
  int64_t position = 0;            // stream position of the global batch's first row
  int64_t epoch = 0;               // epoch of that position
};

// Where the loader stands; the same on every rank. Serialised as one JSON object.
struct LoaderCursor {
  int32_t version = kLoaderCursorVersion;
  uint64_t seed = 0;
  bool shuffle = true;
  int64_t epoch = 0;
  int64_t rows_consumed = 0;  // global rows of `epoch` already consumed, in [0, total_rows)
  int64_t seq_len = 0;
  int64_t total_rows = 0;
  std::string fingerprint;    // data_fingerprint() of the shards

  bool operator==(const LoaderCursor&) const = default;
};

// {"format_version":1,"seed":...,"shuffle":...,"epoch":...,"rows_consumed":...,"seq_len":...,
//  "total_rows":...,"fingerprint":"..."}
std::string cursor_to_json(const LoaderCursor& cursor);
// Throws mor::Error naming the field that is missing, mistyped or out of range.
LoaderCursor cursor_from_json(std::string_view json);

// Expands LoaderOptions::shards as described there; throws when an entry matches nothing.
std::vector<std::string> resolve_shard_paths(const std::vector<std::string>& specs);

// The order of epoch `epoch`: a permutation of [0, n), a function of (seed, epoch, n) only, the
// same on every platform.
std::vector<uint32_t> shuffle_permutation(int64_t n, uint64_t seed, int64_t epoch);

// Hex FNV-1a 64 over each shard's file name (not directory) and token count, in order.
std::string data_fingerprint(const std::vector<std::string>& names, const std::vector<int64_t>& num_tokens);

class Loader {
 public:
  // Opens and validates every shard (corrupt shards -> mor::Error naming the file) and the options.
  explicit Loader(LoaderOptions options);
  Loader(Loader&&) noexcept;
  Loader& operator=(Loader&&) noexcept;
  ~Loader();

  // This rank's slice of the next global batch; advances the cursor by global_rows().
  Batch next();
  // This rank's slice of the global batch starting at stream position `position`; no state change.
  Batch batch_at(int64_t position) const;

  LoaderCursor cursor() const;
  // Continues from `cursor`'s global position; throws mor::Error naming a mismatching field.
  void restore(const LoaderCursor& cursor);

  int64_t position() const;     // global stream position of the next batch
  int64_t num_rows() const;     // rows per epoch
  int64_t num_tokens() const;   // tokens in all shards
  int64_t global_rows() const;  // rows_per_rank * world_size
  const LoaderOptions& options() const;
  const std::vector<std::string>& shard_paths() const;
  const std::string& fingerprint() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace mor::data
