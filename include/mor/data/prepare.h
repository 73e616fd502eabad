// `mor data prepare`: text corpora -> token shards + manifest.json (docs/data.md, docs/formats/shards.md).
//
// Inputs are files, directories (every file below, recursively, in byte-wise path order) and globs.
// A file ending in .jsonl holds one document per non-blank line (a JSON object whose `text_field`
// is a string); .jsonl.zst is the same, zstd-compressed; any other file is one document (.zst
// files are decompressed first). Each document is tokenized alone and followed by the tokenizer's
// EOS id. Empty documents are skipped (and counted).
//
// Invariants:
//   - Deterministic: the output bytes depend only on the inputs, the tokenizer and the options
//     other than `threads` and `progress` (no timestamps, no thread-count dependence).
//   - Split: of the N records (documents, counted in a first pass), round(N * val_fraction) chosen
//     by a seeded sampler go to validation (at least one when val_fraction > 0 and N >= 2); each
//     split keeps the input order. Shards hold at most `shard_tokens` tokens; a split's token
//     stream is its shards concatenated in order (documents may straddle shard boundaries).
//   - Atomic: shards are written into a hidden staging directory and moved into `out_dir` only
//     after everything succeeded; manifest.json is written last, atomically. When a run starts it
//     removes the manifest and shards (train_NNNNNN.bin, val_NNNNNN.bin) of an earlier run; when it
//     fails it leaves no manifest and no shards.
//   - Bad input (unreadable file, invalid JSON line, missing or non-string text field, corrupt zstd
//     stream) throws mor::Error "<file>:<line>: ..." unless skip_bad, in which case the bad file or
//     record is skipped, counted in the manifest and reported as a warning.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace mor::io {
class Tokenizer;
}

namespace mor::data {

inline constexpr int kManifestFormatVersion = 1;

struct PrepareOptions {
  std::vector<std::string> inputs;   // files, directories, globs
  std::string out_dir;
  std::string tokenizer_path;        // recorded in the manifest (the tokenizer itself is passed in)
  std::string text_field = "text";   // JSONL field holding the document
  std::vector<std::string> extensions;  // filter for files found in directories/globs; empty = all
  double val_fraction = 0.005;
  uint64_t seed = 1234;
  int64_t shard_tokens = 100'000'000;
  int shard_version = 0;             // 0: the smallest that holds the vocabulary; 1 or 2 to force
  int threads = 0;                   // 0: every core
  bool skip_bad = false;
  bool progress = true;              // a progress display on stderr
  // Called after each shard is complete in the staging directory (tests inject failures here).
  std::function<void(const std::string& shard_name, int64_t tokens)> on_shard_written;
};

struct ShardEntry {
  std::string file;  // name inside out_dir
  int64_t tokens = 0;
};

struct SplitSummary {
  int64_t documents = 0;
  int64_t tokens = 0;  // EOS included
  std::vector<ShardEntry> shards;
};

struct PrepareSummary {
  SplitSummary train;
  SplitSummary val;
  int64_t files = 0;
  int64_t records = 0;          // documents found by the counting pass (before skips)
  int64_t input_bytes = 0;      // bytes read from the files (compressed size for .zst)
  int64_t text_bytes = 0;       // bytes of document text tokenized
  int64_t bad_files = 0;        // unreadable files skipped (skip_bad)
  int64_t bad_records = 0;      // bad JSON lines skipped (skip_bad)
  int64_t empty_documents = 0;  // documents with no text, skipped
  int32_t shard_version = 0;
  double seconds = 0;
  std::string manifest_path;
};

// Runs the whole preparation. Throws mor::Error (see the invariants above); `tokenizer` must have
// an EOS id.
PrepareSummary prepare_corpus(const PrepareOptions& options, const io::Tokenizer& tokenizer);

// The files prepare_corpus would read for `inputs`, in order (exposed for tests and --dry-run).
std::vector<std::string> list_input_files(const std::vector<std::string>& inputs,
                                          const std::vector<std::string>& extensions);

// Checks a prepared directory: manifest.json parses, every shard it lists opens (magic, size,
// ids < vocabulary) with the listed token count, and, when `tokenizer` is given, its hash, vocab
// size and EOS id match the manifest. Returns a one-paragraph summary; throws mor::Error naming the
// file at fault.
std::string verify_prepared(const std::string& dir, const io::Tokenizer* tokenizer);

}  // namespace mor::data
