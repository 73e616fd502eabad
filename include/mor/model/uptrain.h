// Uptraining: a pretrained vanilla model's weights become the initial weights of a recursive or
// MoR model of the same unrolled depth (mor-spec §2.2, "initialization strategies").
//
// The target's shared parameter sets (b of them, each used N_r times) take their weights from
// source layers chosen by the strategy; middle variants keep the source's first and last layers
// as their unique first and last layers. Sources are searched in [0, L-1] (cycle, sequence) or
// [1, L-2] (middle_cycle, middle_sequence):
//   stepwise — layers round(linspace(lo, hi, b)) (round half to even, as numpy)
//   lower    — the first b layers of the range;  upper — the last b
//   random   — b distinct layers drawn with the seed, sorted (the original did not seed this)
//   average  — set i is the mean of the source layers it stands for in the unrolled stack
// Layer norms follow the matmul weights when norms are shared (recursion.share_norms); per-layer
// norms copy each unrolled layer's own source norms. Embedding, final norm and LM head are copied;
// routers keep the target model's fresh initialisation (model.seed).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "mor/config/config.h"
#include "mor/model/model.h"

namespace mor::model {

enum class UptrainStrategy { kStepwise, kLower, kUpper, kRandom, kAverage };
UptrainStrategy uptrain_strategy_from_name(const std::string& name);  // throws listing the names
const char* uptrain_strategy_name(UptrainStrategy s);

// For each target parameter set, the source layers whose weights it takes (one layer, or several
// averaged). Throws mor::Error when the depths differ or the source is not vanilla.
std::vector<std::vector<int64_t>> uptrain_sources(const config::ModelConfig& source, const config::ModelConfig& target,
                                                  UptrainStrategy strategy, uint64_t seed);

// A new target model (fp32, CPU) initialised from `source` (a vanilla model).
std::unique_ptr<MoRModel> uptrain(const MoRModel& source, const config::ModelConfig& target,
                                  UptrainStrategy strategy, uint64_t seed);

}  // namespace mor::model
