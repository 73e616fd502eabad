// Log-likelihood scoring of tokenized (context, continuation) requests. The interface is torch-free
// so that the evaluator (and its tests, with a fake scorer) need no LibTorch; ModelScorer runs a
// MoRModel (scorer.cpp).
//
// ModelScorer follows lm-evaluation-harness's HF backend: input = (context + continuation)
// [-(max_length + 1):][:-1], left-truncated; ll = sum of log_softmax(logits) at the continuation
// positions; is_greedy = every continuation token is the argmax. Requests are sorted by descending
// length (ties by tokens), batched, right-padded to the longest in the batch (causal attention and
// causal routing make padding invisible to real tokens) and returned in request order: results do
// not depend on the batch size. Requests with identical inputs (the single-token choices of an
// MMLU question) share one forward. With non-causal top-k routing padding would take part in the
// top-k, so batches then only hold inputs of one length.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "mor/config/config.h"
#include "mor/eval/metrics.h"

namespace mor::core {
class Progress;
}
namespace mor::model {
class MoRModel;
}

namespace mor::eval {

struct TokenizedRequest {
  std::vector<int32_t> context;       // non-empty (an empty context is [prefix token])
  std::vector<int32_t> continuation;  // non-empty
};

class LoglikelihoodScorer {
 public:
  virtual ~LoglikelihoodScorer() = default;
  // One result per request, in request order. `progress` (may be null) advances by requests.
  virtual std::vector<LoglikelihoodResult> score(const std::vector<TokenizedRequest>& requests,
                                                 core::Progress* progress) = 0;
  // Recursion depth histogram of every input token forwarded so far: [N_r + 1] counts of depth
  // 0..N_r; empty for models without recursion.
  virtual std::vector<int64_t> depth_histogram() const { return {}; }
  virtual int64_t max_length() const = 0;
};

struct ScorerOptions {
  int64_t batch_size = 16;
  config::RoutingMode routing = config::RoutingMode::kCausal;
  int64_t max_length = 0;  // 0: the model's max_seq_len
};

std::unique_ptr<LoglikelihoodScorer> make_model_scorer(const model::MoRModel& model, const ScorerOptions& options);

}  // namespace mor::eval
