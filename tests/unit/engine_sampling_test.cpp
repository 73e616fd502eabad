// Unit tests of mor::engine sampling (include/mor/engine/sampling.h).
//   * validate(): OpenAI ranges, errors that name the field and the value.
//   * Sampler: greedy argmax (ties to the lowest id), non-finite logits, seeds; draw-by-draw equality
//     with an independent long-double, full-sort implementation of the documented algorithm fed the
//     same u = (mt19937_64() >> 11) * 2^-53; empirical distributions against numpy's filtered
//     softmax (tests/fixtures/engine/sampling_golden.json, tools/gen_sampling_golden.py).
//   * token_logprobs(): torch log_softmax (golden) and a naive long-double recomputation.
//   * StopMatcher: per-step output against a naive reference, over random texts and splits.
//   * Detokenizer: the mor-trained byte-level tokenizer fixture on multi-byte text.
#include "mor/engine/sampling.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <set>
#include <sstream>

#include "error_testing.h"
#include "mor/core/error.h"
#include "mor/io/tokenizer.h"

#ifndef MOR_SOURCE_DIR
#define MOR_SOURCE_DIR "."
#endif

namespace mor::engine {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using mor::testing::error_of;
using mor::testing::expect_error;
using mor::testing::kNoError;

__extension__ typedef unsigned __int128 Uint128;
constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
const fs::path kSource = fs::path(MOR_SOURCE_DIR);

SamplingParams params_with(double temperature, int64_t top_k, double top_p) {
  SamplingParams p;
  p.temperature = temperature;
  p.top_k = top_k;
  p.top_p = top_p;
  return p;
}

std::vector<float> random_logits(size_t n, uint64_t seed, double scale) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> normal(0.0, scale);
  std::vector<float> out(n);
  for (auto& x : out) x = static_cast<float>(normal(gen));
  return out;
}

// ---------------------------------------------------------------------------------------------
// The documented algorithm, written independently: full stable sorts, long double arithmetic.
struct ReferenceDraw {
  int32_t token = 0;
  long double margin = 0;  // distance of u from the nearest CDF boundary (ambiguous when tiny)
};

// Kept tokens (descending probability, ties by lower id) with renormalized probabilities.
std::vector<std::pair<int32_t, long double>> reference_distribution(const std::vector<float>& logits,
                                                                    const SamplingParams& p) {
  std::vector<int32_t> ids;
  for (int32_t i = 0; i < static_cast<int32_t>(logits.size()); ++i) {
    if (std::isfinite(logits[i])) ids.push_back(i);
  }
  std::stable_sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  if (p.top_k > 0 && static_cast<size_t>(p.top_k) < ids.size()) ids.resize(p.top_k);
  long double max_z = -INFINITY;
  for (int32_t id : ids) max_z = std::max(max_z, logits[id] / static_cast<long double>(p.temperature));
  std::vector<std::pair<int32_t, long double>> dist;
  long double total = 0;
  for (int32_t id : ids) {
    long double w = std::exp(logits[id] / static_cast<long double>(p.temperature) - max_z);
    dist.emplace_back(id, w);
    total += w;
  }
  for (auto& [id, w] : dist) w /= total;
  std::stable_sort(dist.begin(), dist.end(), [](const auto& a, const auto& b) {
    return a.second > b.second || (a.second == b.second && a.first < b.first);
  });
  if (p.top_p < 1.0) {
    long double cum = 0;
    size_t n = 0;
    while (n < dist.size() && cum < static_cast<long double>(p.top_p) - 1e-12L) cum += dist[n++].second;
    dist.resize(std::max<size_t>(n, 1));
    for (auto& [id, w] : dist) w /= cum;
  }
  return dist;
}

ReferenceDraw reference_draw(const std::vector<std::pair<int32_t, long double>>& dist, double u) {
  long double cum = 0;
  ReferenceDraw out{dist.back().first, 1};
  bool found = false;
  for (const auto& [id, prob] : dist) {
    long double next = cum + prob;
    out.margin = std::min({out.margin, std::fabs(u - cum), std::fabs(u - next)});
    if (!found && u < next) {
      out.token = id;
      found = true;
    }
    cum = next;
  }
  return out;
}

json load_golden() {
  std::ifstream in(kSource / "tests" / "fixtures" / "engine" / "sampling_golden.json");
  EXPECT_TRUE(in.good()) << "missing sampling_golden.json (run tools/gen_sampling_golden.py)";
  return json::parse(in);
}

float golden_float(const json& v) {
  if (v.is_number()) return v.get<float>();
  const std::string s = v.get<std::string>();
  if (s == "nan") return kNaN;
  return s == "inf" ? kInf : -kInf;
}

std::vector<float> golden_floats(const json& array) {
  std::vector<float> out;
  for (const auto& v : array) out.push_back(golden_float(v));
  return out;
}

// ---------------------------------------------------------------------------------------------
TEST(SamplingValidate, AcceptsDefaultsAndBounds) {
  EXPECT_EQ(error_of([] { validate(SamplingParams{}); }), kNoError);
  SamplingParams p;
  p.temperature = 0.0;
  p.top_p = 1.0;
  p.top_k = 0;
  p.max_tokens = 0;
  p.logprobs = 20;
  p.stop = {"a", "bb", "\n", "###"};
  EXPECT_EQ(error_of([&] { validate(p); }), kNoError);
  p.temperature = 2.0;
  p.top_p = 1e-9;
  p.top_k = 100000;
  EXPECT_EQ(error_of([&] { validate(p); }), kNoError);
}

TEST(SamplingValidate, ErrorsNameTheFieldAndValue) {
  struct Case {
    std::function<void(SamplingParams&)> mutate;
    std::string message;
  };
  const std::vector<Case> cases = {
      {[](SamplingParams& p) { p.temperature = 3.0; }, "temperature: must be in [0, 2], got 3"},
      {[](SamplingParams& p) { p.temperature = -0.5; }, "temperature: must be in [0, 2], got -0.5"},
      {[](SamplingParams& p) { p.temperature = std::nan(""); }, "temperature: must be in [0, 2], got nan"},
      {[](SamplingParams& p) { p.top_p = 0.0; }, "top_p: must be in (0, 1], got 0"},
      {[](SamplingParams& p) { p.top_p = 1.5; }, "top_p: must be in (0, 1], got 1.5"},
      {[](SamplingParams& p) { p.top_k = -1; }, "top_k: must be >= 0 (0 disables it), got -1"},
      {[](SamplingParams& p) { p.max_tokens = -2; }, "max_tokens: must be >= 0, got -2"},
      {[](SamplingParams& p) { p.logprobs = 21; }, "logprobs: must be in [0, 20], got 21"},
      {[](SamplingParams& p) { p.logprobs = -1; }, "logprobs: must be in [0, 20], got -1"},
      {[](SamplingParams& p) { p.stop = {"a", "b", "c", "d", "e"}; }, "stop: at most 4 strings, got 5"},
      {[](SamplingParams& p) { p.stop = {"a", ""}; }, "stop: strings must not be empty, got \"\" at index 1"},
  };
  for (const auto& c : cases) {
    SamplingParams p;
    c.mutate(p);
    EXPECT_EQ(expect_error([&] { validate(p); }), c.message);
  }
}

TEST(SamplingValidate, SamplerAndStopMatcherRejectBadInput) {
  EXPECT_EQ(expect_error([] { Sampler(params_with(2.5, 0, 1.0), 1); }),
            "temperature: must be in [0, 2], got 2.5");
  EXPECT_NE(expect_error([] { StopMatcher({"x", ""}); }).find("stop:"), std::string::npos);
  Sampler sampler(SamplingParams{}, 1);
  EXPECT_NE(expect_error([&] { sampler.sample({}); }).find("empty logits"), std::string::npos);
}

// ---------------------------------------------------------------------------------------------
TEST(SamplingGreedy, ArgmaxWithTiesToLowestId) {
  Sampler greedy(params_with(0.0, 0, 1.0), 7);
  std::vector<float> logits = {0.1f, 3.0f, -2.0f, 3.0f, 2.9f};
  for (int i = 0; i < 5; ++i) EXPECT_EQ(greedy.sample(logits), 1);
  logits = {5.0f, 5.0f, 5.0f};
  EXPECT_EQ(greedy.sample(logits), 0);
  logits = {-1.0f, -0.5f, -0.5f, -7.0f};
  EXPECT_EQ(greedy.sample(logits), 1);
  // top-k / top-p never remove the argmax.
  Sampler greedy_filtered(params_with(0.0, 1, 0.1), 7);
  EXPECT_EQ(greedy_filtered.sample(std::vector<float>{1.0f, 4.0f, 4.0f, 2.0f}), 1);
}

TEST(SamplingGreedy, NonFiniteLogitsAreNeverChosen) {
  Sampler greedy(params_with(0.0, 0, 1.0), 7);
  EXPECT_EQ(greedy.sample(std::vector<float>{kNaN, -kInf, 1.0f, kNaN, 2.0f}), 4);
  EXPECT_EQ(greedy.sample(std::vector<float>{kInf, -3.0f, kNaN}), 1);
  // Nothing finite: the lowest id, for greedy and for sampling alike.
  EXPECT_EQ(greedy.sample(std::vector<float>{-kInf, kNaN, -kInf}), 0);
  Sampler sampler(params_with(1.0, 0, 0.9), 7);
  EXPECT_EQ(sampler.sample(std::vector<float>{kNaN, -kInf, kInf}), 0);
  for (int i = 0; i < 500; ++i) {
    int32_t t = sampler.sample(std::vector<float>{-kInf, 0.0f, kNaN, 0.5f, kInf, -kInf});
    EXPECT_TRUE(t == 1 || t == 3) << t;
  }
}

// ---------------------------------------------------------------------------------------------
TEST(SamplingSampler, SameSeedSameSequenceDifferentSeedsDiffer) {
  const auto logits = random_logits(1000, 3, 1.5);
  auto run = [&](uint64_t seed, const SamplingParams& p) {
    Sampler sampler(p, seed);
    std::vector<int32_t> out;
    for (int i = 0; i < 200; ++i) out.push_back(sampler.sample(logits));
    return out;
  };
  for (const auto& p : {params_with(1.0, 0, 1.0), params_with(0.8, 40, 0.95)}) {
    EXPECT_EQ(run(42, p), run(42, p));
    EXPECT_NE(run(42, p), run(43, p));
    auto seq = run(42, p);
    EXPECT_GT(std::set<int32_t>(seq.begin(), seq.end()).size(), 5u);  // it does sample
  }
}

// Every draw equals the independent implementation fed the same u (ambiguous u skipped).
TEST(SamplingSampler, MatchesReferenceDrawByDraw) {
  struct Case {
    size_t vocab;
    double scale;
    SamplingParams params;
  };
  const std::vector<Case> cases = {
      {6, 1.0, params_with(1.0, 0, 1.0)},        {6, 1.0, params_with(0.5, 3, 1.0)},
      {50, 2.0, params_with(1.3, 0, 0.7)},       {50, 2.0, params_with(0.9, 10, 0.9)},
      {1000, 3.0, params_with(0.01, 0, 1.0)},    {1000, 1.0, params_with(2.0, 0, 0.99)},
      {49152, 3.0, params_with(1.0, 0, 1.0)},    {49152, 3.0, params_with(0.7, 50, 1.0)},
      {49152, 3.0, params_with(1.0, 0, 0.9)},    {49152, 3.0, params_with(0.8, 200, 0.95)},
      {49152, 0.2, params_with(1.0, 0, 0.5)},    {49152, 2.0, params_with(1.0, 1, 1.0)},
  };
  uint64_t seed = 1000;
  for (const auto& c : cases) {
    SCOPED_TRACE(::testing::Message() << "vocab " << c.vocab << " T " << c.params.temperature << " k "
                                    << c.params.top_k << " p " << c.params.top_p);
    const auto logits = random_logits(c.vocab, seed, c.scale);
    const auto dist = reference_distribution(logits, c.params);
    Sampler sampler(c.params, seed);
    std::mt19937_64 rng(seed);
    int compared = 0;
    const int draws = c.vocab > 1000 ? 200 : 2000;
    for (int i = 0; i < draws; ++i) {
      const double u = static_cast<double>(rng() >> 11) * 0x1.0p-53;
      const int32_t got = sampler.sample(logits);
      const ReferenceDraw want = reference_draw(dist, u);
      if (want.margin < 1e-9L) continue;
      ++compared;
      ASSERT_EQ(got, want.token) << "draw " << i << " u " << u;
    }
    EXPECT_GT(compared, draws * 9 / 10);
    ++seed;
  }
}

// Equal logits put every candidate in one mass bucket (the selection's worst case) and make the
// order the id order: draw k of n lands on id floor(u * kept).
TEST(SamplingSampler, EqualLogitsOnALargeVocabulary) {
  const std::vector<float> logits(40000, 0.25f);
  for (double top_p : {1.0, 0.5, 0.001}) {
    const auto kept = static_cast<uint64_t>(std::ceil(top_p * 40000));
    Sampler sampler(params_with(1.0, 0, top_p), 8);
    std::mt19937_64 rng(8);
    for (int i = 0; i < 100; ++i) {
      const uint64_t u53 = rng() >> 11;
      const auto want = static_cast<int32_t>((static_cast<Uint128>(u53) * kept) >> 53);
      ASSERT_EQ(sampler.sample(logits), want) << "top_p " << top_p << " draw " << i;
    }
  }
}

// Every non-greedy call consumes one draw, also when nothing is finite or one token is left.
TEST(SamplingSampler, OneDrawPerCall) {
  const auto logits = random_logits(300, 4, 1.0);
  Sampler a(params_with(1.0, 0, 1.0), 12), b(params_with(1.0, 0, 1.0), 12);
  a.sample(std::vector<float>{-kInf, kNaN});
  b.sample(std::vector<float>{1.0f});
  std::vector<int32_t> sa, sb;
  for (int i = 0; i < 50; ++i) {
    sa.push_back(a.sample(logits));
    sb.push_back(b.sample(logits));
  }
  EXPECT_EQ(sa, sb);
  Sampler skipped(params_with(1.0, 0, 1.0), 12);  // without the first call: shifted by one draw
  std::vector<int32_t> sc;
  for (int i = 0; i < 50; ++i) sc.push_back(skipped.sample(logits));
  EXPECT_NE(sc, sa);
  EXPECT_TRUE(std::equal(sa.begin(), sa.end() - 1, sc.begin() + 1));
}

// 20000 draws per case against numpy's filtered softmax: zero-probability tokens never appear,
// every bin within 5 standard deviations (+0.001), and a chi-square statistic far below failure.
TEST(SamplingSampler, EmpiricalDistributionMatchesGolden) {
  const json golden = load_golden();
  ASSERT_GE(golden["filters"].size(), 10u);
  constexpr int kDraws = 20000;
  uint64_t seed = 77;
  for (const auto& c : golden["filters"]) {
    const auto logits = golden_floats(c["logits"]);
    const auto probs = c["probs"].get<std::vector<double>>();
    const auto params = params_with(c["temperature"].get<double>(), c["top_k"].get<int64_t>(),
                                    c["top_p"].get<double>());
    SCOPED_TRACE(::testing::Message() << "case " << c.dump());
    Sampler sampler(params, seed++);
    std::vector<int> counts(logits.size(), 0);
    for (int i = 0; i < kDraws; ++i) {
      const int32_t t = sampler.sample(logits);
      ASSERT_TRUE(t >= 0 && t < static_cast<int32_t>(logits.size()));
      ++counts[t];
    }
    double chi2 = 0.0;
    int bins = 0;
    for (size_t i = 0; i < probs.size(); ++i) {
      const double p = probs[i];
      const double f = static_cast<double>(counts[i]) / kDraws;
      if (p == 0.0) {
        EXPECT_EQ(counts[i], 0) << "token " << i << " is outside top-k / the nucleus";
        continue;
      }
      EXPECT_NEAR(f, p, 5.0 * std::sqrt(p * (1.0 - p) / kDraws) + 1e-3) << "token " << i;
      chi2 += std::pow(counts[i] - p * kDraws, 2) / (p * kDraws);
      ++bins;
    }
    // df = bins - 1 <= 31; the 1e-6 upper quantile for df = 31 is about 80.
    EXPECT_LT(chi2, 4.0 * std::max(bins - 1, 1) + 20.0) << "bins " << bins;
  }
}

TEST(SamplingSampler, TokensOutsideTopKNeverAppear) {
  const auto logits = random_logits(49152, 11, 2.0);
  std::vector<int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  for (int64_t k : {1, 5, 50}) {
    const std::set<int32_t> allowed(order.begin(), order.begin() + k);
    Sampler sampler(params_with(2.0, k, 1.0), 5);  // high temperature: the tail would show up
    std::set<int32_t> seen;
    for (int i = 0; i < 2000; ++i) {
      int32_t t = sampler.sample(logits);
      ASSERT_TRUE(allowed.count(t)) << "k " << k << " token " << t;
      seen.insert(t);
    }
    EXPECT_EQ(seen.size(), static_cast<size_t>(k));  // and all of top-k does
  }
  // Ties at the top-k boundary keep the lower ids.
  Sampler sampler(params_with(1.0, 2, 1.0), 5);
  std::set<int32_t> seen;
  for (int i = 0; i < 2000; ++i) seen.insert(sampler.sample(std::vector<float>{1.0f, 2.0f, 2.0f, 2.0f}));
  EXPECT_EQ(seen, (std::set<int32_t>{1, 2}));
}

// Equal logits give exact probabilities 1/n: the nucleus is the ceil(top_p * n) lowest ids, also
// when the cumulative mass reaches top_p exactly (computed exactly here, in integers).
TEST(SamplingSampler, TopPBoundaryWithExactMass) {
  struct Case {
    int n;
    double top_p;
    int kept;
  };
  const std::vector<Case> cases = {{4, 0.5, 2},  {4, 0.75, 3},      {4, 0.5000001, 3}, {4, 0.4999999, 2},
                                   {4, 0.25, 1}, {4, 1e-6, 1},      {10, 0.8, 8},      {10, 0.3, 3},
                                   {10, 0.7, 7}, {10, 0.30001, 4},  {5, 0.6, 3},       {8, 0.375, 3}};
  for (const auto& c : cases) {
    SCOPED_TRACE(::testing::Message() << "n " << c.n << " top_p " << c.top_p);
    Sampler sampler(params_with(1.0, 0, c.top_p), 99);
    const std::vector<float> logits(c.n, 0.75f);
    std::set<int32_t> seen;
    for (int i = 0; i < 400 * c.n; ++i) seen.insert(sampler.sample(logits));
    std::set<int32_t> want;
    for (int i = 0; i < c.kept; ++i) want.insert(i);
    EXPECT_EQ(seen, want);
  }
}

TEST(SamplingSampler, TemperatureExtremes) {
  // A tiny temperature behaves like greedy; the maximum may not overflow.
  const std::vector<float> logits = {1.0f, 1.0001f, -3e38f, 3e38f, 2.9e38f};
  Sampler cold(params_with(1e-300, 0, 1.0), 3);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(cold.sample(logits), 3);
  Sampler hot(params_with(2.0, 0, 1.0), 3);
  std::set<int32_t> seen;
  for (int i = 0; i < 100; ++i) seen.insert(hot.sample(logits));
  EXPECT_EQ(seen, std::set<int32_t>{3});  // exp(-1e37) is 0: the huge gap wins at any temperature
}

// ---------------------------------------------------------------------------------------------
TEST(SamplingLogprobs, MatchTorchLogSoftmax) {
  const json golden = load_golden();
  ASSERT_GE(golden["logprobs"].size(), 5u);
  for (const auto& c : golden["logprobs"]) {
    const auto logits = golden_floats(c["logits"]);
    const auto want = golden_floats(c["log_softmax"]);
    SCOPED_TRACE(::testing::Message() << "logits " << c["logits"].dump());
    for (int32_t t = 0; t < static_cast<int32_t>(logits.size()); ++t) {
      const TokenLogprobs got = token_logprobs(logits, t, 0);
      EXPECT_TRUE(got.top.empty());
      if (std::isinf(want[t])) {
        EXPECT_EQ(got.logprob, -kInf) << t;
      } else {
        EXPECT_NEAR(got.logprob, want[t], 1e-6 * std::max(1.0f, std::fabs(want[t]))) << t;
      }
    }
    // top 5 alternatives: descending, ties by the lower id, finite ones only.
    std::vector<int32_t> ids;
    for (int32_t i = 0; i < static_cast<int32_t>(want.size()); ++i) {
      if (!std::isinf(want[i])) ids.push_back(i);
    }
    std::stable_sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) { return want[a] > want[b]; });
    ids.resize(std::min<size_t>(ids.size(), 5));
    const TokenLogprobs got = token_logprobs(logits, 0, 5);
    ASSERT_EQ(got.top.size(), ids.size());
    for (size_t i = 0; i < ids.size(); ++i) {
      EXPECT_EQ(got.top[i].first, ids[i]) << i;
      EXPECT_NEAR(got.top[i].second, want[ids[i]], 1e-6 * std::max(1.0f, std::fabs(want[ids[i]])));
    }
  }
}

TEST(SamplingLogprobs, LargeVocabularyMatchesLongDouble) {
  const auto logits = random_logits(49152, 21, 4.0);
  long double sum = 0;
  for (float x : logits) sum += std::exp(static_cast<long double>(x));
  const long double log_z = std::log(sum);
  std::vector<int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  for (int32_t token : {0, 1, 12345, 49151, order[0], order[49151]}) {
    const TokenLogprobs got = token_logprobs(logits, token, 20);
    const long double want = logits[token] - log_z;
    EXPECT_NEAR(got.logprob, static_cast<double>(want), 1e-5 * std::max(1.0L, std::fabs(want)));
    ASSERT_EQ(got.top.size(), 20u);
    for (size_t i = 0; i < 20; ++i) {
      EXPECT_EQ(got.top[i].first, order[i]);
      EXPECT_NEAR(got.top[i].second, static_cast<double>(logits[order[i]] - log_z), 1e-5);
    }
  }
}

TEST(SamplingLogprobs, TiesNonFiniteAndErrors) {
  const std::vector<float> logits = {0.0f, 1.0f, -kInf, 1.0f, kNaN, 0.0f};
  const TokenLogprobs got = token_logprobs(logits, 2, 10);
  EXPECT_EQ(got.logprob, -kInf);
  ASSERT_EQ(got.top.size(), 4u);  // the four finite tokens only
  EXPECT_EQ(got.top[0].first, 1);
  EXPECT_EQ(got.top[1].first, 3);
  EXPECT_EQ(got.top[2].first, 0);
  EXPECT_EQ(got.top[3].first, 5);
  const double log_z = std::log(2.0 + 2.0 * std::exp(1.0));
  EXPECT_NEAR(got.top[0].second, 1.0 - log_z, 1e-7);
  EXPECT_NEAR(got.top[2].second, -log_z, 1e-7);
  EXPECT_EQ(token_logprobs(logits, 4, 0).logprob, -kInf);
  // Nothing finite: -inf everywhere, no alternatives.
  const TokenLogprobs none = token_logprobs(std::vector<float>{-kInf, kNaN}, 0, 3);
  EXPECT_EQ(none.logprob, -kInf);
  EXPECT_TRUE(none.top.empty());
  // Huge logits do not overflow (max-subtracted).
  EXPECT_NEAR(token_logprobs(std::vector<float>{3e38f, 3e38f}, 1, 0).logprob, -std::log(2.0), 1e-7);
  EXPECT_NE(expect_error([&] { token_logprobs(logits, 6, 1); }).find("out of range"), std::string::npos);
  EXPECT_NE(expect_error([&] { token_logprobs(logits, -1, 1); }).find("out of range"), std::string::npos);
  EXPECT_NE(expect_error([&] { token_logprobs(logits, 0, -1); }).find("top_n"), std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// Naive reference: the text released after `text` arrived, and whether a stop has completed.
std::pair<std::string, bool> reference_released(const std::string& text,
                                                const std::vector<std::string>& stops) {
  for (size_t end = 1; end <= text.size(); ++end) {
    size_t best = std::string::npos;
    for (const auto& s : stops) {
      if (s.size() <= end && text.compare(end - s.size(), s.size(), s) == 0) {
        best = std::min(best, end - s.size());
      }
    }
    if (best != std::string::npos) return {text.substr(0, best), true};
  }
  size_t hold = 0;
  for (const auto& s : stops) {
    for (size_t len = 1; len < s.size() && len <= text.size(); ++len) {
      if (text.compare(text.size() - len, len, s, 0, len) == 0) hold = std::max(hold, len);
    }
  }
  return {text.substr(0, text.size() - hold), false};
}

std::string feed_all(StopMatcher& m, const std::vector<std::string>& pieces) {
  std::string out;
  for (const auto& p : pieces) out += m.feed(p);
  return out;
}

std::vector<std::string> chars_of(const std::string& s) {
  std::vector<std::string> out;
  for (char c : s) out.emplace_back(1, c);
  return out;
}

TEST(SamplingStop, NoStopsPassesThrough) {
  StopMatcher m({});
  EXPECT_EQ(m.feed("hello"), "hello");
  EXPECT_EQ(m.feed(""), "");
  EXPECT_EQ(m.feed(" world"), " world");
  EXPECT_EQ(m.flush(), "");
  EXPECT_FALSE(m.stopped());
}

TEST(SamplingStop, StopInsideOnePiece) {
  StopMatcher m({"STOP"});
  EXPECT_EQ(m.feed("Hello STOP world"), "Hello ");
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(m.feed("more STOP"), "");
  EXPECT_EQ(m.flush(), "");
  StopMatcher at_start({"\n\n"});
  EXPECT_EQ(at_start.feed("\n\nanswer"), "");
  EXPECT_TRUE(at_start.stopped());
}

TEST(SamplingStop, StopSpanningManyPieces) {
  StopMatcher m({"<|end|>"});
  std::string out;
  for (const auto& piece : chars_of("answer: 42<|end|> trailing")) {
    out += m.feed(piece);
    EXPECT_LE(out.size(), std::string("answer: 42").size());
  }
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(out + m.flush(), "answer: 42");
  StopMatcher split({"<|end|>"});
  EXPECT_EQ(split.feed("x <|e"), "x ");
  EXPECT_EQ(split.feed("n"), "");
  EXPECT_EQ(split.feed("d|"), "");
  EXPECT_FALSE(split.stopped());
  EXPECT_EQ(split.feed(">y"), "");
  EXPECT_TRUE(split.stopped());
}

TEST(SamplingStop, HeldPrefixReleasedWhenNotAStop) {
  StopMatcher m({"abc"});
  EXPECT_EQ(m.feed("xa"), "x");
  EXPECT_EQ(m.feed("b"), "");
  EXPECT_EQ(m.feed("d"), "abd");
  EXPECT_EQ(m.feed("ab"), "");
  EXPECT_EQ(m.feed("ab"), "ab");  // "abab": the first "ab" can no longer start "abc"
  EXPECT_EQ(m.flush(), "ab");
  EXPECT_FALSE(m.stopped());
  StopMatcher repeat({"aab"});
  EXPECT_EQ(repeat.feed("aa"), "");
  EXPECT_EQ(repeat.feed("a"), "a");
  EXPECT_EQ(repeat.feed("b!"), "");
  EXPECT_TRUE(repeat.stopped());
}

TEST(SamplingStop, FirstCompletedStopWinsRegardlessOfSplitting) {
  // "lo w" completes before "world"; "bc" completes before "abcd" although "abcd" starts first.
  for (const auto& split : {std::vector<std::string>{"hello world"}, chars_of("hello world")}) {
    StopMatcher m({"world", "lo w"});
    EXPECT_EQ(feed_all(m, split), "hel");
  }
  for (const auto& split : {std::vector<std::string>{"abcd"}, std::vector<std::string>{"abc", "d"}}) {
    StopMatcher m({"abcd", "bc"});
    EXPECT_EQ(feed_all(m, split), "a");
  }
  // Same end: the longer (earlier) one.
  StopMatcher same_end({"c", "abc"});
  EXPECT_EQ(same_end.feed("xxabc"), "xx");
}

TEST(SamplingStop, RandomTextsAndSplitsMatchReference) {
  std::mt19937_64 gen(5);
  const std::string alphabet = "ab c";
  auto random_string = [&](size_t lo, size_t hi) {
    std::string s(std::uniform_int_distribution<size_t>(lo, hi)(gen), ' ');
    for (auto& ch : s) ch = alphabet[std::uniform_int_distribution<size_t>(0, alphabet.size() - 1)(gen)];
    return s;
  };
  int stopped_cases = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    std::vector<std::string> stops(std::uniform_int_distribution<int>(1, 4)(gen));
    for (auto& s : stops) s = random_string(1, 4);
    const std::string text = random_string(0, 24);
    StopMatcher m(stops);
    std::string released, seen;
    size_t pos = 0;
    while (pos < text.size()) {
      size_t len = std::uniform_int_distribution<size_t>(0, 5)(gen);
      len = std::min(len, text.size() - pos);
      seen += text.substr(pos, len);
      released += m.feed(std::string_view(text).substr(pos, len));
      pos += len;
      const auto [want, want_stopped] = reference_released(seen, stops);
      ASSERT_EQ(released, want) << "text so far '" << seen << "' trial " << trial;
      ASSERT_EQ(m.stopped(), want_stopped);
    }
    const auto [want, want_stopped] = reference_released(text, stops);
    released += m.flush();
    EXPECT_EQ(released, want_stopped ? want : text);
    stopped_cases += want_stopped;
  }
  EXPECT_GT(stopped_cases, 500);
}

// ---------------------------------------------------------------------------------------------
// Structural UTF-8 check: every lead byte followed by its continuation bytes, nothing cut off.
bool utf8_complete(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    auto b = static_cast<unsigned char>(s[i]);
    size_t n = b < 0x80 ? 1 : (b & 0xE0) == 0xC0 ? 2 : (b & 0xF0) == 0xE0 ? 3 : (b & 0xF8) == 0xF0 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t j = 1; j < n; ++j) {
      if ((static_cast<unsigned char>(s[i + j]) & 0xC0) != 0x80) return false;
    }
    i += n;
  }
  return true;
}

// Where `s` stops being releasable: the start of a trailing lead byte (in the last three bytes)
// that expects more continuation bytes than follow it, else s.size().
size_t complete_length(const std::string& s) {
  for (size_t k = 1; k <= 3 && k <= s.size(); ++k) {
    auto b = static_cast<unsigned char>(s[s.size() - k]);
    if ((b & 0xC0) == 0x80) continue;
    size_t want = (b & 0xE0) == 0xC0 ? 2 : (b & 0xF0) == 0xE0 ? 3 : (b & 0xF8) == 0xF0 ? 4 : 1;
    return want > k ? s.size() - k : s.size();
  }
  return s.size();
}

class SamplingDetokenizer : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tokenizer_ = new io::Tokenizer(io::Tokenizer::from_file(
        (kSource / "tests" / "fixtures" / "tokenizer" / "mor-trained" / "bytelevel.json").string()));
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    tokenizer_ = nullptr;
  }
  // Streams `ids`: after every push() the text released so far is decode(ids so far) without an
  // incomplete trailing character (nothing cut, nothing held longer than needed); when the text is
  // valid UTF-8 every push() output is too; flush() completes decode(ids).
  static void check_stream(const std::vector<int32_t>& ids, bool skip_special, int* held = nullptr) {
    const std::string want = tokenizer_->decode(ids, skip_special);
    const bool valid = utf8_complete(want);
    Detokenizer detok(*tokenizer_, skip_special);
    std::string out;
    for (size_t i = 0; i < ids.size(); ++i) {
      std::string piece = detok.push(ids[i]);
      if (valid) {
        EXPECT_TRUE(utf8_complete(piece)) << "push(" << ids[i] << ") returned invalid UTF-8";
      }
      if (piece.empty() && held) ++*held;
      out += piece;
      const std::string so_far =
          tokenizer_->decode(std::span<const int32_t>(ids.data(), i + 1), skip_special);
      ASSERT_EQ(out, so_far.substr(0, complete_length(so_far))) << "after token " << i;
    }
    out += detok.flush();
    EXPECT_EQ(out, want);
  }
  static io::Tokenizer* tokenizer_;
};
io::Tokenizer* SamplingDetokenizer::tokenizer_ = nullptr;

TEST_F(SamplingDetokenizer, MultiByteTextNeverSplitsCharacters) {
  ASSERT_EQ(tokenizer_->vocab_size(), 600);
  const std::string text = "naïve café 東京 🙂 Привет 👩‍💻 🇩🇪 λx. ∀ε>0";
  const auto ids = tokenizer_->encode(text);
  ASSERT_EQ(tokenizer_->decode(ids), text);
  // The case is meaningful only if some tokens carry partial characters.
  int partial = 0;
  for (int32_t id : ids) partial += !utf8_complete(tokenizer_->decode(std::vector<int32_t>{id}));
  ASSERT_GT(partial, 5);
  int held = 0;
  check_stream(ids, true, &held);
  EXPECT_GT(held, 0);
  Detokenizer detok(*tokenizer_);
  std::string out;
  for (int32_t id : ids) out += detok.push(id);
  EXPECT_EQ(detok.flush(), "");  // valid text: nothing left at the end
  EXPECT_EQ(out, text);
}

TEST_F(SamplingDetokenizer, FixtureTextsStreamLikeDecode) {
  std::ifstream in(kSource / "tests" / "fixtures" / "tokenizer" / "mor-trained" / "texts.txt");
  std::stringstream all;
  all << in.rdbuf();
  ASSERT_GT(all.str().size(), 1000u);
  const auto ids = tokenizer_->encode(all.str());
  check_stream(ids, true);
  check_stream(ids, false);
  std::istringstream lines(all.str());
  std::string line;
  while (std::getline(lines, line)) check_stream(tokenizer_->encode(line), true);
}

TEST_F(SamplingDetokenizer, SpecialTokensSkippedOnRequest) {
  const auto eos = tokenizer_->eos_id();
  ASSERT_TRUE(eos.has_value());
  std::vector<int32_t> ids = tokenizer_->encode("東");
  ids.insert(ids.begin() + 1, *eos);  // a special token inside a character's bytes
  ids.push_back(*eos);
  auto text = tokenizer_->encode(" done");
  ids.insert(ids.end(), text.begin(), text.end());
  check_stream(ids, true);
  check_stream(ids, false);
  Detokenizer skip(*tokenizer_, true), keep(*tokenizer_, false);
  std::string skipped, kept;
  for (int32_t id : ids) {
    skipped += skip.push(id);
    kept += keep.push(id);
  }
  skipped += skip.flush();
  kept += keep.flush();
  EXPECT_EQ(skipped.find("<|endoftext|>"), std::string::npos);
  EXPECT_NE(kept.find("<|endoftext|>"), std::string::npos);
  EXPECT_EQ(skipped, "東 done");
  EXPECT_FALSE(utf8_complete(kept));  // "<|endoftext|>" sits inside the bytes of 東: emitted as is
}

TEST_F(SamplingDetokenizer, IncompleteAndStrayBytes) {
  // An incomplete character is held, then released as is by flush().
  const std::string east = "東";
  const auto ids = tokenizer_->encode(east);
  ASSERT_GE(ids.size(), 2u);
  Detokenizer detok(*tokenizer_);
  EXPECT_EQ(detok.push(ids[0]), "");
  EXPECT_EQ(detok.flush(), tokenizer_->decode(std::vector<int32_t>{ids[0]}));
  // A lead byte followed by ASCII is no character: released once the ASCII arrives.
  Detokenizer broken(*tokenizer_);
  EXPECT_EQ(broken.push(ids[0]), "");
  const std::string after = broken.push(tokenizer_->encode("a")[0]);
  EXPECT_EQ(after, tokenizer_->decode(std::vector<int32_t>{ids[0]}) + "a");
  // A stray continuation byte is released at once.
  const auto stray = tokenizer_->encode(std::string("\x80", 1));
  ASSERT_EQ(stray.size(), 1u);
  Detokenizer cont(*tokenizer_);
  EXPECT_EQ(cont.push(stray[0]), std::string("\x80", 1));
  EXPECT_EQ(cont.flush(), "");
  // Out-of-range ids are the tokenizer's error.
  Detokenizer bad(*tokenizer_);
  EXPECT_NE(error_of([&] { bad.push(600); }), kNoError);
}

}  // namespace
}  // namespace mor::engine
