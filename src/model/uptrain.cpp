// Uptraining initialisation strategies (see the header).
#include "mor/model/uptrain.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <optional>
#include <random>

#include "mor/core/error.h"
#include "mor/model/layout.h"

namespace mor::model {

namespace {

const char* kNames[] = {"stepwise", "lower", "upper", "random", "average"};

// "model.layers.P.rest" -> (P, "rest"); nullopt for other names.
std::optional<std::pair<int64_t, std::string>> split_layer_name(const std::string& name, const std::string& prefix) {
  if (!name.starts_with(prefix)) return std::nullopt;
  const size_t dot = name.find('.', prefix.size());
  if (dot == std::string::npos) return std::nullopt;
  return std::make_pair(std::stoll(name.substr(prefix.size(), dot - prefix.size())), name.substr(dot + 1));
}

}  // namespace

UptrainStrategy uptrain_strategy_from_name(const std::string& name) {
  for (int i = 0; i < 5; ++i) {
    if (name == kNames[i]) return static_cast<UptrainStrategy>(i);
  }
  fail("unknown uptraining strategy \"", name, "\" (stepwise, lower, upper, random, average)");
}

const char* uptrain_strategy_name(UptrainStrategy s) { return kNames[static_cast<int>(s)]; }

std::vector<std::vector<int64_t>> uptrain_sources(const config::ModelConfig& source, const config::ModelConfig& target,
                                                  UptrainStrategy strategy, uint64_t seed) {
  MOR_CHECK(source.recursion.sharing == config::Sharing::kNone, "uptraining: the source model must be vanilla "
                                                                "(recursion.sharing none), got ",
            config::to_string(source.recursion.sharing));
  MOR_CHECK(source.num_layers == target.num_layers, "uptraining: model.num_layers differs: the source has ",
            source.num_layers, " layers, the target unrolls ", target.num_layers,
            " (they must be equal; pick the target's recursions to split this depth)");
  auto same = [&](const char* key, int64_t a, int64_t b) {
    MOR_CHECK(a == b, "uptraining: model.", key, " differs (source ", a, ", target ", b, ")");
  };
  same("vocab_size", source.vocab_size, target.vocab_size);
  same("hidden_size", source.hidden_size, target.hidden_size);
  same("intermediate_size", source.intermediate_size, target.intermediate_size);
  same("num_heads", source.num_heads, target.num_heads);
  same("num_kv_heads", source.num_kv_heads, target.num_kv_heads);
  same("head_dim", source.resolved_head_dim(), target.resolved_head_dim());
  MOR_CHECK(source.tie_embeddings == target.tie_embeddings, "uptraining: model.tie_embeddings differs");

  const Layout layout = make_layout(target);
  const int64_t L = target.num_layers;
  // Which unrolled layers use each parameter set.
  std::vector<std::vector<int64_t>> members(layout.num_param_sets);
  for (int64_t j = 0; j < L; ++j) members[layout.unrolled[j]].push_back(j);
  const bool middle = target.recursion.sharing == config::Sharing::kMiddleCycle ||
                      target.recursion.sharing == config::Sharing::kMiddleSequence;
  std::vector<int64_t> shared;  // parameter sets used more than once, in index order
  for (int64_t p = 0; p < layout.num_param_sets; ++p) {
    if (members[p].size() > 1 || !middle || (p != 0 && p != layout.num_param_sets - 1)) shared.push_back(p);
  }
  const int64_t b = static_cast<int64_t>(shared.size());
  const int64_t lo = middle ? 1 : 0, hi = middle ? L - 2 : L - 1;
  const int64_t range = hi - lo + 1;
  MOR_CHECK(b <= range, "internal: more shared sets than source layers");

  std::vector<std::vector<int64_t>> out(layout.num_param_sets);
  if (middle) {
    out[0] = {0};
    out[layout.num_param_sets - 1] = {L - 1};
  }
  std::vector<int64_t> chosen(b);
  switch (strategy) {
    case UptrainStrategy::kStepwise:
      for (int64_t i = 0; i < b; ++i) {
        const double x = b == 1 ? lo : lo + (static_cast<double>(hi - lo) * i) / (b - 1);
        chosen[i] = static_cast<int64_t>(std::nearbyint(x));  // half to even, like numpy.round
      }
      break;
    case UptrainStrategy::kLower:
      std::iota(chosen.begin(), chosen.end(), lo);
      break;
    case UptrainStrategy::kUpper:
      std::iota(chosen.begin(), chosen.end(), hi - b + 1);
      break;
    case UptrainStrategy::kRandom: {
      std::vector<int64_t> pool(range);
      std::iota(pool.begin(), pool.end(), lo);
      std::mt19937_64 rng(seed);
      for (int64_t i = 0; i < b; ++i) {  // partial Fisher-Yates
        const int64_t j = i + static_cast<int64_t>(rng() % static_cast<uint64_t>(range - i));
        std::swap(pool[i], pool[j]);
      }
      std::copy(pool.begin(), pool.begin() + b, chosen.begin());
      std::sort(chosen.begin(), chosen.end());
      break;
    }
    case UptrainStrategy::kAverage:
      break;
  }
  for (int64_t i = 0; i < b; ++i) {
    out[shared[i]] = strategy == UptrainStrategy::kAverage ? members[shared[i]] : std::vector<int64_t>{chosen[i]};
  }
  return out;
}

std::unique_ptr<MoRModel> uptrain(const MoRModel& source, const config::ModelConfig& target, UptrainStrategy strategy,
                                  uint64_t seed) {
  const auto sources = uptrain_sources(source.config(), target, strategy, seed);
  auto model = std::make_unique<MoRModel>(target);
  const at::NoGradGuard no_grad;
  std::map<std::string, at::Tensor> src;
  for (const auto& p : source.parameters()) src[p.name] = p.tensor.detach().to(at::kCPU, at::kFloat);
  auto source_tensor = [&](const std::string& name) {
    const auto it = src.find(name);
    MOR_CHECK(it != src.end(), "uptraining: the source model has no tensor ", name);
    return it->second;
  };
  for (const auto& p : model->parameters()) {
    at::Tensor value;
    if (const auto layer = split_layer_name(p.name, "model.layers.")) {
      std::vector<at::Tensor> parts;
      for (int64_t s : sources[layer->first]) parts.push_back(source_tensor("model.layers." + std::to_string(s) + "." + layer->second));
      value = parts.size() == 1 ? parts[0] : at::stack(parts).mean(0);
    } else if (const auto norm = split_layer_name(p.name, "model.unrolled_norms.")) {
      value = source_tensor("model.layers." + std::to_string(norm->first) + "." + norm->second);
    } else if (p.role == ParamRole::kRouter || p.role == ParamRole::kAuxRouter) {
      continue;  // fresh initialisation
    } else {
      value = source_tensor(p.name);
    }
    MOR_CHECK(value.sizes() == p.tensor.sizes(), "uptraining: ", p.name, " has shape ", value.sizes(),
              " in the source and ", p.tensor.sizes(), " in the target");
    p.tensor.detach().copy_(value);
  }
  return model;
}

}  // namespace mor::model
