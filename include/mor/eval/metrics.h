// Per-document metrics and their aggregation, as lm-evaluation-harness 0.4.13 computes them
// (lm_eval/api/metrics.py): means and sums in Python's left-to-right order, sample standard
// deviations with n - 1, perplexity = exp(-mean(ll)), its standard error by the harness's own
// bootstrap (chunks of 1000 resamples, chunk i drawn by random.Random(i).choices, reproduced with
// core::PyRandom), and groups by size-weighted means with pooled standard errors. Torch-free.
#pragma once

#include <cstdint>
#include <vector>

namespace mor::eval {

// One document's log-likelihood result per request.
struct LoglikelihoodResult {
  double ll = 0.0;         // sum of log p(continuation token) (natural log)
  bool is_greedy = false;  // every continuation token is the argmax
};

// Multiple choice: acc = argmax(ll) == gold; acc_norm = argmax(ll / len(choice in code points)) == gold
// (ties go to the lower index, as np.argmax). gold < 0 (out of range) scores 0.
struct ChoiceScores {
  double acc = 0.0, acc_norm = 0.0;
  int64_t pred = 0, pred_norm = 0;
};
ChoiceScores score_choices(const std::vector<LoglikelihoodResult>& results, const std::vector<int64_t>& choice_lengths,
                           int64_t gold);

double py_sum(const std::vector<double>& xs);
double mean(const std::vector<double>& xs);
double sample_stddev(const std::vector<double>& xs);  // NaN for fewer than 2 values
double mean_stderr(const std::vector<double>& xs);    // NaN for fewer than 2 values
double perplexity(const std::vector<double>& lls);    // exp(-mean(lls))
// The harness's bootstrap_stderr(perplexity, lls, iters): iters / 1000 chunks (at least one chunk of
// min(1000, iters)); NaN when iters < 1 or fewer than 2 values. Cost: iters x lls.size() draws.
double bootstrap_perplexity_stderr(const std::vector<double>& lls, int64_t iters);

// Group aggregation of member scores (means) with `sizes` documents each.
double aggregate_means(const std::vector<double>& values, const std::vector<int64_t>& sizes, bool weight_by_size);
// pooled_sample_stderr (weight_by_size) or unweighted_mean_stderr.
double aggregate_stderrs(const std::vector<double>& stderrs, const std::vector<int64_t>& sizes, bool weight_by_size);

}  // namespace mor::eval
