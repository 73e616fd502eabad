// Byte-level BPE training (mor/io/bpe_trainer.h).
//
// Counting: each text is cut into chunks at places where the pre-tokenization cannot change (see
// safe_cut; never inside a special token), the chunks are shared among threads, each thread cuts
// out special tokens, pre-tokenizes with the output tokenizer's own pre-tokenizer and counts words
// in a private map; the maps are summed.
// Training: the BpeTrainer algorithm of the `tokenizers` library — pair counts, the words each pair
// occurs in, a max-heap of (count, pair) with lazily refreshed counts; after each merge only the
// words that held the pair are rewritten and only the pairs they changed are updated.
#include "mor/io/bpe_trainer.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "mor/core/error.h"
#include "mor/core/file.h"
#include "mor/core/text_source.h"
#include "mor/io/tokenizer.h"

namespace mor::io {

namespace {

constexpr int kNumBytes = 256;
constexpr size_t kChunkBytes = size_t{1} << 18;   // target chunk size for counting
constexpr size_t kBatchBytes = size_t{64} << 20;  // documents buffered before counting (files)

// GPT-2 bytes_to_unicode: bytes 33..126, 161..172, 174..255 map to themselves, the other 68 to
// U+0100.. in ascending byte order. order[k] is the byte with the k-th smallest code point.
struct ByteLevelTable {
  std::array<char32_t, kNumBytes> code_point{};
  std::array<std::string, kNumBytes> utf8;
  std::array<uint8_t, kNumBytes> order{};    // rank -> byte
  std::array<int16_t, kNumBytes> rank{};     // byte -> rank
  std::array<int16_t, 0x144> byte_of_cp{};   // code point -> byte, -1 if none

  ByteLevelTable() {
    byte_of_cp.fill(-1);
    auto direct = [](int b) { return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255); };
    int next = 0;
    for (int b = 0; b < kNumBytes; ++b) code_point[b] = direct(b) ? char32_t(b) : char32_t(kNumBytes + next++);
    for (int b = 0; b < kNumBytes; ++b) {
      const char32_t cp = code_point[b];
      utf8[b] = cp < 0x80 ? std::string(1, char(cp))
                          : std::string{char(0xC0 | (cp >> 6)), char(0x80 | (cp & 0x3F))};
      byte_of_cp[cp] = int16_t(b);
    }
    int k = 0;
    for (char32_t cp = 0; cp < byte_of_cp.size(); ++cp) {
      if (byte_of_cp[cp] < 0) continue;
      order[k] = uint8_t(byte_of_cp[cp]);
      rank[byte_of_cp[cp]] = int16_t(k);
      ++k;
    }
  }
};

const ByteLevelTable& table() {
  static const ByteLevelTable t;
  return t;
}

constexpr const char* kNotByteLevel = "BPE training: the pre-tokenizer returned a piece that is not byte-level";

// Byte-level piece (UTF-8 of mapped characters) -> raw bytes.
void append_unmapped(std::string_view piece, std::string& out) {
  const auto& t = table();
  for (size_t i = 0; i < piece.size();) {
    const auto c = static_cast<unsigned char>(piece[i]);
    char32_t cp = c;
    if (c >= 0x80) {
      if ((c & 0xE0) != 0xC0 || i + 1 >= piece.size()) fail(kNotByteLevel);
      cp = (char32_t(c & 0x1F) << 6) | (static_cast<unsigned char>(piece[i + 1]) & 0x3F);
      i += 2;
    } else {
      i += 1;
    }
    if (cp >= t.byte_of_cp.size() || t.byte_of_cp[cp] < 0) fail(kNotByteLevel);
    out.push_back(char(t.byte_of_cp[cp]));
  }
}

bool valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const int n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (int k = 1; k < n; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    i += n;
  }
  return true;
}

using WordCounts = std::unordered_map<std::string, int64_t>;

// Leftmost-longest matching of the special tokens in one text, scanning forward (as the encoder
// matches added tokens). Each token's next occurrence is remembered, so a scan is linear in the text.
class SpecialFinder {
 public:
  SpecialFinder(std::string_view text, const std::vector<std::string>& specials) : text_(text), specials_(specials) {
    for (const auto& s : specials_) next_.push_back(text_.find(s));
  }
  // {position, length} of the match at or after `from`; position npos when there is none.
  std::pair<size_t, size_t> find(size_t from) {
    size_t best = std::string_view::npos, best_len = 0;
    for (size_t i = 0; i < specials_.size(); ++i) {
      if (next_[i] != std::string_view::npos && next_[i] < from) next_[i] = text_.find(specials_[i], from);
      if (next_[i] == std::string_view::npos) continue;
      if (next_[i] < best || (next_[i] == best && specials_[i].size() > best_len)) {
        best = next_[i];
        best_len = specials_[i].size();
      }
    }
    return {best, best_len};
  }

  // Calls fn(segment) for the text between special tokens (empty segments skipped), in order.
  template <typename Fn>
  void for_each_segment(Fn&& fn) {
    size_t from = 0;
    while (from < text_.size()) {
      const auto [at, len] = find(from);
      const auto segment = text_.substr(from, at == std::string_view::npos ? std::string_view::npos : at - from);
      if (!segment.empty()) fn(segment);
      if (at == std::string_view::npos) break;
      from = at + len;
    }
  }

 private:
  std::string_view text_;
  const std::vector<std::string>& specials_;
  std::vector<size_t> next_;
};

// True when no occurrence of a special token contains both text[p-1] and text[p].
bool no_special_spans(std::string_view text, size_t p, const std::vector<std::string>& specials) {
  for (const auto& s : specials) {
    if (s.size() < 2) continue;
    const size_t lo = p >= s.size() - 1 ? p - (s.size() - 1) : 0;
    const size_t at = text.substr(lo, std::min(text.size() - lo, 2 * s.size() - 2)).find(s);
    if (at != std::string_view::npos && lo + at < p && lo + at + s.size() > p) return false;
  }
  return true;
}

bool graphic_ascii(char c) { return c > 0x20 && c < 0x7F; }
bool letter_ascii(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool punct_ascii(char c) { return graphic_ascii(c) && !letter_ascii(c) && !(c >= '0' && c <= '9'); }

// True when pre-tokenizing text[..p) and text[p..) separately gives the pieces of the whole:
//   - an ASCII letter then ASCII punctuation ("word." / "x,"): every pattern alternative that
//     matches the letter ends there, the next piece starts at p without a leading space, and no
//     alternative looks behind;
//   - printable ASCII, "\n", printable ASCII: the newline is a whitespace run of its own whether or
//     not the string ends after it.
// Digit splitting only isolates digits, so it cannot join anything across p either.
bool safe_cut(std::string_view text, size_t p) {
  if (p < 2 || p >= text.size()) return false;
  if (letter_ascii(text[p - 1]) && punct_ascii(text[p])) return true;
  return text[p - 1] == '\n' && graphic_ascii(text[p - 2]) && graphic_ascii(text[p]);
}

// Cuts `text` into chunks of about kChunkBytes at safe cuts (above) that no special token spans.
void split_chunks(std::string_view text, const std::vector<std::string>& specials, std::vector<std::string_view>& out) {
  size_t begin = 0;
  while (text.size() - begin > kChunkBytes) {
    size_t p = begin + kChunkBytes;
    while (p < text.size() && !(safe_cut(text, p) && no_special_spans(text, p, specials))) ++p;
    if (p >= text.size()) break;
    out.push_back(text.substr(begin, p - begin));
    begin = p;
  }
  if (begin < text.size()) out.push_back(text.substr(begin));
}

uint64_t pack(int32_t left, int32_t right) { return (uint64_t(uint32_t(left)) << 32) | uint32_t(right); }
int32_t left_of(uint64_t pair) { return int32_t(pair >> 32); }
int32_t right_of(uint64_t pair) { return int32_t(pair & 0xFFFFFFFFu); }

// A heap entry: the pair, its count when pushed, and the words it was seen in.
struct QueueEntry {
  int64_t count;
  uint64_t pair;
  std::vector<int32_t> words;
};
// Max-heap order: higher count first, then the smaller (left id, right id).
bool heap_less(const QueueEntry& a, const QueueEntry& b) {
  return a.count != b.count ? a.count < b.count : a.pair > b.pair;
}

// Replaces every non-overlapping (left, right), scanning left to right, by `merged`; reports pair
// count changes (+1/-1 per occurrence) exactly as the library's Word::merge does.
template <typename Change>
void merge_word(std::vector<int32_t>& s, int32_t left, int32_t right, int32_t merged, Change&& change) {
  size_t out = 0;
  const size_t n = s.size();
  for (size_t i = 0; i < n;) {
    if (i + 1 < n && s[i] == left && s[i + 1] == right) {
      if (out > 0) {
        change(pack(s[out - 1], left), -1);
        change(pack(s[out - 1], merged), +1);
      }
      if (i + 2 < n) {
        change(pack(right, s[i + 2]), -1);
        change(pack(merged, s[i + 2]), +1);
      }
      s[out++] = merged;
      i += 2;
    } else {
      s[out++] = s[i++];
    }
  }
  s.resize(out);
}

}  // namespace

const std::string& byte_level_symbol(uint8_t byte) { return table().utf8[byte]; }

// ---- BpeModel ---------------------------------------------------------------------------------------

std::string BpeModel::to_json() const {
  using Json = nlohmann::ordered_json;
  Json added = Json::array();
  for (size_t i = 0; i < special_tokens.size(); ++i) {
    added.push_back(Json{{"id", i}, {"content", special_tokens[i]}, {"single_word", false}, {"lstrip", false},
                         {"rstrip", false}, {"normalized", false}, {"special", true}});
  }
  Json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
  Json pre = byte_level;
  if (split_digits) {
    pre = Json{{"type", "Sequence"},
               {"pretokenizers", Json::array({Json{{"type", "Digits"}, {"individual_digits", true}}, byte_level})}};
  }
  // Ids in ascending order, as the library writes them. ordered_json looks keys up linearly, so
  // append to its underlying vector (the vocabulary holds no duplicates; the set makes sure).
  Json vocab_json = Json::object();
  auto& entries = static_cast<std::vector<std::pair<const std::string, Json>>&>(*vocab_json.get_ptr<Json::object_t*>());
  entries.reserve(vocab.size());
  std::unordered_set<std::string_view> seen;
  for (size_t i = 0; i < vocab.size(); ++i) {
    if (seen.insert(vocab[i]).second) entries.emplace_back(vocab[i], i);
  }
  Json merges_json = Json::array();
  for (const auto& [a, b] : merges) merges_json.push_back(Json::array({a, b}));
  Json model{{"type", "BPE"},
             {"dropout", nullptr},
             {"unk_token", nullptr},
             {"continuing_subword_prefix", nullptr},
             {"end_of_word_suffix", nullptr},
             {"fuse_unk", false},
             {"byte_fallback", false},
             {"ignore_merges", false},
             {"vocab", std::move(vocab_json)},
             {"merges", std::move(merges_json)}};
  Json root{{"version", "1.0"},
            {"truncation", nullptr},
            {"padding", nullptr},
            {"added_tokens", std::move(added)},
            {"normalizer", nullptr},
            {"pre_tokenizer", std::move(pre)},
            {"post_processor",
             {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}}},
            {"decoder",
             {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
            {"model", std::move(model)}};
  return root.dump(2) + "\n";
}

// ---- BpeTrainer -------------------------------------------------------------------------------------

struct BpeTrainer::Impl {
  BpeTrainerOptions options;
  std::unique_ptr<Tokenizer> pretokenizer;  // the output's pre-tokenizer, on an alphabet-only model
  WordCounts words;                         // raw bytes -> count
  int64_t documents = 0;
  int64_t bytes = 0;

  // Cuts specials out of `text`, pre-tokenizes the rest and counts raw-byte words into `counts`.
  void count_words(std::string_view text, WordCounts& counts) const {
    std::string raw;
    SpecialFinder(text, options.special_tokens).for_each_segment([&](std::string_view segment) {
      for (const auto& piece : pretokenizer->pretokenize(segment)) {
        raw.clear();
        append_unmapped(piece, raw);
        if (!raw.empty()) ++counts[raw];
      }
    });
  }

  void add_texts(std::span<const std::string_view> texts) {
    std::vector<std::string_view> chunks;
    for (auto text : texts) {
      split_chunks(text, options.special_tokens, chunks);
      bytes += int64_t(text.size());
    }
    documents += int64_t(texts.size());
    if (chunks.empty()) return;
    int threads = options.threads > 0 ? options.threads : int(std::max(1u, std::thread::hardware_concurrency()));
    threads = int(std::min<size_t>(size_t(threads), chunks.size()));
    std::vector<WordCounts> local(static_cast<size_t>(threads));
    std::atomic<size_t> next{0};
    std::exception_ptr error;
    std::mutex error_mutex;
    auto work = [&](int t) {
      try {
        for (size_t i = next++; i < chunks.size(); i = next++) count_words(chunks[i], local[size_t(t)]);
      } catch (...) {
        std::lock_guard lock(error_mutex);
        if (!error) error = std::current_exception();
        next = chunks.size();
      }
    };
    if (threads == 1) {
      work(0);
    } else {
      std::vector<std::thread> pool;
      for (int t = 0; t < threads; ++t) pool.emplace_back(work, t);
      for (auto& th : pool) th.join();
    }
    if (error) std::rethrow_exception(error);
    for (auto& counts : local) {
      if (words.empty()) {
        words = std::move(counts);
        continue;
      }
      for (auto& [word, count] : counts) words[word] += count;
    }
  }
};

BpeTrainer::BpeTrainer(BpeTrainerOptions options) : impl_(std::make_unique<Impl>()) {
  const auto& specials = options.special_tokens;
  for (size_t i = 0; i < specials.size(); ++i) {
    MOR_CHECK(!specials[i].empty(), "BPE training: special token ", i + 1, " is empty");
    MOR_CHECK(valid_utf8(specials[i]), "BPE training: special token ", i + 1, " is not valid UTF-8");
    MOR_CHECK(std::find(specials.begin(), specials.begin() + i, specials[i]) == specials.begin() + i,
              "BPE training: special token '", specials[i], "' is given twice");
    for (int b = 0; b < kNumBytes; ++b) {
      MOR_CHECK(specials[i] != table().utf8[b], "BPE training: special token '", specials[i],
                "' equals a byte symbol; choose a longer string");
    }
  }
  const int64_t minimum = int64_t(specials.size()) + kNumBytes;
  MOR_CHECK(options.vocab_size >= minimum, "BPE training: vocab size ", options.vocab_size,
            " is smaller than the ", specials.size(), " special tokens + 256 byte symbols = ", minimum);
  MOR_CHECK(options.min_frequency >= 0, "BPE training: min frequency must be >= 0, got ", options.min_frequency);
  MOR_CHECK(options.vocab_size <= (int64_t(1) << 31) - 1, "BPE training: vocab size ", options.vocab_size,
            " is too large");
  impl_->options = std::move(options);
  BpeModel alphabet;
  alphabet.special_tokens = impl_->options.special_tokens;
  alphabet.split_digits = impl_->options.split_digits;
  alphabet.vocab = alphabet.special_tokens;
  for (int k = 0; k < kNumBytes; ++k) alphabet.vocab.push_back(table().utf8[table().order[k]]);
  impl_->pretokenizer = std::make_unique<Tokenizer>(Tokenizer::from_json(alphabet.to_json(), "<bpe trainer alphabet>"));
}

BpeTrainer::BpeTrainer(BpeTrainer&&) noexcept = default;
BpeTrainer& BpeTrainer::operator=(BpeTrainer&&) noexcept = default;
BpeTrainer::~BpeTrainer() = default;

void BpeTrainer::add_documents(std::span<const std::string> documents) {
  std::vector<std::string_view> views(documents.begin(), documents.end());
  impl_->add_texts(views);
}

void BpeTrainer::add_document(std::string_view document) { impl_->add_texts(std::span(&document, 1)); }

void BpeTrainer::add_word(std::string_view raw_bytes, int64_t count) {
  MOR_CHECK(count > 0, "BPE training: a word count must be positive, got ", count);
  if (!raw_bytes.empty()) impl_->words[std::string(raw_bytes)] += count;
}

int64_t BpeTrainer::documents() const { return impl_->documents; }
int64_t BpeTrainer::bytes() const { return impl_->bytes; }
int64_t BpeTrainer::distinct_words() const { return int64_t(impl_->words.size()); }

std::vector<std::string> BpeTrainer::pretokenize(std::string_view text) const {
  std::vector<std::string> out;
  SpecialFinder(text, impl_->options.special_tokens).for_each_segment([&](std::string_view segment) {
    auto pieces = impl_->pretokenizer->pretokenize(segment);
    out.insert(out.end(), std::make_move_iterator(pieces.begin()), std::make_move_iterator(pieces.end()));
  });
  return out;
}

BpeModel BpeTrainer::train(const BpeProgressFn& progress) const {
  const auto& options = impl_->options;
  MOR_CHECK(!impl_->words.empty(), "BPE training: no text to train on (", impl_->documents, " documents, ",
            impl_->bytes, " bytes)");
  const auto& t = table();
  const auto num_special = int32_t(options.special_tokens.size());

  BpeModel model;
  model.special_tokens = options.special_tokens;
  model.split_digits = options.split_digits;
  model.vocab = options.special_tokens;
  for (int k = 0; k < kNumBytes; ++k) model.vocab.push_back(t.utf8[t.order[k]]);
  std::unordered_map<std::string, int32_t> token_ids;
  for (size_t i = 0; i < model.vocab.size(); ++i) token_ids.emplace(model.vocab[i], int32_t(i));

  // Words in byte-wise order, as symbol ids.
  std::vector<const WordCounts::value_type*> sorted;
  sorted.reserve(impl_->words.size());
  for (const auto& entry : impl_->words) sorted.push_back(&entry);
  std::sort(sorted.begin(), sorted.end(), [](const auto* a, const auto* b) { return a->first < b->first; });
  std::vector<std::vector<int32_t>> symbols(sorted.size());
  std::vector<int64_t> counts(sorted.size());
  for (size_t w = 0; w < sorted.size(); ++w) {
    counts[w] = sorted[w]->second;
    symbols[w].reserve(sorted[w]->first.size());
    for (const char c : sorted[w]->first) symbols[w].push_back(num_special + t.rank[static_cast<unsigned char>(c)]);
  }

  std::unordered_map<uint64_t, int64_t> pair_counts;
  std::vector<QueueEntry> heap;
  {
    std::unordered_map<uint64_t, std::vector<int32_t>> where;
    for (size_t w = 0; w < symbols.size(); ++w) {
      const auto& s = symbols[w];
      for (size_t j = 0; j + 1 < s.size(); ++j) {
        const uint64_t pair = pack(s[j], s[j + 1]);
        pair_counts[pair] += counts[w];
        auto& list = where[pair];
        if (list.empty() || list.back() != int32_t(w)) list.push_back(int32_t(w));
      }
    }
    heap.reserve(where.size());
    for (auto& [pair, list] : where) {
      const int64_t count = pair_counts[pair];
      if (count > 0) heap.push_back(QueueEntry{count, pair, std::move(list)});
    }
  }
  std::make_heap(heap.begin(), heap.end(), heap_less);

  const int64_t target = options.vocab_size;
  const int64_t merges_wanted = target - int64_t(model.vocab.size());
  const int64_t report_every = std::max<int64_t>(1, merges_wanted / 100);
  std::vector<std::pair<uint64_t, int32_t>> fresh;  // (new pair, word it appeared in)
  while (int64_t(token_ids.size()) < target && !heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), heap_less);
    QueueEntry top = std::move(heap.back());
    heap.pop_back();
    const int64_t current = pair_counts[top.pair];
    if (top.count != current) {  // stale: re-queue with the up-to-date count
      top.count = current;
      heap.push_back(std::move(top));
      std::push_heap(heap.begin(), heap.end(), heap_less);
      continue;
    }
    if (top.count < 1 || top.count < options.min_frequency) break;

    const int32_t left = left_of(top.pair), right = right_of(top.pair);
    const std::string merged_token = model.vocab[size_t(left)] + model.vocab[size_t(right)];
    int32_t merged;
    if (auto it = token_ids.find(merged_token); it != token_ids.end()) {
      merged = it->second;
    } else {
      merged = int32_t(model.vocab.size());
      token_ids.emplace(merged_token, merged);
      model.vocab.push_back(merged_token);
    }
    model.merges.emplace_back(model.vocab[size_t(left)], model.vocab[size_t(right)]);

    fresh.clear();
    for (const int32_t w : top.words) {
      const int64_t count = counts[size_t(w)];
      merge_word(symbols[size_t(w)], left, right, merged, [&](uint64_t pair, int delta) {
        pair_counts[pair] += delta * count;
        if (delta > 0) fresh.emplace_back(pair, w);
      });
    }
    // Queue the pairs this merge created, in pair order (independent of hashing), each with the
    // ascending, distinct list of words holding it.
    std::sort(fresh.begin(), fresh.end());
    for (size_t i = 0; i < fresh.size();) {
      const uint64_t pair = fresh[i].first;
      std::vector<int32_t> list;
      for (; i < fresh.size() && fresh[i].first == pair; ++i) {
        if (list.empty() || list.back() != fresh[i].second) list.push_back(fresh[i].second);
      }
      const int64_t count = pair_counts[pair];
      if (count <= 0) continue;
      heap.push_back(QueueEntry{count, pair, std::move(list)});
      std::push_heap(heap.begin(), heap.end(), heap_less);
    }
    if (progress && int64_t(model.merges.size()) % report_every == 0) {
      progress("merging", int64_t(model.merges.size()), merges_wanted);
    }
  }
  if (progress) progress("merging", int64_t(model.merges.size()), merges_wanted);
  return model;
}

// ---- Training from files ------------------------------------------------------------------------------

std::vector<std::string> bpe_corpus_files(const std::vector<std::string>& inputs,
                                          const std::vector<std::string>& extensions) {
  std::vector<std::string> files;
  std::unordered_set<std::string> seen;  // a file named twice (or inside a named directory) counts once
  for (const auto& input : inputs) {
    for (auto& f : core::list_files(input, extensions)) {
      if (seen.insert(f).second) files.push_back(std::move(f));
    }
  }
  return files;
}

void read_corpus_documents(const std::string& path, const BpeCorpusOptions& corpus,
                           const std::function<void(std::string&&)>& sink) {
  const bool zst = core::ends_with(path, ".zst");
  const bool jsonl = core::ends_with(path, ".jsonl") || core::ends_with(path, ".jsonl.zst");
  if (!jsonl && !zst) {
    sink(core::read_file(path));
    return;
  }
  // A corrupt or truncated stream is "cannot decompress PATH: ..."; an unreadable file "PATH: ...".
  auto source_error = [&](const core::SourceError& e) {
    if (e.at_line()) fail("cannot decompress ", path, ": ", e.what());
    fail(path, ": ", e.what());
  };
  if (!jsonl) {
    std::string text;
    try {
      text = core::read_all(path, /*zstd=*/true);
    } catch (const core::SourceError& e) {
      source_error(e);
    }
    sink(std::move(text));
    return;
  }
  auto parse = [&](std::string_view text, int64_t line) {
    if (text.find_first_not_of(" \t\r") == std::string_view::npos) return;
    nlohmann::json doc;
    try {
      doc = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
      fail(path, ":", line, ": invalid JSON (", e.what(), ")");
    }
    const auto it = doc.is_object() ? doc.find(corpus.text_field) : doc.end();
    MOR_CHECK(doc.is_object() && it != doc.end(), path, ":", line, ": no field \"", corpus.text_field, "\"");
    MOR_CHECK(it->is_string(), path, ":", line, ": field \"", corpus.text_field, "\" is not a string");
    sink(it->get<std::string>());
  };
  try {
    core::LineReader reader(path, zst);
    std::string_view line;
    while (reader.next(line)) parse(line, reader.line_number());
  } catch (const core::SourceError& e) {
    source_error(e);
  }
}

BpeModel train_bpe_from_files(const std::vector<std::string>& inputs, const BpeTrainerOptions& options,
                              const BpeCorpusOptions& corpus, const BpeProgressFn& progress, BpeCorpusStats* stats) {
  BpeTrainer trainer(options);
  const auto files = bpe_corpus_files(inputs, corpus.extensions);
  int64_t total = 0;
  for (const auto& f : files) total += core::file_size(f);
  int64_t done = 0;
  std::vector<std::string> batch;
  size_t batch_bytes = 0;
  auto flush = [&] {
    trainer.add_documents(batch);
    batch.clear();
    batch_bytes = 0;
    if (progress) progress("counting", done, total);
  };
  if (progress) progress("counting", 0, total);
  for (const auto& f : files) {
    read_corpus_documents(f, corpus, [&](std::string&& doc) {
      batch_bytes += doc.size();
      batch.push_back(std::move(doc));
      if (batch_bytes >= kBatchBytes) flush();
    });
    done += core::file_size(f);
  }
  flush();
  if (stats) {
    *stats = BpeCorpusStats{int64_t(files.size()), trainer.documents(), trainer.bytes(), trainer.distinct_words()};
  }
  if (trainer.distinct_words() == 0) {
    std::string names;
    for (size_t i = 0; i < inputs.size() && i < 5; ++i) names += (i ? ", " : "") + inputs[i];
    if (inputs.size() > 5) names += ", ...";
    fail("no text to train a tokenizer on in ", names, " (", files.size(), " files, ", trainer.documents(),
         " documents, ", trainer.bytes(), " bytes)");
  }
  return trainer.train(progress);
}

}  // namespace mor::io
