// Properties of the model that hold whatever the weights: causality of every causal mode, parameter
// sharing (names, storage, gradient accumulation), compute proportional to the active tokens,
// reproducible initialisation, micro-batch loss normalisation and input errors.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <ostream>
#include <set>
#include <string>
#include <vector>

#if __has_include("mor/model/accounting.h")
#include "mor/model/accounting.h"
#define MOR_TEST_HAVE_ACCOUNTING 1
#endif
#include "mor/config/config.h"
#include "mor/core/error.h"
#include "mor/model/layout.h"
#include "mor/model/model.h"
#include "support/reference_model.h"
#include "support/test_helpers.h"

namespace mor::testing {
namespace {

using config::Balancing;
using config::ExpertAux;
using config::KvMode;
using config::RouterArch;
using config::RoutingMode;
using config::Sharing;

model::ForwardOptions options(bool training, RoutingMode routing = RoutingMode::kCausal,
                              int64_t step = 0) {
  model::ForwardOptions o;
  o.training = training;
  o.routing = routing;
  o.step = step;
  return o;
}

at::Tensor forward_logits(const model::MoRModel& m, const at::Tensor& tokens,
                          const model::ForwardOptions& o) {
  at::NoGradGuard guard;
  return m.forward(tokens, o).logits;
}

// tokens with every position after t replaced by other random ids (never the same id).
at::Tensor change_after(const at::Tensor& tokens, int64_t t, int64_t vocab, uint64_t seed) {
  at::Tensor out = tokens.clone();
  const int64_t length = tokens.size(1);
  if (t + 1 >= length) return out;
  const at::Tensor shift = random_tokens(tokens.size(0), length - t - 1, vocab - 1, seed) + 1;
  out.narrow(1, t + 1, length - t - 1).add_(shift).remainder_(vocab);
  return out;
}

// ------------------------------------------------------------------------------------------------
// Causality: a logit at position t depends only on tokens 0..t.

struct CausalCase {
  std::string name;
  config::ModelConfig cfg;
  model::ForwardOptions opts;
  bool mix = false;  // scale routers so causal EC routing has early exits and full-depth tokens
};

void PrintTo(const CausalCase& c, std::ostream* os) { *os << c.name; }

CausalCase causal_case(std::string name, config::ModelConfig cfg, model::ForwardOptions o,
                       bool mix = false) {
  CausalCase c;
  c.name = std::move(name);
  c.cfg = std::move(cfg);
  c.opts = o;
  c.mix = mix;
  return c;
}

std::vector<CausalCase> causal_cases() {
  std::vector<CausalCase> out;
  out.push_back(causal_case("vanilla", tiny_config(), options(false)));
  for (KvMode kv : {KvMode::kRecursion, KvMode::kShare}) {
    const std::string k = std::string("_kv") + config::to_string(kv);
    auto cyc = recursive_config(Sharing::kCycle, 3, 6);
    cyc.kv_mode = kv;
    out.push_back(causal_case("recursive_cycle" + k, cyc, options(true)));
    auto mid = recursive_config(Sharing::kMiddleCycle, 2, 6);
    mid.kv_mode = kv;
    out.push_back(causal_case("recursive_middle_cycle" + k, mid, options(false)));
    for (ExpertAux aux : {ExpertAux::kLoss, ExpertAux::kRouter}) {
      auto ec = expert_config(Sharing::kMiddleCycle, 3, 8);
      ec.router.expert.aux = aux;
      ec.router.arch = aux == ExpertAux::kRouter ? RouterArch::kMlp : RouterArch::kLinear;
      ec.kv_mode = kv;
      out.push_back(causal_case(std::string("expert_causal_aux") + config::to_string(aux) + k, ec,
                                options(false), true));
    }
    auto ec_caps = expert_config(Sharing::kCycle, 2, 4);
    ec_caps.router.expert.capacities = {0.7, 0.4};
    ec_caps.kv_mode = kv;
    out.push_back(causal_case("expert_causal_capacity_below_one" + k, ec_caps, options(false), true));
    for (bool training : {true, false}) {
      auto tc = token_config(Sharing::kMiddleCycle, 3, 5);
      tc.router.token.balancing = Balancing::kLossFree;
      tc.kv_mode = kv;
      out.push_back(causal_case(std::string("token_") + (training ? "train" : "infer") + k, tc,
                                options(training)));
    }
  }
  return out;
}

class CausalModes : public ::testing::TestWithParam<CausalCase> {};

TEST_P(CausalModes, ChangingLaterTokensNeverChangesEarlierLogits) {
  const CausalCase& c = GetParam();
  model::MoRModel m(c.cfg, at::kDouble);
  const int64_t length = 14;
  const at::Tensor tokens = random_tokens(2, length, c.cfg.vocab_size, 21);
  if (c.mix) {
    ASSERT_TRUE(mix_routing_depth(m, tokens, c.opts));
  }
  const at::Tensor base = forward_logits(m, tokens, c.opts);
  for (int64_t t : {0, 4, 9}) {
    const at::Tensor changed = change_after(tokens, t, c.cfg.vocab_size, 100 + t);
    const at::Tensor logits = forward_logits(m, changed, c.opts);
    EXPECT_TRUE(tensors_close(logits.narrow(1, 0, t + 1), base.narrow(1, 0, t + 1), 0.0, 1e-12))
        << "positions <= " << t;
    // The change itself is visible later, so the comparison above is not vacuous.
    EXPECT_GT(max_abs(logits.narrow(1, t + 1, length - t - 1) -
                      base.narrow(1, t + 1, length - t - 1)),
              1e-6);
  }
}

INSTANTIATE_TEST_SUITE_P(Model, CausalModes, ::testing::ValuesIn(causal_cases()),
                         [](const auto& info) { return info.param.name; });

// Expected behaviour, documented: training-time expert-choice top-k ranks a token against the
// whole row, so a later token can push an earlier one out of (or into) a recursion. This is why
// inference defaults to causal routing.
TEST(ExpertChoiceRouting, TrainingTopkExpertChoiceIsNotCausal) {
  auto cfg = expert_config(Sharing::kCycle, 3, 6);
  model::MoRModel m(cfg, at::kDouble);
  scale_router_weights(m, 50.0);
  const int64_t length = 14, t = 7;
  const at::Tensor tokens = random_tokens(2, length, cfg.vocab_size, 31);
  const at::Tensor base = forward_logits(m, tokens, options(true));
  bool early_changed = false;
  for (uint64_t seed = 0; seed < 20 && !early_changed; ++seed) {
    const at::Tensor logits =
        forward_logits(m, change_after(tokens, t, cfg.vocab_size, 500 + seed), options(true));
    early_changed = max_abs(logits.narrow(1, 0, t + 1) - base.narrow(1, 0, t + 1)) > 1e-9;
  }
  EXPECT_TRUE(early_changed) << "no change after position " << t << " moved an earlier logit";
}

// ------------------------------------------------------------------------------------------------
// Sharing.

using ShapeMap = std::map<std::string, std::vector<int64_t>>;

ShapeMap expected_parameters(const config::ModelConfig& c) {
  const model::Layout layout = model::make_layout(c);
  const int64_t v = c.vocab_size, d = c.hidden_size, h = c.num_heads, hkv = c.num_kv_heads;
  const int64_t hd = c.resolved_head_dim(), ff = c.intermediate_size;
  const int64_t n = c.recursion.num_recursions;
  ShapeMap out;
  out["model.embed_tokens.weight"] = {v, d};
  if (!c.tie_embeddings) out["lm_head.weight"] = {v, d};
  out["model.norm.weight"] = {d};
  const bool per_layer_norms = c.recursion.sharing != Sharing::kNone && !c.recursion.share_norms;
  for (int64_t p = 0; p < layout.num_param_sets; ++p) {
    const std::string b = "model.layers." + std::to_string(p) + ".";
    out[b + "self_attn.q_proj.weight"] = {h * hd, d};
    out[b + "self_attn.k_proj.weight"] = {hkv * hd, d};
    out[b + "self_attn.v_proj.weight"] = {hkv * hd, d};
    out[b + "self_attn.o_proj.weight"] = {d, h * hd};
    out[b + "mlp.gate_proj.weight"] = {ff, d};
    out[b + "mlp.up_proj.weight"] = {ff, d};
    out[b + "mlp.down_proj.weight"] = {d, ff};
    if (!per_layer_norms) {
      out[b + "input_layernorm.weight"] = {d};
      out[b + "post_attention_layernorm.weight"] = {d};
    }
  }
  if (per_layer_norms)
    for (int64_t j = 0; j < layout.unrolled_depth(); ++j) {
      const std::string b = "model.unrolled_norms." + std::to_string(j) + ".";
      out[b + "input_layernorm.weight"] = {d};
      out[b + "post_attention_layernorm.weight"] = {d};
    }
  auto router = [&](const std::string& prefix, int64_t outputs) {
    if (c.router.arch == RouterArch::kLinear) {
      out[prefix + ".weight"] = {outputs, d};
    } else {
      out[prefix + ".fc1.weight"] = {2 * d, d};
      out[prefix + ".fc2.weight"] = {outputs, 2 * d};
    }
  };
  if (c.router.kind == config::RouterKind::kExpert)
    for (int64_t r = 0; r < n; ++r) {
      router("model.routers." + std::to_string(r), 1);
      if (c.router.expert.aux == ExpertAux::kRouter)
        router("model.aux_routers." + std::to_string(r), 1);
    }
  if (c.router.kind == config::RouterKind::kToken) router("model.router", n);
  return out;
}

std::vector<std::pair<std::string, config::ModelConfig>> sharing_configs() {
  std::vector<std::pair<std::string, config::ModelConfig>> out;
  out.emplace_back("vanilla", tiny_config());
  auto untied = tiny_config();
  untied.tie_embeddings = false;
  out.emplace_back("vanilla_untied", untied);
  out.emplace_back("cycle", recursive_config(Sharing::kCycle, 3, 6));
  out.emplace_back("sequence", recursive_config(Sharing::kSequence, 2, 4));
  out.emplace_back("middle_sequence", recursive_config(Sharing::kMiddleSequence, 2, 6));
  auto unshared = recursive_config(Sharing::kMiddleCycle, 2, 6);
  unshared.recursion.share_norms = false;
  out.emplace_back("middle_cycle_unshared_norms", unshared);
  out.emplace_back("expert_linear", expert_config(Sharing::kMiddleCycle, 3, 5));
  auto aux = expert_config(Sharing::kMiddleCycle, 3, 5);
  aux.router.expert.aux = ExpertAux::kRouter;
  aux.router.arch = RouterArch::kMlp;
  out.emplace_back("expert_mlp_aux_router", aux);
  out.emplace_back("token_linear", token_config(Sharing::kCycle, 2, 4));
  auto tc = token_config(Sharing::kMiddleCycle, 3, 5);
  tc.router.arch = RouterArch::kMlp;
  tc.tie_embeddings = false;
  out.emplace_back("token_mlp_untied", tc);
  return out;
}

TEST(ParameterSharing, NamesShapesAndStorageMatchTheLayout) {
  for (const auto& [label, cfg] : sharing_configs()) {
    SCOPED_TRACE(label);
    model::MoRModel m(cfg, at::kDouble);
    const ShapeMap expected = expected_parameters(cfg);
    std::set<std::string> names;
    std::set<const void*> storage;
    int64_t numel = 0;
    for (const auto& p : m.parameters()) {
      EXPECT_TRUE(names.insert(p.name).second) << "duplicate name " << p.name;
      EXPECT_TRUE(storage.insert(p.tensor.data_ptr()).second) << "aliased storage " << p.name;
      EXPECT_TRUE(p.tensor.requires_grad()) << p.name;
      EXPECT_EQ(p.tensor.dtype(), at::kDouble) << p.name;
      auto it = expected.find(p.name);
      if (it == expected.end()) {
        ADD_FAILURE() << "unexpected parameter " << p.name;
        continue;
      }
      EXPECT_EQ(p.tensor.sizes().vec(), it->second) << p.name;
      numel += p.tensor.numel();
    }
    for (const auto& [name, shape] : expected) EXPECT_TRUE(names.count(name)) << "missing " << name;
    EXPECT_EQ(m.num_parameters(), numel);
    // Every unrolled layer maps to a parameter set that exists, and every set is used.
    std::set<int64_t> used(m.layout().unrolled.begin(), m.layout().unrolled.end());
    EXPECT_EQ(static_cast<int64_t>(used.size()), m.layout().num_param_sets);
    EXPECT_EQ(m.layout().unrolled_depth(), cfg.num_layers);
  }
}

// The model's gradient of a shared weight against the sum of the gradients that each unrolled
// layer's own (untied) copy receives in the reference: sharing = accumulation over recursions.
TEST(ParameterSharing, SharedGradientIsTheSumOfPerRecursionContributions) {
  std::vector<std::pair<std::string, config::ModelConfig>> cfgs;
  cfgs.emplace_back("cycle", recursive_config(Sharing::kCycle, 3, 6));
  auto cycle_share = recursive_config(Sharing::kCycle, 3, 6);
  cycle_share.kv_mode = KvMode::kShare;
  cfgs.emplace_back("cycle_kv_share", cycle_share);
  cfgs.emplace_back("expert", expert_config(Sharing::kMiddleCycle, 3, 8));
  auto tc = token_config(Sharing::kCycle, 2, 4);
  tc.kv_mode = KvMode::kShare;
  cfgs.emplace_back("token_kv_share", tc);
  for (const auto& [label, cfg] : cfgs) {
    SCOPED_TRACE(label);
    model::MoRModel m(cfg, at::kDouble);
    const at::Tensor tokens = random_tokens(3, 12, cfg.vocab_size, 41);
    const at::Tensor targets = random_targets(3, 12, cfg.vocab_size, 42);
    m.zero_grad();
    m.loss(m.forward(tokens, options(true)), targets).total.backward();
    const auto grads = snapshot_grads(m);
    m.zero_grad();
    ReferenceModel ref(m);
    ReferenceOptions ro;
    ro.untie_layers = true;
    const ReferenceOutput rout = ref.forward(tokens, ro);
    ref.loss(rout, targets).total.backward();
    const model::Layout& layout = m.layout();
    for (int64_t p : layout.block) {
      for (const char* w : {"self_attn.q_proj.weight", "self_attn.o_proj.weight",
                            "mlp.gate_proj.weight", "mlp.down_proj.weight",
                            "input_layernorm.weight"}) {
        at::Tensor sum;
        int contributors = 0;
        for (int64_t j = 0; j < layout.unrolled_depth(); ++j) {
          if (layout.unrolled[static_cast<size_t>(j)] != p) continue;
          const at::Tensor g = rout.untied[static_cast<size_t>(j)].at(w).grad();
          ASSERT_TRUE(g.defined()) << w << " of unrolled layer " << j;
          if (max_abs(g) > 0) ++contributors;
          sum = sum.defined() ? sum + g : g.clone();
        }
        const std::string name = "model.layers." + std::to_string(p) + "." + w;
        EXPECT_EQ(contributors, layout.num_recursions) << name;
        EXPECT_TRUE(tensors_close(grads.at(name), sum, 1e-9, 1e-13)) << name;
      }
    }
  }
}

void nudge(const at::Tensor& t, int64_t flat, double delta) {
  at::NoGradGuard guard;
  t.view({-1}).narrow(0, flat, 1).add_(delta);
}

TEST(ParameterSharing, SharedGradientMatchesFiniteDifferences) {
  std::vector<std::pair<std::string, config::ModelConfig>> cfgs;
  cfgs.emplace_back("cycle", recursive_config(Sharing::kCycle, 3, 3));
  cfgs.emplace_back("expert", expert_config(Sharing::kMiddleCycle, 2, 4));
  cfgs.emplace_back("token", token_config(Sharing::kCycle, 2, 2));
  for (const auto& [label, cfg] : cfgs) {
    SCOPED_TRACE(label);
    model::MoRModel m(cfg, at::kDouble);
    const at::Tensor tokens = random_tokens(2, 9, cfg.vocab_size, 51);
    const at::Tensor targets = random_targets(2, 9, cfg.vocab_size, 52);
    auto loss_value = [&]() {
      at::NoGradGuard guard;
      return m.loss(m.forward(tokens, options(true)), targets).total.item<double>();
    };
    m.zero_grad();
    m.loss(m.forward(tokens, options(true)), targets).total.backward();
    const auto grads = snapshot_grads(m);
    const std::string base = "model.layers." + std::to_string(m.layout().block[0]) + ".";
    for (const std::string w : {"self_attn.q_proj.weight", "self_attn.v_proj.weight",
                                "mlp.down_proj.weight", "input_layernorm.weight"}) {
      const at::Tensor* t = nullptr;
      for (const auto& p : m.parameters())
        if (p.name == base + w) t = &p.tensor;
      ASSERT_NE(t, nullptr) << base + w;
      for (int64_t flat : {int64_t{3}, int64_t{17}}) {
        const double eps = 1e-5;
        nudge(*t, flat, eps);
        const double up = loss_value();
        nudge(*t, flat, -2 * eps);
        const double down = loss_value();
        nudge(*t, flat, eps);
        const double fd = (up - down) / (2 * eps);
        const double ad = grads.at(base + w).view({-1})[flat].item<double>();
        EXPECT_NEAR(ad, fd, 1e-6 * std::max(1.0, std::abs(fd)) + 1e-9) << base + w << "[" << flat << "]";
      }
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Compute follows the active tokens.

class RowCounts : public ::testing::TestWithParam<KvMode> {};

TEST_P(RowCounts, ExpertTopkPushesExactlyTheSelectedTokens) {
  auto cfg = expert_config(Sharing::kMiddleCycle, 3, 5);
  cfg.kv_mode = GetParam();
  model::MoRModel m(cfg, at::kDouble);
  const int64_t batch = 2, length = 16;
  at::NoGradGuard guard;
  const auto out = m.forward(random_tokens(batch, length, cfg.vocab_size, 61), options(true));
  ASSERT_EQ(out.recursions.size(), 3u);
  const std::vector<double> caps = config::resolved_capacities(cfg);
  int64_t previous = batch * length;
  for (int64_t r = 0; r < 3; ++r) {
    const int64_t k = static_cast<int64_t>(std::floor(caps[r] * length + 1e-9));
    const auto& s = out.recursions[r];
    EXPECT_EQ(s.candidates, previous) << "r=" << r;
    EXPECT_EQ(s.active, batch * k) << "r=" << r;
    EXPECT_EQ(s.computed_rows, s.active) << "r=" << r;
    EXPECT_EQ(count_true(out.depth.gt(r)), s.active) << "r=" << r;
    previous = s.active;
  }
}

void expect_padded_to_longest_row(const model::ForwardOutput& out, int64_t n, bool expert) {
  ASSERT_EQ(static_cast<int64_t>(out.recursions.size()), n);
  const int64_t batch = out.depth.size(0);
  for (int64_t r = 0; r < n; ++r) {
    const at::Tensor active = out.depth.gt(r);
    const auto& s = out.recursions[r];
    EXPECT_EQ(s.active, count_true(active)) << "r=" << r;
    EXPECT_EQ(s.computed_rows, batch * active.sum(1).max().item<int64_t>()) << "r=" << r;
    if (expert) {
      EXPECT_EQ(s.candidates, count_true(out.depth.ge(r))) << "r=" << r;
    }
  }
  // Not everything is active after the first recursion, or the check says nothing.
  EXPECT_LT(out.recursions[n - 1].active, out.depth.numel());
}

TEST_P(RowCounts, TokenChoicePushesActiveTokensPaddedToTheLongestRow) {
  auto cfg = token_config(Sharing::kCycle, 3, 6);
  cfg.kv_mode = GetParam();
  model::MoRModel m(cfg, at::kDouble);
  scale_router_weights(m, 30.0);
  at::NoGradGuard guard;
  for (bool training : {true, false}) {
    SCOPED_TRACE(training ? "training" : "inference");
    const auto out = m.forward(random_tokens(3, 16, cfg.vocab_size, 62), options(training));
    expect_padded_to_longest_row(out, 3, false);
  }
}

TEST_P(RowCounts, ExpertCausalPushesActiveTokensPaddedToTheLongestRow) {
  auto cfg = expert_config(Sharing::kCycle, 3, 3);
  cfg.kv_mode = GetParam();
  model::MoRModel m(cfg, at::kDouble);
  const at::Tensor tokens = random_tokens(3, 16, cfg.vocab_size, 63);
  ASSERT_TRUE(mix_routing_depth(m, tokens, options(false)));
  at::NoGradGuard guard;
  expect_padded_to_longest_row(m.forward(tokens, options(false)), 3, true);
}

INSTANTIATE_TEST_SUITE_P(KvModes, RowCounts, ::testing::Values(KvMode::kRecursion, KvMode::kShare),
                         [](const auto& info) { return std::string(config::to_string(info.param)); });

// ------------------------------------------------------------------------------------------------
// Initialisation.

bool same_parameters(const model::MoRModel& a, const model::MoRModel& b) {
  if (a.parameters().size() != b.parameters().size()) return false;
  for (size_t i = 0; i < a.parameters().size(); ++i) {
    const auto& pa = a.parameters()[i];
    const auto& pb = b.parameters()[i];
    if (pa.name != pb.name) return false;
    if (!at::equal(pa.tensor.detach().to(at::kDouble), pb.tensor.detach().to(at::kDouble)))
      return false;
  }
  return true;
}

TEST(Initialisation, SameSeedGivesIdenticalParametersDifferentSeedDoesNot) {
  auto cfg = expert_config(Sharing::kMiddleCycle, 3, 5);
  cfg.router.expert.aux = ExpertAux::kRouter;
  const model::MoRModel a(cfg), b(cfg);
  EXPECT_TRUE(same_parameters(a, b));
  auto other = cfg;
  other.seed = cfg.seed + 1;
  const model::MoRModel c(other);
  ASSERT_EQ(a.parameters().size(), c.parameters().size());
  for (size_t i = 0; i < a.parameters().size(); ++i) {
    const auto& p = a.parameters()[i];
    if (p.name.find("norm") != std::string::npos) continue;  // ones either way
    EXPECT_FALSE(at::equal(p.tensor, c.parameters()[i].tensor)) << p.name;
  }
}

TEST(Initialisation, ValuesDoNotDependOnTheModelDtype) {
  const auto cfg = token_config(Sharing::kCycle, 2, 4);
  const model::MoRModel f(cfg, at::kFloat), d(cfg, at::kDouble);
  EXPECT_TRUE(same_parameters(f, d));
}

TEST(Initialisation, MatricesHaveInitStdAndNormsAreOne) {
  config::ModelConfig cfg = tiny_config();
  cfg.vocab_size = 4096;
  cfg.hidden_size = 128;
  cfg.intermediate_size = 256;
  cfg.num_layers = 2;
  cfg.init_std = 0.05;
  const model::MoRModel m(cfg);
  for (const auto& p : m.parameters()) {
    const at::Tensor t = p.tensor.detach().to(at::kDouble);
    if (p.name.find("norm") != std::string::npos) {
      EXPECT_TRUE(t.eq(1.0).all().item<bool>()) << p.name;
      continue;
    }
    const double std = t.std().item<double>(), mean = t.mean().item<double>();
    const double se = cfg.init_std / std::sqrt(double(t.numel()));
    EXPECT_NEAR(std, cfg.init_std, 0.03 * cfg.init_std + 6 * se) << p.name;
    EXPECT_NEAR(mean, 0.0, 6 * se) << p.name;
  }
}

#ifdef MOR_TEST_HAVE_ACCOUNTING
TEST(Initialisation, ParameterCountMatchesAccounting) {
  for (const auto& [label, cfg] : sharing_configs()) {
    SCOPED_TRACE(label);
    const model::MoRModel m(cfg);
    EXPECT_EQ(m.num_parameters(), model::account(cfg, 64).total_params);
  }
}
#endif

// ------------------------------------------------------------------------------------------------
// Loss normalisation over micro-batches.

struct SplitCase {
  std::string name;
  config::ModelConfig cfg;
  bool duplicate_halves;  // both micro-batches hold the same rows (equal routing statistics)
};

TEST(LossNormalisation, MicroBatchGradientsSumToTheFullBatchGradient) {
  std::vector<SplitCase> cases;
  auto ec = expert_config(Sharing::kMiddleCycle, 3, 5);
  ec.router.z_loss_coeff = 0.01;
  ec.router.expert.aux_coeff = 0.1;
  cases.push_back({"expert_aux_loss", ec, false});
  auto ec_router = expert_config(Sharing::kCycle, 2, 4);
  ec_router.router.expert.aux = ExpertAux::kRouter;
  cases.push_back({"expert_aux_router", ec_router, false});
  auto tc_z = token_config(Sharing::kCycle, 2, 4);
  tc_z.router.token.balancing = Balancing::kNone;
  tc_z.router.z_loss_coeff = 0.01;
  cases.push_back({"token_z_loss", tc_z, false});
  // sum_i P_i f_i is a product of batch means: it splits exactly only when the micro-batches have
  // the same routing statistics, hence identical halves.
  auto tc_bal = token_config(Sharing::kMiddleCycle, 3, 5);
  tc_bal.router.token.balance_coeff = 0.5;
  cases.push_back({"token_balance_loss", tc_bal, true});
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    model::MoRModel m(c.cfg, at::kDouble);
    const int64_t batch = 4, length = 10;
    at::Tensor tokens = random_tokens(batch, length, c.cfg.vocab_size, 71);
    at::Tensor targets = random_targets(batch, length, c.cfg.vocab_size, 72, 1);
    if (c.duplicate_halves) {
      tokens = at::cat({tokens.narrow(0, 0, 2), tokens.narrow(0, 0, 2)});
      targets = at::cat({targets.narrow(0, 0, 2), targets.narrow(0, 0, 2)});
    }
    const double total_targets = static_cast<double>(count_true(targets.ne(-100)));
    m.zero_grad();
    const auto full_out = m.forward(tokens, options(true));
    const auto full = m.loss(full_out, targets, model::LossOptions{total_targets});
    full.total.backward();
    const auto full_grads = snapshot_grads(m);
    m.zero_grad();
    double lm = 0, aux = 0;
    std::vector<at::Tensor> depths;
    for (int64_t half = 0; half < 2; ++half) {
      const auto out = m.forward(tokens.narrow(0, 2 * half, 2), options(true));
      const auto terms = m.loss(out, targets.narrow(0, 2 * half, 2), model::LossOptions{total_targets});
      terms.total.backward();  // gradients accumulate over the two micro-batches
      lm += terms.lm.item<double>();
      aux += terms.aux.item<double>();
      depths.push_back(out.depth);
    }
    const auto summed = snapshot_grads(m);
    m.zero_grad();
    ASSERT_TRUE(tensors_equal(at::cat(depths), full_out.depth)) << "routing changed with the split";
    EXPECT_NEAR(lm, full.lm.item<double>(), 1e-12);
    EXPECT_NEAR(aux, full.aux.item<double>(), 1e-12);
    EXPECT_GT(std::abs(aux), 0.0);
    for (const auto& [name, g] : full_grads)
      EXPECT_TRUE(tensors_close(summed.at(name), g, 1e-9, 1e-14)) << name;
  }
}

// ------------------------------------------------------------------------------------------------
// Input errors.

TEST(ForwardErrors, TokenIdOutOfVocabulary) {
  const model::MoRModel m(tiny_config());
  at::Tensor tokens = random_tokens(2, 5, 61, 81);
  tokens[1][3] = 61;
  EXPECT_TRUE(throws_error_containing([&] { m.forward(tokens); }, "token id"));
  tokens[1][3] = -1;
  EXPECT_TRUE(throws_error_containing([&] { m.forward(tokens); }, "token id"));
}

TEST(ForwardErrors, SequenceLongerThanMaxSeqLen) {
  const model::MoRModel m(tiny_config());
  EXPECT_TRUE(throws_error_containing([&] { m.forward(random_tokens(1, 65, 61, 82)); },
                                      "max_seq_len"));
}

TEST(ForwardErrors, OneDimensionalTokens) {
  const model::MoRModel m(tiny_config());
  EXPECT_TRUE(throws_error_containing([&] { m.forward(random_tokens(1, 5, 61, 83).view({-1})); }, ""));
}

}  // namespace
}  // namespace mor::testing
