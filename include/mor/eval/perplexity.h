// Validation loss and perplexity of a model on token shards (`mor eval MODEL --ppl SHARDS`): the
// shards are packed into rows of seq_len + 1 tokens in order (data::Loader, no shuffling; every
// token after the first is a target exactly once), scored in batches without gradients, and
// summed in float64. With MoR models the recursion-depth histogram of the scored tokens is kept.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "mor/config/config.h"

namespace mor::model {
class MoRModel;
}

namespace mor::eval {

struct PerplexityOptions {
  std::vector<std::string> shards;  // files, directories or globs (data::LoaderOptions::shards)
  int64_t seq_len = 0;              // 0: the model's max_seq_len
  int64_t batch_size = 8;           // rows per forward
  int64_t max_rows = 0;             // 0: every row
  config::RoutingMode routing = config::RoutingMode::kCausal;
  int64_t eos_id = -1;              // >= 0: document masking at this end-of-text id
  bool progress = true;
};

struct PerplexityResult {
  int64_t rows = 0;
  int64_t tokens = 0;      // scored targets
  double loss = 0.0;       // mean cross-entropy (nats per token)
  double perplexity = 0.0;
  std::vector<int64_t> depth_histogram;  // [N_r + 1] token counts by depth; empty without recursion
  double seconds = 0.0;
  std::vector<std::string> shard_paths;
};

PerplexityResult shard_perplexity(const model::MoRModel& model, const PerplexityOptions& options);

}  // namespace mor::eval
