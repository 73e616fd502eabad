// `mor data prepare` (mor/data/prepare.h). Two passes over the inputs:
//   1. count the records (documents) of every file, so the validation sample can be drawn exactly;
//   2. a reader thread streams records in input order in chunks of a few MB; the calling thread
//      parses JSON lines in parallel, tokenizes the chunk with Tokenizer::encode_batch and appends
//      the documents, each followed by EOS, to the train or val shard stream.
// Every stage keeps input order, so the output does not depend on the number of threads.
#include "mor/data/prepare.h"

#include <nlohmann/json.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <optional>
#include <regex>
#include <thread>
#include <unordered_set>

#include "mor/core/error.h"
#include "mor/core/file.h"
#include "mor/core/log.h"
#include "mor/core/progress.h"
#include "mor/data/shard.h"
#include "mor/io/tokenizer.h"
#include "mor/core/text_source.h"

namespace mor::data {

namespace {

using Json = nlohmann::ordered_json;
using core::SourceError;

constexpr size_t kChunkBytes = size_t{4} << 20;
constexpr size_t kChunkRecords = 4096;
constexpr int kMaxWarnings = 10;
constexpr const char* kStagingName = ".mor-prepare.tmp";
constexpr const char* kManifestName = "manifest.json";

enum class Kind { kText, kTextZst, kJsonl, kJsonlZst };

Kind kind_of(const std::string& path) {
  if (core::ends_with(path, ".jsonl.zst")) return Kind::kJsonlZst;
  if (core::ends_with(path, ".jsonl")) return Kind::kJsonl;
  if (core::ends_with(path, ".zst")) return Kind::kTextZst;
  return Kind::kText;
}
bool is_jsonl(Kind k) { return k == Kind::kJsonl || k == Kind::kJsonlZst; }
bool is_zstd(Kind k) { return k == Kind::kJsonlZst || k == Kind::kTextZst; }

struct InputFile {
  std::string path;
  Kind kind = Kind::kText;
  int64_t bytes = 0;
  int64_t records = 0;
  bool skipped = false;  // unreadable in pass 1 (skip_bad)
};

// One document candidate, in input order.
struct Record {
  int32_t file = 0;
  int64_t line = 0;       // 1-based for JSONL, 0 for whole files
  bool json = false;
  bool val = false;
  bool bad_file = false;  // `error` concerns the whole file
  std::string data;       // raw JSON line or document text; the text after parsing
  std::string error;      // non-empty: a bad record
};

struct Chunk {
  std::vector<Record> records;
  int64_t input_bytes = 0;
};

// splitmix64: a tiny, portable, seedable generator (std distributions differ between libraries).
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed ^ 0x6a09e667f3bcc909ULL) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  uint64_t below(uint64_t n) {  // uniform in [0, n), by rejection
    const uint64_t threshold = (0 - n) % n;
    for (;;) {
      const uint64_t x = next();
      if (x >= threshold) return x % n;
    }
  }

 private:
  uint64_t state_;
};

// The sorted indices of the validation records: Floyd's exact sample of k out of n.
std::vector<int64_t> sample_validation(int64_t n, double fraction, uint64_t seed) {
  if (fraction <= 0 || n < 2) return {};
  int64_t k = std::llround(static_cast<double>(n) * fraction);
  k = std::clamp<int64_t>(k, 1, n - 1);
  Rng rng(seed);
  std::unordered_set<int64_t> chosen;
  chosen.reserve(static_cast<size_t>(k) * 2);
  for (int64_t j = n - k; j < n; ++j) {
    const auto t = static_cast<int64_t>(rng.below(static_cast<uint64_t>(j + 1)));
    if (!chosen.insert(t).second) chosen.insert(j);
  }
  std::vector<int64_t> out(chosen.begin(), chosen.end());
  std::sort(out.begin(), out.end());
  return out;
}

std::string where(const InputFile& f, int64_t line) {
  return line > 0 ? f.path + ":" + std::to_string(line) : f.path;
}

// Extracts the text field of one JSON line into `text`; returns an error message or "".
std::string parse_json_record(const std::string& line, const std::string& field, std::string& text) {
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(line);
  } catch (const nlohmann::json::parse_error& e) {
    std::string what = e.what();
    if (const auto pos = what.find("] "); what.rfind("[json.exception", 0) == 0 && pos != std::string::npos) {
      what = what.substr(pos + 2);
    }
    return "invalid JSON: " + what;
  }
  if (!doc.is_object()) return std::string("expected a JSON object, got ") + doc.type_name();
  const auto it = doc.find(field);
  if (it == doc.end()) {
    std::string keys;
    for (const auto& [key, value] : doc.items()) keys += (keys.empty() ? "" : ", ") + key;
    return "no \"" + field + "\" field (fields: " + (keys.empty() ? "none" : keys) + "); choose one with --text-field";
  }
  if (!it->is_string()) return "field \"" + field + "\" is " + it->type_name() + ", not a string";
  text = it->get<std::string>();
  return "";
}

// Runs fn(i) for i in [0, n) on up to `threads` threads; fn must not throw.
template <typename F>
void parallel_for(size_t n, int threads, F&& fn) {
  const size_t workers = std::min<size_t>(static_cast<size_t>(std::max(threads, 1)), (n + 31) / 32);
  if (workers <= 1) {
    for (size_t i = 0; i < n; ++i) fn(i);
    return;
  }
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t begin; (begin = next.fetch_add(32)) < n;) {
      for (size_t i = begin; i < std::min(n, begin + 32); ++i) fn(i);
    }
  };
  std::vector<std::thread> pool;
  for (size_t w = 1; w < workers; ++w) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
}

// A bounded queue between the reader thread and the tokenizing thread.
class ChunkQueue {
 public:
  bool push(Chunk&& chunk) {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [&] { return queue_.size() < kCapacity || stop_; });
    if (stop_) return false;
    queue_.push_back(std::move(chunk));
    cv_.notify_all();
    return true;
  }
  std::optional<Chunk> pop() {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [&] { return !queue_.empty() || done_; });
    if (!queue_.empty()) {
      Chunk c = std::move(queue_.front());
      queue_.pop_front();
      cv_.notify_all();
      return c;
    }
    if (error_) std::rethrow_exception(error_);
    return std::nullopt;
  }
  void finish(std::exception_ptr error) {
    std::lock_guard lock(mutex_);
    error_ = std::move(error);
    done_ = true;
    cv_.notify_all();
  }
  void stop() {
    std::lock_guard lock(mutex_);
    stop_ = true;
    cv_.notify_all();
  }
  bool stopped() {
    std::lock_guard lock(mutex_);
    return stop_;
  }

 private:
  static constexpr size_t kCapacity = 2;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Chunk> queue_;
  std::exception_ptr error_;
  bool done_ = false;
  bool stop_ = false;
};

// Pass 2's reader: streams the records of every file in order into the queue.
void read_records(const std::vector<InputFile>& files, const std::vector<int64_t>& val_indices, bool skip_bad,
                  ChunkQueue& queue) {
  Chunk chunk;
  size_t chunk_bytes = 0;
  int64_t index = 0;
  size_t val_cursor = 0;
  auto emit = [&](Record&& r, int64_t input_bytes) -> bool {
    if (r.error.empty()) {
      while (val_cursor < val_indices.size() && val_indices[val_cursor] < index) ++val_cursor;
      r.val = val_cursor < val_indices.size() && val_indices[val_cursor] == index;
    }
    ++index;
    chunk_bytes += r.data.size();
    chunk.input_bytes += input_bytes;
    chunk.records.push_back(std::move(r));
    if (chunk_bytes >= kChunkBytes || chunk.records.size() >= kChunkRecords) {
      if (!queue.push(std::move(chunk))) return false;
      chunk = Chunk{};
      chunk_bytes = 0;
    }
    return true;
  };
  for (size_t fi = 0; fi < files.size(); ++fi) {
    const InputFile& f = files[fi];
    if (f.skipped) continue;
    if (queue.stopped()) return;
    Record base;
    base.file = static_cast<int32_t>(fi);
    if (!is_jsonl(f.kind)) {
      Record r = base;
      try {
        r.data = core::read_all(f.path, is_zstd(f.kind));
      } catch (const SourceError& e) {
        if (!skip_bad) fail(f.path, ": ", e.what());
        r.error = e.what();
        r.bad_file = true;
      }
      if (!emit(std::move(r), f.bytes)) return;
      continue;
    }
    int64_t records = 0;
    int64_t consumed = 0;
    try {
      core::LineReader reader(f.path, is_zstd(f.kind));
      std::string_view line;
      for (;;) {
        bool more = false;
        try {
          more = reader.next(line);
        } catch (const SourceError& e) {  // pass 1 read it: the file changed meanwhile
          fail(e.at_line() ? where(f, reader.line_number() + 1) : f.path, ": ", e.what());
        }
        if (!more) break;
        if (core::is_blank(line)) continue;
        ++records;
        Record r = base;
        r.json = true;
        r.line = reader.line_number();
        r.data.assign(line);
        const int64_t now = reader.bytes_consumed();
        if (!emit(std::move(r), now - consumed)) return;
        consumed = now;
      }
      chunk.input_bytes += reader.bytes_consumed() - consumed;
    } catch (const SourceError& e) {
      fail(f.path, ": ", e.what());
    }
    if (records != f.records) fail(f.path, ": the file changed while being prepared (", f.records, " then ", records, " records)");
  }
  if (!chunk.records.empty() || chunk.input_bytes > 0) queue.push(std::move(chunk));
}

// Appends one split's token stream to shards of at most `shard_tokens` tokens in the staging dir.
class SplitWriter {
 public:
  SplitWriter(std::string prefix, const std::string& staging, const PrepareOptions& options, int32_t version,
              int64_t vocab)
      : prefix_(std::move(prefix)), staging_(staging), options_(options), version_(version), vocab_(vocab) {}

  void append(std::span<const int32_t> tokens) {
    while (!tokens.empty()) {
      if (!writer_) {
        char name[64];
        std::snprintf(name, sizeof(name), "%s_%06zu.bin", prefix_.c_str(), summary_.shards.size());
        current_name_ = name;
        writer_.emplace(staging_ + "/" + current_name_, version_, vocab_);
      }
      const int64_t room = options_.shard_tokens - writer_->num_tokens();
      const auto n = static_cast<size_t>(std::min<int64_t>(room, static_cast<int64_t>(tokens.size())));
      writer_->append(tokens.first(n));
      tokens = tokens.subspan(n);
      summary_.tokens += static_cast<int64_t>(n);
      if (writer_->num_tokens() == options_.shard_tokens) close_shard();
    }
  }
  void finish() {
    if (writer_) close_shard();
  }
  SplitSummary& summary() { return summary_; }

 private:
  void close_shard() {
    const int64_t n = writer_->num_tokens();
    writer_->finish();
    writer_.reset();
    summary_.shards.push_back({current_name_, n});
    if (options_.on_shard_written) options_.on_shard_written(current_name_, n);
  }

  std::string prefix_;
  std::string staging_;
  const PrepareOptions& options_;
  int32_t version_;
  int64_t vocab_;
  std::optional<ShardWriter> writer_;
  std::string current_name_;
  SplitSummary summary_;
};

bool is_shard_name(const std::string& name) {
  static const std::regex pattern(R"((train|val)_[0-9]{6}\.bin(\.tmp)?)");
  return std::regex_match(name, pattern);
}

// Removes every file of a directory that is not itself a directory, then the directory.
void remove_staging(const std::string& staging) noexcept {
  try {
    if (!core::is_directory(staging)) return;
    for (const auto& name : core::list_directory(staging)) core::remove_file(staging + "/" + name);
  } catch (...) {
  }
  ::rmdir(staging.c_str());
}

// Removes what an earlier (complete or failed) run left in out_dir: manifest, shards, staging.
void clear_previous_output(const std::string& out_dir) {
  core::remove_file(out_dir + "/" + kManifestName);
  remove_staging(out_dir + "/" + kStagingName);
  for (const auto& name : core::list_directory(out_dir)) {
    if (is_shard_name(name) && !core::remove_file(out_dir + "/" + name)) {
      fail("cannot remove ", out_dir, "/", name, " left by an earlier run");
    }
  }
}

// Deletes staged and moved shards unless committed (an error or an exception on the way out).
struct OutputGuard {
  std::string out_dir;
  std::string staging;
  std::vector<std::string> moved;
  bool committed = false;
  ~OutputGuard() {
    if (committed) return;
    remove_staging(staging);
    for (const auto& f : moved) core::remove_file(f);
    core::remove_file(out_dir + "/" + kManifestName + ".tmp");
  }
};

Json split_json(const SplitSummary& s) {
  Json shards = Json::array();
  for (const auto& e : s.shards) shards.push_back({{"file", e.file}, {"tokens", e.tokens}});
  return {{"documents", s.documents}, {"tokens", s.tokens}, {"shards", shards}};
}

std::string manifest_json(const PrepareOptions& o, const io::Tokenizer& tok, int32_t eos, const PrepareSummary& s) {
  Json m;
  m["format"] = "mor-token-shards";
  m["format_version"] = kManifestFormatVersion;
  m["mor_version"] = MOR_VERSION;
  m["shard_version"] = s.shard_version;
  m["token_bytes"] = s.shard_version == kShardVersionU16 ? 2 : 4;
  m["tokenizer"] = {{"path", o.tokenizer_path}, {"hash", tok.hash()}, {"vocab_size", tok.vocab_size()}, {"eos_id", eos}};
  m["inputs"] = o.inputs;
  m["text_field"] = o.text_field;
  m["extensions"] = o.extensions;
  m["seed"] = o.seed;
  m["val_fraction"] = o.val_fraction;
  m["shard_tokens"] = o.shard_tokens;
  m["counts"] = {{"files", s.files},           {"records", s.records},         {"input_bytes", s.input_bytes},
                 {"text_bytes", s.text_bytes}, {"bad_files", s.bad_files},     {"bad_records", s.bad_records},
                 {"empty_documents", s.empty_documents}};
  m["splits"] = {{"train", split_json(s.train)}, {"val", split_json(s.val)}};
  return m.dump(2) + "\n";
}

// Pass 1: sizes and record counts; unreadable or corrupt files are errors (or skipped).
void count_records(std::vector<InputFile>& files, const PrepareOptions& o, PrepareSummary& summary) {
  int64_t jsonl_bytes = 0;
  for (auto& f : files) {
    f.kind = kind_of(f.path);
    f.bytes = core::file_size(f.path);
    if (is_jsonl(f.kind)) jsonl_bytes += f.bytes;
  }
  core::Progress::Options popt;
  popt.mode = o.progress ? core::Progress::Mode::kAuto : core::Progress::Mode::kSilent;
  popt.unit = core::Progress::Unit::kBytes;
  if (jsonl_bytes < (int64_t{64} << 20)) popt.mode = core::Progress::Mode::kSilent;  // quick: no display
  core::Progress progress("counting documents", jsonl_bytes, popt);
  int warned = 0;
  for (auto& f : files) {
    int64_t error_line = 0;
    try {
      if (!is_jsonl(f.kind)) {
        core::ByteSource probe(f.path, false);  // readable?
        f.records = 1;
        continue;
      }
      core::LineReader reader(f.path, is_zstd(f.kind));
      std::string_view line;
      int64_t reported = 0;
      for (;;) {
        error_line = reader.line_number() + 1;
        if (!reader.next(line)) break;
        if (!core::is_blank(line)) ++f.records;
        if (reader.bytes_consumed() - reported >= (int64_t{1} << 22)) {
          progress.add(reader.bytes_consumed() - reported);
          reported = reader.bytes_consumed();
        }
      }
      progress.add(reader.bytes_consumed() - reported);
    } catch (const SourceError& e) {
      const std::string msg = (e.at_line() ? where(f, error_line) : f.path) + ": " + e.what();
      if (!o.skip_bad) fail(msg);
      f.skipped = true;
      f.records = 0;
      ++summary.bad_files;
      if (warned++ < kMaxWarnings) core::log_warn("skipped " + msg);
    }
  }
  progress.finish();
}

std::string real_path(const std::string& path) {
  char* p = ::realpath(path.c_str(), nullptr);
  if (p == nullptr) return {};
  std::string out = p;
  std::free(p);
  return out;
}

// An input that is a file this run replaces (a shard or the manifest in out_dir) is an error: it
// would be deleted before it is read. Other files inside out_dir are fine inputs.
void refuse_own_outputs(const std::vector<InputFile>& files, const std::string& out_dir) {
  const std::string out = real_path(out_dir);
  if (out.empty()) return;
  for (const auto& f : files) {
    const std::string real = real_path(f.path);
    const auto slash = real.find_last_of('/');
    if (slash == std::string::npos) continue;
    std::string dir = real.substr(0, slash);
    const std::string name = real.substr(slash + 1);
    const bool staged = core::ends_with(dir, std::string("/") + kStagingName);
    if (staged) dir = dir.substr(0, dir.size() - std::string(kStagingName).size() - 1);
    const bool ours = staged || is_shard_name(name) || name == kManifestName ||
                      name == std::string(kManifestName) + ".tmp";
    if (dir == out && ours) {
      fail("input ", f.path, " is an output of this run in ", out_dir, "; leave the output directory out of the inputs");
    }
  }
}

}  // namespace

std::vector<std::string> list_input_files(const std::vector<std::string>& inputs,
                                          const std::vector<std::string>& extensions) {
  std::vector<std::string> out;
  std::unordered_set<std::string> seen;
  for (const auto& input : inputs) {
    for (auto& f : core::list_files(input, extensions)) {
      if (seen.insert(f).second) out.push_back(std::move(f));
    }
  }
  return out;
}

PrepareSummary prepare_corpus(const PrepareOptions& o, const io::Tokenizer& tokenizer) {
  const auto start = std::chrono::steady_clock::now();
  MOR_CHECK(!o.inputs.empty(), "no input files given");
  MOR_CHECK(!o.out_dir.empty(), "no output directory given");
  MOR_CHECK(o.val_fraction >= 0 && o.val_fraction < 1, "the validation fraction must be in [0, 1), got ",
            o.val_fraction);
  MOR_CHECK(o.shard_tokens > 0 && o.shard_tokens <= std::numeric_limits<int32_t>::max(),
            "shard size must be between 1 and 2147483647 tokens, got ", o.shard_tokens);
  MOR_CHECK(!o.text_field.empty(), "the JSONL text field name is empty");
  const std::string tok_name = o.tokenizer_path.empty() ? std::string("the tokenizer") : "tokenizer " + o.tokenizer_path;
  const auto eos = tokenizer.eos_id();
  MOR_CHECK(eos.has_value(), tok_name, " has no end-of-text token (\"<|endoftext|>\" or another special token) to "
                             "separate documents");
  const int64_t vocab = tokenizer.vocab_size();
  PrepareSummary summary;
  summary.shard_version = o.shard_version == 0 ? shard_version_for_vocab(vocab) : o.shard_version;
  MOR_CHECK(summary.shard_version == kShardVersionU16 || summary.shard_version == kShardVersionU32,
            "unknown shard version ", summary.shard_version, " (1: uint16 tokens, 2: uint32 tokens)");
  MOR_CHECK(vocab <= shard_max_vocab(summary.shard_version), "vocabulary overflow: ", tok_name, " has ", vocab,
            " tokens but shard version ", summary.shard_version, " holds ids below ",
            shard_max_vocab(summary.shard_version), "; use shard version 2 (uint32 tokens)");
  const int threads = o.threads > 0 ? o.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));

  // Pass 1.
  std::vector<InputFile> files;
  for (auto& p : list_input_files(o.inputs, o.extensions)) files.push_back({std::move(p)});
  refuse_own_outputs(files, o.out_dir);
  count_records(files, o, summary);
  summary.files = static_cast<int64_t>(files.size());
  for (const auto& f : files) {
    summary.records += f.records;
    if (!f.skipped) summary.input_bytes += f.bytes;
  }
  if (summary.records == 0) fail("empty corpus: the inputs hold no documents (", files.size(), " files read)");
  const std::vector<int64_t> val_indices = sample_validation(summary.records, o.val_fraction, o.seed);

  // Pass 2 writes into a staging directory; nothing is visible in out_dir until the end.
  core::make_directories(o.out_dir);
  clear_previous_output(o.out_dir);
  OutputGuard guard{o.out_dir, o.out_dir + "/" + kStagingName, {}};
  core::make_directories(guard.staging);
  SplitWriter train("train", guard.staging, o, summary.shard_version, vocab);
  SplitWriter val("val", guard.staging, o, summary.shard_version, vocab);

  core::Progress::Options popt;
  popt.mode = o.progress ? core::Progress::Mode::kAuto : core::Progress::Mode::kSilent;
  popt.unit = core::Progress::Unit::kBytes;
  popt.secondary_label = "tokens";
  core::Progress progress("tokenizing", summary.input_bytes, popt);

  ChunkQueue queue;
  std::thread reader([&] {
    std::exception_ptr error;
    try {
      read_records(files, val_indices, o.skip_bad, queue);
    } catch (...) {
      error = std::current_exception();
    }
    queue.finish(error);
  });
  struct Joiner {
    ChunkQueue& q;
    std::thread& t;
    ~Joiner() {
      q.stop();
      t.join();
    }
  } joiner{queue, reader};

  int warned = 0;
  std::vector<std::string> texts;
  std::vector<char> to_val;
  while (auto chunk = queue.pop()) {
    auto& records = chunk->records;
    parallel_for(records.size(), threads, [&](size_t i) {
      Record& r = records[i];
      if (!r.json || !r.error.empty()) return;
      std::string text;
      r.error = parse_json_record(r.data, o.text_field, text);
      r.data = std::move(text);
    });
    texts.clear();
    to_val.clear();
    for (auto& r : records) {
      if (!r.error.empty()) {
        const std::string msg = where(files[static_cast<size_t>(r.file)], r.line) + ": " + r.error;
        if (!o.skip_bad) fail(msg);
        ++(r.bad_file ? summary.bad_files : summary.bad_records);
        if (warned++ < kMaxWarnings) core::log_warn("skipped " + msg);
        continue;
      }
      if (r.data.empty()) {
        ++summary.empty_documents;
        continue;
      }
      summary.text_bytes += static_cast<int64_t>(r.data.size());
      texts.push_back(std::move(r.data));
      to_val.push_back(r.val ? 1 : 0);
    }
    auto ids = tokenizer.encode_batch(texts, threads);
    int64_t chunk_tokens = 0;
    for (size_t i = 0; i < ids.size(); ++i) {
      ids[i].push_back(*eos);
      SplitWriter& w = to_val[i] ? val : train;
      w.append(ids[i]);
      ++w.summary().documents;
      chunk_tokens += static_cast<int64_t>(ids[i].size());
    }
    progress.add(chunk->input_bytes, chunk_tokens);
  }
  train.finish();
  val.finish();
  progress.finish();
  summary.train = train.summary();
  summary.val = val.summary();
  if (summary.bad_files + summary.bad_records > 0) {
    core::log_warn("skipped " + std::to_string(summary.bad_records) + " bad records and " +
                   std::to_string(summary.bad_files) + " unreadable or corrupt files (--skip-bad)");
  }
  if (summary.train.documents + summary.val.documents == 0) {
    fail("empty corpus: no document has any text (", summary.records, " records, ", summary.empty_documents,
         " empty, ", summary.bad_records + summary.bad_files, " bad)");
  }
  MOR_CHECK(summary.train.tokens > 0, "no training tokens: every document went to the validation split");

  // Commit: move the shards into place, then write the manifest (the mark of completeness).
  for (const SplitSummary* s : {&summary.train, &summary.val}) {
    for (const auto& e : s->shards) {
      const std::string from = guard.staging + "/" + e.file;
      const std::string to = o.out_dir + "/" + e.file;
      if (::rename(from.c_str(), to.c_str()) != 0) fail("cannot move ", from, " to ", to, ": ", std::strerror(errno));
      guard.moved.push_back(to);
    }
  }
  ::rmdir(guard.staging.c_str());
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  summary.manifest_path = o.out_dir + "/" + kManifestName;
  core::atomic_write(summary.manifest_path, manifest_json(o, tokenizer, *eos, summary));
  guard.committed = true;
  return summary;
}

// ---- verification -----------------------------------------------------------------------------

std::string verify_prepared(const std::string& dir, const io::Tokenizer* tokenizer) {
  const std::string path = dir + "/" + kManifestName;
  Json m;
  try {
    m = Json::parse(core::read_file(path));
  } catch (const Json::exception& e) {
    fail(path, ": invalid manifest: ", e.what());
  }
  try {
    MOR_CHECK(m.at("format") == "mor-token-shards", path, ": not a mor token-shard manifest");
    const int fv = m.at("format_version").get<int>();
    MOR_CHECK(fv >= 1 && fv <= kManifestFormatVersion, path, ": manifest format version ", fv,
              " is newer than this build reads (", kManifestFormatVersion, ")");
    const auto& tok = m.at("tokenizer");
    const auto vocab = tok.at("vocab_size").get<int64_t>();
    if (tokenizer != nullptr) {
      MOR_CHECK(tok.at("hash").get<std::string>() == tokenizer->hash(), path, ": prepared with another tokenizer (hash ",
                tok.at("hash").get<std::string>(), ", given ", tokenizer->hash(), ")");
      MOR_CHECK(vocab == tokenizer->vocab_size() && tokenizer->eos_id() == tok.at("eos_id").get<int32_t>(), path,
                ": the tokenizer's vocabulary size or EOS id differs from the manifest");
    }
    const auto version = m.at("shard_version").get<int32_t>();
    std::string report;
    for (const char* split : {"train", "val"}) {
      const auto& s = m.at("splits").at(split);
      int64_t total = 0;
      for (const auto& e : s.at("shards")) {
        const std::string file = dir + "/" + e.at("file").get<std::string>();
        const Shard shard = Shard::open(file, vocab);
        MOR_CHECK(shard.version() == version, file, ": shard version ", shard.version(), ", manifest says ", version);
        MOR_CHECK(shard.num_tokens() == e.at("tokens").get<int64_t>(), file, ": holds ", shard.num_tokens(),
                  " tokens, the manifest says ", e.at("tokens").get<int64_t>());
        total += shard.num_tokens();
      }
      MOR_CHECK(total == s.at("tokens").get<int64_t>(), path, ": the ", split, " shards hold ", total,
                " tokens, the manifest says ", s.at("tokens").get<int64_t>());
      report += mor::detail::concat(split, ": ", s.at("documents").get<int64_t>(), " documents, ", total, " tokens in ",
                              s.at("shards").size(), " shards; ");
    }
    return report + "vocabulary " + std::to_string(vocab) + ", tokenizer " + tok.at("hash").get<std::string>();
  } catch (const Json::exception& e) {
    fail(path, ": invalid manifest: ", e.what());
  }
}

}  // namespace mor::data
