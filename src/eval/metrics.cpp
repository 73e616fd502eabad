// Metric aggregation as lm-evaluation-harness computes it (see metrics.h).
#include "mor/eval/metrics.h"

#include <cmath>
#include <limits>

#include "mor/core/py_random.h"

namespace mor::eval {

namespace {
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

int64_t argmax(const std::vector<double>& xs) {
  int64_t best = 0;
  for (size_t i = 1; i < xs.size(); ++i) {
    // np.argmax: the first maximum; NaN wins (it compares as the maximum).
    if (std::isnan(xs[static_cast<size_t>(best)])) break;
    if (std::isnan(xs[i]) || xs[i] > xs[static_cast<size_t>(best)]) best = static_cast<int64_t>(i);
  }
  return best;
}
}  // namespace

ChoiceScores score_choices(const std::vector<LoglikelihoodResult>& results, const std::vector<int64_t>& choice_lengths,
                           int64_t gold) {
  std::vector<double> lls, normed;
  for (size_t i = 0; i < results.size(); ++i) {
    lls.push_back(results[i].ll);
    const double len = i < choice_lengths.size() ? static_cast<double>(choice_lengths[i]) : 1.0;
    normed.push_back(results[i].ll / len);  // len 0: +-inf as numpy divides
  }
  ChoiceScores s;
  s.pred = argmax(lls);
  s.pred_norm = argmax(normed);
  s.acc = gold >= 0 && s.pred == gold ? 1.0 : 0.0;
  s.acc_norm = gold >= 0 && s.pred_norm == gold ? 1.0 : 0.0;
  return s;
}

double py_sum(const std::vector<double>& xs) {
  double s = 0.0;
  for (double x : xs) s += x;
  return s;
}

double mean(const std::vector<double>& xs) { return xs.empty() ? kNaN : py_sum(xs) / static_cast<double>(xs.size()); }

double sample_stddev(const std::vector<double>& xs) {
  if (xs.size() < 2) return kNaN;
  const double mu = mean(xs);
  double s = 0.0;
  for (double x : xs) s += (x - mu) * (x - mu);
  return std::sqrt(s / static_cast<double>(xs.size() - 1));
}

double mean_stderr(const std::vector<double>& xs) {
  return xs.size() < 2 ? kNaN : sample_stddev(xs) / std::sqrt(static_cast<double>(xs.size()));
}

double perplexity(const std::vector<double>& lls) { return std::exp(-mean(lls)); }

double bootstrap_perplexity_stderr(const std::vector<double>& lls, int64_t iters) {
  if (iters < 1 || lls.size() < 2) return kNaN;
  const int64_t chunk = std::min<int64_t>(1000, iters);
  const int64_t chunks = iters / chunk;
  const double n = static_cast<double>(lls.size());
  std::vector<double> replicates;
  replicates.reserve(static_cast<size_t>(chunks * chunk));
  for (int64_t i = 0; i < chunks; ++i) {
    core::PyRandom rnd(i);
    for (int64_t r = 0; r < chunk; ++r) {
      // perplexity(rnd.choices(lls, k=n)) = exp(-(sum of the draws in order) / n)
      double s = 0.0;
      for (size_t k = 0; k < lls.size(); ++k) s += lls[static_cast<size_t>(std::floor(rnd.random() * n))];
      replicates.push_back(std::exp(-(s / n)));
    }
  }
  return sample_stddev(replicates);
}

double aggregate_means(const std::vector<double>& values, const std::vector<int64_t>& sizes, bool weight_by_size) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < values.size(); ++i) {
    const double w = weight_by_size ? static_cast<double>(sizes[i]) : 1.0;
    num += values[i] * w;
    den += w;
  }
  return den > 0 ? num / den : kNaN;
}

double aggregate_stderrs(const std::vector<double>& stderrs, const std::vector<int64_t>& sizes, bool weight_by_size) {
  if (stderrs.empty()) return kNaN;
  if (!weight_by_size) {
    double s = 0.0;
    for (double e : stderrs) s += e * e;
    return std::sqrt(s) / static_cast<double>(stderrs.size());
  }
  double num = 0.0, total = 0.0;
  for (size_t i = 0; i < stderrs.size(); ++i) {
    const double n = static_cast<double>(sizes[i]);
    num += (n - 1) * stderrs[i] * stderrs[i] * n;
    total += n;
  }
  return std::sqrt(num / (total - static_cast<double>(stderrs.size())) / total);
}

}  // namespace mor::eval
