// How the L unrolled decoder layers of a model map onto parameter sets (mor-spec §2.1).
//
// Every model runs: prelude layers (all tokens) -> num_recursions passes of `block` (routed for MoR,
// all tokens otherwise) -> coda layers (all tokens). Entries are parameter-set indices in
// [0, num_param_sets). Layers that share an index are the same tensors.
//   vanilla           prelude = 0..L-1, block = {}, num_recursions = 0
//   cycle             prelude = {}, block = 0..b-1 (b = L/N), coda = {}
//   middle_cycle      prelude = {0}, block = 1..b (b = (L-2)/N), coda = {b+1}
//   sequence          prelude = 0,0,..(N times),1,1,.. (b = L/N sets), no block
//   middle_sequence   prelude = 0, 1,1,..(N times),..,b, b+1 (unique first and last), no block
// The split itself is config::layer_split (a count that does not split is a mor::Error).
#pragma once

#include <cstdint>
#include <vector>

#include "mor/config/config.h"

namespace mor::model {

struct Layout {
  int64_t num_param_sets = 0;
  std::vector<int64_t> prelude;
  std::vector<int64_t> block;
  int64_t num_recursions = 0;   // passes of `block`
  std::vector<int64_t> coda;
  std::vector<int64_t> unrolled;  // parameter set of each of the L unrolled layers, in order

  int64_t unrolled_depth() const { return static_cast<int64_t>(unrolled.size()); }
};

// Throws mor::Error (key model.num_layers / model.recursion.*) when the layer count does not split.
Layout make_layout(const config::ModelConfig& model);

}  // namespace mor::model
