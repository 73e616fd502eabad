// mor::io::Tokenizer: encoding (added tokens -> pre-tokenizer -> byte-level BPE with a per-thread
// cache), decoding, batch encoding on a process-wide thread pool. Building the tables is in
// tokenizer_build.cpp, file formats in tokenizer_json.cpp and gguf.cpp, text primitives in
// tokenizer_text.cpp.
// A built tokenizer is immutable: any number of threads may encode/decode with it at once.
//
// Encoding follows the `tokenizers` library step by step (see docs/formats/tokenizer.md):
//   1. added tokens with normalized = false are split out (leftmost-longest), then those with
//      normalized = true from the remaining pieces (no normalizer exists, so both see raw text);
//   2. each remaining piece is cut into maximal valid UTF-8 runs and single invalid bytes (our
//      extension: the library only accepts valid strings); the runs go through the pre-tokenizer
//      chain, each invalid byte becomes a piece of its own;
//   3. each piece is BPE-merged by rank (lowest first, leftmost on ties) over its byte symbols.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <functional>
#include <mutex>
#include <queue>
#include <thread>

#include "mor/core/error.h"
#include "tokenizer_internal.h"

namespace mor::io {

using detail::PreStep;
using detail::SplitBehavior;

namespace {

// Per-thread memo of piece -> ids for one tokenizer at a time (keyed by Impl::serial): an
// open-addressing table over two arenas (piece bytes, ids), grown by doubling, cleared when full.
class BpeCache {
 public:
  static constexpr size_t kMaxPieceBytes = 128;

  void claim(uint64_t serial) {
    if (owner_ != serial) reset(serial);
  }
  static uint64_t hash(std::string_view s) {
    uint64_t h = 0x9E3779B97F4A7C15ULL * (s.size() + 1);
    size_t i = 0;
    for (; i + 8 <= s.size(); i += 8) {
      uint64_t w;
      std::memcpy(&w, s.data() + i, 8);
      h = (h ^ w) * 0xBF58476D1CE4E5B9ULL;
      h ^= h >> 31;
    }
    uint64_t w = 0;
    std::memcpy(&w, s.data() + i, s.size() - i);
    h = (h ^ w) * 0x94D049BB133111EBULL;
    return h ^ (h >> 29);
  }
  // Appends the cached ids of `piece` to out; false when absent.
  bool lookup(std::string_view piece, uint64_t h, std::vector<int32_t>& out) const {
    if (slots_.empty()) return false;
    for (size_t i = h & mask_;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.key_len == 0) return false;
      if (s.hash == h && s.key_len == piece.size() &&
          std::memcmp(keys_.data() + s.key, piece.data(), piece.size()) == 0) {
        out.insert(out.end(), ids_.begin() + s.ids, ids_.begin() + s.ids + s.ids_len);
        return true;
      }
    }
  }
  void insert(std::string_view piece, uint64_t h, const int32_t* ids, size_t n) {
    if (entries_ + 1 > (slots_.size() >> 1)) {
      if (slots_.size() >= kMaxSlots) {
        reset(owner_);
      }
      grow();
    }
    Slot slot{h, static_cast<uint32_t>(keys_.size()), static_cast<uint32_t>(ids_.size()),
              static_cast<uint16_t>(piece.size()), static_cast<uint16_t>(n)};
    keys_.append(piece);
    ids_.insert(ids_.end(), ids, ids + n);
    place(slot);
    ++entries_;
  }

 private:
  struct Slot {
    uint64_t hash;
    uint32_t key;      // offset in keys_
    uint32_t ids;      // offset in ids_
    uint16_t key_len;  // 0 = empty slot (cached pieces are never empty)
    uint16_t ids_len;
  };
  static constexpr size_t kMaxSlots = size_t{1} << 17;

  void reset(uint64_t serial) {
    owner_ = serial;
    slots_.clear();
    keys_.clear();
    ids_.clear();
    entries_ = 0;
    mask_ = 0;
  }
  void grow() {
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(old.empty() ? 4096 : old.size() * 2, Slot{0, 0, 0, 0, 0});
    mask_ = slots_.size() - 1;
    for (const Slot& s : old) {
      if (s.key_len != 0) place(s);
    }
  }
  void place(const Slot& slot) {
    size_t i = slot.hash & mask_;
    while (slots_[i].key_len != 0) i = (i + 1) & mask_;
    slots_[i] = slot;
  }

  uint64_t owner_ = 0;
  std::vector<Slot> slots_;
  std::string keys_;
  std::vector<int32_t> ids_;
  size_t entries_ = 0;
  size_t mask_ = 0;
};
thread_local BpeCache t_cache;

// Streams the pieces of a split (as NormalizedString::split in the library does) to emit(begin,
// end). Segments arrive in order with is_match; empty pieces are dropped at emission.
class SplitStream {
 public:
  template <typename Emit>
  void segment(size_t begin, size_t end, bool is_match, SplitBehavior behavior, Emit& emit) {
    switch (behavior) {
      case SplitBehavior::Isolated: emit_piece(begin, end, emit); break;
      case SplitBehavior::Removed:
        if (!is_match) emit_piece(begin, end, emit);
        break;
      case SplitBehavior::MergedWithPrevious:
        if (is_match && !prev_match_ && has_pending_) {
          pending_end_ = end;
        } else {
          flush(emit);
          start_pending(begin, end);
        }
        break;
      case SplitBehavior::Contiguous:
        if (is_match == prev_match_ && has_pending_) {
          pending_end_ = end;
        } else {
          flush(emit);
          start_pending(begin, end);
        }
        break;
      case SplitBehavior::MergedWithNext:
        if (has_pending_ && !is_match) {
          pending_end_ = end;
          flush(emit);
        } else {
          flush(emit);
          if (is_match) {
            start_pending(begin, end);
          } else {
            emit_piece(begin, end, emit);
          }
        }
        break;
    }
    prev_match_ = is_match;
  }
  template <typename Emit>
  void flush(Emit& emit) {
    if (has_pending_) emit_piece(pending_begin_, pending_end_, emit);
    has_pending_ = false;
  }

 private:
  template <typename Emit>
  static void emit_piece(size_t begin, size_t end, Emit& emit) {
    if (end > begin) emit(begin, end);
  }
  void start_pending(size_t begin, size_t end) {
    has_pending_ = true;
    pending_begin_ = begin;
    pending_end_ = end;
  }
  bool prev_match_ = false;
  bool has_pending_ = false;
  size_t pending_begin_ = 0;
  size_t pending_end_ = 0;
};

// Splits `s` by the step's regex with its behavior; calls emit(sub-piece) for each non-empty piece.
template <typename Emit>
void split_by(const detail::Regex& regex, std::string_view s, SplitBehavior behavior, bool invert, Emit&& emit) {
  SplitStream stream;
  auto emit_range = [&](size_t b, size_t e) { emit(s.substr(b, e - b)); };
  size_t prev = 0;
  regex.for_each_match(s, [&](size_t begin, size_t end) {
    if (prev != begin) stream.segment(prev, begin, invert, behavior, emit_range);
    stream.segment(begin, end, !invert, behavior, emit_range);
    prev = end;
  });
  if (prev != s.size()) stream.segment(prev, s.size(), invert, behavior, emit_range);
  stream.flush(emit_range);
}

template <typename Sink>
void run_steps(const std::vector<PreStep>& steps, size_t k, std::string_view piece, Sink& sink) {
  if (piece.empty()) return;
  const PreStep& step = steps[k];
  switch (step.kind) {
    case PreStep::Kind::Split:
      split_by(*step.regex, piece, step.behavior, step.invert,
               [&](std::string_view sub) { run_steps(steps, k + 1, sub, sink); });
      return;
    case PreStep::Kind::Digits:
      split_by(*step.regex, piece, step.individual_digits ? SplitBehavior::Isolated : SplitBehavior::Contiguous, false,
               [&](std::string_view sub) { run_steps(steps, k + 1, sub, sink); });
      return;
    case PreStep::Kind::ByteLevel: {
      std::string prefixed;
      if (step.add_prefix_space && piece.front() != ' ') {
        prefixed.reserve(piece.size() + 1);
        prefixed += ' ';
        prefixed += piece;
        piece = prefixed;
      }
      if (step.use_regex) {
        split_by(*step.regex, piece, SplitBehavior::Isolated, false, [&](std::string_view sub) { sink(sub); });
      } else {
        sink(piece);
      }
      return;
    }
  }
}

// A process-wide pool of worker threads for encode_batch, started on first use and kept, so that
// their per-thread BPE caches stay warm from one batch to the next (as the library's rayon pool).
// One batch runs on it at a time; a batch that finds it busy starts threads of its own.
class BatchPool {
 public:
  static BatchPool& get() {
    static BatchPool pool;
    return pool;
  }
  // Runs `work` on `helpers` pool threads and on the caller; false (nothing run) when busy.
  bool try_run(size_t helpers, const std::function<void()>& work) {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      while (threads_.size() < helpers) threads_.emplace_back([this] { loop(); });
      job_ = &work;
      wanted_ = helpers;
      taken_ = 0;
      finished_ = 0;
      ++generation_;
    }
    wake_.notify_all();
    work();
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [&] { return finished_ == wanted_; });
    job_ = nullptr;
    return true;
  }
  ~BatchPool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& t : threads_) t.join();
  }

 private:
  BatchPool() = default;
  void loop() {
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(mutex_);
    while (true) {
      wake_.wait(lock, [&] { return stop_ || (generation_ != seen && taken_ < wanted_); });
      if (stop_) return;
      seen = generation_;
      ++taken_;
      const std::function<void()>* job = job_;
      lock.unlock();
      (*job)();
      lock.lock();
      if (++finished_ == wanted_) done_.notify_all();
    }
  }

  std::mutex busy_;   // held by the caller for a whole batch
  std::mutex mutex_;  // guards everything below
  std::condition_variable wake_, done_;
  std::vector<std::thread> threads_;
  const std::function<void()>* job_ = nullptr;
  uint64_t generation_ = 0;
  size_t wanted_ = 0, taken_ = 0, finished_ = 0;
  bool stop_ = false;
};

// UTF-8 helpers for the added-token checks; an invalid byte counts as a non-space, non-word char.
bool first_char(std::string_view s, char32_t* cp) {
  if (s.empty()) return false;
  if (detail::utf8_decode(s, cp) == 0) *cp = 0xFFFD;
  return true;
}
// Start of the last character of s (a lone invalid byte counts as one character).
size_t last_char_start(std::string_view s, char32_t* cp) {
  const size_t n = s.size();
  for (size_t back = 1; back <= 4 && back <= n; ++back) {
    const auto b = static_cast<unsigned char>(s[n - back]);
    if ((b & 0xC0) == 0x80) continue;
    if (detail::utf8_decode(s.substr(n - back), cp) == static_cast<int>(back)) return n - back;
    break;
  }
  *cp = 0xFFFD;
  return n - 1;
}

}  // namespace

// ---- Added-token matcher -----------------------------------------------------------------------

namespace detail {

void AddedMatcher::build(std::vector<AddedToken> tokens) {
  tokens_ = std::move(tokens);
  for (auto& v : by_first_byte_) v.clear();
  for (size_t i = 0; i < tokens_.size(); ++i) {
    by_first_byte_[static_cast<unsigned char>(tokens_[i].content[0])].push_back(static_cast<int>(i));
  }
  for (auto& v : by_first_byte_) {
    std::stable_sort(v.begin(), v.end(),
                     [&](int a, int b) { return tokens_[a].content.size() > tokens_[b].content.size(); });
  }
}

int AddedMatcher::longest_at(std::string_view text, size_t pos) const {
  for (int idx : by_first_byte_[static_cast<unsigned char>(text[pos])]) {
    const std::string& c = tokens_[idx].content;
    if (text.size() - pos >= c.size() && text.compare(pos, c.size(), c) == 0) return idx;
  }
  return -1;
}

template <typename F>
void AddedMatcher::split(std::string_view text, F&& on_piece) const {
  if (tokens_.empty()) {
    if (!text.empty()) on_piece(text, -1);
    return;
  }
  size_t start_offset = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    int t = -1;
    size_t at = pos;
    for (; at < text.size(); ++at) {
      if (by_first_byte_[static_cast<unsigned char>(text[at])].empty()) continue;
      t = longest_at(text, at);
      if (t >= 0) break;
    }
    if (t < 0) break;
    const AddedToken& tok = tokens_[t];
    size_t start = at;
    size_t stop = at + tok.content.size();
    pos = stop;  // the library's match iterator resumes at the match end, whatever happens below
    char32_t cp;
    if (tok.single_word) {
      const bool start_space = start == 0 || (last_char_start(text.substr(0, start), &cp), !is_word_char(cp));
      const bool stop_space = stop == text.size() || (first_char(text.substr(stop), &cp), !is_word_char(cp));
      if (!start_space || !stop_space) continue;
    }
    if (tok.lstrip) {
      size_t new_start = start;
      while (new_start > 0) {
        const size_t s = last_char_start(text.substr(0, new_start), &cp);
        if (!is_white_space(cp)) break;
        new_start = s;
      }
      start = std::max(new_start, start_offset);
    }
    if (tok.rstrip) {
      while (stop < text.size()) {
        const int n = utf8_decode(text.substr(stop), &cp);
        if (n == 0 || !is_white_space(cp)) break;
        stop += static_cast<size_t>(n);
      }
    }
    if (start_offset < start) on_piece(text.substr(start_offset, start - start_offset), -1);
    on_piece(text.substr(start, stop - start), tok.id);
    start_offset = stop;
  }
  if (start_offset < text.size()) on_piece(text.substr(start_offset), -1);
}

}  // namespace detail

// ---- Encoding ----------------------------------------------------------------------------------

template <typename Sink>
void Tokenizer::Impl::pretokenize_bytes(std::string_view text, Sink&& sink) const {
  size_t i = 0;
  const size_t n = text.size();
  while (i < n) {
    size_t j = i;
    char32_t cp;
    while (j < n) {
      if (static_cast<unsigned char>(text[j]) < 0x80) {
        ++j;
        continue;
      }
      const int len = detail::utf8_decode(text.substr(j), &cp);
      if (len == 0) break;
      j += static_cast<size_t>(len);
    }
    if (j > i) run_steps(pre_steps, 0, text.substr(i, j - i), sink);
    if (j < n) {
      sink(text.substr(j, 1));  // an invalid byte: a piece of its own
      ++j;
    }
    i = j;
  }
}

void Tokenizer::Impl::encode_into(std::string_view text, std::vector<int32_t>& out) const {
  if (match_raw.empty() && match_normalized.empty()) {
    encode_ordinary(text, out);
    return;
  }
  match_raw.split(text, [&](std::string_view piece, int32_t id) {
    if (id >= 0) {
      out.push_back(id);
      return;
    }
    match_normalized.split(piece, [&](std::string_view sub, int32_t sub_id) {
      if (sub_id >= 0) {
        out.push_back(sub_id);
      } else {
        encode_ordinary(sub, out);
      }
    });
  });
}

void Tokenizer::Impl::encode_ordinary(std::string_view text, std::vector<int32_t>& out) const {
  pretokenize_bytes(text, [&](std::string_view piece) { bpe(piece, out); });
}

void Tokenizer::Impl::bpe(std::string_view piece, std::vector<int32_t>& out) const {
  if (piece.empty()) return;
  if (ignore_merges) {
    auto it = vocab_bytes.find(piece);
    if (it != vocab_bytes.end()) {
      out.push_back(it->second);
      return;
    }
  }
  if (piece.size() == 1) {
    const int32_t id = byte_ids[static_cast<unsigned char>(piece[0])];
    if (id >= 0) {
      out.push_back(id);
    } else if (unk_id >= 0) {
      out.push_back(unk_id);
    }
    return;
  }
  if (piece.size() > BpeCache::kMaxPieceBytes) {
    bpe_uncached(piece, out);
    return;
  }
  BpeCache& cache = t_cache;
  cache.claim(serial);
  const uint64_t h = BpeCache::hash(piece);
  if (cache.lookup(piece, h, out)) return;
  const size_t before = out.size();
  bpe_uncached(piece, out);
  cache.insert(piece, h, out.data() + before, out.size() - before);
}

void Tokenizer::Impl::bpe_uncached(std::string_view piece, std::vector<int32_t>& out) const {
  // Initial symbols: one per byte; bytes missing from the vocabulary become unk (fused if asked)
  // or disappear, exactly as the library's BPE::merge_word does.
  thread_local std::vector<int32_t> ids;
  ids.clear();
  bool last_unk = false;
  for (char c : piece) {
    const int32_t id = byte_ids[static_cast<unsigned char>(c)];
    if (id >= 0) {
      ids.push_back(id);
      last_unk = false;
    } else if (unk_id >= 0) {
      if (!(fuse_unk && last_unk)) ids.push_back(unk_id);
      last_unk = true;
    }
  }
  const size_t n = ids.size();
  if (n >= 2 && n <= 64) {
    // Short words: rescan cached pair entries; merge the lowest rank, leftmost on ties.
    thread_local std::vector<const detail::MergeTable::Entry*> pair;
    pair.resize(n - 1);
    for (size_t i = 0; i + 1 < n; ++i) pair[i] = merge_table.find(ids[i], ids[i + 1]);
    while (true) {
      size_t best = pair.size();
      int32_t best_rank = INT32_MAX;
      for (size_t i = 0; i < pair.size(); ++i) {
        if (pair[i] != nullptr && pair[i]->rank < best_rank) {
          best_rank = pair[i]->rank;
          best = i;
        }
      }
      if (best == pair.size()) break;
      ids[best] = pair[best]->merged;
      ids.erase(ids.begin() + static_cast<std::ptrdiff_t>(best) + 1);
      pair.erase(pair.begin() + static_cast<std::ptrdiff_t>(best));
      if (best > 0) pair[best - 1] = merge_table.find(ids[best - 1], ids[best]);
      if (best < pair.size()) pair[best] = merge_table.find(ids[best], ids[best + 1]);
    }
    out.insert(out.end(), ids.begin(), ids.end());
    return;
  }
  if (n < 2) {
    out.insert(out.end(), ids.begin(), ids.end());
    return;
  }
  // Long words: a min-heap of (rank, position) over a linked list of symbols, O(n log n).
  struct Sym {
    int32_t id;
    int32_t prev;
    int32_t next;
    bool alive;
  };
  struct Cand {
    int32_t rank;
    int32_t pos;
    int32_t merged;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::vector<Sym> syms(n);
  for (size_t i = 0; i < n; ++i) {
    syms[i] = Sym{ids[i], static_cast<int32_t>(i) - 1, i + 1 < n ? static_cast<int32_t>(i + 1) : -1, true};
  }
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
  auto push_pair = [&](int32_t pos) {
    const int32_t nx = syms[pos].next;
    if (nx < 0) return;
    if (const auto* e = merge_table.find(syms[pos].id, syms[nx].id)) heap.push(Cand{e->rank, pos, e->merged});
  };
  for (size_t i = 0; i + 1 < n; ++i) push_pair(static_cast<int32_t>(i));
  while (!heap.empty()) {
    const Cand c = heap.top();
    heap.pop();
    Sym& left = syms[c.pos];
    if (!left.alive || left.next < 0) continue;
    Sym& right = syms[left.next];
    const auto* e = merge_table.find(left.id, right.id);
    if (e == nullptr || e->merged != c.merged || e->rank != c.rank) continue;  // stale
    left.id = c.merged;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) syms[right.next].prev = c.pos;
    if (left.prev >= 0) push_pair(left.prev);
    push_pair(c.pos);
  }
  for (int32_t i = 0; i >= 0; i = syms[i].next) out.push_back(syms[i].id);
}

// ---- Public API --------------------------------------------------------------------------------

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  impl_->encode_into(text, out);
  return out;
}

std::vector<std::vector<int32_t>> Tokenizer::encode_batch(const std::vector<std::string>& texts, int threads) const {
  MOR_CHECK(threads >= 0, "encode_batch: threads must be >= 0 (0 = every core), got ", threads);
  std::vector<std::vector<int32_t>> out(texts.size());
  size_t workers = threads > 0 ? static_cast<size_t>(threads) : std::max(1u, std::thread::hardware_concurrency());
  workers = std::min(workers, texts.size());
  if (workers <= 1) {
    for (size_t i = 0; i < texts.size(); ++i) out[i] = encode(texts[i]);
    return out;
  }
  std::atomic<size_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  // Texts are handed out in small runs: fewer atomic operations and no false sharing on `out`
  // for batches of many short texts, still fine-grained enough to balance long documents.
  const size_t run = std::clamp<size_t>(texts.size() / (workers * 32), 1, 64);
  auto work = [&] {
    try {
      for (size_t begin = next.fetch_add(run); begin < texts.size(); begin = next.fetch_add(run)) {
        const size_t end = std::min(texts.size(), begin + run);
        for (size_t i = begin; i < end; ++i) {
          out[i].reserve(texts[i].size() / 3 + 4);
          impl_->encode_into(texts[i], out[i]);
        }
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
      next.store(texts.size());
    }
  };
  const std::function<void()> job = work;
  if (!BatchPool::get().try_run(workers - 1, job)) {
    std::vector<std::thread> pool;
    pool.reserve(workers - 1);
    for (size_t w = 1; w < workers; ++w) pool.emplace_back(work);
    work();
    for (auto& th : pool) th.join();
  }
  if (error) std::rethrow_exception(error);
  return out;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  const Impl& t = *impl_;
  std::string out;
  for (int32_t id : ids) {
    if (id < 0 || static_cast<size_t>(id) >= t.id_kind.size() || t.id_kind[id] == Impl::kMissing) {
      fail("decode: id ", id, " is not in the vocabulary of ", t.source, " (", t.id_kind.size(), " ids)");
    }
    if (skip_special && t.id_kind[id] == Impl::kSpecial) continue;
    out += t.id_bytes[id];
  }
  return out;
}

std::vector<std::string> Tokenizer::pretokenize(std::string_view text) const {
  std::vector<std::string> out;
  impl_->pretokenize_bytes(text, [&](std::string_view piece) { out.push_back(detail::bytes_to_bytelevel(piece)); });
  return out;
}

int64_t Tokenizer::vocab_size() const {
  return static_cast<int64_t>(impl_->id_kind.size());
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  if (auto it = impl_->added_ids.find(token); it != impl_->added_ids.end()) return it->second;
  if (auto it = impl_->vocab.find(token); it != impl_->vocab.end()) return it->second;
  return std::nullopt;
}

std::string Tokenizer::id_to_token(int32_t id) const {
  const Impl& t = *impl_;
  if (id < 0 || static_cast<size_t>(id) >= t.id_kind.size() || t.id_kind[id] == Impl::kMissing) {
    fail("id_to_token: id ", id, " is not in the vocabulary of ", t.source);
  }
  return t.id_strings[id];
}

std::vector<uint8_t> Tokenizer::bytes_without_token() const {
  std::vector<uint8_t> out;
  for (int b = 0; b < 256; ++b) {
    if (impl_->byte_ids[b] < 0) out.push_back(static_cast<uint8_t>(b));
  }
  return out;
}

std::optional<int32_t> Tokenizer::eos_id() const {
  if (auto it = impl_->added_ids.find(std::string_view("<|endoftext|>")); it != impl_->added_ids.end()) {
    return it->second;
  }
  if (auto it = impl_->vocab.find(std::string_view("<|endoftext|>")); it != impl_->vocab.end()) return it->second;
  for (const auto& a : impl_->added) {  // sorted by id
    if (a.special) return a.id;
  }
  return std::nullopt;
}

}  // namespace mor::io
