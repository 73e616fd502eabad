// Token sampling for the inference engine: parameter validation, the seeded sampler (greedy,
// temperature, top-k, top-p), log-probabilities, stop strings over streamed text, and UTF-8-safe
// incremental detokenization. See include/mor/engine/sampling.h for the documented semantics.
#include "mor/engine/sampling.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <limits>

#include "mor/core/error.h"
#include "mor/io/tokenizer.h"

namespace mor::engine {

namespace {

constexpr size_t kMaxStops = 4;
constexpr int64_t kMaxLogprobs = 20;
// Slack when the kept mass is compared with top_p, so that a mass that reaches top_p in real
// arithmetic is not missed by the rounding of top_p itself.
constexpr double kTopPSlack = 1e-12;
// Ranges at most this long are sorted outright by the prefix search.
constexpr size_t kSortBelow = 32;

// (key, id). The key is first a monotone image of the logit (logit_key), then the token's
// fixed-point weight. Both orders are "larger key first, ties by the lower id".
using Candidate = std::pair<uint64_t, int32_t>;
// Exact products of masses (< 2^62) with 53-bit fractions (GCC and Clang).
__extension__ typedef unsigned __int128 Uint128;

// A function object rather than a function, so that the standard algorithms inline it.
constexpr auto before = [](const Candidate& a, const Candidate& b) {
  return a.first > b.first || (a.first == b.first && a.second < b.second);
};

// Order-preserving map of finite floats to integers; -0 and +0 map to the same key.
uint64_t logit_key(float x) {
  if (x == 0.0f) x = 0.0f;
  const auto bits = std::bit_cast<uint32_t>(x);
  return (bits & 0x80000000u) != 0 ? ~bits : (bits | 0x80000000u);
}

float key_logit(uint64_t key) {
  const auto k = static_cast<uint32_t>(key);
  return std::bit_cast<float>((k & 0x80000000u) != 0 ? (k & 0x7FFFFFFFu) : ~k);
}

int32_t checked_vocab(std::span<const float> logits, const char* what) {
  MOR_CHECK(!logits.empty(), what, ": empty logits");
  MOR_CHECK(logits.size() <= static_cast<size_t>(std::numeric_limits<int32_t>::max()), what,
            ": vocabulary of ", logits.size(), " entries exceeds int32 ids");
  return static_cast<int32_t>(logits.size());
}

// Argmax over the finite logits, ties to the lowest id; -1 when none is finite.
int32_t argmax_finite(std::span<const float> logits) {
  int32_t best = -1;
  float best_value = 0.0f;
  for (size_t i = 0; i < logits.size(); ++i) {
    float x = logits[i];
    if (!std::isfinite(x)) continue;
    if (best < 0 || x > best_value) {
      best = static_cast<int32_t>(i);
      best_value = x;
    }
  }
  return best;
}

// The finite logits (-inf, +inf and NaN are never candidates) as (logit_key, id), restricted to
// the top_k best when 0 < top_k: a bounded heap for small k (one pass; most logits are rejected
// by one comparison), nth_element otherwise. The set is the same either way; its order is not.
void collect_candidates(std::span<const float> logits, int64_t top_k, std::vector<Candidate>& out) {
  out.clear();
  const auto n = static_cast<int32_t>(logits.size());
  if (top_k > 0 && static_cast<size_t>(top_k) * 16 < logits.size()) {
    const auto k = static_cast<size_t>(top_k);
    out.reserve(k);
    // A max-heap under `before`: the front is the worst candidate kept so far.
    for (int32_t i = 0; i < n; ++i) {
      const float x = logits[static_cast<size_t>(i)];
      if (!std::isfinite(x)) continue;
      const Candidate c(logit_key(x), i);
      if (out.size() < k) {
        out.push_back(c);
        std::push_heap(out.begin(), out.end(), before);
      } else if (before(c, out.front())) {
        std::pop_heap(out.begin(), out.end(), before);
        out.back() = c;
        std::push_heap(out.begin(), out.end(), before);
      }
    }
    return;
  }
  for (int32_t i = 0; i < n; ++i) {
    const float x = logits[static_cast<size_t>(i)];
    if (std::isfinite(x)) out.emplace_back(logit_key(x), i);
  }
  if (top_k > 0 && static_cast<size_t>(top_k) < out.size()) {
    auto kth = out.begin() + static_cast<std::ptrdiff_t>(top_k);
    std::nth_element(out.begin(), kth, out.end(), before);
    out.erase(kth, out.end());
  }
}

// Mass buckets for PrefixFinder: monotone in the weight q, exact below 32, otherwise the width
// of q and its leading five bits (a factor of 1 + 1/16 per bucket). Weights are below 2^62.
constexpr int kBucketBits = 4;
constexpr size_t kBuckets = ((61 - kBucketBits) << kBucketBits) + (size_t{2} << kBucketBits);

size_t bucket_of(uint64_t q) {
  const int width = static_cast<int>(std::bit_width(q));
  if (width <= kBucketBits + 1) return static_cast<size_t>(q);
  const int drop = width - kBucketBits - 1;
  return (static_cast<size_t>(drop) << kBucketBits) + static_cast<size_t>(q >> drop);
}

// A prefix of the descending order and its mass.
struct Prefix {
  uint64_t mass = 0;
  int32_t last = 0;  // the id of its last candidate
};

// The shortest prefix (in `before` order) of v[lo, hi) whose mass satisfies `pred` (monotone in
// the mass), given the mass `base` of what precedes v[lo]; pred(base + mass of v[lo, hi)) must
// hold. Quickselect on the prefix mass: expected O(hi - lo), reorders v[lo, hi).
template <typename Pred>
Prefix refine_prefix(std::vector<Candidate>& v, size_t lo, size_t hi, uint64_t base, Pred pred) {
  auto at = [&](size_t i) { return v.begin() + static_cast<std::ptrdiff_t>(i); };
  while (hi - lo > kSortBelow) {
    const size_t mid = lo + (hi - lo) / 2;
    std::nth_element(at(lo), at(mid), at(hi), before);
    uint64_t left = 0;
    for (size_t i = lo; i < mid; ++i) left += v[i].first;
    if (pred(base + left)) {
      hi = mid;
    } else {
      base += left;
      lo = mid;
    }
  }
  std::sort(at(lo), at(hi), before);
  for (size_t i = lo; i < hi; ++i) {
    base += v[i].first;
    if (pred(base)) return {base, v[i].second};
  }
  return {base, v[hi - 1].second};  // not reached while pred(total) holds
}

// Shortest-prefix queries over a candidate set with positive weights, masses exact in integers (so
// no answer depends on a summation order). Large sets are indexed by one histogram pass over mass
// buckets: a query walks the buckets, then refines the one bucket where its predicate flips.
class PrefixFinder {
 public:
  explicit PrefixFinder(std::vector<Candidate>& v) : v_(v), indexed_(v.size() > kSortBelow * 8) {
    if (!indexed_) return;
    mass_.fill(0);
    for (const auto& c : v_) mass_[bucket_of(c.first)] += c.first;
  }

  // pred(0) false, pred(total mass) true.
  template <typename Pred>
  Prefix find(Pred pred) {
    if (!indexed_) return refine_prefix(v_, 0, v_.size(), 0, pred);
    uint64_t base = 0;
    size_t b = kBuckets;
    while (b-- > 1) {
      if (mass_[b] == 0) continue;  // empty (every weight is positive)
      if (pred(base + mass_[b])) break;
      base += mass_[b];
    }
    bucket_.clear();
    for (const auto& c : v_) {
      if (bucket_of(c.first) == b) bucket_.push_back(c);
    }
    return refine_prefix(bucket_, 0, bucket_.size(), base, pred);
  }

 private:
  std::vector<Candidate>& v_;
  bool indexed_;
  std::array<uint64_t, kBuckets> mass_;
  std::vector<Candidate> bucket_;
};

// Start of the trailing UTF-8 sequence of `s` that is still incomplete, or s.size() when `s` ends
// on a complete character (or on bytes that no continuation can complete).
size_t incomplete_tail(const std::string& s) {
  size_t n = s.size();
  for (size_t back = 1; back <= std::min<size_t>(4, n); ++back) {
    auto byte = static_cast<unsigned char>(s[n - back]);
    if ((byte & 0xC0) == 0x80) continue;  // continuation byte: look further back
    size_t need = 0;
    if ((byte & 0xE0) == 0xC0) {
      need = 2;
    } else if ((byte & 0xF0) == 0xE0) {
      need = 3;
    } else if ((byte & 0xF8) == 0xF0) {
      need = 4;
    }
    // ASCII or a byte that starts nothing (0xF8..0xFF): complete as far as we can tell.
    return need > back ? n - back : n;
  }
  return n;  // only continuation bytes in the last four: stray, emit them
}

}  // namespace

void validate(const SamplingParams& params) {
  const double t = params.temperature;
  MOR_CHECK(t >= 0.0 && t <= 2.0, "temperature: must be in [0, 2], got ", t);
  const double p = params.top_p;
  MOR_CHECK(p > 0.0 && p <= 1.0, "top_p: must be in (0, 1], got ", p);
  MOR_CHECK(params.top_k >= 0, "top_k: must be >= 0 (0 disables it), got ", params.top_k);
  MOR_CHECK(params.max_tokens >= 0, "max_tokens: must be >= 0, got ", params.max_tokens);
  MOR_CHECK(params.logprobs >= 0 && params.logprobs <= kMaxLogprobs, "logprobs: must be in [0, ",
            kMaxLogprobs, "], got ", params.logprobs);
  MOR_CHECK(params.stop.size() <= kMaxStops, "stop: at most ", kMaxStops, " strings, got ",
            params.stop.size());
  for (size_t i = 0; i < params.stop.size(); ++i) {
    MOR_CHECK(!params.stop[i].empty(), "stop: strings must not be empty, got \"\" at index ", i);
  }
}

Sampler::Sampler(const SamplingParams& params, uint64_t seed) : params_(params), rng_(seed) {
  validate(params_);
}

int32_t Sampler::sample(std::span<const float> logits) {
  checked_vocab(logits, "Sampler::sample");
  if (params_.temperature == 0.0) {
    int32_t best = argmax_finite(logits);
    return best < 0 ? 0 : best;
  }
  // One draw per call (the greedy path draws none), whatever the logits.
  const uint64_t u53 = rng_() >> 11;  // u = u53 * 2^-53
  std::vector<Candidate>& cand = scratch_;
  collect_candidates(logits, params_.top_k, cand);
  if (cand.empty()) return 0;

  // Softmax weights in double, max-subtracted (the most likely token gets 1), then fixed point:
  // q = round(w * 2^shift) with the total below 2^62, so that every mass below is an exact integer
  // whatever the summation order. Weights that round to 0 (w < 2^-shift-1) are never drawn.
  uint64_t max_key = 0;
  for (const auto& c : cand) max_key = std::max(max_key, c.first);
  const double max_logit = key_logit(max_key);
  const double temperature = params_.temperature;
  const int shift = 62 - static_cast<int>(std::bit_width(cand.size()));
  const double scale = std::ldexp(1.0, shift);
  size_t count = 0;
  uint64_t total = 0;
  for (size_t i = 0; i < cand.size(); ++i) {
    const double z = (static_cast<double>(key_logit(cand[i].first)) - max_logit) / temperature;
    if (z < -44.0) continue;  // exp(z) * 2^61 < 0.5
    const auto q = static_cast<uint64_t>(std::exp(z) * scale + 0.5);  // round to nearest
    if (q == 0) continue;
    cand[count++] = Candidate(q, cand[i].second);
    total += q;
  }
  cand.resize(count);

  // Nucleus: the shortest prefix of the descending order whose mass reaches top_p of the total.
  // The draw needs only its mass: the inverse CDF over the same order lands inside it.
  PrefixFinder finder(cand);
  uint64_t kept_mass = total;
  if (params_.top_p < 1.0) {
    const double p = std::max(params_.top_p - kTopPSlack, 0.0);
    const auto p53 = std::max<uint64_t>(static_cast<uint64_t>(std::ceil(std::ldexp(p, 53))), 1);
    kept_mass = finder
                    .find([&](uint64_t mass) {
                      return (static_cast<Uint128>(mass) << 53) >=
                             static_cast<Uint128>(p53) * total;
                    })
                    .mass;
  }
  // Inverse CDF: the first token whose cumulative mass exceeds u * kept_mass.
  const auto target = static_cast<uint64_t>((static_cast<Uint128>(u53) * kept_mass) >> 53);
  return finder.find([&](uint64_t mass) { return mass > target; }).last;
}

TokenLogprobs token_logprobs(std::span<const float> logits, int32_t token, int64_t top_n) {
  const int32_t vocab = checked_vocab(logits, "token_logprobs");
  MOR_CHECK(token >= 0 && token < vocab, "token_logprobs: token ", token, " out of range [0, ", vocab,
            ")");
  MOR_CHECK(top_n >= 0, "token_logprobs: top_n must be >= 0, got ", top_n);

  constexpr double kNegInf = -std::numeric_limits<double>::infinity();
  double max_logit = kNegInf;
  for (float x : logits) {
    if (std::isfinite(x)) max_logit = std::max(max_logit, static_cast<double>(x));
  }
  TokenLogprobs out;
  if (max_logit == kNegInf) {  // nothing finite: every token has probability 0
    out.logprob = -std::numeric_limits<float>::infinity();
    return out;
  }
  double sum = 0.0;
  for (float x : logits) {
    if (std::isfinite(x)) sum += std::exp(static_cast<double>(x) - max_logit);
  }
  // (x - max) - log(sum), not x - (max + log(sum)): the latter loses log(sum) next to a huge max.
  const double log_sum = std::log(sum);
  auto logprob_of = [&](float x) -> float {
    if (!std::isfinite(x)) return -std::numeric_limits<float>::infinity();
    return static_cast<float>((static_cast<double>(x) - max_logit) - log_sum);
  };
  out.logprob = logprob_of(logits[static_cast<size_t>(token)]);
  if (top_n == 0) return out;

  std::vector<Candidate> best;
  collect_candidates(logits, top_n, best);
  std::sort(best.begin(), best.end(), before);
  out.top.reserve(best.size());
  for (const auto& [key, id] : best) {
    out.top.emplace_back(id, logprob_of(key_logit(key)));
  }
  return out;
}

StopMatcher::StopMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {
  for (size_t i = 0; i < stops_.size(); ++i) {
    MOR_CHECK(!stops_[i].empty(), "stop: strings must not be empty, got \"\" at index ", i);
  }
}

std::string StopMatcher::feed(std::string_view piece) {
  if (stopped_) return "";
  held_.append(piece);
  if (stops_.empty()) return std::exchange(held_, std::string());

  // The stop that completes first as the text grows (smallest end), the longest at equal ends;
  // the result does not depend on how the text is split into pieces.
  size_t best_end = std::string::npos;
  size_t best_start = 0;
  for (const auto& stop : stops_) {
    size_t pos = held_.find(stop);
    if (pos == std::string::npos) continue;
    size_t end = pos + stop.size();
    if (end < best_end || (end == best_end && pos < best_start)) {
      best_end = end;
      best_start = pos;
    }
  }
  if (best_end != std::string::npos) {
    stopped_ = true;
    std::string out = held_.substr(0, best_start);
    held_.clear();
    return out;
  }

  // Hold back the longest suffix that is a proper prefix of some stop string.
  size_t hold = 0;
  for (const auto& stop : stops_) {
    size_t longest = std::min(stop.size() - 1, held_.size());
    for (size_t len = longest; len > hold; --len) {
      if (held_.compare(held_.size() - len, len, stop, 0, len) == 0) {
        hold = len;
        break;
      }
    }
  }
  std::string out = held_.substr(0, held_.size() - hold);
  held_.erase(0, held_.size() - hold);
  return out;
}

std::string StopMatcher::flush() {
  if (stopped_) return "";
  return std::exchange(held_, std::string());
}

Detokenizer::Detokenizer(const io::Tokenizer& tokenizer, bool skip_special)
    : tokenizer_(tokenizer), skip_special_(skip_special) {}

std::string Detokenizer::push(int32_t id) {
  // decode() is the concatenation of per-token bytes, so the pending ids are kept as their bytes.
  const int32_t ids[1] = {id};
  pending_ += tokenizer_.decode(std::span<const int32_t>(ids, 1), skip_special_);
  size_t cut = incomplete_tail(pending_);
  std::string out = pending_.substr(0, cut);
  pending_.erase(0, cut);
  return out;
}

std::string Detokenizer::flush() { return std::exchange(pending_, std::string()); }

}  // namespace mor::engine
