// The model (compacted tokens, gather/scatter, attention backend) against an independent float64
// reference (dense masked attention over the full sequence, tests/support/reference_model.*):
// forward logits, depth, recursion statistics, auxiliary terms, loss terms and the gradient of
// every parameter, for every variant x KV mode x router x routing mode.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <ostream>
#include <string>
#include <vector>

#include "mor/config/config.h"
#include "mor/model/model.h"
#include "support/reference_model.h"
#include "support/test_helpers.h"

namespace mor::testing {
namespace {

using config::Balancing;
using config::ExpertAux;
using config::GateFunc;
using config::KvMode;
using config::RouterArch;
using config::RoutingMode;
using config::Sharing;

constexpr double kRtol = 1e-9;
constexpr double kAtol = 1e-13;
constexpr int64_t kBatch = 3;
constexpr int64_t kLength = 11;

struct RefCase {
  std::string name;
  config::ModelConfig cfg;
  bool training = true;
  RoutingMode routing = RoutingMode::kCausal;
  int64_t step = 0;
  std::vector<double> balance_counts;  // non-empty: apply_balance_update(counts) first
  double normalizer = 0.0;
  bool mixed_depth = false;  // scale the routers until some tokens exit early and some go deep
};

void PrintTo(const RefCase& c, std::ostream* os) { *os << c.name; }

RefCase make_case(std::string name, config::ModelConfig cfg) {
  RefCase c;
  c.name = std::move(name);
  c.cfg = std::move(cfg);
  return c;
}

std::string mode_name(bool training, RoutingMode routing) {
  if (training) return "train";
  return routing == RoutingMode::kCausal ? "causal" : "topk";
}

// Unrolled depth for a (sharing, N_r) pair; blocks of 2 layers where the depth allows it.
int64_t layers_for(Sharing sharing, int64_t n) {
  if (sharing == Sharing::kCycle) return 2 * n;
  if (sharing == Sharing::kMiddleCycle) return n == 2 ? 6 : 5;
  if (sharing == Sharing::kSequence) return 2 * n;
  if (sharing == Sharing::kMiddleSequence) return 2 + 2 * n;
  return 4;
}

std::vector<RefCase> plain_cases() {
  std::vector<RefCase> out;
  {
    RefCase c = make_case("vanilla_tied_train", tiny_config());
    out.push_back(c);
    c.name = "vanilla_tied_infer";
    c.training = false;
    out.push_back(c);
    c = make_case("vanilla_untied_train", tiny_config());
    c.cfg.tie_embeddings = false;
    out.push_back(c);
    c = make_case("vanilla_tied_normalizer", tiny_config());
    c.normalizer = 57.0;
    out.push_back(c);
  }
  for (Sharing s : {Sharing::kSequence, Sharing::kMiddleSequence}) {
    for (bool share_norms : {true, false}) {
      RefCase c = make_case(std::string(config::to_string(s)) + "_n2" + (share_norms ? "" : "_unshared_norms"),
                recursive_config(s, 2, layers_for(s, 2)));
      c.cfg.recursion.share_norms = share_norms;
      out.push_back(c);
    }
  }
  for (Sharing s : {Sharing::kCycle, Sharing::kMiddleCycle})
    for (int64_t n : {2, 3})
      for (KvMode kv : {KvMode::kRecursion, KvMode::kShare})
        for (bool training : {true, false}) {
          RefCase c = make_case(std::string("recursive_") + config::to_string(s) + "_n" + std::to_string(n) +
                        "_kv" + config::to_string(kv) + "_" + mode_name(training, RoutingMode::kCausal),
                    recursive_config(s, n, layers_for(s, n)));
          c.cfg.kv_mode = kv;
          c.training = training;
          out.push_back(c);
        }
  for (Sharing s : {Sharing::kCycle, Sharing::kMiddleCycle}) {
    RefCase c = make_case(std::string("recursive_") + config::to_string(s) + "_unshared_norms",
              recursive_config(s, 2, layers_for(s, 2)));
    c.cfg.recursion.share_norms = false;
    out.push_back(c);
  }
  return out;
}

std::vector<RefCase> expert_cases() {
  std::vector<RefCase> out;
  for (Sharing s : {Sharing::kCycle, Sharing::kMiddleCycle})
    for (int64_t n : {2, 3})
      for (RouterArch arch : {RouterArch::kLinear, RouterArch::kMlp})
        for (GateFunc func : {GateFunc::kSigmoid, GateFunc::kTanh})
          for (ExpertAux aux : {ExpertAux::kLoss, ExpertAux::kRouter})
            for (bool explicit_caps : {false, true})
              for (KvMode kv : {KvMode::kRecursion, KvMode::kShare})
                for (int mode = 0; mode < 3; ++mode) {
                  RefCase c;
                  c.cfg = expert_config(s, n, layers_for(s, n));
                  c.cfg.router.arch = arch;
                  c.cfg.router.expert.func = func;
                  c.cfg.router.expert.aux = aux;
                  c.cfg.kv_mode = kv;
                  if (explicit_caps)
                    c.cfg.router.expert.capacities =
                        n == 2 ? std::vector<double>{0.8, 0.4} : std::vector<double>{1.0, 0.6, 0.3};
                  if (arch == RouterArch::kMlp) c.cfg.router.z_loss_coeff = 0.01;
                  if (func == GateFunc::kTanh) c.cfg.router.temperature = 1.5;
                  c.training = mode == 0;
                  c.routing = mode == 2 ? RoutingMode::kTopk : RoutingMode::kCausal;
                  c.mixed_depth = mode == 1;
                  c.name = std::string("expert_") + config::to_string(s) + "_n" +
                           std::to_string(n) + "_" + config::to_string(arch) + "_" +
                           config::to_string(func) + "_aux" + config::to_string(aux) + "_cap" +
                           (explicit_caps ? "explicit" : "default") + "_kv" +
                           config::to_string(kv) + "_" + mode_name(c.training, c.routing);
                  out.push_back(c);
                }
  // Capacity warm-up (training only), untied embeddings, per-layer norms, an explicit normalizer.
  for (int64_t step : {0, 3, 20}) {
    RefCase c = make_case("expert_capacity_warmup_step" + std::to_string(step),
              expert_config(Sharing::kMiddleCycle, 3, 5));
    c.cfg.router.expert.capacity_warmup_steps = 10;
    c.cfg.router.expert.capacities = {0.9, 0.6, 0.3};
    c.step = step;
    out.push_back(c);
  }
  {
    RefCase c = make_case("expert_untied_unshared_norms_normalizer", expert_config(Sharing::kCycle, 2, 4));
    c.cfg.tie_embeddings = false;
    c.cfg.recursion.share_norms = false;
    c.normalizer = 64.0;
    out.push_back(c);
    c.name = "expert_untied_unshared_norms_causal";
    c.training = false;
    c.mixed_depth = true;
    out.push_back(c);
  }
  return out;
}

std::vector<RefCase> token_cases() {
  std::vector<RefCase> out;
  for (Sharing s : {Sharing::kCycle, Sharing::kMiddleCycle})
    for (int64_t n : {2, 3})
      for (GateFunc func : {GateFunc::kSoftmax, GateFunc::kSigmoid})
        for (int balancing = 0; balancing < 4; ++balancing)
          for (RouterArch arch : {RouterArch::kLinear, RouterArch::kMlp})
            for (KvMode kv : {KvMode::kRecursion, KvMode::kShare})
              for (bool training : {true, false}) {
                RefCase c;
                c.cfg = token_config(s, n, layers_for(s, n));
                c.cfg.router.arch = arch;
                c.cfg.router.token.func = func;
                if (func == GateFunc::kSigmoid) c.cfg.router.token.alpha = 0.5;
                c.cfg.router.token.balancing = balancing == 0   ? Balancing::kNone
                                               : balancing == 1 ? Balancing::kLoss
                                                                : Balancing::kLossFree;
                c.cfg.router.token.bias_update_rate = 0.002;
                if (balancing == 3)
                  c.balance_counts = n == 2 ? std::vector<double>{7, 3} : std::vector<double>{5, 1, 2};
                if (arch == RouterArch::kMlp) c.cfg.router.z_loss_coeff = 0.01;
                c.cfg.kv_mode = kv;
                c.training = training;
                const char* bal[] = {"none", "loss", "lossfree", "lossfree_updated"};
                c.name = std::string("token_") + config::to_string(s) + "_n" + std::to_string(n) +
                         "_" + config::to_string(func) + "_bal" + bal[balancing] + "_" +
                         config::to_string(arch) + "_kv" + config::to_string(kv) + "_" +
                         mode_name(training, RoutingMode::kCausal);
                out.push_back(c);
              }
  for (int64_t step : {2, 5}) {
    RefCase c = make_case("token_balance_warmup_step" + std::to_string(step), token_config(Sharing::kCycle, 3, 6));
    c.cfg.router.token.balance_warmup_steps = 5;
    c.step = step;
    out.push_back(c);
  }
  {
    RefCase c = make_case("token_untied_unshared_norms_temperature", token_config(Sharing::kMiddleCycle, 2, 6));
    c.cfg.tie_embeddings = false;
    c.cfg.recursion.share_norms = false;
    c.cfg.router.temperature = 0.7;
    out.push_back(c);
  }
  return out;
}

class ModelMatchesReference : public ::testing::TestWithParam<RefCase> {};

void expect_term(const char* what, const at::Tensor& model_term, const at::Tensor& ref_term) {
  EXPECT_EQ(model_term.defined(), ref_term.defined())
      << what << ": defined in model " << model_term.defined() << ", in reference "
      << ref_term.defined();
  if (model_term.defined() && ref_term.defined()) {
    EXPECT_TRUE(tensors_close(model_term.reshape({-1}), ref_term.reshape({-1}), kRtol, kAtol))
        << what;
  }
}

TEST_P(ModelMatchesReference, LogitsDepthLossTermsAndGradients) {
  const RefCase& c = GetParam();
  model::MoRModel model(c.cfg, at::kDouble);
  ReferenceModel ref(model);
  const int64_t n_rec = model.layout().num_recursions;

  ReferenceOptions ropt;
  ropt.training = c.training;
  ropt.routing = c.routing;
  ropt.step = c.step;
  model::ForwardOptions fopt;
  fopt.training = c.training;
  fopt.routing = c.routing;
  fopt.step = c.step;

  if (!c.balance_counts.empty()) {
    const at::Tensor counts = at::tensor(c.balance_counts, at::kDouble);
    model.apply_balance_update(counts);
    const at::Tensor share = counts / counts.sum();
    const at::Tensor expected =
        c.cfg.router.token.bias_update_rate * at::sign(share.mean() - share);
    ASSERT_TRUE(model.balance_bias().defined());
    ASSERT_TRUE(tensors_close(model.balance_bias(), expected, 1e-6, 0.0)) << "balance bias";
    ASSERT_GT(max_abs(model.balance_bias()), 0.0);
    ropt.balance_bias = model.balance_bias().to(at::kDouble);
  }

  const at::Tensor tokens = random_tokens(kBatch, kLength, c.cfg.vocab_size, 11);
  const at::Tensor targets = random_targets(kBatch, kLength, c.cfg.vocab_size, 12, 2);

  if (c.mixed_depth) {
    // Causal decisions compare func(z) with the threshold: make router logits large enough that
    // some tokens continue and some exit (decided by the reference, the oracle).
    bool mixed = false;
    for (int attempt = 0; attempt < 10 && !mixed; ++attempt) {
      at::NoGradGuard guard;
      const at::Tensor depth = ref.forward(tokens, ropt).depth;
      mixed = depth.lt(n_rec).any().item<bool>() && depth.eq(n_rec).any().item<bool>();
      if (!mixed) scale_router_weights(model, 4.0);
    }
    ASSERT_TRUE(mixed) << "could not make causal routing mixed";
  }

  model.zero_grad();
  const model::ForwardOutput out = model.forward(tokens, fopt);
  const model::LossTerms terms = model.loss(out, targets, model::LossOptions{c.normalizer});
  std::map<std::string, at::Tensor> model_grads;
  if (c.training) {
    terms.total.backward();
    model_grads = snapshot_grads(model);
  }
  model.zero_grad();
  const ReferenceOutput rout = ref.forward(tokens, ropt);
  const ReferenceLoss rloss = ref.loss(rout, targets, c.normalizer);
  std::map<std::string, at::Tensor> ref_grads;
  if (c.training) {
    rloss.total.backward();
    ref_grads = snapshot_grads(model);
  }
  model.zero_grad();

  ASSERT_EQ(out.logits.dtype(), at::kDouble);
  EXPECT_TRUE(tensors_close(out.logits, rout.logits, kRtol, kAtol)) << "logits";
  ASSERT_TRUE(out.depth.defined());
  if (c.cfg.router.kind == config::RouterKind::kNone && n_rec > 0) {
    // Without a router every token takes every recursion; 0 ("no routing") is accepted too.
    const bool zeros = out.depth.eq(0).all().item<bool>();
    const bool full = out.depth.eq(n_rec).all().item<bool>();
    EXPECT_TRUE(zeros || full) << "depth of a router-less recursive model:\n" << out.depth;
  } else {
    EXPECT_TRUE(tensors_equal(out.depth, rout.depth)) << "depth";
  }
  if (c.cfg.router.kind != config::RouterKind::kNone) {
    ASSERT_EQ(static_cast<int64_t>(out.recursions.size()), n_rec);
    for (int64_t r = 0; r < n_rec; ++r) {
      EXPECT_EQ(out.recursions[r].active, count_true(rout.active[r])) << "active at r=" << r;
      if (c.cfg.router.kind == config::RouterKind::kExpert) {
        EXPECT_EQ(out.recursions[r].candidates, count_true(rout.candidates[r]))
            << "candidates at r=" << r;
      }
    }
  }
  if (c.mixed_depth) {
    EXPECT_TRUE(out.depth.lt(n_rec).any().item<bool>()) << "no token exited early";
    EXPECT_TRUE(out.depth.eq(n_rec).any().item<bool>()) << "no token went the full depth";
  }

  expect_term("router_bce", out.router_bce, rout.router_bce);
  expect_term("aux_router_bce", out.aux_router_bce, rout.aux_router_bce);
  expect_term("balance_loss", out.balance_loss, rout.balance_loss);
  expect_term("z_loss", out.z_loss, rout.z_loss);
  expect_term("router_accuracy", out.router_accuracy, rout.router_accuracy);
  expect_term("depth_counts", out.depth_counts, rout.depth_counts);

  EXPECT_EQ(terms.targets, rloss.targets);
  EXPECT_TRUE(tensors_close(terms.lm, rloss.lm, kRtol, kAtol)) << "lm";
  EXPECT_TRUE(tensors_close(terms.aux, rloss.aux, kRtol, kAtol)) << "aux";
  EXPECT_TRUE(tensors_close(terms.total, rloss.total, kRtol, kAtol)) << "total";

  if (c.training) {
    ASSERT_EQ(model_grads.size(), ref_grads.size());
    for (const auto& [name, g] : ref_grads) {
      ASSERT_TRUE(model_grads.count(name)) << name;
      EXPECT_TRUE(tensors_close(model_grads[name], g, kRtol, kAtol)) << "grad of " << name;
    }
    // The trunk must get gradient at all (a vacuous comparison of zeros proves nothing).
    EXPECT_GT(max_abs(ref_grads.at("model.embed_tokens.weight")), 0.0);
  }
}

std::string case_name(const ::testing::TestParamInfo<RefCase>& info) { return info.param.name; }

INSTANTIATE_TEST_SUITE_P(Plain, ModelMatchesReference, ::testing::ValuesIn(plain_cases()),
                         case_name);
INSTANTIATE_TEST_SUITE_P(ExpertChoice, ModelMatchesReference, ::testing::ValuesIn(expert_cases()),
                         case_name);
INSTANTIATE_TEST_SUITE_P(TokenChoice, ModelMatchesReference, ::testing::ValuesIn(token_cases()),
                         case_name);

// The default fp32 model against the float64 reference at fp32 tolerance (routing decisions are far
// from ties for these seeds, so depth must match exactly).
TEST(ModelMatchesReferenceFp32, LogitsWithinFloatTolerance) {
  std::vector<std::pair<std::string, config::ModelConfig>> cfgs;
  cfgs.emplace_back("vanilla", tiny_config());
  cfgs.emplace_back("recursive_middle_cycle", recursive_config(Sharing::kMiddleCycle, 2, 6));
  auto ec = expert_config(Sharing::kCycle, 3, 6);
  ec.kv_mode = KvMode::kShare;
  cfgs.emplace_back("expert_kv_share", ec);
  cfgs.emplace_back("token", token_config(Sharing::kCycle, 2, 4));
  for (const auto& [label, cfg] : cfgs) {
    SCOPED_TRACE(label);
    model::MoRModel model(cfg);
    ASSERT_EQ(model.dtype(), at::kFloat);
    ReferenceModel ref(model);
    const at::Tensor tokens = random_tokens(kBatch, kLength, cfg.vocab_size, 13);
    at::NoGradGuard guard;
    model::ForwardOptions fopt;
    fopt.training = true;
    const auto out = model.forward(tokens, fopt);
    const auto rout = ref.forward(tokens, ReferenceOptions{});
    EXPECT_EQ(out.logits.dtype(), at::kFloat);
    EXPECT_TRUE(tensors_close(out.logits, rout.logits, 1e-4, 1e-6));
    if (cfg.router.kind != config::RouterKind::kNone) {
      EXPECT_TRUE(tensors_equal(out.depth, rout.depth));
    }
  }
}

// The reference's own building blocks against closed forms, so a shared misconception between
// model and reference would have to survive an independent check as well.
TEST(ReferenceModelSelfCheck, SingleTokenAttentionIsValueProjection) {
  // With T = 1 each token attends only to itself: attention output = o(v(norm(x))).
  config::ModelConfig cfg = tiny_config();
  cfg.num_layers = 1;
  model::MoRModel model(cfg, at::kDouble);
  ReferenceModel ref(model);
  const at::Tensor tokens = random_tokens(2, 1, cfg.vocab_size, 3);
  at::NoGradGuard guard;
  const at::Tensor logits = ref.forward(tokens, {}).logits;
  const at::Tensor e = ref.weight("model.embed_tokens.weight");
  at::Tensor x = e.index_select(0, tokens.reshape({-1})).unsqueeze(1);
  auto norm = [&](const at::Tensor& v, const at::Tensor& w) {
    return w * v / at::sqrt(v.pow(2).mean({-1}, true) + cfg.rms_norm_eps);
  };
  const std::string p = "model.layers.0.";
  at::Tensor h = norm(x, ref.weight(p + "input_layernorm.weight"));
  at::Tensor v = at::matmul(h, ref.weight(p + "self_attn.v_proj.weight").t());  // [2,1,Hkv*D]
  const int64_t d = cfg.hidden_size / cfg.num_heads;
  // Heads 0,1 read KV head 0; heads 2,3 read KV head 1.
  at::Tensor heads = at::cat({v.narrow(-1, 0, d), v.narrow(-1, 0, d), v.narrow(-1, d, d),
                              v.narrow(-1, d, d)}, -1);
  at::Tensor a = x + at::matmul(heads, ref.weight(p + "self_attn.o_proj.weight").t());
  at::Tensor h2 = norm(a, ref.weight(p + "post_attention_layernorm.weight"));
  at::Tensor y = a + at::matmul(at::silu(at::matmul(h2, ref.weight(p + "mlp.gate_proj.weight").t())) *
                                    at::matmul(h2, ref.weight(p + "mlp.up_proj.weight").t()),
                                ref.weight(p + "mlp.down_proj.weight").t());
  at::Tensor expected = at::matmul(norm(y, ref.weight("model.norm.weight")), e.t());
  EXPECT_TRUE(tensors_close(logits, expected, 1e-12, 0.0));
}

}  // namespace
}  // namespace mor::testing
