// ShardedModel: gradients reduced over 2 and 3 Gloo ranks (each with a slice of the batch) equal the
// single-process gradients of the whole batch, in every sharding mode, for vanilla and MoR models.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <map>
#include <mutex>

#include "dist/dist_helpers.h"
#include "mor/dist/sharded_model.h"
#include "support/test_helpers.h"

namespace mor::testing {
namespace {

using config::ShardingMode;

struct Case {
  std::string name;
  config::ModelConfig model;
};

std::vector<Case> cases() {
  return {{"vanilla", tiny_config()},
          {"mor_expert", expert_config(config::Sharing::kMiddleCycle, 2, 4)},
          {"mor_token", token_config(config::Sharing::kMiddleCycle, 2, 4)}};
}

constexpr int64_t kRows = 6, kSeq = 16;

// name -> gradient of the summed-CE / (rows * seq) loss over all rows, single process.
std::map<std::string, at::Tensor> reference_grads(const config::ModelConfig& cfg, const at::Tensor& tokens,
                                                  const at::Tensor& targets) {
  model::MoRModel m(cfg);
  model::ForwardOptions fo;
  fo.training = true;
  const auto out = m.forward(tokens, fo);
  m.loss(out, targets).total.backward();
  return snapshot_grads(m);
}

void check_mode(const Case& c, ShardingMode mode, bool reshard, int64_t world) {
  const at::Tensor tokens = random_tokens(kRows, kSeq, c.model.vocab_size, 7);
  const at::Tensor targets = random_targets(kRows, kSeq, c.model.vocab_size, 8);
  // Token-choice balancing statistics are per micro-batch: compare only layouts that keep the
  // batch whole there (the loss terms still add up for the LM loss and expert-choice).
  const auto expected = reference_grads(c.model, tokens, targets);
  std::mutex mu;
  std::map<std::string, at::Tensor> got;
  run_ranks(world, [&](dist::Communicator& comm) {
    model::MoRModel m(c.model);
    dist::ShardedModel sharded(m, comm, mode, reshard);
    const int64_t rows = kRows / world, r = comm.rank();
    model::ForwardOptions fo;
    fo.training = true;
    fo.hooks = sharded.hooks();
    const auto out = m.forward(tokens.narrow(0, r * rows, rows), fo);
    model::LossOptions lo;
    lo.normalizer = static_cast<double>(kRows * kSeq);
    m.loss(out, targets.narrow(0, r * rows, rows), lo).total.backward();
    sharded.reduce_gradients();
    for (size_t i = 0; i < m.parameters().size(); ++i) {
      at::Tensor g = sharded.full_gradient(static_cast<int64_t>(i));
      if (r == 0) {
        const std::lock_guard<std::mutex> lock(mu);
        got[m.parameters()[i].name] = g;
      }
    }
  });
  ASSERT_EQ(got.size(), expected.size());
  for (const auto& [name, g] : expected) {
    EXPECT_TRUE(tensors_close(got.at(name), g, 1e-4, 1e-6)) << c.name << " " << name;
  }
}

TEST(ShardedModel, ReducedGradientsMatchSingleProcessOnTwoRanksInEveryMode) {
  for (const Case& c : cases()) {
    if (c.model.router.kind == config::RouterKind::kToken) continue;  // batch-dependent balancing loss
    check_mode(c, ShardingMode::kZero3, true, 2);
    check_mode(c, ShardingMode::kZero3, false, 2);
    check_mode(c, ShardingMode::kZero2, true, 2);
    check_mode(c, ShardingMode::kNone, true, 2);
  }
}

TEST(ShardedModel, ReducedGradientsMatchSingleProcessOnThreeRanksWithUnevenShards) {
  for (const Case& c : cases()) {
    if (c.model.router.kind == config::RouterKind::kToken) continue;
    check_mode(c, ShardingMode::kZero3, true, 3);
  }
}

TEST(ShardedModel, Zero3OnOneRankFreesAndRegathersWithoutChangingGradients) {
  for (const Case& c : cases()) check_mode(c, ShardingMode::kZero3, true, 1);
}

TEST(ShardedModel, ShardsReassembleTheInitialParameters) {
  const config::ModelConfig cfg = expert_config(config::Sharing::kMiddleCycle, 2, 4);
  const model::MoRModel reference(cfg);
  run_ranks(3, [&](dist::Communicator& comm) {
    model::MoRModel m(cfg);
    dist::ShardedModel sharded(m, comm, ShardingMode::kZero3, true);
    int64_t covered = 0;
    for (const auto& u : sharded.units()) covered += u.numel;
    EXPECT_EQ(covered, m.num_parameters());
    for (size_t i = 0; i < m.parameters().size(); ++i) {
      EXPECT_TRUE(at::equal(sharded.full_parameter(static_cast<int64_t>(i)), reference.parameters()[i].tensor))
          << m.parameters()[i].name;
    }
    sharded.gather_all();
    for (size_t i = 0; i < m.parameters().size(); ++i)
      EXPECT_TRUE(at::equal(m.parameters()[i].tensor, reference.parameters()[i].tensor));
  });
}

TEST(ShardedModel, UnitsCoverEveryParameterOnceAndTheBlockIsOneUnit) {
  const model::MoRModel m(expert_config(config::Sharing::kMiddleCycle, 2, 4));
  std::vector<int> seen(m.parameters().size(), 0);
  int blocks = 0;
  for (const auto& u : m.param_units()) {
    for (int64_t i : u.params) seen[i]++;
    if (u.name == "block") {
      ++blocks;
      bool has_router = false;
      for (int64_t i : u.params) has_router |= is_router_param(m.parameters()[i].name);
      EXPECT_TRUE(has_router);
    }
  }
  EXPECT_EQ(blocks, 1);
  for (int s : seen) EXPECT_EQ(s, 1);
  EXPECT_EQ(m.param_units().front().name, "root");
}

}  // namespace
}  // namespace mor::testing

namespace mor::testing {
namespace {

// Gradients of units whose backward is over are reduced inside backward() (and their full-size
// gradients dropped); only the first layer unit and the root are left for reduce_gradients().
TEST(ShardedModel, LaterUnitsAreReducedDuringBackward) {
  const config::ModelConfig cfg = tiny_config();
  run_ranks(2, [&](dist::Communicator& comm) {
    model::MoRModel m(cfg);
    dist::ShardedModel sharded(m, comm, ShardingMode::kZero3, true);
    model::ForwardOptions fo;
    fo.training = true;
    fo.hooks = sharded.hooks();
    const auto out = m.forward(random_tokens(2, 8, cfg.vocab_size, 11 + comm.rank()), fo);
    m.loss(out, random_targets(2, 8, cfg.vocab_size, 12)).total.backward();
    const auto& units = sharded.units();
    ASSERT_EQ(units.size(), 1u + static_cast<size_t>(cfg.num_layers));
    for (size_t u = 0; u < units.size(); ++u) {
      const bool early = u >= 2;
      for (int64_t i : units[u].params)
        EXPECT_EQ(m.parameters()[i].tensor.grad().defined(), !early) << units[u].name << " " << m.parameters()[i].name;
      EXPECT_EQ(units[u].grad.abs().sum().item<double>() > 0, early) << units[u].name;
    }
    sharded.reduce_gradients();
    for (const auto& u : units) EXPECT_GT(u.grad.abs().sum().item<double>(), 0) << u.name;
  });
}

}  // namespace
}  // namespace mor::testing
