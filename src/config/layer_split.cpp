// config::layer_split: how num_layers divides under a sharing strategy (never silently shortened).
#include "mor/config/config.h"
#include "mor/core/error.h"

namespace mor::config {

namespace {

// "use num_layers 30 or 34": the nearest counts that split.
std::string suggestion(int64_t layers, int64_t fixed, int64_t n) {
  const int64_t lower = ((layers - fixed) / n) * n + fixed;
  const int64_t upper = lower + n;
  if (lower < fixed + n) return detail::concat("use num_layers ", upper);
  return detail::concat("use num_layers ", lower, " or ", upper);
}

}  // namespace

LayerSplit layer_split(const ModelConfig& model) {
  const int64_t layers = model.num_layers;
  const int64_t n = model.recursion.num_recursions;
  const Sharing sharing = model.recursion.sharing;
  MOR_CHECK(layers >= 1, "model.num_layers: must be >= 1, got ", layers);
  if (sharing == Sharing::kNone) {
    MOR_CHECK(n == 1, "model.recursion.num_recursions: must be 1 when recursion.sharing is none, got ", n);
    return {layers, 0};
  }
  MOR_CHECK(n >= 2, "model.recursion.num_recursions: must be >= 2 with recursion.sharing ", to_string(sharing),
            ", got ", n);
  const bool middle = sharing == Sharing::kMiddleCycle || sharing == Sharing::kMiddleSequence;
  const int64_t fixed = middle ? 2 : 0;
  MOR_CHECK(layers - fixed >= n && (layers - fixed) % n == 0, "model.num_layers: ", layers,
            " layers cannot be split by ", to_string(sharing), " into ", n, " recursions (",
            middle ? "num_layers - 2" : "num_layers", " must be a positive multiple of ", n, "); ",
            suggestion(layers, fixed, n));
  return {fixed, (layers - fixed) / n};
}

}  // namespace mor::config
