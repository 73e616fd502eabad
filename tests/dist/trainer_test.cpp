// The trainer end to end on tiny models and random token shards, ranks as threads over Gloo:
// 1/2/3-rank equivalence, exact resume, resume onto another rank count, a save interrupted before
// its commit, non-finite steps, budgets, and a failing rank.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <mutex>
#include <random>

#include "dist/dist_helpers.h"
#include "mor/core/error.h"
#include "mor/core/file.h"
#include "mor/data/shard.h"
#include "mor/model/accounting.h"
#include "mor/train/checkpoint.h"
#include "mor/train/trainer.h"
#include "support/test_helpers.h"

namespace mor::testing {
namespace {

namespace fs = std::filesystem;

// Not std::filesystem::remove_all: see core::remove_tree.
void rm_rf(const std::string& path) { core::remove_tree(path); }

// A directory with train/val shards of random tokens (reused by every test of this binary).
const std::string& data_dir(int64_t vocab) {
  static std::map<int64_t, std::string> dirs;
  static std::mutex mu;
  const std::lock_guard<std::mutex> lock(mu);
  auto& dir = dirs[vocab];
  if (dir.empty()) {
    dir = unique_temp_path("mor-train-data");
    std::error_code ec;
    fs::create_directories(dir, ec);
    std::mt19937_64 rng(1234);
    for (const char* split : {"train", "val"}) {
      data::ShardWriter w(dir + "/" + split + "_000000.bin", data::shard_version_for_vocab(vocab), vocab);
      std::vector<int32_t> tokens(std::string(split) == "train" ? 20000 : 4000);
      // A learnable stream: a fixed bigram map with a random restart every ~8 tokens.
      int32_t prev = 0;
      for (auto& t : tokens) {
        prev = rng() % 8 == 0 ? static_cast<int32_t>(rng() % static_cast<uint64_t>(vocab))
                              : static_cast<int32_t>((prev * 7 + 3) % vocab);
        t = prev;
      }
      w.append(tokens);
      w.finish();
    }
  }
  return dir;
}

config::Config run_config(const config::ModelConfig& model, const std::string& out_dir) {
  config::Config c;
  c.model = model;
  auto& t = c.train;
  t.out_dir = out_dir;
  t.seq_len = 16;
  t.micro_batch_size = 1;
  t.global_batch_size = 6;  // divisible by 1, 2 and 3 ranks
  t.max_steps = 8;
  t.lr = 1e-2;
  t.warmup_steps = 2;
  t.log_interval = 1000;
  t.eval_interval = 0;
  t.eval_batches = 2;
  t.save_interval = 4;
  t.keep_checkpoints = 0;
  t.sharding = config::ShardingMode::kZero3;
  t.dist_timeout_s = 30;
  c.data.train_shards = data_dir(model.vocab_size) + "/train_*.bin";
  c.data.val_shards = data_dir(model.vocab_size) + "/val_*.bin";
  return c;
}

// Runs the trainer on `world` ranks; returns rank 0's result.
train::TrainResult run(const config::Config& c, int64_t world, train::Faults faults = {}, bool resume = true) {
  train::TrainResult out;
  run_rank_threads(world, [&](int64_t rank, const std::string& store) {
    train::TrainOptions o;
    o.world.rank = rank;
    o.world.world_size = world;
    o.file_store = world > 1 ? store : "";
    o.console = false;
    o.resume = resume;
    o.faults = faults;
    auto res = train::train(c, o);
    if (rank == 0) out = std::move(res);
  });
  return out;
}

std::map<std::string, at::Tensor> final_params(const std::string& out_dir) {
  const auto latest = train::latest_checkpoint(out_dir);
  EXPECT_TRUE(latest.has_value());
  std::map<std::string, at::Tensor> out;
  for (auto& [name, t] : train::load_consolidated(*latest)) out[name] = t;
  return out;
}

void expect_losses_close(const std::vector<double>& a, const std::vector<double>& b, double rtol) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], rtol * std::abs(b[i])) << "step " << i + 1;
}

struct Variant {
  std::string name;
  config::ModelConfig model;
};

std::vector<Variant> variants() {
  return {{"vanilla", tiny_config()}, {"mor_expert", expert_config(config::Sharing::kMiddleCycle, 2, 4)}};
}

TEST(Trainer, TwoAndThreeGlooRanksMatchOneRankWithTheSameGlobalBatch) {
  for (const Variant& v : variants()) {
    const std::string base = unique_temp_path("mor-train-eq-" + v.name);
    const auto one = run(run_config(v.model, base + "-1"), 1);
    ASSERT_EQ(one.losses.size(), 8u);
    EXPECT_LT(one.losses.back(), one.losses.front()) << v.name << ": the loss should fall";
    const auto p1 = final_params(base + "-1");
    for (int64_t world : {2, 3}) {
      const std::string dir = base + "-" + std::to_string(world);
      const auto res = run(run_config(v.model, dir), world);
      expect_losses_close(res.losses, one.losses, 1e-5);
      const auto pw = final_params(dir);
      ASSERT_EQ(pw.size(), p1.size());
      for (const auto& [name, t] : p1) EXPECT_TRUE(tensors_close(pw.at(name), t, 1e-4, 1e-6)) << v.name << " " << name;
    }
    rm_rf(base + "-1"), rm_rf(base + "-2"), rm_rf(base + "-3");
  }
}

TEST(Trainer, ShardingModesAndActivationCheckpointingAgree) {
  const auto model = expert_config(config::Sharing::kMiddleCycle, 2, 4);
  const std::string base = unique_temp_path("mor-train-modes");
  auto c = run_config(model, base + "-z3");
  const auto z3 = run(c, 2);
  c = run_config(model, base + "-z2");
  c.train.sharding = config::ShardingMode::kZero2;
  expect_losses_close(run(c, 2).losses, z3.losses, 1e-5);
  c = run_config(model, base + "-none");
  c.train.sharding = config::ShardingMode::kNone;
  expect_losses_close(run(c, 2).losses, z3.losses, 1e-5);
  c = run_config(model, base + "-keep");
  c.train.reshard_after_forward = false;
  expect_losses_close(run(c, 2).losses, z3.losses, 1e-5);
  c = run_config(model, base + "-ckpt");
  c.train.activation_checkpointing = true;  // recomputation re-reads the freed-and-regathered units
  expect_losses_close(run(c, 2).losses, z3.losses, 1e-5);
  for (const char* s : {"-z3", "-z2", "-none", "-keep", "-ckpt"}) rm_rf(base + s);
}

TEST(Trainer, ResumeAfterAnInterruptionGivesTheSameLossesBitForBit) {
  const auto model = expert_config(config::Sharing::kMiddleCycle, 2, 4);
  const std::string a = unique_temp_path("mor-train-full"), b = unique_temp_path("mor-train-cut");
  const auto full = run(run_config(model, a), 1);
  train::Faults f;
  f.throw_after_step = 6;  // checkpoint at 4, two more steps lost
  EXPECT_THROW(run(run_config(model, b), 1, f), mor::Error);
  const auto resumed = run(run_config(model, b), 1);
  EXPECT_EQ(resumed.start_step, 4);
  ASSERT_EQ(resumed.losses.size(), 4u);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(resumed.losses[i], full.losses[4 + i]) << "step " << 5 + i;
  const auto pa = final_params(a), pb = final_params(b);
  for (const auto& [name, t] : pa) EXPECT_TRUE(at::equal(pb.at(name), t)) << name;
  rm_rf(a), rm_rf(b);
}

TEST(Trainer, ResumesOntoADifferentNumberOfRanks) {
  const auto model = expert_config(config::Sharing::kMiddleCycle, 2, 4);
  const std::string a = unique_temp_path("mor-train-ref"), b = unique_temp_path("mor-train-reshard");
  const auto full = run(run_config(model, a), 1);
  train::Faults f;
  f.throw_after_step = 5;
  EXPECT_THROW(run(run_config(model, b), 2, f), mor::Error);
  const auto resumed = run(run_config(model, b), 3);
  EXPECT_EQ(resumed.start_step, 4);
  expect_losses_close(resumed.losses, std::vector<double>(full.losses.begin() + 4, full.losses.end()), 1e-5);
  rm_rf(a), rm_rf(b);
}

TEST(Trainer, ASaveInterruptedBeforeItsCommitLeavesThePreviousCheckpointLoadable) {
  const auto model = tiny_config();
  const std::string a = unique_temp_path("mor-train-ref2"), b = unique_temp_path("mor-train-torn");
  const auto full = run(run_config(model, a), 1);
  train::Faults f;
  f.throw_in_save_step = 8;
  EXPECT_THROW(run(run_config(model, b), 2, f), mor::Error);
  const auto latest = train::latest_checkpoint(b);
  ASSERT_TRUE(latest.has_value());
  EXPECT_EQ(fs::path(*latest).filename().string(), "step-00000004");
  const auto resumed = run(run_config(model, b), 2);
  EXPECT_EQ(resumed.start_step, 4);
  expect_losses_close(resumed.losses, std::vector<double>(full.losses.begin() + 4, full.losses.end()), 1e-5);
  rm_rf(a), rm_rf(b);
}

TEST(Trainer, NonFiniteStepsAreSkippedAndTooManyInARowStopTheRun) {
  const auto model = tiny_config();
  const std::string a = unique_temp_path("mor-train-nan"), b = unique_temp_path("mor-train-nan2");
  train::Faults f;
  f.nan_steps = {3};
  const auto res = run(run_config(model, a), 1, f);
  EXPECT_EQ(res.skipped_steps, 1);
  EXPECT_TRUE(std::isnan(res.losses[2]));
  EXPECT_TRUE(std::isfinite(res.losses[3]));
  EXPECT_EQ(res.steps, 8);

  auto c = run_config(model, b);
  c.train.max_bad_steps = 2;
  c.train.save_interval = 2;
  f.nan_steps = {5, 6};
  try {
    run(c, 2, f);
    ADD_FAILURE() << "expected the run to stop";
  } catch (const mor::Error& e) {
    EXPECT_NE(std::string(e.what()).find("2 consecutive steps had a non-finite loss"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("step-00000004"), std::string::npos) << e.what();
  }
  EXPECT_EQ(fs::path(*train::latest_checkpoint(b)).filename().string(), "step-00000004");
  rm_rf(a), rm_rf(b);
}

TEST(Trainer, BudgetsInTokensAndFlopsStopAtTheLastWholeStep) {
  auto c = run_config(tiny_config(), "unused");
  c.train.max_steps = 0;
  const int64_t per_step = 6 * 16;
  c.train.max_tokens = per_step * 5 + per_step / 2;
  EXPECT_EQ(train::budget_steps(c, 1), 5);
  c.train.max_tokens = 0;
  const double flops_per_step = model::account(c.model, 16).train_flops_per_token * per_step;
  c.train.max_flops = flops_per_step * 7.9;
  EXPECT_EQ(train::budget_steps(c, 2), 7);
  c.train.max_flops = flops_per_step * 0.5;
  EXPECT_THROW(train::budget_steps(c, 1), mor::Error);
  c.train.max_flops = 0;
  c.train.max_steps = 3;
  EXPECT_THROW(train::budget_steps(c, 4), mor::Error);  // 6 rows do not split over 4 ranks
}

TEST(Trainer, AFailingRankMakesTheOthersStopWithAClearError) {
  const std::string dir = unique_temp_path("mor-train-fail");
  auto c = run_config(tiny_config(), dir);
  c.train.dist_timeout_s = 20;
  train::Faults f;
  f.throw_after_step = 2;
  f.kill_rank = 1;
  std::vector<std::string> errors(2);
  run_rank_threads(2, [&](int64_t rank, const std::string& store) {
    try {
      train::TrainOptions o;
      o.world.rank = rank;
      o.world.world_size = 2;
      o.file_store = store;
      o.console = false;
      o.faults = f;
      train::train(c, o);
    } catch (const std::exception& e) {
      errors[rank] = e.what();
    }
  });
  EXPECT_NE(errors[1].find("fault injection"), std::string::npos) << errors[1];
  EXPECT_NE(errors[0].find("collective"), std::string::npos) << "rank 0: " << errors[0];
  rm_rf(dir);
}

}  // namespace
}  // namespace mor::testing
