// ModelScorer: batched log-likelihoods of (context, continuation) requests on a MoRModel, the way
// lm-evaluation-harness's HF backend computes them (see scorer.h).
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <map>
#include <numeric>

#include "mor/core/error.h"
#include "mor/core/progress.h"
#include "mor/eval/scorer.h"
#include "mor/model/model.h"

namespace mor::eval {

namespace {

class ModelScorer final : public LoglikelihoodScorer {
 public:
  ModelScorer(const model::MoRModel& model, const ScorerOptions& options) : model_(model), options_(options) {
    MOR_CHECK(options_.batch_size > 0, "--batch-size must be positive, got ", options_.batch_size);
    max_length_ = options_.max_length > 0 ? options_.max_length : model.config().max_seq_len;
    const int64_t n_r = model.layout().num_recursions;
    if (n_r > 0) histogram_.assign(static_cast<size_t>(n_r + 1), 0);
  }

  int64_t max_length() const override { return max_length_; }
  std::vector<int64_t> depth_histogram() const override { return histogram_; }

  std::vector<LoglikelihoodResult> score(const std::vector<TokenizedRequest>& requests,
                                         core::Progress* progress) override {
    const int64_t n = static_cast<int64_t>(requests.size());
    // The model input of each request and how many of its last positions score the continuation.
    std::vector<std::vector<int64_t>> inputs(static_cast<size_t>(n));
    std::vector<std::vector<int64_t>> targets(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      const auto& r = requests[static_cast<size_t>(i)];
      MOR_CHECK(!r.context.empty() && !r.continuation.empty(), "request ", i,
                ": empty context or continuation (the evaluator substitutes the prefix token)");
      std::vector<int64_t> whole(r.context.begin(), r.context.end());
      whole.insert(whole.end(), r.continuation.begin(), r.continuation.end());
      const int64_t keep = std::min<int64_t>(static_cast<int64_t>(whole.size()), max_length_ + 1);
      std::vector<int64_t> tail(whole.end() - keep, whole.end());
      const int64_t cont = std::min<int64_t>(static_cast<int64_t>(r.continuation.size()), keep - 1);
      targets[static_cast<size_t>(i)].assign(tail.end() - cont, tail.end());
      tail.pop_back();
      inputs[static_cast<size_t>(i)] = std::move(tail);
      MOR_CHECK(cont > 0, "request ", i, ": the continuation does not fit in ", max_length_, " tokens");
    }
    // Requests with the same model input share one forward (e.g. the single-token choices " A".."
    // D" of an MMLU question): each reads its own targets from the shared row.
    // A row is the input of its first request (an index, not a copy).
    std::vector<int64_t> row_request;
    std::vector<std::vector<int64_t>> members;  // row -> requests
    {
      const auto by_input = [&](int64_t a, int64_t b) {
        return inputs[static_cast<size_t>(a)] < inputs[static_cast<size_t>(b)];
      };
      std::map<int64_t, int64_t, decltype(by_input)> seen(by_input);  // request -> its row
      for (int64_t i = 0; i < n; ++i) {
        auto [it, inserted] = seen.emplace(i, static_cast<int64_t>(row_request.size()));
        if (inserted) {
          row_request.push_back(i);
          members.emplace_back();
        }
        members[static_cast<size_t>(it->second)].push_back(i);
      }
    }
    auto row_input = [&](int64_t row) -> const std::vector<int64_t>& {
      return inputs[static_cast<size_t>(row_request[static_cast<size_t>(row)])];
    };
    // Longest first, ties by tokens (the harness's Collator order), so batches are length-homogeneous.
    std::vector<int64_t> order(row_request.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      const auto& x = row_input(a);
      const auto& y = row_input(b);
      if (x.size() != y.size()) return x.size() > y.size();
      return x < y;
    });

    std::vector<LoglikelihoodResult> results(static_cast<size_t>(n));
    const bool topk = options_.routing == config::RoutingMode::kTopk;
    const at::NoGradGuard no_grad;
    size_t start = 0;
    while (start < order.size()) {
      size_t end = start + 1;
      const size_t first_len = row_input(order[start]).size();
      while (end < order.size() && static_cast<int64_t>(end - start) < options_.batch_size &&
             (!topk || row_input(order[end]).size() == first_len)) {
        ++end;
      }
      run_batch(order, start, end, inputs, row_request, members, targets, results);
      if (progress) {
        int64_t done = 0;
        for (size_t k = start; k < end; ++k) done += static_cast<int64_t>(members[static_cast<size_t>(order[k])].size());
        progress->add(done);
      }
      start = end;
    }
    return results;
  }

 private:
  void run_batch(const std::vector<int64_t>& order, size_t start, size_t end,
                 const std::vector<std::vector<int64_t>>& inputs, const std::vector<int64_t>& row_request,
                 const std::vector<std::vector<int64_t>>& members,
                 const std::vector<std::vector<int64_t>>& targets, std::vector<LoglikelihoodResult>& results) {
    const int64_t batch = static_cast<int64_t>(end - start);
    int64_t width = 0;
    auto row_input = [&](int64_t row) -> const std::vector<int64_t>& {
      return inputs[static_cast<size_t>(row_request[static_cast<size_t>(row)])];
    };
    for (size_t k = start; k < end; ++k) width = std::max<int64_t>(width, row_input(order[k]).size());
    at::Tensor tokens = at::zeros({batch, width}, at::kLong);
    auto acc = tokens.accessor<int64_t, 2>();
    // Flat (row * width + position) indices of the scored positions, their target tokens and the
    // request each belongs to.
    std::vector<int64_t> positions, target_ids, owner;
    for (int64_t b = 0; b < batch; ++b) {
      const auto& in = row_input(order[start + static_cast<size_t>(b)]);
      for (size_t t = 0; t < in.size(); ++t) acc[b][static_cast<int64_t>(t)] = in[t];
      const int64_t len = static_cast<int64_t>(in.size());
      for (int64_t req : members[static_cast<size_t>(order[start + static_cast<size_t>(b)])]) {
        const auto& tg = targets[static_cast<size_t>(req)];
        const int64_t cont = static_cast<int64_t>(tg.size());
        for (int64_t j = 0; j < cont; ++j) {
          positions.push_back(b * width + (len - cont + j));
          target_ids.push_back(tg[static_cast<size_t>(j)]);
          owner.push_back(req);
        }
      }
    }
    model::ForwardOptions fo;
    fo.routing = options_.routing;
    const model::ForwardOutput out = model_.forward(tokens.to(model_.device()), fo);
    const int64_t vocab = out.logits.size(-1);
    const at::Tensor idx = at::tensor(positions, at::kLong).to(model_.device());
    const at::Tensor picked = out.logits.reshape({batch * width, vocab}).index_select(0, idx).to(at::kFloat);
    const at::Tensor logp = at::log_softmax(picked, -1);
    const at::Tensor tgt = at::tensor(target_ids, at::kLong).to(model_.device());
    const at::Tensor token_ll = logp.gather(1, tgt.unsqueeze(1)).squeeze(1).to(at::kCPU, at::kDouble).contiguous();
    const at::Tensor greedy = logp.argmax(1).eq(tgt).to(at::kCPU).contiguous();
    const double* ll = token_ll.data_ptr<double>();
    const bool* gr = greedy.data_ptr<bool>();
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t req : members[static_cast<size_t>(order[start + static_cast<size_t>(b)])]) {
        results[static_cast<size_t>(req)] = LoglikelihoodResult{0.0, true};
      }
    }
    for (size_t k = 0; k < positions.size(); ++k) {
      auto& r = results[static_cast<size_t>(owner[k])];
      r.ll += ll[k];
      if (!gr[k]) r.is_greedy = false;
    }
    if (!histogram_.empty() && out.depth.defined()) {
      const at::Tensor depth = out.depth.to(at::kCPU).contiguous();
      auto d = depth.accessor<int64_t, 2>();
      for (int64_t b = 0; b < batch; ++b) {
        const int64_t len = static_cast<int64_t>(row_input(order[start + static_cast<size_t>(b)]).size());
        for (int64_t t = 0; t < len; ++t) {
          const int64_t v = std::clamp<int64_t>(d[b][t], 0, static_cast<int64_t>(histogram_.size()) - 1);
          ++histogram_[static_cast<size_t>(v)];
        }
      }
    }
  }

  const model::MoRModel& model_;
  ScorerOptions options_;
  int64_t max_length_ = 0;
  std::vector<int64_t> histogram_;
};

}  // namespace

std::unique_ptr<LoglikelihoodScorer> make_model_scorer(const model::MoRModel& model, const ScorerOptions& options) {
  return std::make_unique<ModelScorer>(model, options);
}

}  // namespace mor::eval
