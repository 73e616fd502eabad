// Uptraining strategies: which source layers feed each shared parameter set (closed forms from
// mor-spec §2.2, numpy rounding), and the resulting tensors (copies, means, fresh routers).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "mor/core/error.h"
#include "mor/model/uptrain.h"
#include "support/test_helpers.h"

namespace mor::testing {
namespace {

using model::UptrainStrategy;
using Sources = std::vector<std::vector<int64_t>>;

config::ModelConfig vanilla(int64_t layers) {
  config::ModelConfig c = tiny_config();
  c.num_layers = layers;
  return c;
}

TEST(Uptrain, MiddleCycleSourcesFollowTheOriginalStrategies) {
  const auto src = vanilla(8);
  const auto dst = expert_config(config::Sharing::kMiddleCycle, 3, 8);  // sets: 0 | 1, 2 (x3) | 3
  EXPECT_EQ(model::uptrain_sources(src, dst, UptrainStrategy::kStepwise, 0), (Sources{{0}, {1}, {6}, {7}}));
  EXPECT_EQ(model::uptrain_sources(src, dst, UptrainStrategy::kLower, 0), (Sources{{0}, {1}, {2}, {7}}));
  EXPECT_EQ(model::uptrain_sources(src, dst, UptrainStrategy::kUpper, 0), (Sources{{0}, {5}, {6}, {7}}));
  EXPECT_EQ(model::uptrain_sources(src, dst, UptrainStrategy::kAverage, 0), (Sources{{0}, {1, 3, 5}, {2, 4, 6}, {7}}));
  const auto r1 = model::uptrain_sources(src, dst, UptrainStrategy::kRandom, 7);
  EXPECT_EQ(r1, model::uptrain_sources(src, dst, UptrainStrategy::kRandom, 7));  // seeded
  ASSERT_EQ(r1.size(), 4u);
  EXPECT_LT(r1[1][0], r1[2][0]);  // sorted, distinct
  EXPECT_GE(r1[1][0], 1);
  EXPECT_LE(r1[2][0], 6);
  bool differs = false;
  for (uint64_t seed = 1; seed < 20 && !differs; ++seed)
    differs = model::uptrain_sources(src, dst, UptrainStrategy::kRandom, seed) != r1;
  EXPECT_TRUE(differs) << "the seed must matter";
}

TEST(Uptrain, StepwiseRoundsHalfToEvenLikeNumpy) {
  // cycle, L = 6, N_r = 2: b = 3, linspace(0, 5, 3) = [0, 2.5, 5] -> numpy.round -> [0, 2, 5].
  const auto dst = recursive_config(config::Sharing::kCycle, 2, 6);
  EXPECT_EQ(model::uptrain_sources(vanilla(6), dst, UptrainStrategy::kStepwise, 0), (Sources{{0}, {2}, {5}}));
  // sequence, L = 6, N_r = 3: b = 2, sets used by layers {0,1,2} and {3,4,5}.
  const auto seq = recursive_config(config::Sharing::kSequence, 3, 6);
  EXPECT_EQ(model::uptrain_sources(vanilla(6), seq, UptrainStrategy::kAverage, 0), (Sources{{0, 1, 2}, {3, 4, 5}}));
}

TEST(Uptrain, TensorsAreCopiedOrAveragedAndRoutersStayFresh) {
  const auto src_cfg = vanilla(8);
  const auto dst_cfg = expert_config(config::Sharing::kMiddleCycle, 3, 8);
  model::MoRModel source(src_cfg);
  auto param = [](const model::MoRModel& m, const std::string& name) {
    for (const auto& p : m.parameters())
      if (p.name == name) return p.tensor.detach();
    ADD_FAILURE() << "no " << name;
    return at::Tensor();
  };
  const auto stepwise = model::uptrain(source, dst_cfg, UptrainStrategy::kStepwise, 0);
  EXPECT_TRUE(at::equal(param(*stepwise, "model.layers.2.mlp.down_proj.weight"),
                        param(source, "model.layers.6.mlp.down_proj.weight")));
  EXPECT_TRUE(at::equal(param(*stepwise, "model.layers.3.self_attn.q_proj.weight"),
                        param(source, "model.layers.7.self_attn.q_proj.weight")));
  EXPECT_TRUE(at::equal(param(*stepwise, "model.embed_tokens.weight"), param(source, "model.embed_tokens.weight")));
  const auto average = model::uptrain(source, dst_cfg, UptrainStrategy::kAverage, 0);
  const at::Tensor mean = (param(source, "model.layers.1.self_attn.k_proj.weight") +
                           param(source, "model.layers.3.self_attn.k_proj.weight") +
                           param(source, "model.layers.5.self_attn.k_proj.weight")) / 3.0;
  EXPECT_TRUE(tensors_close(param(*average, "model.layers.1.self_attn.k_proj.weight"), mean, 1e-6, 1e-7));
  const model::MoRModel fresh(dst_cfg);
  EXPECT_TRUE(at::equal(param(*average, "model.routers.0.weight"), param(fresh, "model.routers.0.weight")));
  // The uptrained model computes the source's function where every token takes every layer.
  const at::Tensor tokens = random_tokens(2, 6, src_cfg.vocab_size, 3);
  EXPECT_FALSE(at::equal(stepwise->forward(tokens).logits, fresh.forward(tokens).logits));
}

TEST(Uptrain, RefusesMismatchedModels) {
  const auto dst = expert_config(config::Sharing::kMiddleCycle, 3, 8);
  EXPECT_THROW(model::uptrain_sources(vanilla(10), dst, UptrainStrategy::kStepwise, 0), mor::Error);
  EXPECT_THROW(model::uptrain_sources(dst, dst, UptrainStrategy::kStepwise, 0), mor::Error);
  auto wide = vanilla(8);
  wide.hidden_size = 64;
  EXPECT_THROW(model::uptrain_sources(wide, dst, UptrainStrategy::kStepwise, 0), mor::Error);
  EXPECT_THROW(model::uptrain_strategy_from_name("middle"), mor::Error);
  EXPECT_EQ(model::uptrain_strategy_from_name("upper"), UptrainStrategy::kUpper);
}

}  // namespace
}  // namespace mor::testing
