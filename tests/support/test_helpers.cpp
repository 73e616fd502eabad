#include "support/test_helpers.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <sstream>

#include "mor/core/error.h"

namespace mor::testing {

config::ModelConfig tiny_config() {
  config::ModelConfig c;
  c.name = "tiny";
  c.vocab_size = 61;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_layers = 4;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 0;
  c.max_seq_len = 64;
  c.rope_theta = 10000.0;
  c.rms_norm_eps = 1e-5;
  c.tie_embeddings = true;
  c.init_std = 0.02;
  c.seed = 1234;
  return c;
}

config::ModelConfig recursive_config(config::Sharing sharing, int64_t num_recursions,
                                     int64_t num_layers) {
  config::ModelConfig c = tiny_config();
  c.num_layers = num_layers;
  c.recursion.sharing = sharing;
  c.recursion.num_recursions = num_recursions;
  return c;
}

config::ModelConfig expert_config(config::Sharing sharing, int64_t num_recursions,
                                  int64_t num_layers) {
  config::ModelConfig c = recursive_config(sharing, num_recursions, num_layers);
  c.router.kind = config::RouterKind::kExpert;
  c.router.arch = config::RouterArch::kLinear;
  c.router.expert.func = config::GateFunc::kSigmoid;
  c.router.expert.aux = config::ExpertAux::kLoss;
  return c;
}

config::ModelConfig token_config(config::Sharing sharing, int64_t num_recursions,
                                 int64_t num_layers) {
  config::ModelConfig c = recursive_config(sharing, num_recursions, num_layers);
  c.router.kind = config::RouterKind::kToken;
  c.router.arch = config::RouterArch::kLinear;
  c.router.token.func = config::GateFunc::kSoftmax;
  c.router.token.balancing = config::Balancing::kLoss;
  return c;
}

at::Tensor random_tokens(int64_t batch, int64_t length, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> dist(0, vocab - 1);
  std::vector<int64_t> values(static_cast<size_t>(batch * length));
  for (auto& v : values) v = dist(rng);
  return at::from_blob(values.data(), {batch, length}, at::kLong).clone();
}

at::Tensor random_targets(int64_t batch, int64_t length, int64_t vocab, uint64_t seed,
                          int64_t ignored_per_row) {
  at::Tensor t = random_tokens(batch, length, vocab, seed);
  std::mt19937_64 rng(seed ^ 0x9e3779b97f4a7c15ULL);
  auto acc = t.accessor<int64_t, 2>();
  for (int64_t b = 0; b < batch; ++b) {
    std::vector<int64_t> pos(static_cast<size_t>(length));
    std::iota(pos.begin(), pos.end(), 0);
    std::shuffle(pos.begin(), pos.end(), rng);
    for (int64_t i = 0; i < std::min(ignored_per_row, length); ++i) acc[b][pos[i]] = -100;
  }
  return t;
}

bool is_router_param(const std::string& name) {
  return name.rfind("model.routers.", 0) == 0 || name.rfind("model.aux_routers.", 0) == 0 ||
         name.rfind("model.router.", 0) == 0;
}

void scale_router_weights(const model::MoRModel& model, double factor) {
  at::NoGradGuard guard;
  for (const auto& p : model.parameters())
    if (is_router_param(p.name)) p.tensor.mul_(factor);
}

bool mix_routing_depth(const model::MoRModel& model, const at::Tensor& tokens,
                       const model::ForwardOptions& options, int tries) {
  const int64_t n = model.layout().num_recursions;
  for (int attempt = 0; attempt <= tries; ++attempt) {
    at::Tensor depth;
    {
      at::NoGradGuard guard;
      depth = model.forward(tokens, options).depth;
    }
    if (depth.lt(n).any().item<bool>() && depth.eq(n).any().item<bool>()) return true;
    if (attempt < tries) scale_router_weights(model, 4.0);
  }
  return false;
}

std::map<std::string, at::Tensor> snapshot_grads(const model::MoRModel& model) {
  std::map<std::string, at::Tensor> out;
  for (const auto& p : model.parameters()) {
    const at::Tensor& g = p.tensor.grad();
    out[p.name] = g.defined() ? g.detach().to(at::kDouble).clone()
                              : at::zeros(p.tensor.sizes(), p.tensor.options().dtype(at::kDouble));
  }
  return out;
}

double max_abs(const at::Tensor& t) {
  if (!t.defined() || t.numel() == 0) return 0.0;
  return t.detach().to(at::kDouble).abs().max().item<double>();
}

int64_t count_true(const at::Tensor& t) { return t.ne(0).sum().item<int64_t>(); }

::testing::AssertionResult tensors_close(const at::Tensor& actual, const at::Tensor& expected,
                                         double rtol, double atol) {
  if (!actual.defined() || !expected.defined())
    return ::testing::AssertionFailure()
           << "defined: actual " << actual.defined() << ", expected " << expected.defined();
  if (actual.sizes() != expected.sizes())
    return ::testing::AssertionFailure()
           << "shape " << actual.sizes() << " vs expected " << expected.sizes();
  const at::Tensor a = actual.detach().to(at::kDouble).cpu();
  const at::Tensor e = expected.detach().to(at::kDouble).cpu();
  if (a.numel() == 0) return ::testing::AssertionSuccess();
  const double scale = max_abs(e);
  const at::Tensor diff = (a - e).abs();
  if (!at::isfinite(a).all().item<bool>())
    return ::testing::AssertionFailure() << "actual has non-finite values";
  const double worst = diff.max().item<double>();
  const double bound = atol + rtol * scale;
  if (worst <= bound) return ::testing::AssertionSuccess();
  const int64_t at_index = diff.reshape({-1}).argmax().item<int64_t>();
  return ::testing::AssertionFailure()
         << "max |diff| " << worst << " > " << bound << " (max|expected| " << scale
         << ") at flat index " << at_index << ": actual "
         << a.reshape({-1})[at_index].item<double>() << ", expected "
         << e.reshape({-1})[at_index].item<double>() << "; "
         << diff.gt(bound).sum().item<int64_t>() << " of " << diff.numel() << " elements off";
}

::testing::AssertionResult tensors_equal(const at::Tensor& actual, const at::Tensor& expected) {
  if (!actual.defined() || !expected.defined())
    return ::testing::AssertionFailure()
           << "defined: actual " << actual.defined() << ", expected " << expected.defined();
  if (actual.sizes() != expected.sizes())
    return ::testing::AssertionFailure()
           << "shape " << actual.sizes() << " vs expected " << expected.sizes();
  const at::Tensor a = actual.detach().to(at::kLong).cpu();
  const at::Tensor e = expected.detach().to(at::kLong).cpu();
  if (at::equal(a, e)) return ::testing::AssertionSuccess();
  std::ostringstream os;
  os << "tensors differ in " << a.ne(e).sum().item<int64_t>() << " of " << a.numel()
     << " elements\nactual:\n"
     << a << "\nexpected:\n"
     << e;
  return ::testing::AssertionFailure() << os.str();
}

::testing::AssertionResult throws_error_containing(const std::function<void()>& fn,
                                                   const std::string& needle) {
  try {
    fn();
  } catch (const mor::Error& e) {
    if (std::string(e.what()).find(needle) != std::string::npos)
      return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure()
           << "mor::Error message \"" << e.what() << "\" lacks \"" << needle << "\"";
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw a non-mor::Error: " << e.what();
  }
  return ::testing::AssertionFailure() << "did not throw (expected \"" << needle << "\")";
}

}  // namespace mor::testing
