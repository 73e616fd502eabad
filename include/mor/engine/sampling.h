// Token sampling for the inference engine: per-request parameters (OpenAI-style), a seeded sampler
// (greedy, temperature, top-k, top-p), log-probabilities for `logprobs`, stop strings over streamed
// text, and UTF-8-safe incremental detokenization. Torch-free: logits arrive as CPU float spans.
//
// Sampling order: greedy when temperature == 0 (argmax, ties to the lowest id); otherwise logits /
// temperature, keep the top_k largest (0: all), softmax in double, keep the smallest prefix of the
// descending-probability order whose mass reaches top_p (at least one token), renormalize, and
// draw with the request's own generator: u = (next_u64() >> 11) * 2^-53 from std::mt19937_64
// seeded with the request seed, inverse CDF over that order (ties in probability broken by lower
// id). The same seed and logits give the same token on every platform (given the same std::exp).
// Details: the weights w = exp((logit - max) / T) (double) are held as integers
// round(w * 2^(62 - bit_width(candidates))), so every cumulative mass is exact whatever the
// summation order; a token whose weight rounds to 0 (below ~2^-46 of the top token's for 49152
// candidates) is never drawn. top_p is compared with a slack of 1e-12. top-k ties at the boundary
// keep the lower ids. Non-finite logits (-inf, +inf, NaN) are never candidates; when none is finite
// the token is 0. A non-greedy sample() consumes exactly one 64-bit draw, a greedy one none.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mor::io {
class Tokenizer;
}

namespace mor::engine {

struct SamplingParams {
  double temperature = 1.0;       // 0: greedy
  int64_t top_k = 0;              // 0: off
  double top_p = 1.0;             // (0, 1]; 1: off
  std::optional<uint64_t> seed;   // unset: the engine assigns one
  int64_t max_tokens = 16;        // new tokens at most (0 allowed: echo/score only)
  std::vector<std::string> stop;  // stop strings; the text stops before the first one
  bool ignore_eos = false;
  int64_t logprobs = 0;           // top-N log-probabilities per token to report, 0..20

  bool operator==(const SamplingParams&) const = default;
};

// Range checks; throws mor::Error "<field>: <reason>" naming the OpenAI field (temperature, top_p,
// top_k, max_tokens, stop, logprobs), e.g. "temperature: must be in [0, 2], got 3".
void validate(const SamplingParams& params);

class Sampler {
 public:
  // `seed` is params.seed when set, else the caller's choice. Throws as validate() does.
  Sampler(const SamplingParams& params, uint64_t seed);
  // The next token for these logits (size = vocabulary; non-finite entries never chosen unless all are).
  int32_t sample(std::span<const float> logits);

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<std::pair<uint64_t, int32_t>> scratch_;  // (key, id) candidates, reused across calls
};

struct TokenLogprobs {
  float logprob = 0.0f;                        // log_softmax(logits)[token]
  std::vector<std::pair<int32_t, float>> top;  // top_n (id, logprob), descending, ties by lower id
};
// log-softmax (computed in double) of `token` and the top_n alternatives. Non-finite logits get
// -inf and are never listed in `top` (which is shorter than top_n when fewer are finite). Throws
// mor::Error for an empty span, a token out of range or top_n < 0.
TokenLogprobs token_logprobs(std::span<const float> logits, int32_t token, int64_t top_n);

// Stop strings over text that arrives in pieces. feed() returns the text that is safe to emit now:
// text that could still be the start of a stop string is held back. When a stop string completes,
// stopped() becomes true and only the text before it is ever released; later feeds return "".
// The stop that completes first as the text grows wins (at equal ends the longer one), so the
// output does not depend on how the text is split into pieces. Empty stop strings throw.
class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops);
  std::string feed(std::string_view piece);
  std::string flush();  // end of generation: release what is held (nothing after a stop)
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string held_;
  bool stopped_ = false;
};

// Streams token ids to text without splitting UTF-8 characters: push() returns the newly complete
// text (possibly ""), flush() whatever remains (invalid bytes as they are). Special tokens are
// skipped when skip_special. Ids out of range throw (the tokenizer's mor::Error).
class Detokenizer {
 public:
  explicit Detokenizer(const io::Tokenizer& tokenizer, bool skip_special = true);
  std::string push(int32_t id);
  std::string flush();

 private:
  const io::Tokenizer& tokenizer_;
  bool skip_special_;
  std::string pending_;
};

}  // namespace mor::engine
