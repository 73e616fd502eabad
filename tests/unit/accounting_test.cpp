// Parameter and FLOP accounting against the paper's SmolLM counts, the released token budgets
// (mor-spec §6.3) and the KV-cache cost model (mor-spec §5).
#include "mor/model/accounting.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "mor/core/error.h"

namespace mor::model {
namespace {

using config::ExpertAux;
using config::KvMode;
using config::ModelConfig;
using config::RouterArch;
using config::RouterKind;
using config::Sharing;

ModelConfig smollm(int64_t d, int64_t ff, int64_t layers, int64_t heads, int64_t kv_heads) {
  ModelConfig m;
  m.vocab_size = 49152;
  m.hidden_size = d;
  m.intermediate_size = ff;
  m.num_layers = layers;
  m.num_heads = heads;
  m.num_kv_heads = kv_heads;
  m.head_dim = 64;
  m.tie_embeddings = true;
  return m;
}

ModelConfig smollm_135m() { return smollm(576, 1536, 30, 9, 3); }
ModelConfig smollm_360m() { return smollm(960, 2560, 32, 15, 5); }
ModelConfig smollm_1_7b() { return smollm(2048, 8192, 24, 32, 32); }

ModelConfig recursive(ModelConfig m, Sharing sharing, int64_t n, RouterKind kind) {
  m.recursion.sharing = sharing;
  m.recursion.num_recursions = n;
  m.router.kind = kind;
  return m;
}

double relative_error(double a, double b) { return std::abs(a - b) / std::abs(b); }

double router_flops(const Accounting& acc) {
  double sum = acc.prelude.router_flops + acc.coda.router_flops;
  for (const StageCost& s : acc.depths) sum += s.router_flops;
  return sum;
}

// mor-spec §6.3: F = Σ_unique (2 P + 2 d T) + Σ_shared slots Σ_r (c_r 2 P + c_r^2 2 d T).
double spec_forward_flops(int64_t d, int64_t p_layer, int64_t unique_layers, int64_t shared_slots,
                          const std::vector<double>& capacities, double t) {
  double f = unique_layers * (2.0 * p_layer + 2.0 * d * t);
  for (int64_t i = 0; i < shared_slots; ++i)
    for (double c : capacities) f += c * 2.0 * p_layer + c * c * 2.0 * d * t;
  return f;
}

TEST(AccountingParams, SmolLM360VanillaMatchesPaperCounts) {
  const Accounting acc = account(smollm_360m(), 2048);
  EXPECT_EQ(acc.params_per_layer, 9'832'320);
  EXPECT_EQ(acc.non_embedding_params, 314'634'240);
  EXPECT_EQ(acc.embedding_params, 47'185'920);
  EXPECT_EQ(acc.lm_head_params, 0);
  EXPECT_EQ(acc.final_norm_params, 960);
  EXPECT_EQ(acc.router_params, 0);
  EXPECT_EQ(acc.total_params, 314'634'240 + 47'185'920 + 960);
  EXPECT_EQ(acc.unrolled_depth, 32);
  EXPECT_TRUE(acc.depths.empty());
}

TEST(AccountingParams, SmolLM360MiddleCycleExpertMatchesPaperCounts) {
  const Accounting two =
      account(recursive(smollm_360m(), Sharing::kMiddleCycle, 2, RouterKind::kExpert), 2048);
  EXPECT_EQ(two.non_embedding_params, 167'149'440);
  EXPECT_EQ(two.num_param_sets, 17);
  EXPECT_EQ(two.router_params, 2 * 960);
  EXPECT_EQ(two.aux_router_params, 0);
  EXPECT_EQ(two.total_params, 167'149'440 + 47'185'920 + 960 + 2 * 960);

  const Accounting three =
      account(recursive(smollm_360m(), Sharing::kMiddleCycle, 3, RouterKind::kExpert), 2048);
  EXPECT_EQ(three.non_embedding_params, 117'987'840);
  EXPECT_EQ(three.router_params, 3 * 960);
}

TEST(AccountingParams, SmolLM135And1_7BPerLayerMatchPaperCounts) {
  const Accounting small = account(smollm_135m(), 2048);
  EXPECT_EQ(small.params_per_layer, 3'540'096);
  EXPECT_EQ(small.non_embedding_params, 30 * 3'540'096);
  EXPECT_NEAR(small.non_embedding_params / 1e6, 106.2, 0.05);
  EXPECT_EQ(small.embedding_params, 28'311'552);

  const Accounting large = account(smollm_1_7b(), 2048);
  EXPECT_EQ(large.params_per_layer, 67'112'960);
  EXPECT_NEAR(large.non_embedding_params / 1e6, 1610.7, 0.05);
}

TEST(AccountingParams, RouterShapesPerKindAndArch) {
  const int64_t d = 960;
  ModelConfig ec = recursive(smollm_360m(), Sharing::kMiddleCycle, 3, RouterKind::kExpert);
  ec.router.expert.aux = ExpertAux::kRouter;
  Accounting acc = account(ec, 2048);
  EXPECT_EQ(acc.router_params, 3 * d);
  EXPECT_EQ(acc.aux_router_params, 3 * d);
  EXPECT_EQ(acc.total_params, acc.non_embedding_params + acc.embedding_params + d + 6 * d);

  ec.router.arch = RouterArch::kMlp;
  acc = account(ec, 2048);
  EXPECT_EQ(acc.router_params, 3 * (2 * d * d + 2 * d));
  EXPECT_EQ(acc.aux_router_params, acc.router_params);

  ModelConfig tc = recursive(smollm_360m(), Sharing::kMiddleCycle, 3, RouterKind::kToken);
  acc = account(tc, 2048);
  EXPECT_EQ(acc.router_params, 3 * d);
  EXPECT_EQ(acc.aux_router_params, 0);
  EXPECT_EQ(acc.router_buffer_values, 3);
  tc.router.arch = RouterArch::kMlp;
  acc = account(tc, 2048);
  EXPECT_EQ(acc.router_params, 2 * d * d + 3 * 2 * d);
}

TEST(AccountingParams, UnsharedNormsBelongToEveryUnrolledLayer) {
  ModelConfig m = recursive(smollm_360m(), Sharing::kMiddleCycle, 2, RouterKind::kExpert);
  m.recursion.share_norms = false;
  const Accounting acc = account(m, 2048);
  EXPECT_EQ(acc.non_embedding_params, 167'149'440 + (32 - 17) * 2 * 960);
  m.tie_embeddings = false;
  EXPECT_EQ(account(m, 2048).lm_head_params, 49152 * 960);
}

TEST(AccountingFlops, ExpertChoiceRatiosReproduceReleasedTokenBudgets) {
  const int64_t t = 2048;
  const ModelConfig vanilla = smollm_360m();
  const int64_t p_layer = 9'830'400;
  const double spec_vanilla = spec_forward_flops(960, p_layer, 32, 0, {}, t);
  const Accounting base = account(vanilla, t);
  EXPECT_EQ(base.matmul_params_per_layer, p_layer);
  EXPECT_NEAR(relative_error(base.forward_flops_per_token, spec_vanilla), 0.0, 1e-12);
  EXPECT_NEAR(relative_error(base.vanilla_forward_flops_per_token, spec_vanilla), 0.0, 1e-12);

  struct Case {
    int64_t n;
    std::vector<double> capacities;
    double released_ratio;  // vanilla tokens / MoR tokens of the released configs
  };
  const std::vector<Case> cases = {{2, {1.0, 0.5}, 19.79 / 26.46},
                                   {3, {1.0, 2.0 / 3.0, 1.0 / 3.0}, 19.79 / 29.70}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.n);
    const Accounting acc =
        account(recursive(vanilla, Sharing::kMiddleCycle, c.n, RouterKind::kExpert), t);
    const double spec = spec_forward_flops(960, p_layer, 2, 30 / c.n, c.capacities, t);
    const double layers_only = acc.forward_flops_per_token - router_flops(acc);
    EXPECT_NEAR(relative_error(layers_only, spec), 0.0, 1e-12);
    const double ratio = acc.forward_flops_per_token / acc.vanilla_forward_flops_per_token;
    EXPECT_LT(relative_error(ratio, c.released_ratio), 0.005) << ratio;
    EXPECT_LT(relative_error(ratio, c.n == 2 ? 0.746 : 0.664), 0.005) << ratio;
  }
  const Accounting two =
      account(recursive(vanilla, Sharing::kMiddleCycle, 2, RouterKind::kExpert), t);
  const double ratio = two.forward_flops_per_token / two.vanilla_forward_flops_per_token;
  EXPECT_LT(relative_error(ratio, 12.3 / 16.5), 0.005) << ratio;
}

TEST(AccountingFlops, TotalsAddUpAndTrainingIsThreeTimesForwardPlusHead) {
  const Accounting acc =
      account(recursive(smollm_360m(), Sharing::kMiddleCycle, 3, RouterKind::kToken), 2048);
  double sum = acc.prelude.flops() + acc.coda.flops();
  for (const StageCost& s : acc.depths) sum += s.flops();
  EXPECT_DOUBLE_EQ(acc.forward_flops_per_token, sum);
  EXPECT_DOUBLE_EQ(acc.lm_head_flops_per_token, 2.0 * 49152 * 960);
  EXPECT_DOUBLE_EQ(acc.train_flops_per_token,
                   3.0 * (acc.forward_flops_per_token + acc.lm_head_flops_per_token));
}

TEST(AccountingFlops, TokenChoiceAssumesBalancedFractionsAndOneRouterOnAllTokens) {
  const Accounting acc =
      account(recursive(smollm_360m(), Sharing::kMiddleCycle, 3, RouterKind::kToken), 2048);
  ASSERT_EQ(acc.depths.size(), 3u);
  EXPECT_DOUBLE_EQ(acc.depths[0].active_fraction, 1.0);
  EXPECT_DOUBLE_EQ(acc.depths[1].active_fraction, 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(acc.depths[2].active_fraction, 1.0 / 3.0);
  EXPECT_DOUBLE_EQ(acc.depths[0].router_flops, 2.0 * 3 * 960);
  EXPECT_DOUBLE_EQ(acc.depths[1].router_flops, 0.0);
  EXPECT_DOUBLE_EQ(acc.depths[2].router_flops, 0.0);
}

TEST(AccountingFlops, ExpertRoutersRunOnThePreviousRecursionSurvivors) {
  ModelConfig m = recursive(smollm_360m(), Sharing::kMiddleCycle, 3, RouterKind::kExpert);
  m.router.expert.capacities = {0.9, 0.6, 0.3};
  Accounting acc = account(m, 2048);
  EXPECT_DOUBLE_EQ(acc.depths[0].router_flops, 2.0 * 960);
  EXPECT_DOUBLE_EQ(acc.depths[1].router_flops, 0.9 * 2.0 * 960);
  EXPECT_DOUBLE_EQ(acc.depths[2].router_flops, 0.6 * 2.0 * 960);
  m.router.expert.aux = ExpertAux::kRouter;
  acc = account(m, 2048);
  EXPECT_DOUBLE_EQ(acc.depths[2].router_flops, 2.0 * 0.6 * 2.0 * 960);
}

TEST(AccountingKv, RecursionWiseBlockKvIsNPlusOneOverTwoN) {
  for (int64_t n : {2, 3, 4}) {
    SCOPED_TRACE(n);
    ModelConfig m = recursive(smollm_360m(), Sharing::kCycle, n, RouterKind::kExpert);
    m.num_layers = 24;
    const Accounting acc = account(m, 2048);
    EXPECT_TRUE(acc.prelude.layers == 0 && acc.coda.layers == 0);
    EXPECT_DOUBLE_EQ(acc.vanilla_kv_values_per_token, 24 * 2 * 5 * 64);
    EXPECT_NEAR(acc.kv_values_per_token / acc.vanilla_kv_values_per_token,
                (n + 1.0) / (2.0 * n), 1e-12);
  }
}

TEST(AccountingKv, KvSharingStoresOnlyTheFirstRecursion) {
  for (RouterKind kind : {RouterKind::kNone, RouterKind::kExpert, RouterKind::kToken}) {
    for (int64_t n : {2, 4}) {
      SCOPED_TRACE(n);
      ModelConfig m = recursive(smollm_360m(), Sharing::kCycle, n, kind);
      m.kv_mode = KvMode::kShare;
      const Accounting acc = account(m, 2048);
      EXPECT_NEAR(acc.kv_values_per_token / acc.vanilla_kv_values_per_token, 1.0 / n, 1e-12);
      for (const StageCost& s : acc.depths) {
        if (s.recursion >= 1) {
          EXPECT_EQ(s.kv_values_per_token, 0.0);
        }
      }
    }
  }
}

TEST(AccountingFlops, AttentionScalesWithCSquaredRecursionWiseAndCWithSharing) {
  ModelConfig m = recursive(smollm_360m(), Sharing::kCycle, 3, RouterKind::kExpert);
  m.num_layers = 30;
  m.router.expert.capacities = {1.0, 0.6, 0.3};
  const Accounting rw = account(m, 2048);
  m.kv_mode = KvMode::kShare;
  const Accounting sh = account(m, 2048);
  const double full_block = rw.depths[0].attention_flops;
  EXPECT_DOUBLE_EQ(full_block, 10 * 2.0 * 960 * 2048);
  EXPECT_DOUBLE_EQ(sh.depths[0].attention_flops, full_block);
  const int64_t b = rw.depths[0].layers;
  const double p = rw.matmul_params_per_layer;
  const double p_kv = 2.0 * 5 * 64 * 960;
  for (size_t r = 1; r < 3; ++r) {
    const double c = m.router.expert.capacities[r];
    EXPECT_NEAR(rw.depths[r].attention_flops / full_block, c * c, 1e-12);
    EXPECT_NEAR(sh.depths[r].attention_flops / full_block, c, 1e-12);
    EXPECT_DOUBLE_EQ(rw.depths[r].matmul_flops, b * c * 2.0 * p);
    EXPECT_DOUBLE_EQ(sh.depths[r].matmul_flops, b * c * 2.0 * (p - p_kv));
  }
}

TEST(AccountingFlops, AttentionUsesHeadsTimesHeadDimNotHidden) {
  ModelConfig m = smollm_360m();
  m.num_heads = 8;
  m.num_kv_heads = 2;
  m.head_dim = 96;
  const Accounting acc = account(m, 1000);
  EXPECT_DOUBLE_EQ(acc.prelude.attention_flops, 32 * 2.0 * 8 * 96 * 1000);
  EXPECT_EQ(acc.matmul_params_per_layer, 2 * 768 * 960 + 2 * 192 * 960 + 3 * 2560 * 960);
}

TEST(AccountingFlops, RecursiveWithoutRouterCostsTheSameAsVanilla) {
  const ModelConfig vanilla = smollm_360m();
  const double reference = account(vanilla, 2048).forward_flops_per_token;
  for (auto [sharing, n] : std::vector<std::pair<Sharing, int64_t>>{{Sharing::kCycle, 4},
                                                                     {Sharing::kMiddleCycle, 3},
                                                                     {Sharing::kSequence, 2},
                                                                     {Sharing::kMiddleSequence, 3}}) {
    SCOPED_TRACE(config::to_string(sharing));
    const Accounting acc = account(recursive(vanilla, sharing, n, RouterKind::kNone), 2048);
    EXPECT_DOUBLE_EQ(acc.forward_flops_per_token, reference);
    EXPECT_DOUBLE_EQ(acc.vanilla_forward_flops_per_token, reference);
    EXPECT_DOUBLE_EQ(acc.kv_values_per_token, acc.vanilla_kv_values_per_token);
  }
}

TEST(AccountingErrors, RejectsBadContextRouterWithoutBlockAndCapacityCount) {
  EXPECT_THROW(account(smollm_360m(), 0), Error);
  EXPECT_THROW(account(recursive(smollm_360m(), Sharing::kSequence, 2, RouterKind::kExpert), 2048),
               Error);
  ModelConfig m = recursive(smollm_360m(), Sharing::kMiddleCycle, 3, RouterKind::kExpert);
  m.router.expert.capacities = {1.0, 0.5};
  EXPECT_THROW(account(m, 2048), Error);
  EXPECT_THROW(account(recursive(smollm_360m(), Sharing::kMiddleCycle, 4, RouterKind::kNone), 2048),
               Error);
}

TEST(AccountingReport, ModelInfoShowsVariantLayoutCountsTableAndRatio) {
  ModelConfig m = recursive(smollm_360m(), Sharing::kMiddleCycle, 2, RouterKind::kExpert);
  m.name = "mor-360m-ec2";
  const std::string info = format_model_info(m, 2048);
  for (const std::string& needle :
       {std::string("mor-360m-ec2"), std::string("MoR expert-choice"),
        std::string("middle_cycle: 1 + 2 x 15 + 1 layers"), std::string("167,149,440"),
        std::string("(167.1M)"), std::string("47,185,920"), std::string("recursion 0"),
        std::string("recursion 1"), std::string("0.500"), std::string("capacity"),
        std::string("ratio vs vanilla 0.746"), std::string("ratio vs vanilla 0.7656"),
        std::string("vanilla"), std::string("2,048"), std::string("KV values/token"),
        std::string("20,480")}) {
    EXPECT_NE(info.find(needle), std::string::npos) << "missing '" << needle << "' in:\n" << info;
  }
  const std::string same = "non-embedding (decoder layers)";
  const size_t at = info.find(same);
  ASSERT_NE(at, std::string::npos);
  EXPECT_NE(info.find("167,149,440  (167.1M)", at), std::string::npos) << info;
}

TEST(AccountingReport, ModelInfoExplainsTokenChoiceAssumptionAndVanillaLayout) {
  const std::string tc = format_model_info(
      recursive(smollm_360m(), Sharing::kMiddleCycle, 3, RouterKind::kToken), 2048);
  EXPECT_NE(tc.find("balanced router"), std::string::npos) << tc;
  EXPECT_NE(tc.find("0.667"), std::string::npos) << tc;
  EXPECT_NE(tc.find("bias buffer of 3 values"), std::string::npos) << tc;
  const std::string vanilla = format_model_info(smollm_360m(), 2048);
  EXPECT_NE(vanilla.find("vanilla"), std::string::npos);
  EXPECT_NE(vanilla.find("none: 32 layers"), std::string::npos) << vanilla;
  EXPECT_NE(vanilla.find("314,634,240  (314.6M)"), std::string::npos) << vanilla;
  EXPECT_NE(vanilla.find("ratio vs vanilla 1.0000"), std::string::npos) << vanilla;
}

}  // namespace
}  // namespace mor::model
