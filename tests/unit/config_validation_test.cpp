// Unit tests of mor::config validation: the rule table (each bad input gives "ORIGIN: key.path:
// message"), accepted boundary values, errors of programmatic configs, and the resolved values
// (sequence length, capacity defaults, layer split).
#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "config_test_util.h"
#include "mor/config/config.h"

namespace mor::config {
namespace {

using namespace test;

// ---- validation rules: each bad input gives "ORIGIN: key.path: message" ----

struct RuleCase {
  const char* name;
  const char* yaml;
  const char* expected;
};

class ValidationRule : public ::testing::TestWithParam<RuleCase> {};

TEST_P(ValidationRule, RejectsWithKeyAndOrigin) {
  EXPECT_TRUE(yaml_fails_with(GetParam().yaml, GetParam().expected));
}

const RuleCase kRuleCases[] = {
    // model shapes
    {"VocabSizePositive", "model:\n  vocab_size: 0\n", "t.yaml:2: model.vocab_size: must be > 0, got 0"},
    {"HiddenSizePositive", "model:\n  hidden_size: -64\n", "t.yaml:2: model.hidden_size: must be > 0, got -64"},
    {"IntermediateSizePositive", "model:\n  intermediate_size: 0\n", "t.yaml:2: model.intermediate_size: must be > 0"},
    {"NumLayersPositive", "model:\n  num_layers: 0\n", "t.yaml:2: model.num_layers: must be > 0, got 0"},
    {"NumHeadsPositive", "model:\n  num_heads: 0\n", "t.yaml:2: model.num_heads: must be > 0"},
    {"NumKvHeadsPositive", "model:\n  num_kv_heads: 0\n", "t.yaml:2: model.num_kv_heads: must be > 0"},
    {"MaxSeqLenPositive", "model:\n  max_seq_len: 0\n", "t.yaml:2: model.max_seq_len: must be > 0"},
    {"RopeThetaPositive", "model:\n  rope_theta: 0\n", "t.yaml:2: model.rope_theta: must be > 0, got 0.0"},
    {"RmsNormEpsPositive", "model:\n  rms_norm_eps: -1e-5\n", "t.yaml:2: model.rms_norm_eps: must be > 0, got -1e-05"},
    {"InitStdPositive", "model:\n  init_std: 0.0\n", "t.yaml:2: model.init_std: must be > 0"},
    {"HeadDimNotNegative", "model:\n  head_dim: -2\n", "t.yaml:2: model.head_dim: must be >= 0, got -2"},
    {"HeadDimEven", "model:\n  head_dim: 63\n", "t.yaml:2: model.head_dim: must be 0 or a positive even number"},
    {"HiddenSizeDivisibleByHeads", "model:\n  hidden_size: 100\n  num_heads: 8\n  num_kv_heads: 4\n",
     "t.yaml:3: model.num_heads: model.hidden_size (100, t.yaml:2) is not divisible by num_heads (8)"},
    {"DerivedHeadDimEven", "model:\n  hidden_size: 36\n  num_heads: 4\n  num_kv_heads: 2\n",
     "t.yaml:3: model.num_heads: head_dim = hidden_size / num_heads = 9 must be even"},
    {"HeadsDivisibleByKvHeads", "model:\n  num_kv_heads: 4\n",
     "t.yaml:2: model.num_kv_heads: model.num_heads (9) is not divisible by num_kv_heads (4)"},
    // layer split (config::layer_split)
    {"LayersSplitIntoRecursions", SPLIT_32_BY_4,
     "t.yaml:2: model.num_layers: 32 layers cannot be split by middle_cycle into 4 recursions"},
    {"LayerSplitSuggestsNeighbours", SPLIT_32_BY_4,
     "use num_layers 30 or 34"},
    {"SharingNoneNeedsOneRecursion", "model:\n  recursion:\n    num_recursions: 2\n",
     "t.yaml:3: model.recursion.num_recursions: must be 1 when recursion.sharing is none"},
    {"SharingNeedsTwoRecursions", "model:\n  recursion:\n    sharing: cycle\n",
     "default: model.recursion.num_recursions: must be >= 2 with recursion.sharing cycle"},
    {"NumRecursionsAtLeastOne", "model:\n  recursion:\n    num_recursions: 0\n",
     "t.yaml:3: model.recursion.num_recursions: must be >= 1, got 0"},
    // router / sharing compatibility
    {"ExpertRouterNeedsCycleSharing",
     "model:\n  recursion:\n    sharing: sequence\n    num_recursions: 3\n  router:\n    kind: expert\n",
     "t.yaml:6: model.router.kind: router kind expert needs model.recursion.sharing cycle or middle_cycle, "
     "got sequence"},
    {"TokenRouterNeedsCycleSharing", "model:\n  router:\n    kind: token\n",
     "t.yaml:3: model.router.kind: router kind token needs model.recursion.sharing cycle or middle_cycle, got none"},
    {"KvShareNeedsCycleSharing", "model:\n  kv_mode: share\n",
     "t.yaml:2: model.kv_mode: kv_mode share needs model.recursion.sharing cycle or middle_cycle, got none"},
    {"RouterTemperaturePositive", "model:\n  router:\n    temperature: 0\n",
     "t.yaml:3: model.router.temperature: must be > 0"},
    {"ZLossNotNegative", "model:\n  router:\n    z_loss_coeff: -1\n",
     "t.yaml:3: model.router.z_loss_coeff: must be >= 0"},
    // expert-choice
    {"ExpertFuncSigmoidOrTanh", EC_ROUTER "      func: softmax\n",
     "t.yaml:9: model.router.expert.func: must be one of sigmoid, tanh, got softmax"},
    {"ExpertAlphaPositive", EC_ROUTER "      alpha: 0\n", "t.yaml:9: model.router.expert.alpha: must be > 0"},
    {"CapacitiesOnePerRecursion", EC_ROUTER "      capacities: [1.0, 0.5, 0.25]\n",
     "t.yaml:9: model.router.expert.capacities: has 3 entries but model.recursion.num_recursions is 2"},
    {"CapacityAtMostOne", EC_ROUTER "      capacities: [1.5, 0.5]\n",
     "t.yaml:9: model.router.expert.capacities[0]: must be in (0, 1], got 1.5"},
    {"CapacityAboveZero", EC_ROUTER "      capacities: [1.0, 0.0]\n",
     "t.yaml:9: model.router.expert.capacities[1]: must be in (0, 1], got 0.0"},
    {"CapacitiesNonIncreasing",
     "model:\n  num_layers: 5\n  recursion:\n    sharing: middle_cycle\n    num_recursions: 3\n"
     "  router:\n    kind: expert\n    expert:\n      capacities: [1.0, 0.5, 0.6]\n",
     "t.yaml:9: model.router.expert.capacities[2]: capacities must be non-increasing, got 0.6 after 0.5"},
    {"CapacityWarmupNotNegative", EC_ROUTER "      capacity_warmup_steps: -1\n",
     "t.yaml:9: model.router.expert.capacity_warmup_steps: must be >= 0"},
    {"AuxCoeffNotNegative", EC_ROUTER "      aux_coeff: -0.001\n",
     "t.yaml:9: model.router.expert.aux_coeff: must be >= 0"},
    {"SigmoidThresholdBelowOne", EC_ROUTER "      threshold: 1.0\n",
     "t.yaml:9: model.router.expert.threshold: must be in (0, 1) for func sigmoid, got 1.0"},
    {"SigmoidThresholdAboveZero", EC_ROUTER "      threshold: 0\n",
     "t.yaml:9: model.router.expert.threshold: must be in (0, 1) for func sigmoid, got 0.0"},
    {"TanhThresholdAboveMinusOne", EC_ROUTER "      func: tanh\n      threshold: -1\n",
     "t.yaml:10: model.router.expert.threshold: must be in (-1, 1) for func tanh, got -1.0"},
    // token-choice
    {"TokenFuncSoftmaxOrSigmoid", TC_ROUTER "      func: tanh\n",
     "t.yaml:9: model.router.token.func: must be one of softmax, sigmoid, got tanh"},
    {"TokenAlphaPositive", TC_ROUTER "      alpha: 0\n", "t.yaml:9: model.router.token.alpha: must be > 0"},
    {"BalanceCoeffNotNegative", TC_ROUTER "      balance_coeff: -0.1\n",
     "t.yaml:9: model.router.token.balance_coeff: must be >= 0"},
    {"BiasUpdateRateNotNegative", TC_ROUTER "      bias_update_rate: -0.001\n",
     "t.yaml:9: model.router.token.bias_update_rate: must be >= 0"},
    {"BalanceWarmupNotNegative", TC_ROUTER "      balance_warmup_steps: -3\n",
     "t.yaml:9: model.router.token.balance_warmup_steps: must be >= 0"},
    // train
    {"SeqLenNotNegative", "train:\n  seq_len: -1\n", "t.yaml:2: train.seq_len: must be >= 0, got -1"},
    {"MicroBatchPositive", "train:\n  micro_batch_size: 0\n", "t.yaml:2: train.micro_batch_size: must be > 0"},
    {"GlobalBatchPositive", "train:\n  global_batch_size: 0\n", "t.yaml:2: train.global_batch_size: must be > 0"},
    {"GlobalBatchMultipleOfMicroBatch", "train:\n  micro_batch_size: 8\n  global_batch_size: 12\n",
     "t.yaml:3: train.global_batch_size: must be a multiple of train.micro_batch_size (8), got 12"},
    {"OnlyOneBudgetStepsAndTokens", "train:\n  max_steps: 10\n  max_tokens: 1000\n",
     "t.yaml:3: train.max_tokens: only one of train.max_steps, train.max_tokens, train.max_flops may be set; "
     "train.max_steps is also set (t.yaml:2)"},
    {"OnlyOneBudgetTokensAndFlops", "train:\n  max_flops: 1e18\n  max_tokens: 1000\n",
     "t.yaml:2: train.max_flops: only one of"},
    {"MaxStepsNotNegative", "train:\n  max_steps: -1\n", "t.yaml:2: train.max_steps: must be >= 0"},
    {"MaxTokensNotNegative", "train:\n  max_tokens: -1\n", "t.yaml:2: train.max_tokens: must be >= 0"},
    {"MaxFlopsNotNegative", "train:\n  max_flops: -1e18\n", "t.yaml:2: train.max_flops: must be >= 0"},
    {"LrPositive", "train:\n  lr: 0\n", "t.yaml:2: train.lr: must be > 0"},
    {"WarmupNotNegative", "train:\n  warmup_steps: -5\n", "t.yaml:2: train.warmup_steps: must be >= 0"},
    {"DecayFractionInUnitInterval", "train:\n  decay_fraction: 1.5\n",
     "t.yaml:2: train.decay_fraction: must be in [0, 1], got 1.5"},
    {"MinLrRatioInUnitInterval", "train:\n  min_lr_ratio: -0.1\n", "t.yaml:2: train.min_lr_ratio: must be in [0, 1]"},
    {"WeightDecayNotNegative", "train:\n  weight_decay: -0.1\n", "t.yaml:2: train.weight_decay: must be >= 0"},
    {"Beta1BelowOne", "train:\n  beta1: 1.0\n", "t.yaml:2: train.beta1: must be in [0, 1), got 1.0"},
    {"Beta2NotNegative", "train:\n  beta2: -0.5\n", "t.yaml:2: train.beta2: must be in [0, 1), got -0.5"},
    {"EpsPositive", "train:\n  eps: 0\n", "t.yaml:2: train.eps: must be > 0"},
    {"GradClipNotNegative", "train:\n  grad_clip: -1\n", "t.yaml:2: train.grad_clip: must be >= 0"},
    {"AuxRouterLrMultPositive", "train:\n  aux_router_lr_mult: 0\n", "t.yaml:2: train.aux_router_lr_mult: must be > 0"},
    {"LogIntervalPositive", "train:\n  log_interval: 0\n", "t.yaml:2: train.log_interval: must be > 0"},
    {"EvalIntervalNotNegative", "train:\n  eval_interval: -1\n", "t.yaml:2: train.eval_interval: must be >= 0"},
    {"SaveIntervalNotNegative", "train:\n  save_interval: -1\n", "t.yaml:2: train.save_interval: must be >= 0"},
    {"EvalBatchesNotNegative", "train:\n  eval_batches: -1\n", "t.yaml:2: train.eval_batches: must be >= 0"},
    {"KeepCheckpointsNotNegative", "train:\n  keep_checkpoints: -1\n", "t.yaml:2: train.keep_checkpoints: must be >= 0"},
    {"MaxBadStepsPositive", "train:\n  max_bad_steps: 0\n", "t.yaml:2: train.max_bad_steps: must be > 0"},
    {"DistTimeoutPositive", "train:\n  dist_timeout_s: 0\n", "t.yaml:2: train.dist_timeout_s: must be > 0"},
    {"DeviceNamed", "train:\n  device: gpu\n", "t.yaml:2: train.device: must be auto, cpu, cuda or cuda:N, got \"gpu\""},
    {"DeviceIndexNumeric", "train:\n  device: cuda:x\n", "t.yaml:2: train.device: must be auto, cpu, cuda or cuda:N"},
    {"SeqLenWithinModelMaxSeqLen", "model:\n  max_seq_len: 256\ntrain:\n  seq_len: 512\n",
     "t.yaml:4: train.seq_len: must be <= model.max_seq_len (256), got 512"},
    // data, eval, engine
    {"ValFractionBelowOne", "data:\n  val_fraction: 1.0\n", "t.yaml:2: data.val_fraction: must be in [0, 1), got 1.0"},
    {"NumFewshotAtLeastMinusOne", "eval:\n  num_fewshot: -2\n", "t.yaml:2: eval.num_fewshot: must be >= -1, got -2"},
    {"EvalBatchSizePositive", "eval:\n  batch_size: 0\n", "t.yaml:2: eval.batch_size: must be > 0"},
    {"EvalLimitNotNegative", "eval:\n  limit: -1\n", "t.yaml:2: eval.limit: must be >= 0"},
    {"PortAtMost65535", "engine:\n  port: 65536\n", "t.yaml:2: engine.port: must be in [0, 65535], got 65536"},
    {"PortNotNegative", "engine:\n  port: -1\n", "t.yaml:2: engine.port: must be in [0, 65535], got -1"},
    {"KvBlockSizePositive", "engine:\n  kv_block_size: 0\n", "t.yaml:2: engine.kv_block_size: must be > 0"},
    {"KvMemoryPositive", "engine:\n  kv_memory_mb: 0\n", "t.yaml:2: engine.kv_memory_mb: must be > 0"},
    {"MaxBatchTokensPositive", "engine:\n  max_batch_tokens: 0\n", "t.yaml:2: engine.max_batch_tokens: must be > 0"},
    {"MaxRunningPositive", "engine:\n  max_running: 0\n", "t.yaml:2: engine.max_running: must be > 0"},
    {"MaxQueuePositive", "engine:\n  max_queue: 0\n", "t.yaml:2: engine.max_queue: must be > 0"},
};

INSTANTIATE_TEST_SUITE_P(Config, ValidationRule, ::testing::ValuesIn(kRuleCases),
                         [](const ::testing::TestParamInfo<RuleCase>& info) { return std::string(info.param.name); });

TEST(ConfigValidate, BoundaryValuesAreAccepted) {
  EXPECT_NO_THROW(load_yaml(EC_ROUTER "      func: tanh\n      threshold: -0.99\n      capacities: [1.0, 1.0]\n"));
  EXPECT_NO_THROW(load_yaml("train:\n  beta1: 0.0\n  decay_fraction: 1.0\n  min_lr_ratio: 1.0\n  grad_clip: 0\n"
                            "engine:\n  port: 0\neval:\n  num_fewshot: -1\n"));
  EXPECT_NO_THROW(load_yaml("model:\n  hidden_size: 100\n  num_heads: 8\n  num_kv_heads: 4\n  head_dim: 16\n"));
  EXPECT_NO_THROW(load_yaml("train:\n  max_steps: 0\n  max_tokens: 100\n"));
}

TEST(ConfigValidate, TrainSeqLenZeroMeansModelMaxSeqLen) {
  // train.seq_len defaults to 0 (use model.max_seq_len), so a model section alone validates.
  const Config c = load_yaml("model:\n  max_seq_len: 256\n");
  EXPECT_EQ(c.train.seq_len, 0);
  EXPECT_EQ(resolved_seq_len(c), 256);
  EXPECT_NO_THROW(load_yaml("model:\n  max_seq_len: 256\n", {"train.seq_len=0"}));
  EXPECT_NO_THROW(load_yaml("model:\n  max_seq_len: 256\n", {"train.seq_len=256"}));
  EXPECT_TRUE(yaml_fails_with("model:\n  max_seq_len: 256\n",
                              "--set: train.seq_len: must be <= model.max_seq_len (256), got 257",
                              {"train.seq_len=257"}));
}

TEST(ConfigValidate, ProgrammaticConfigErrorsHaveDefaultOrigin) {
  Config c;
  c.model.hidden_size = 0;
  EXPECT_TRUE(fails_with([&] { validate(c); }, "default: model.hidden_size: must be > 0, got 0"));
  Config d;
  d.train.lr = std::numeric_limits<double>::quiet_NaN();
  EXPECT_TRUE(fails_with([&] { validate(d); }, "default: train.lr: must be a finite number"));
  Config e;
  e.model.recursion.sharing = Sharing::kCycle;
  e.model.recursion.num_recursions = 4;  // 30 layers do not split into 4
  EXPECT_TRUE(fails_with([&] { validate(e); }, "default: model.num_layers: 30 layers cannot be split"));
}

// ---- resolved values: sequence length, capacities, layer split ----

TEST(ConfigResolved, SeqLenIsExplicitValueOrModelMaxSeqLen) {
  Config c;
  EXPECT_EQ(c.train.seq_len, 0);
  EXPECT_EQ(resolved_seq_len(c), 2048);  // model.max_seq_len default
  c.model.max_seq_len = 256;
  EXPECT_EQ(resolved_seq_len(c), 256);
  c.train.seq_len = 128;
  EXPECT_EQ(resolved_seq_len(c), 128);
  c.train.seq_len = 256;
  EXPECT_EQ(resolved_seq_len(c), 256);
  EXPECT_EQ(resolved_seq_len(load_yaml("model:\n  max_seq_len: 512\ntrain:\n  seq_len: 64\n")), 64);
}

TEST(ConfigResolved, LayerSplitCountsFixedAndSharedLayers) {
  ModelConfig m;  // 30 layers, no sharing
  EXPECT_EQ(layer_split(m).fixed, 30);
  EXPECT_EQ(layer_split(m).block_depth, 0);
  m.num_layers = 32;
  m.recursion.sharing = Sharing::kMiddleCycle;
  m.recursion.num_recursions = 3;
  EXPECT_EQ(layer_split(m).fixed, 2);
  EXPECT_EQ(layer_split(m).block_depth, 10);
  m.recursion.sharing = Sharing::kCycle;
  m.recursion.num_recursions = 4;
  EXPECT_EQ(layer_split(m).fixed, 0);
  EXPECT_EQ(layer_split(m).block_depth, 8);
  m.recursion.num_recursions = 5;
  EXPECT_TRUE(fails_with([&] { layer_split(m); }, "model.num_layers: 32 layers cannot be split by cycle into 5"));
}

TEST(ConfigCapacities, DefaultsAreNrMinusROverNr) {
  ModelConfig m;
  m.recursion.sharing = Sharing::kMiddleCycle;
  const std::vector<std::vector<double>> expected = {
      {1.0, 0.5}, {1.0, 2.0 / 3.0, 1.0 / 3.0}, {1.0, 0.75, 0.5, 0.25}};
  for (int64_t n = 2; n <= 4; ++n) {
    m.recursion.num_recursions = n;
    const std::vector<double> caps = resolved_capacities(m);
    const auto& want = expected[n - 2];
    ASSERT_EQ(caps.size(), want.size()) << "N_r = " << n;
    for (size_t r = 0; r < want.size(); ++r) EXPECT_DOUBLE_EQ(caps[r], want[r]) << "N_r = " << n << ", r = " << r;
  }
}

TEST(ConfigCapacities, ExplicitCapacitiesWinAndSharingNoneHasNone) {
  ModelConfig m;
  m.recursion.sharing = Sharing::kCycle;
  m.recursion.num_recursions = 2;
  m.router.expert.capacities = {0.8, 0.2};
  EXPECT_EQ(resolved_capacities(m), (std::vector<double>{0.8, 0.2}));
  EXPECT_TRUE(resolved_capacities(ModelConfig{}).empty());
}

}  // namespace
}  // namespace mor::config
