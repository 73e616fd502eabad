// The training data loader (see include/mor/data/loader.h for the packing, order and cursor rules).
#include "mor/data/loader.h"

#include <algorithm>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <span>
#include <utility>

#include "mor/core/error.h"
#include "mor/core/hash.h"
#include "mor/core/file.h"
#include "mor/data/shard.h"

namespace mor::data {
namespace {

namespace fs = std::filesystem;

// ---- deterministic shuffling -------------------------------------------------------------------

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ULL;
constexpr uint64_t kSeedDomain = 0x6D6F722D64617461ULL;   // "mor-data"
constexpr uint64_t kEpochDomain = 0x65706F6368000000ULL;  // "epoch"

// The splitmix64 finaliser: a bijection on 64-bit words with good avalanche.
uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// splitmix64 (Steele, Lea, Flood 2014): the whole generator is integer arithmetic, so every
// platform and compiler produces the same sequence.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t state) : state_(state) {}
  uint64_t next() {
    state_ += kGolden;
    return mix64(state_);
  }
  // Uniform in [0, bound) for bound >= 1, without bias (Lemire's multiply-and-reject).
  uint64_t below(uint64_t bound) {
    unsigned __int128 m = static_cast<unsigned __int128>(next()) * bound;
    auto low = static_cast<uint64_t>(m);
    if (low < bound) {
      const uint64_t threshold = (0 - bound) % bound;  // 2^64 mod bound
      while (low < threshold) {
        m = static_cast<unsigned __int128>(next()) * bound;
        low = static_cast<uint64_t>(m);
      }
    }
    return static_cast<uint64_t>(m >> 64);
  }

 private:
  uint64_t state_;
};

// Distinct epochs start the generator at unrelated states (not at shifts of one sequence).
uint64_t epoch_state(uint64_t seed, int64_t epoch) {
  return mix64(mix64(seed ^ kSeedDomain) + mix64(static_cast<uint64_t>(epoch) ^ kEpochDomain));
}

// ---- cursor JSON helpers -----------------------------------------------------------------------

const nlohmann::json& field(const nlohmann::json& j, const char* name) {
  auto it = j.find(name);
  if (it == j.end()) fail("data cursor: field '", name, "' is missing");
  return *it;
}

int64_t int_field(const nlohmann::json& j, const char* name, int64_t min_value) {
  const auto& v = field(j, name);
  int64_t out = 0;
  if (v.is_number_unsigned()) {
    const auto u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      fail("data cursor: field '", name, "' is out of range: ", u);
    }
    out = static_cast<int64_t>(u);
  } else if (v.is_number_integer()) {
    out = v.get<int64_t>();
  } else {
    fail("data cursor: field '", name, "' must be an integer, got ", v.dump());
  }
  if (out < min_value) fail("data cursor: field '", name, "' must be >= ", min_value, ", got ", out);
  return out;
}

std::string describe(const std::vector<std::string>& paths, int64_t tokens) {
  return detail::concat(paths.size(), paths.size() == 1 ? " shard" : " shards", " with ", tokens, " tokens");
}

}  // namespace

// ---- free functions --------------------------------------------------------------------------------

std::vector<uint32_t> shuffle_permutation(int64_t n, uint64_t seed, int64_t epoch) {
  MOR_CHECK(n >= 0 && n <= (int64_t{1} << 32), "shuffle_permutation: n = ", n, " is out of range [0, 2^32]");
  MOR_CHECK(epoch >= 0, "shuffle_permutation: epoch must be >= 0, got ", epoch);
  std::vector<uint32_t> perm(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) perm[static_cast<size_t>(i)] = static_cast<uint32_t>(i);
  SplitMix64 rng(epoch_state(seed, epoch));
  for (int64_t i = n - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(rng.below(static_cast<uint64_t>(i) + 1));
    std::swap(perm[static_cast<size_t>(i)], perm[static_cast<size_t>(j)]);
  }
  return perm;
}

std::string data_fingerprint(const std::vector<std::string>& names, const std::vector<int64_t>& num_tokens) {
  MOR_CHECK(names.size() == num_tokens.size(), "data_fingerprint: ", names.size(), " names but ",
            num_tokens.size(), " token counts");
  uint64_t h = core::kFnv1aOffset;
  auto feed = [&h](const void* data, size_t size) {
    h = core::fnv1a64(h, std::string_view(static_cast<const char*>(data), size));
  };
  for (size_t i = 0; i < names.size(); ++i) {
    const std::string name = fs::path(names[i]).filename().string();
    const uint64_t len = name.size();
    const auto tokens = static_cast<uint64_t>(num_tokens[i]);
    unsigned char buf[8];
    for (int b = 0; b < 8; ++b) buf[b] = static_cast<unsigned char>(len >> (8 * b));
    feed(buf, 8);
    feed(name.data(), name.size());
    for (int b = 0; b < 8; ++b) buf[b] = static_cast<unsigned char>(tokens >> (8 * b));
    feed(buf, 8);
  }
  return core::hex64(h);
}

std::vector<std::string> resolve_shard_paths(const std::vector<std::string>& specs) {
  if (specs.empty()) fail("data loader: no shard paths given");
  std::vector<std::string> out;
  std::set<std::string> seen;
  for (const auto& spec : specs) {
    std::vector<std::string> expanded;
    try {
      expanded = core::list_files(spec, {".bin"});
    } catch (const Error& e) {
      fail("data loader: ", e.what());
    }
    if (expanded.empty()) fail("data loader: shards '", spec, "' name no .bin file");
    for (auto& path : expanded) {
      std::error_code ec;
      const std::string key = fs::weakly_canonical(path, ec).string();
      if (!seen.insert(ec ? path : key).second) fail("data loader: shard '", path, "' is listed twice");
      out.push_back(std::move(path));
    }
  }
  return out;
}

std::string cursor_to_json(const LoaderCursor& c) {
  nlohmann::ordered_json j;
  j["format_version"] = c.version;
  j["seed"] = c.seed;
  j["shuffle"] = c.shuffle;
  j["epoch"] = c.epoch;
  j["rows_consumed"] = c.rows_consumed;
  j["seq_len"] = c.seq_len;
  j["total_rows"] = c.total_rows;
  j["fingerprint"] = c.fingerprint;
  return j.dump();
}

LoaderCursor cursor_from_json(std::string_view text) {
  const auto j = nlohmann::json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) fail("data cursor: not valid JSON");
  if (!j.is_object()) fail("data cursor: expected a JSON object, got ", j.type_name());
  LoaderCursor c;
  const int64_t version = int_field(j, "format_version", 1);
  if (version > kLoaderCursorVersion) {
    fail("data cursor: field 'format_version' is ", version, "; this build reads up to ", kLoaderCursorVersion);
  }
  c.version = static_cast<int32_t>(version);
  const auto& seed = field(j, "seed");
  if (!seed.is_number_unsigned()) fail("data cursor: field 'seed' must be an unsigned integer, got ", seed.dump());
  c.seed = seed.get<uint64_t>();
  const auto& shuffle = field(j, "shuffle");
  if (!shuffle.is_boolean()) fail("data cursor: field 'shuffle' must be a boolean, got ", shuffle.dump());
  c.shuffle = shuffle.get<bool>();
  c.epoch = int_field(j, "epoch", 0);
  c.rows_consumed = int_field(j, "rows_consumed", 0);
  c.seq_len = int_field(j, "seq_len", 1);
  c.total_rows = int_field(j, "total_rows", 1);
  if (c.rows_consumed >= c.total_rows) {
    fail("data cursor: field 'rows_consumed' (", c.rows_consumed, ") must be < total_rows (", c.total_rows, ")");
  }
  const auto& fp = field(j, "fingerprint");
  if (!fp.is_string()) fail("data cursor: field 'fingerprint' must be a string, got ", fp.dump());
  c.fingerprint = fp.get<std::string>();
  return c;
}

// ---- Loader ------------------------------------------------------------------------------------------

struct Loader::Impl {
  LoaderOptions options;
  std::vector<std::string> paths;
  std::vector<Shard> shards;
  std::vector<int64_t> starts;  // starts[k] = first stream token of shard k; starts.back() = total
  int64_t num_tokens = 0;
  int64_t num_rows = 0;
  std::string fingerprint;
  int64_t position = 0;
  mutable std::vector<uint32_t> perm;
  mutable int64_t perm_epoch = -1;

  // Copies stream tokens [start, start + out.size()) into out, reading across shard boundaries.
  void read_tokens(int64_t start, std::span<int32_t> out) const {
    auto it = std::upper_bound(starts.begin(), starts.end(), start);
    auto k = static_cast<size_t>(it - starts.begin()) - 1;
    size_t done = 0;
    while (done < out.size()) {
      MOR_CHECK(k < shards.size(), "data loader: internal: token ", start + static_cast<int64_t>(done),
                " is past the end of the stream");
      const int64_t within = start + static_cast<int64_t>(done) - starts[k];
      const int64_t avail = shards[k].num_tokens() - within;
      const auto n = static_cast<size_t>(std::min<int64_t>(avail, static_cast<int64_t>(out.size() - done)));
      if (n > 0) shards[k].read(within, out.subspan(done, n));
      done += n;
      ++k;
    }
  }

  int64_t row_at(int64_t stream_position) const {
    const int64_t epoch = stream_position / num_rows;
    const int64_t offset = stream_position % num_rows;
    if (!options.shuffle) return offset;
    if (perm_epoch != epoch) {
      perm = shuffle_permutation(num_rows, options.seed, epoch);
      perm_epoch = epoch;
    }
    return perm[static_cast<size_t>(offset)];
  }
};

namespace {

void validate_options(const LoaderOptions& o) {
  MOR_CHECK(o.seq_len >= 1, "data loader: seq_len must be >= 1, got ", o.seq_len);
  MOR_CHECK(o.rows_per_rank >= 1, "data loader: rows_per_rank must be >= 1, got ", o.rows_per_rank);
  MOR_CHECK(o.world_size >= 1, "data loader: world_size must be >= 1, got ", o.world_size);
  MOR_CHECK(o.rank >= 0 && o.rank < o.world_size, "data loader: rank ", o.rank, " is outside [0, world_size = ",
            o.world_size, ")");
  MOR_CHECK(o.vocab_size >= 0, "data loader: vocab_size must be >= 0, got ", o.vocab_size);
  MOR_CHECK(o.vocab_size <= (int64_t{1} << 31), "data loader: vocab_size ", o.vocab_size, " does not fit int32 ids");
  if (o.document_ids) {
    MOR_CHECK(o.eos_id >= 0, "data loader: document_ids needs eos_id >= 0, got ", o.eos_id);
    MOR_CHECK(o.vocab_size == 0 || o.eos_id < o.vocab_size, "data loader: eos_id ", o.eos_id,
              " is not below vocab_size ", o.vocab_size);
  }
}

}  // namespace

Loader::Loader(LoaderOptions options) : impl_(std::make_unique<Impl>()) {
  validate_options(options);
  Impl& s = *impl_;
  s.options = std::move(options);
  s.paths = resolve_shard_paths(s.options.shards);
  s.shards.reserve(s.paths.size());
  s.starts.push_back(0);
  std::vector<int64_t> counts;
  for (const auto& path : s.paths) {
    try {
      s.shards.push_back(Shard::open(path, s.options.vocab_size));
    } catch (const Error& e) {
      const std::string what = e.what();
      if (what.find(path) != std::string::npos) throw;
      fail("data loader: shard '", path, "': ", what);
    }
    counts.push_back(s.shards.back().num_tokens());
    s.num_tokens += counts.back();
    s.starts.push_back(s.num_tokens);
  }
  const int64_t seq_len = s.options.seq_len;
  if (s.num_tokens < seq_len + 1) {
    fail("data loader: ", describe(s.paths, s.num_tokens), ": fewer than the seq_len + 1 = ", seq_len + 1,
         " tokens of one row");
  }
  s.num_rows = (s.num_tokens - 1) / seq_len;
  if (s.num_rows > (int64_t{1} << 32)) {
    fail("data loader: ", s.num_rows, " rows of seq_len ", seq_len, " exceed the 2^32 rows an epoch can index");
  }
  s.fingerprint = data_fingerprint(s.paths, counts);
}

Loader::Loader(Loader&&) noexcept = default;
Loader& Loader::operator=(Loader&&) noexcept = default;
Loader::~Loader() = default;

Batch Loader::batch_at(int64_t position) const {
  const Impl& s = *impl_;
  MOR_CHECK(position >= 0, "data loader: batch position must be >= 0, got ", position);
  const int64_t rows = s.options.rows_per_rank;
  const int64_t seq_len = s.options.seq_len;
  Batch b;
  b.rows = rows;
  b.seq_len = seq_len;
  b.position = position;
  b.epoch = position / s.num_rows;
  const auto cells = static_cast<size_t>(rows * seq_len);
  b.inputs.resize(cells);
  b.targets.resize(cells);
  if (s.options.document_ids) b.doc_ids.resize(cells);
  b.row_ids.resize(static_cast<size_t>(rows));
  std::vector<int32_t> buf(static_cast<size_t>(seq_len + 1));
  const auto eos = static_cast<int32_t>(s.options.eos_id);
  const int64_t first = position + s.options.rank * rows;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t row = s.row_at(first + r);
    b.row_ids[static_cast<size_t>(r)] = row;
    s.read_tokens(row * seq_len, buf);
    const auto base = static_cast<size_t>(r * seq_len);
    std::copy(buf.begin(), buf.end() - 1, b.inputs.begin() + static_cast<ptrdiff_t>(base));
    std::copy(buf.begin() + 1, buf.end(), b.targets.begin() + static_cast<ptrdiff_t>(base));
    if (s.options.document_ids) {
      int32_t doc = 0;
      for (int64_t j = 0; j < seq_len; ++j) {
        b.doc_ids[base + static_cast<size_t>(j)] = doc;
        if (buf[static_cast<size_t>(j)] == eos) ++doc;
      }
    }
  }
  return b;
}

Batch Loader::next() {
  Batch b = batch_at(impl_->position);
  impl_->position += global_rows();
  return b;
}

LoaderCursor Loader::cursor() const {
  const Impl& s = *impl_;
  LoaderCursor c;
  c.seed = s.options.seed;
  c.shuffle = s.options.shuffle;
  c.epoch = s.position / s.num_rows;
  c.rows_consumed = s.position % s.num_rows;
  c.seq_len = s.options.seq_len;
  c.total_rows = s.num_rows;
  c.fingerprint = s.fingerprint;
  return c;
}

void Loader::restore(const LoaderCursor& c) {
  Impl& s = *impl_;
  if (c.version < 1 || c.version > kLoaderCursorVersion) {
    fail("data cursor: field 'format_version' is ", c.version, "; this build reads 1..", kLoaderCursorVersion);
  }
  if (c.fingerprint != s.fingerprint) {
    fail("data cursor: field 'fingerprint' differs: the cursor was saved on data ", c.fingerprint,
         ", the loader reads data ", s.fingerprint, " (", describe(s.paths, s.num_tokens),
         "): shard names or token counts changed");
  }
  if (c.seq_len != s.options.seq_len) {
    fail("data cursor: field 'seq_len' differs: the cursor has ", c.seq_len, ", the loader ", s.options.seq_len);
  }
  if (c.total_rows != s.num_rows) {
    fail("data cursor: field 'total_rows' differs: the cursor has ", c.total_rows, ", the loader ", s.num_rows);
  }
  if (c.seed != s.options.seed) {
    fail("data cursor: field 'seed' differs: the cursor has ", c.seed, ", the loader ", s.options.seed);
  }
  if (c.shuffle != s.options.shuffle) {
    fail("data cursor: field 'shuffle' differs: the cursor has ", c.shuffle ? "true" : "false", ", the loader ",
         s.options.shuffle ? "true" : "false");
  }
  if (c.epoch < 0) fail("data cursor: field 'epoch' must be >= 0, got ", c.epoch);
  if (c.rows_consumed < 0 || c.rows_consumed >= s.num_rows) {
    fail("data cursor: field 'rows_consumed' (", c.rows_consumed, ") is outside [0, total_rows = ", s.num_rows, ")");
  }
  if (c.epoch > (std::numeric_limits<int64_t>::max() - c.rows_consumed) / s.num_rows - 1) {
    fail("data cursor: field 'epoch' (", c.epoch, ") is too large");
  }
  s.position = c.epoch * s.num_rows + c.rows_consumed;
}

int64_t Loader::position() const { return impl_->position; }
int64_t Loader::num_rows() const { return impl_->num_rows; }
int64_t Loader::num_tokens() const { return impl_->num_tokens; }
int64_t Loader::global_rows() const { return impl_->options.rows_per_rank * impl_->options.world_size; }
const LoaderOptions& Loader::options() const { return impl_->options; }
const std::vector<std::string>& Loader::shard_paths() const { return impl_->paths; }
const std::string& Loader::fingerprint() const { return impl_->fingerprint; }

}  // namespace mor::data
