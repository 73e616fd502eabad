// `mor eval --ppl`: loss and perplexity over token shards (see perplexity.h).
#include "mor/eval/perplexity.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "mor/core/error.h"
#include "mor/core/progress.h"
#include "mor/data/loader.h"
#include "mor/model/model.h"

namespace mor::eval {

PerplexityResult shard_perplexity(const model::MoRModel& model, const PerplexityOptions& options) {
  MOR_CHECK(!options.shards.empty(), "--ppl: no shards given");
  MOR_CHECK(options.batch_size > 0, "--batch-size must be positive, got ", options.batch_size);
  const int64_t seq = options.seq_len > 0 ? options.seq_len : model.config().max_seq_len;
  MOR_CHECK(seq <= model.config().max_seq_len, "--seq-len ", seq, " exceeds the model's context of ",
            model.config().max_seq_len);
  data::LoaderOptions lo;
  lo.shards = options.shards;
  lo.vocab_size = model.config().vocab_size;
  lo.seq_len = seq;
  lo.rows_per_rank = options.batch_size;
  lo.shuffle = false;
  lo.document_ids = options.eos_id >= 0;
  lo.eos_id = options.eos_id;
  data::Loader loader(lo);
  MOR_CHECK(loader.num_rows() > 0, "--ppl: the shards hold ", loader.num_tokens(), " tokens, fewer than one row of ",
            seq + 1);
  const int64_t rows = options.max_rows > 0 ? std::min(options.max_rows, loader.num_rows()) : loader.num_rows();
  const int64_t n_r = model.layout().num_recursions;

  PerplexityResult result;
  result.shard_paths = loader.shard_paths();
  if (n_r > 0) result.depth_histogram.assign(static_cast<size_t>(n_r + 1), 0);
  const auto t0 = std::chrono::steady_clock::now();
  core::Progress::Options po;
  po.mode = options.progress ? core::Progress::Mode::kAuto : core::Progress::Mode::kSilent;
  po.secondary_label = "tokens";
  core::Progress progress("perplexity", rows, po);
  const at::NoGradGuard no_grad;
  double nll = 0.0;
  for (int64_t start = 0; start < rows; start += options.batch_size) {
    const data::Batch batch = loader.batch_at(start);
    const int64_t take = std::min(options.batch_size, rows - start);  // the last batch may wrap: drop extras
    auto rows_tensor = [&](const std::vector<int32_t>& v) {
      return at::tensor(v, at::kInt).view({batch.rows, seq}).narrow(0, 0, take).to(at::kLong);
    };
    model::ForwardOptions fo;
    fo.routing = options.routing;
    if (lo.document_ids) fo.documents = rows_tensor(batch.doc_ids).to(model.device());
    const auto out = model.forward(rows_tensor(batch.inputs).to(model.device()), fo);
    const at::Tensor logits = out.logits.to(at::kFloat).reshape({take * seq, -1});
    const at::Tensor targets = rows_tensor(batch.targets).reshape({-1}).to(model.device());
    nll += at::cross_entropy_loss(logits, targets, {}, at::Reduction::None).to(at::kDouble).sum().item<double>();
    result.tokens += take * seq;
    if (n_r > 0) {
      const at::Tensor counts = at::bincount(out.depth.reshape(-1).cpu(), {}, n_r + 1).to(at::kLong).contiguous();
      for (int64_t d = 0; d <= n_r; ++d) result.depth_histogram[static_cast<size_t>(d)] += counts[d].item<int64_t>();
    }
    progress.add(take, take * seq);
  }
  progress.finish();
  result.rows = rows;
  result.loss = nll / static_cast<double>(std::max<int64_t>(1, result.tokens));
  result.perplexity = std::exp(result.loss);
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return result;
}

}  // namespace mor::eval
