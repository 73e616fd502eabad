#include "mor/model/layout.h"

namespace mor::model {

using config::Sharing;

Layout make_layout(const config::ModelConfig& model) {
  const config::LayerSplit split = config::layer_split(model);
  const Sharing sharing = model.recursion.sharing;
  Layout out;
  if (sharing == Sharing::kNone) {
    out.num_param_sets = model.num_layers;
    for (int64_t i = 0; i < model.num_layers; ++i) out.prelude.push_back(i);
    out.unrolled = out.prelude;
    return out;
  }
  const int64_t n = model.recursion.num_recursions, b = split.block_depth;
  const bool middle = split.fixed == 2;
  const int64_t first_shared = middle ? 1 : 0;
  out.num_param_sets = b + split.fixed;
  if (middle) out.prelude.push_back(0);
  if (sharing == Sharing::kCycle || sharing == Sharing::kMiddleCycle) {
    for (int64_t i = 0; i < b; ++i) out.block.push_back(first_shared + i);
    out.num_recursions = n;
    if (middle) out.coda.push_back(b + 1);
    out.unrolled = out.prelude;
    for (int64_t r = 0; r < n; ++r) out.unrolled.insert(out.unrolled.end(), out.block.begin(), out.block.end());
    out.unrolled.insert(out.unrolled.end(), out.coda.begin(), out.coda.end());
  } else {
    for (int64_t i = 0; i < b; ++i)
      for (int64_t r = 0; r < n; ++r) out.prelude.push_back(first_shared + i);
    if (middle) out.prelude.push_back(b + 1);
    out.unrolled = out.prelude;
  }
  return out;
}

}  // namespace mor::model
