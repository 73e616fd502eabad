// Metric aggregation against values the harness itself printed (lm_eval 0.4.13 api/metrics.py,
// DISABLE_MULTIPROC=1, run on these very inputs), and choice scoring against hand-worked cases.
#include <gtest/gtest.h>

#include <cmath>

#include "mor/eval/metrics.h"

namespace mor::eval {
namespace {

TEST(EvalMetrics, MeanAndStderrEqualTheHarness) {
  const std::vector<double> acc = {1, 0, 1, 1, 0, 0, 1, 1};
  EXPECT_DOUBLE_EQ(mean(acc), 0.625);
  EXPECT_DOUBLE_EQ(mean_stderr(acc), 0.18298126367784995);
  EXPECT_TRUE(std::isnan(mean_stderr({1.0})));  // n - 1 = 0: not available
}

TEST(EvalMetrics, PerplexityAndItsBootstrapStderrEqualTheHarness) {
  const std::vector<double> lls = {-3.25, -0.5, -7.125, -1.0, -2.75, -12.5, -0.25};
  EXPECT_DOUBLE_EQ(perplexity(lls), 49.934606814316105);
  // bootstrap_stderr(perplexity, lls, 2000): chunks i = 0, 1 of random.Random(i).choices(lls, k=7).
  EXPECT_DOUBLE_EQ(bootstrap_perplexity_stderr(lls, 2000), 661.0224904577627);
  // 2500 iterations are still two whole chunks of 1000 (iters // chunk_size).
  EXPECT_DOUBLE_EQ(bootstrap_perplexity_stderr(lls, 2500), 661.0224904577627);
  EXPECT_TRUE(std::isnan(bootstrap_perplexity_stderr(lls, 0)));
}

TEST(EvalMetrics, GroupAggregationEqualsTheHarness) {
  const std::vector<double> values = {0.5, 0.25, 0.75}, errors = {0.1, 0.05, 0.2};
  const std::vector<int64_t> sizes = {10, 40, 7};
  EXPECT_DOUBLE_EQ(aggregate_means(values, sizes, true), 0.35526315789473684);
  EXPECT_DOUBLE_EQ(aggregate_means(values, sizes, false), 0.5);
  EXPECT_NEAR(aggregate_stderrs(errors, sizes, true), 0.04588314677411236, 1e-15);
  EXPECT_NEAR(aggregate_stderrs(errors, sizes, false), 0.07637626158259735, 1e-15);
}

TEST(EvalMetrics, ChoiceScoringUsesCodePointLengthsAndFirstMaximum) {
  // lls -4, -6, -4: acc picks index 0 (first maximum); per character -4/2, -6/6, -4/1 -> index 1.
  std::vector<LoglikelihoodResult> r = {{-4.0, false}, {-6.0, false}, {-4.0, false}};
  ChoiceScores s = score_choices(r, {2, 6, 1}, 1);
  EXPECT_EQ(s.pred, 0);
  EXPECT_EQ(s.pred_norm, 1);
  EXPECT_EQ(s.acc, 0.0);
  EXPECT_EQ(s.acc_norm, 1.0);
  s = score_choices(r, {2, 6, 1}, -100);  // gold out of range scores 0
  EXPECT_EQ(s.acc, 0.0);
  EXPECT_EQ(s.acc_norm, 0.0);
}

}  // namespace
}  // namespace mor::eval
