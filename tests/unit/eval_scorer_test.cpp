// ModelScorer against an independent float64 computation (one unpadded sequence per forward,
// log-softmax in double), and batch invariance: the same numbers at every batch size, for vanilla,
// expert-choice (recursion-wise and shared KV), token-choice, causal and top-k routing. "The same"
// means the same decisions (is_greedy, hence every metric) and log-likelihoods equal to float32
// rounding: padding a sequence to another length changes the order in which attention sums.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <random>
#include <set>

#include "mor/eval/scorer.h"
#include "mor/model/model.h"
#include "support/test_helpers.h"

namespace mor::eval {
namespace {

using config::RoutingMode;

std::vector<TokenizedRequest> random_requests(int64_t n, int64_t vocab, int64_t max_ctx, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<TokenizedRequest> out;
  for (int64_t i = 0; i < n; ++i) {
    TokenizedRequest r;
    const int64_t c = 1 + static_cast<int64_t>(rng() % static_cast<uint64_t>(max_ctx));
    const int64_t k = 1 + static_cast<int64_t>(rng() % 5);
    for (int64_t j = 0; j < c; ++j) r.context.push_back(static_cast<int32_t>(rng() % static_cast<uint64_t>(vocab)));
    for (int64_t j = 0; j < k; ++j) r.continuation.push_back(static_cast<int32_t>(rng() % static_cast<uint64_t>(vocab)));
    out.push_back(std::move(r));
  }
  // A few requests share a context (multiple choice) and one is an exact duplicate.
  out.push_back({out[0].context, {3}});
  out.push_back({out[0].context, {7}});     // same input as the one before: one shared forward
  out.push_back({out[0].context, {4, 5}});
  std::vector<int32_t> longer = out[0].context;
  longer.push_back(4);
  out.push_back({longer, {5}});             // same input as {ctx, [4, 5]}, split differently
  out.push_back(out[1]);
  return out;
}

// The harness's arithmetic, computed independently: input = (ctx + cont)[-(max + 1):][:-1], the
// last len(cont) logits score the continuation; float64 log-softmax.
LoglikelihoodResult reference(const model::MoRModel& m, const TokenizedRequest& r, int64_t max_length,
                              RoutingMode routing) {
  std::vector<int64_t> whole(r.context.begin(), r.context.end());
  whole.insert(whole.end(), r.continuation.begin(), r.continuation.end());
  if (static_cast<int64_t>(whole.size()) > max_length + 1) whole.erase(whole.begin(), whole.end() - (max_length + 1));
  const int64_t cont = std::min<int64_t>(static_cast<int64_t>(r.continuation.size()), static_cast<int64_t>(whole.size()) - 1);
  std::vector<int64_t> input(whole.begin(), whole.end() - 1);
  model::ForwardOptions fo;
  fo.routing = routing;
  const at::NoGradGuard no_grad;
  const at::Tensor logits = m.forward(at::tensor(input, at::kLong).view({1, -1}), fo).logits[0].to(at::kDouble);
  const at::Tensor logp = at::log_softmax(logits, -1);
  LoglikelihoodResult out;
  out.is_greedy = true;
  const int64_t len = static_cast<int64_t>(input.size());
  for (int64_t j = 0; j < cont; ++j) {
    const int64_t pos = len - cont + j;
    const int64_t target = whole[static_cast<size_t>(pos + 1)];
    out.ll += logp[pos][target].item<double>();
    if (logp[pos].argmax().item<int64_t>() != target) out.is_greedy = false;
  }
  return out;
}

struct Case {
  const char* name;
  config::ModelConfig model;
  RoutingMode routing;
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

std::vector<Case> cases() {
  using config::Sharing;
  auto ec = testing::expert_config(Sharing::kMiddleCycle, 3, 5);
  auto ec_share = ec;
  ec_share.kv_mode = config::KvMode::kShare;
  auto tc = testing::token_config(Sharing::kMiddleCycle, 3, 5);
  return {{"vanilla", testing::tiny_config(), RoutingMode::kCausal},
          {"expert_recursion_causal", ec, RoutingMode::kCausal},
          {"expert_share_causal", ec_share, RoutingMode::kCausal},
          {"expert_recursion_topk", ec, RoutingMode::kTopk},
          {"token_choice", tc, RoutingMode::kCausal}};
}

class ScorerTest : public ::testing::TestWithParam<Case> {};

TEST_P(ScorerTest, MatchesFloat64ReferenceAndIsBatchInvariant) {
  const Case& c = GetParam();
  auto cfg = c.model;
  cfg.init_std = 0.2;  // logits far from uniform
  model::MoRModel m(cfg);
  const auto requests = random_requests(23, cfg.vocab_size, 40, 7);
  if (cfg.router.kind != config::RouterKind::kNone) {
    const at::Tensor probe = testing::random_tokens(2, 40, cfg.vocab_size, 3);
    model::ForwardOptions fo;
    fo.routing = c.routing;
    testing::mix_routing_depth(m, probe, fo);
  }
  std::vector<std::vector<LoglikelihoodResult>> runs;
  int64_t histogram_total = 0;
  for (int64_t batch : {1, 3, 8, 100}) {
    ScorerOptions so;
    so.batch_size = batch;
    so.routing = c.routing;
    auto scorer = make_model_scorer(m, so);
    runs.push_back(scorer->score(requests, nullptr));
    if (batch == 1) {
      for (auto v : scorer->depth_histogram()) histogram_total += v;
    }
  }
  // Every distinct model input is forwarded once: identical inputs share a row.
  std::set<std::vector<int32_t>> inputs;
  for (const auto& r : requests) {
    std::vector<int32_t> in = r.context;
    in.insert(in.end(), r.continuation.begin(), r.continuation.end() - 1);
    inputs.insert(in);
  }
  int64_t expected_tokens = 0;
  for (const auto& in : inputs) expected_tokens += static_cast<int64_t>(in.size());
  EXPECT_LT(inputs.size(), requests.size());
  if (cfg.router.kind != config::RouterKind::kNone) EXPECT_EQ(histogram_total, expected_tokens);
  int64_t greedy = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    const LoglikelihoodResult ref = reference(m, requests[i], cfg.max_seq_len, c.routing);
    EXPECT_NEAR(runs[0][i].ll, ref.ll, 1e-4 * std::max(1.0, std::abs(ref.ll))) << c.name << " request " << i;
    EXPECT_EQ(runs[0][i].is_greedy, ref.is_greedy) << c.name << " request " << i;
    greedy += ref.is_greedy;
    for (size_t b = 1; b < runs.size(); ++b) {
      // Batch invariance: the same log-likelihoods at every batch size, up to float32 rounding
      // (attention sums over a padded length in another order; 1e-6 relative is ~10 ulps).
      EXPECT_NEAR(runs[b][i].ll, runs[0][i].ll, 1e-6 * std::max(1.0, std::abs(runs[0][i].ll)))
          << c.name << " request " << i << " batch run " << b;
      EXPECT_EQ(runs[b][i].is_greedy, runs[0][i].is_greedy) << c.name << " request " << i;
    }
  }
  // The duplicate request scores the same as its original.
  EXPECT_NEAR(runs[2].back().ll, runs[2][1].ll, 1e-6 * std::max(1.0, std::abs(runs[2][1].ll)));
  (void)greedy;
}

INSTANTIATE_TEST_SUITE_P(Models, ScorerTest, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<Case>& info) { return std::string(info.param.name); });

TEST(Scorer, LeftTruncatesLongRequestsAsTheHarness) {
  auto cfg = testing::tiny_config();
  cfg.init_std = 0.2;
  model::MoRModel m(cfg);
  auto requests = random_requests(5, cfg.vocab_size, 40, 11);
  requests[0].context.resize(60, 7);          // 60 + continuation > max_length 16
  requests[1].continuation.assign(20, 9);     // the continuation alone exceeds it: 16 targets scored
  ScorerOptions so;
  so.batch_size = 4;
  so.max_length = 16;
  auto scorer = make_model_scorer(m, so);
  EXPECT_EQ(scorer->max_length(), 16);
  const auto got = scorer->score(requests, nullptr);
  for (size_t i = 0; i < requests.size(); ++i) {
    const auto ref = reference(m, requests[i], 16, RoutingMode::kCausal);
    EXPECT_NEAR(got[i].ll, ref.ll, 1e-4 * std::max(1.0, std::abs(ref.ll))) << "request " << i;
  }
}

TEST(Scorer, RejectsEmptyRequestsAndBadBatchSize) {
  model::MoRModel m(testing::tiny_config());
  ScorerOptions so;
  so.batch_size = 0;
  EXPECT_TRUE(testing::throws_error_containing([&] { make_model_scorer(m, so); }, "--batch-size"));
  so.batch_size = 2;
  auto scorer = make_model_scorer(m, so);
  std::vector<TokenizedRequest> bad = {{{1, 2}, {}}};
  EXPECT_TRUE(testing::throws_error_containing([&] { scorer->score(bad, nullptr); }, "empty"));
}

}  // namespace
}  // namespace mor::eval
