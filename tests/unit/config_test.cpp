// Unit tests of mor::config: loading, precedence and origins, load errors, overrides, dump
// round-trips, the key reference and the shipped presets in configs/. The validation rules are in
// config_validation_test.cpp.
#include "mor/config/config.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "config_test_util.h"
#include "mor/core/error.h"
#include "mor/model/layout.h"

#ifndef MOR_SOURCE_DIR
#define MOR_SOURCE_DIR "."
#endif

namespace mor::config {
namespace {

using namespace test;

namespace fs = std::filesystem;

const fs::path kConfigDir = fs::path(MOR_SOURCE_DIR) / "configs";

// A scratch directory removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = fs::temp_directory_path() /
            ("mor_config_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string write(const std::string& name, const std::string& text) const {
    const fs::path file = path_ / name;
    std::ofstream(file) << text;
    return file.string();
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// Sets every key, each (except the two unused budgets) to a value different from its default.
const char* const kEveryKeyYaml = R"(model:
  name: "my model: v2 \"quoted\""
  vocab_size: 1000
  hidden_size: 128
  intermediate_size: 352
  num_layers: 10
  num_heads: 8
  num_kv_heads: 4
  head_dim: 32
  max_seq_len: 512
  rope_theta: 500000.0
  rms_norm_eps: 1.0e-6
  tie_embeddings: false
  init_std: 0.01
  seed: 7
  kv_mode: share
  inference_routing: topk
  recursion: {sharing: cycle, num_recursions: 2, share_norms: false}
  router:
    kind: expert
    arch: mlp
    temperature: 0.5
    z_loss_coeff: 0.001
    expert:
      func: tanh
      alpha: 0.2
      capacities: [0.9, 0.3]
      capacity_warmup_steps: 100
      aux: router
      aux_coeff: 0.01
      threshold: -0.25
    token: {func: sigmoid, alpha: 0.3, balancing: loss_free, balance_coeff: 0.05, bias_update_rate: 0.002,
            balance_warmup_steps: 5}
train:
  out_dir: runs/x y
  seed: 3
  seq_len: 256
  micro_batch_size: 4
  global_batch_size: 32
  max_steps: 0
  max_tokens: 0
  max_flops: 1.65e19
  lr: 6.0e-4
  schedule: cosine
  warmup_steps: 10
  decay_fraction: 0.1
  min_lr_ratio: 0.1
  weight_decay: 0.05
  beta1: 0.8
  beta2: 0.99
  eps: 1e-6
  grad_clip: 0.5
  decay_embeddings: false
  decay_routers: false
  aux_router_lr_mult: 5.0
  precision: bf16
  sharding: zero2
  activation_checkpointing: true
  log_interval: 5
  eval_interval: 50
  eval_batches: 4
  save_interval: 200
  keep_checkpoints: 2
  device: cuda:1
  reshard_after_forward: false
  document_masking: true
  max_bad_steps: 3
  dist_timeout_s: 60.0
  init_from: bundles/base
data: {train_shards: d/train/*.bin, val_shards: d/val, tokenizer: tok.json, text_field: content, val_fraction: 0.1,
       seed: 11}
eval: {tasks: [piqa, "arc_easy"], num_fewshot: 5, batch_size: 8, limit: 50, data_dir: ev, seed: 99, routing: topk}
engine: {host: 0.0.0.0, port: 9000, kv_block_size: 32, kv_memory_mb: 512, max_batch_tokens: 4096, max_running: 16,
         max_queue: 32, routing: topk}
)";

// Keys named by key_reference(), one per line.
std::vector<std::string> reference_keys() {
  std::vector<std::string> keys;
  std::istringstream lines(key_reference());
  std::string line;
  while (std::getline(lines, line)) keys.push_back(line.substr(0, line.find(' ')));
  return keys;
}

// Configuration presets under `dir`: every *.yaml except the evaluation task files
// (configs/eval/tasks/, a different format: docs/evaluation.md).
std::vector<fs::path> yaml_files_under(const fs::path& dir) {
  std::vector<fs::path> files;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (entry.path().parent_path().filename() == "tasks" && entry.path().parent_path().parent_path().filename() == "eval") {
      continue;
    }
    if (entry.is_regular_file() && entry.path().extension() == ".yaml") files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

// ---- defaults, precedence, origins ----

TEST(ConfigLoad, DefaultConfigValidatesAndEmptyDocumentGivesDefaults) {
  EXPECT_NO_THROW(validate(Config{}));
  const Config c = load_yaml("");
  EXPECT_TRUE(same_values(c, Config{}));
  EXPECT_TRUE(c.origins.empty());
  EXPECT_TRUE(same_values(load_yaml("# only a comment\n"), Config{}));
}

TEST(ConfigLoad, EveryKeyLandsInItsOwnField) {
  const Config c = load_yaml(kEveryKeyYaml);
  EXPECT_EQ(c.model.name, "my model: v2 \"quoted\"");
  EXPECT_EQ(c.model.vocab_size, 1000);
  EXPECT_EQ(c.model.head_dim, 32);
  EXPECT_EQ(c.model.resolved_head_dim(), 32);
  EXPECT_EQ(c.model.rms_norm_eps, 1e-6);
  EXPECT_FALSE(c.model.tie_embeddings);
  EXPECT_EQ(c.model.kv_mode, KvMode::kShare);
  EXPECT_EQ(c.model.inference_routing, RoutingMode::kTopk);
  EXPECT_EQ(c.model.recursion.sharing, Sharing::kCycle);
  EXPECT_FALSE(c.model.recursion.share_norms);
  EXPECT_EQ(c.model.router.arch, RouterArch::kMlp);
  EXPECT_EQ(c.model.router.expert.func, GateFunc::kTanh);
  EXPECT_EQ(c.model.router.expert.capacities, (std::vector<double>{0.9, 0.3}));
  EXPECT_EQ(c.model.router.expert.aux, ExpertAux::kRouter);
  EXPECT_EQ(c.model.router.expert.threshold, -0.25);
  EXPECT_EQ(c.model.router.token.func, GateFunc::kSigmoid);
  EXPECT_EQ(c.model.router.token.balancing, Balancing::kLossFree);
  EXPECT_EQ(c.model.router.token.balance_warmup_steps, 5);
  EXPECT_EQ(c.train.out_dir, "runs/x y");
  EXPECT_EQ(c.train.max_flops, 1.65e19);
  EXPECT_EQ(c.train.schedule, LrSchedule::kCosine);
  EXPECT_EQ(c.train.precision, Precision::kBf16);
  EXPECT_EQ(c.train.sharding, ShardingMode::kZero2);
  EXPECT_TRUE(c.train.activation_checkpointing);
  EXPECT_EQ(c.data.train_shards, "d/train/*.bin");
  EXPECT_EQ(c.data.text_field, "content");
  EXPECT_EQ(c.eval.tasks, (std::vector<std::string>{"piqa", "arc_easy"}));
  EXPECT_EQ(c.eval.routing, RoutingMode::kTopk);
  EXPECT_EQ(c.engine.host, "0.0.0.0");
  EXPECT_EQ(c.engine.port, 9000);
  EXPECT_EQ(c.engine.routing, RoutingMode::kTopk);
}

TEST(ConfigLoad, PrecedenceIsDefaultsThenFilesInOrderThenOverrides) {
  TempDir dir;
  const std::string first = dir.write("first.yaml",
                                      "model:\n"
                                      "  hidden_size: 288\n"
                                      "  num_layers: 12\n"
                                      "train:\n"
                                      "  lr: 0.01\n");
  const std::string second = dir.write("second.yaml",
                                       "model:\n"
                                       "  num_layers: 14\n"
                                       "train:\n"
                                       "  lr: 0.02\n"
                                       "  seed: 5\n");
  const Config c = load({first, second}, {"train.lr=0.03"});
  EXPECT_EQ(c.model.hidden_size, 288);  // first file only
  EXPECT_EQ(c.model.num_layers, 14);    // second file beats the first
  EXPECT_EQ(c.train.seed, 5);
  EXPECT_EQ(c.train.lr, 0.03);          // --set beats both files
  EXPECT_EQ(c.model.vocab_size, 49152); // default
  EXPECT_EQ(c.origin("model.hidden_size"), first + ":2");
  EXPECT_EQ(c.origin("model.num_layers"), second + ":2");
  EXPECT_EQ(c.origin("train.seed"), second + ":5");
  EXPECT_EQ(c.origin("train.lr"), "--set");
  EXPECT_EQ(c.origin("model.vocab_size"), "default");
  EXPECT_EQ(c.origins.count("model.vocab_size"), 0u);
}

TEST(ConfigLoad, LaterOverrideOfTheSameKeyWins) {
  const Config c = load_yaml("", {"model.num_layers=12", "model.num_layers=18"});
  EXPECT_EQ(c.model.num_layers, 18);
}

TEST(ConfigLoad, NullListResetsCapacitiesSetByAnEarlierFile) {
  TempDir dir;
  const std::string base = dir.write("a.yaml", "model:\n  recursion:\n    sharing: cycle\n    num_recursions: 2\n"
                                               "  router:\n    expert:\n      capacities: [1.0, 0.5]\n");
  const std::string reset = dir.write("b.yaml", "model:\n  router:\n    expert:\n      capacities: null\n");
  EXPECT_EQ(load({base}).model.router.expert.capacities, (std::vector<double>{1.0, 0.5}));
  EXPECT_TRUE(load({base, reset}).model.router.expert.capacities.empty());
}

TEST(ConfigLoad, ExactIntegerWrittenAsFloatIsAcceptedForIntegerKeys) {
  const Config c = load_yaml("train:\n  max_tokens: 2e10\n  seed: 7.0\n");
  EXPECT_EQ(c.train.max_tokens, 20000000000);
  EXPECT_EQ(c.train.seed, 7);
}

TEST(ConfigLoad, MissingFileIsAnError) {
  EXPECT_TRUE(fails_with([] { load({"/nonexistent/dir/x.yaml"}); },
                         "cannot open config file '/nonexistent/dir/x.yaml'"));
  TempDir dir;
  EXPECT_TRUE(fails_with([&] { load({dir.path().string()}); }, "cannot open config file '" + dir.path().string()));
}

TEST(ConfigLoad, ErrorInSecondFileNamesThatFileAndLine) {
  TempDir dir;
  const std::string good = dir.write("good.yaml", "model:\n  hidden_size: 128\n");
  const std::string bad = dir.write("bad.yaml", "train:\n  lr: 0.1\n  warmup: 5\n");
  EXPECT_TRUE(fails_with([&] { load({good, bad}); }, bad + ":3: train.warmup: unknown key; did you mean "
                                                           "'train.warmup_steps'?"));
}

// ---- load errors ----

TEST(ConfigErrors, UnknownKeySuggestsClosestKey) {
  EXPECT_TRUE(yaml_fails_with("model:\n  vocab_size: 10\n  hiden_size: 64\n",
                              "t.yaml:3: model.hiden_size: unknown key; did you mean 'model.hidden_size'?"));
  EXPECT_TRUE(yaml_fails_with("model:\n  router:\n    expert:\n      capacity: [1.0]\n",
                              "t.yaml:4: model.router.expert.capacity: unknown key; did you mean "
                              "'model.router.expert.capacities'?"));
}

TEST(ConfigErrors, UnknownSectionSuggestsClosestSection) {
  EXPECT_TRUE(yaml_fails_with("modle:\n  hidden_size: 64\n", "t.yaml:1: modle: unknown key; did you mean 'model'?"));
}

TEST(ConfigErrors, KeyUnderTheWrongSectionSuggestsWhereItLives) {
  EXPECT_TRUE(yaml_fails_with("train:\n  hidden_size: 64\n",
                              "t.yaml:2: train.hidden_size: unknown key; did you mean 'model.hidden_size'?"));
}

TEST(ConfigErrors, UnknownKeyFarFromAnyKeyHasNoSuggestion) {
  const std::string message = error_of([] { load_yaml("zzzzzzzzzzzzzzzz: 1\n"); });
  EXPECT_NE(message.find("t.yaml:1: zzzzzzzzzzzzzzzz: unknown key"), std::string::npos) << message;
  EXPECT_EQ(message.find("did you mean"), std::string::npos) << message;
}

TEST(ConfigErrors, NonIntegerForIntegerKeyIsRejected) {
  EXPECT_TRUE(yaml_fails_with("model:\n  hidden_size: abc\n",
                              "t.yaml:2: model.hidden_size: expected an integer, got 'abc'"));
  EXPECT_TRUE(yaml_fails_with("model:\n  hidden_size: 3.5\n",
                              "t.yaml:2: model.hidden_size: expected an integer, got '3.5'"));
  EXPECT_TRUE(yaml_fails_with("model:\n  hidden_size: [1]\n",
                              "t.yaml:2: model.hidden_size: expected an integer, got a list"));
  EXPECT_TRUE(yaml_fails_with("model:\n  hidden_size: {a: 1}\n",
                              "t.yaml:2: model.hidden_size: expected an integer, got a map"));
  EXPECT_TRUE(yaml_fails_with("model:\n  hidden_size:\n",
                              "t.yaml:2: model.hidden_size: expected an integer, got nothing (null)"));
}

TEST(ConfigErrors, NonNumberForFloatKeyIsRejected) {
  EXPECT_TRUE(yaml_fails_with("train:\n  lr: fast\n", "t.yaml:2: train.lr: expected a finite number, got 'fast'"));
  EXPECT_TRUE(yaml_fails_with("train:\n  lr: .inf\n", "t.yaml:2: train.lr: expected a finite number, got '.inf'"));
}

TEST(ConfigErrors, BooleansAreOnlyTrueOrFalse) {
  EXPECT_TRUE(yaml_fails_with("model:\n  tie_embeddings: yes\n",
                              "t.yaml:2: model.tie_embeddings: expected true or false, got 'yes'"));
  EXPECT_TRUE(yaml_fails_with("model:\n  tie_embeddings: 1\n",
                              "t.yaml:2: model.tie_embeddings: expected true or false, got '1'"));
}

TEST(ConfigErrors, ListKeysNeedAListOfTheRightElementType) {
  EXPECT_TRUE(yaml_fails_with("eval:\n  tasks: piqa\n",
                              "t.yaml:2: eval.tasks: expected a list such as [a, b], got 'piqa'"));
  EXPECT_TRUE(yaml_fails_with("model:\n  router:\n    expert:\n      capacities: [1.0, abc]\n",
                              "t.yaml:4: model.router.expert.capacities[1]: expected a finite number, got 'abc'"));
  EXPECT_TRUE(yaml_fails_with("eval:\n  tasks:\n    - piqa\n    - [nested]\n",
                              "t.yaml:4: eval.tasks[1]: expected a string, got a list"));
}

TEST(ConfigErrors, UnknownEnumValueListsTheAllowedOnes) {
  EXPECT_TRUE(yaml_fails_with("model:\n  recursion:\n    sharing: middle\n",
                              "t.yaml:3: model.recursion.sharing: unknown value 'middle'; allowed: none, cycle, "
                              "sequence, middle_cycle, middle_sequence"));
  EXPECT_TRUE(yaml_fails_with("train:\n  precision: fp16\n",
                              "t.yaml:2: train.precision: unknown value 'fp16'; allowed: auto, fp32, bf16"));
}

TEST(ConfigErrors, SectionMustBeAMap) {
  EXPECT_TRUE(yaml_fails_with("model: 5\n", "t.yaml:1: model: expected a map of keys (a section), got '5'"));
  EXPECT_TRUE(yaml_fails_with("model:\n  router: expert\n",
                              "t.yaml:2: model.router: expected a map of keys (a section), got 'expert'"));
  EXPECT_TRUE(yaml_fails_with("train: [1, 2]\n", "t.yaml:1: train: expected a map of keys (a section), got a list"));
}

TEST(ConfigErrors, TopLevelMustBeAMap) {
  EXPECT_TRUE(yaml_fails_with("- model\n- train\n", "t.yaml:1: expected a map of sections"));
}

TEST(ConfigErrors, DuplicateKeyInOneFileIsRejected) {
  EXPECT_TRUE(yaml_fails_with("model:\n  hidden_size: 64\n  hidden_size: 128\n",
                              "t.yaml:3: model.hidden_size: duplicate key (first set at t.yaml:2)"));
}

TEST(ConfigErrors, YamlSyntaxErrorNamesFileLineAndParserMessage) {
  EXPECT_TRUE(yaml_fails_with("model:\n  hidden_size: 64\n  router: {kind: expert\n",
                              "t.yaml:4: YAML syntax error: end of map flow not found"));
  EXPECT_TRUE(yaml_fails_with("model:\n  hidden_size: 64\n bad: indent: here\n", "t.yaml:3: YAML syntax error: "));
}

// ---- overrides ----

TEST(ConfigOverride, FlowSequenceSetsAList) {
  const Config c = load_yaml(EC_MODEL,
                             {"model.router.expert.capacities=[1.0,0.5]", "eval.tasks=[piqa, hellaswag]"});
  EXPECT_EQ(c.model.router.expert.capacities, (std::vector<double>{1.0, 0.5}));
  EXPECT_EQ(c.eval.tasks, (std::vector<std::string>{"piqa", "hellaswag"}));
  EXPECT_EQ(c.origin("model.router.expert.capacities"), "--set");
}

TEST(ConfigOverride, ScalarValuesAreParsedAsYaml) {
  const Config c = load_yaml("", {"model.tie_embeddings=false", "train.lr = 1e-4", "train.schedule=cosine"});
  EXPECT_FALSE(c.model.tie_embeddings);
  EXPECT_EQ(c.train.lr, 1e-4);
  EXPECT_EQ(c.train.schedule, LrSchedule::kCosine);
}

TEST(ConfigOverride, StringValuesAreVerbatimUnlessQuoted) {
  const Config c = load_yaml("", {"data.train_shards=data/a: b/*.bin", "model.name=\"x y\"", "data.tokenizer="});
  EXPECT_EQ(c.data.train_shards, "data/a: b/*.bin");
  EXPECT_EQ(c.model.name, "x y");
  EXPECT_EQ(c.data.tokenizer, "");
}

TEST(ConfigOverride, SectionCanBeSetWithAFlowMap) {
  const Config c =
      load_yaml("model:\n  num_layers: 6\n", {"model.recursion={sharing: middle_cycle, num_recursions: 2}"});
  EXPECT_EQ(c.model.recursion.sharing, Sharing::kMiddleCycle);
  EXPECT_EQ(c.model.recursion.num_recursions, 2);
  EXPECT_EQ(c.origin("model.recursion.num_recursions"), "--set");
  EXPECT_TRUE(yaml_fails_with("", "--set: model.recursion: expected a map of keys such as {a: 1}, got '3'",
                              {"model.recursion=3"}));
}

TEST(ConfigOverride, OverrideWithoutEqualsSignIsMalformed) {
  EXPECT_TRUE(yaml_fails_with("", "--set: malformed override 'model.hidden_size': expected key.path=value",
                              {"model.hidden_size"}));
  EXPECT_TRUE(yaml_fails_with("", "--set: malformed override '=5': no key before '='", {"=5"}));
}

TEST(ConfigOverride, UnknownKeyNamesTheOverrideAndSuggests) {
  EXPECT_TRUE(yaml_fails_with("",
                              "--set: model.hiden_size: unknown key in override 'model.hiden_size=64'; "
                              "did you mean 'model.hidden_size'?",
                              {"model.hiden_size=64"}));
  EXPECT_TRUE(yaml_fails_with("", "--set: model.recursion.bogus: unknown key",
                              {"model.recursion={sharing: cycle, bogus: 1}"}));
}

TEST(ConfigOverride, WrongTypeAndBadYamlAreErrorsAtSet) {
  EXPECT_TRUE(
      yaml_fails_with("", "--set: model.hidden_size: expected an integer, got 'abc'", {"model.hidden_size=abc"}));
  EXPECT_TRUE(yaml_fails_with("", "--set: model.router.expert.capacities: cannot parse value '[1.0,' in override",
                              {"model.router.expert.capacities=[1.0,"}));
}

TEST(ConfigOverride, ValidationErrorOfAnOverriddenKeyHasSetOrigin) {
  EXPECT_TRUE(yaml_fails_with("model:\n  hidden_size: 64\n", "--set: model.hidden_size: must be > 0, got 0",
                              {"model.hidden_size=0"}));
}

// ---- dump and key reference ----

TEST(ConfigDump, EveryKeyRoundTripsThroughDump) {
  const Config original = load_yaml(kEveryKeyYaml);
  const Config reloaded = load_from_string(dump_yaml(original), "x");
  EXPECT_TRUE(same_values(original, reloaded));
  EXPECT_EQ(dump_yaml(reloaded), dump_yaml(original));
}

TEST(ConfigDump, EveryKeyFixtureReallySetsEveryKey) {
  const Config c = load_yaml(kEveryKeyYaml);
  const std::vector<std::string> keys = reference_keys();
  for (const auto& key : keys) EXPECT_EQ(c.origins.count(key), 1u) << key << " is not set by kEveryKeyYaml";
  EXPECT_EQ(c.origins.size(), keys.size());
}

TEST(ConfigDump, DoublesRoundTripExactlyAndPrintReadably) {
  Config c;
  c.model.rms_norm_eps = 1e-5;
  c.train.lr = 0.1 + 0.2;  // 0.30000000000000004
  c.train.max_flops = 16.5e18;
  c.data.val_fraction = 2.0 / 3.0 * 0.5;
  c.model.router.z_loss_coeff = 1e-300;
  const std::string text = dump_yaml(c);
  EXPECT_NE(text.find("rms_norm_eps: 1e-05\n"), std::string::npos) << text;
  EXPECT_NE(text.find("lr: 0.30000000000000004\n"), std::string::npos) << text;
  EXPECT_NE(text.find("rope_theta: 10000.0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("max_flops: 1.65e+19\n"), std::string::npos) << text;
  const Config back = load_from_string(text, "x");
  EXPECT_EQ(back.train.lr, c.train.lr);
  EXPECT_EQ(back.data.val_fraction, c.data.val_fraction);
  EXPECT_EQ(back.model.router.z_loss_coeff, 1e-300);
}

TEST(ConfigDump, StringsThatLookLikeOtherYamlRoundTrip) {
  for (const std::string name : {"true", "123", "null", "~", "a: b", "#x", "[1]", "back\\slash \"q\"", "tab\there",
                                 "line\nbreak", "", " padded ", "ünïcödé"}) {
    Config c;
    c.model.name = name;
    EXPECT_EQ(load_from_string(dump_yaml(c), "x").model.name, name);
  }
}

TEST(ConfigDump, EveryPresetInConfigsRoundTrips) {
  const std::vector<fs::path> files = yaml_files_under(kConfigDir);
  ASSERT_GE(files.size(), 16u) << "presets not found under " << kConfigDir;
  for (const auto& file : files) {
    SCOPED_TRACE(file.string());
    const Config original = load({file.string()});
    const Config reloaded = load_from_string(dump_yaml(original), "dump of " + file.string());
    EXPECT_TRUE(same_values(original, reloaded));
  }
}

// docs/configuration.md's key table is generated from key_reference(); it must list every key
// with its current type, default and description (regenerate the table when this fails).
TEST(ConfigReference, DocsTableListsEveryKeyAsTheReferenceDoes) {
  std::ifstream in(fs::path(MOR_SOURCE_DIR) / "docs" / "configuration.md");
  ASSERT_TRUE(in.good());
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string docs = ss.str();
  std::istringstream lines(key_reference());
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream fields(line);
    std::string key, type, def;
    fields >> key >> type >> def;
    std::string description;
    std::getline(fields, description);
    description.erase(0, description.find_first_not_of(' '));
    std::string escaped;
    for (char c : description) escaped += c == '|' ? std::string("\\|") : std::string(1, c);
    const std::string row = "| `" + key + "` | " + type + " | `" + def + "` | " + escaped + " |";
    EXPECT_NE(docs.find(row), std::string::npos) << "docs/configuration.md lacks or misstates:\n" << row;
  }
}

TEST(ConfigReference, OneLinePerKeyWithTypeDefaultAndDescription) {
  const std::vector<std::string> keys = reference_keys();
  // Count the leaf keys of the dumped defaults independently: "name: value" lines, not section headers.
  size_t leaves = 0;
  std::istringstream lines(dump_yaml(Config{}));
  std::string line;
  while (std::getline(lines, line)) {
    if (!line.empty() && line[0] != '#' && line.back() != ':') ++leaves;
  }
  EXPECT_EQ(keys.size(), leaves);
  EXPECT_EQ(std::set<std::string>(keys.begin(), keys.end()).size(), keys.size());
  const std::string reference = key_reference();
  auto line_of = [&](const std::string& key) {
    std::istringstream in(reference);
    std::string l;
    while (std::getline(in, l)) {
      if (l.rfind(key + " ", 0) == 0) return l;
    }
    return std::string();
  };
  const std::string hidden = line_of("model.hidden_size");
  EXPECT_NE(hidden.find(" int "), std::string::npos) << hidden;
  EXPECT_NE(hidden.find(" 576 "), std::string::npos) << hidden;
  EXPECT_NE(hidden.find("model width"), std::string::npos) << hidden;
  const std::string sharing = line_of("model.recursion.sharing");
  EXPECT_NE(sharing.find("none|cycle|sequence|middle_cycle|middle_sequence"), std::string::npos) << sharing;
  EXPECT_NE(line_of("model.router.expert.capacities").find(" list[float] "), std::string::npos);
}

TEST(ConfigReference, EveryKeyIsSettableWithItsListedDefault) {
  const std::string defaults = dump_yaml(Config{});
  std::istringstream lines(key_reference());
  std::string line;
  int count = 0;
  while (std::getline(lines, line)) {
    std::istringstream fields(line);
    std::string key, type, value;
    fields >> key >> type >> value;
    SCOPED_TRACE(line);
    const Config c = load_yaml("", {key + "=" + value});
    EXPECT_EQ(c.origin(key), "--set");
    EXPECT_EQ(dump_yaml(c), defaults);
    ++count;
  }
  EXPECT_GT(count, 80);
}

TEST(ConfigReference, EnumNamesMatchTheYamlSpellings) {
  const std::vector<std::pair<std::string, std::string>> names = {
      {to_string(Sharing::kNone), "none"}, {to_string(Sharing::kCycle), "cycle"},
      {to_string(Sharing::kSequence), "sequence"}, {to_string(Sharing::kMiddleCycle), "middle_cycle"},
      {to_string(Sharing::kMiddleSequence), "middle_sequence"}, {to_string(RouterKind::kNone), "none"},
      {to_string(RouterKind::kExpert), "expert"}, {to_string(RouterKind::kToken), "token"},
      {to_string(RouterArch::kLinear), "linear"}, {to_string(RouterArch::kMlp), "mlp"},
      {to_string(KvMode::kRecursion), "recursion"}, {to_string(KvMode::kShare), "share"},
      {to_string(RoutingMode::kCausal), "causal"}, {to_string(RoutingMode::kTopk), "topk"},
      {to_string(GateFunc::kSigmoid), "sigmoid"}, {to_string(GateFunc::kTanh), "tanh"},
      {to_string(GateFunc::kSoftmax), "softmax"}, {to_string(ExpertAux::kLoss), "loss"},
      {to_string(ExpertAux::kRouter), "router"}, {to_string(Balancing::kNone), "none"},
      {to_string(Balancing::kLoss), "loss"}, {to_string(Balancing::kLossFree), "loss_free"},
      {to_string(LrSchedule::kWsd), "wsd"}, {to_string(LrSchedule::kCosine), "cosine"},
      {to_string(LrSchedule::kLinear), "linear"}, {to_string(LrSchedule::kConstant), "constant"},
      {to_string(Precision::kAuto), "auto"}, {to_string(Precision::kFp32), "fp32"},
      {to_string(Precision::kBf16), "bf16"}, {to_string(ShardingMode::kNone), "none"},
      {to_string(ShardingMode::kZero2), "zero2"}, {to_string(ShardingMode::kZero3), "zero3"}};
  for (const auto& [got, want] : names) EXPECT_EQ(got, want);
  // The loader accepts exactly these spellings.
  const Config c = load_yaml(EC_MODEL "  router:\n    kind: token\n    token:\n      balancing: loss_free\n"
                                      "train:\n  sharding: none\n  precision: fp32\n  schedule: constant\n");
  EXPECT_EQ(c.model.router.token.balancing, Balancing::kLossFree);
  EXPECT_EQ(c.train.sharding, ShardingMode::kNone);
  EXPECT_EQ(c.train.precision, Precision::kFp32);
  EXPECT_EQ(c.train.schedule, LrSchedule::kConstant);
}

// ---- presets ----

TEST(ConfigPresets, AllExpectedPresetsExistAndValidate) {
  const char* const names[] = {
      "model/smollm-135m.yaml",    "model/smollm-360m.yaml",     "model/smollm-1.7b.yaml",
      "model/mor-360m-ec-r2.yaml", "model/mor-360m-ec-r3.yaml",  "model/mor-360m-ec-r4.yaml",
      "model/mor-360m-tc-r3.yaml", "model/mor-360m-ec-r3-kvshare.yaml", "model/tiny-vanilla.yaml",
      "model/tiny-mor-ec.yaml",    "model/tiny-mor-tc.yaml",     "model/tiny-recursive.yaml",
      "demo.yaml",                 "train/pretrain-360m.yaml",   "eval/paper-suite.yaml",
      "engine/default.yaml"};
  for (const char* name : names) {
    const fs::path file = kConfigDir / name;
    ASSERT_TRUE(fs::exists(file)) << file;
    EXPECT_NO_THROW(load({file.string()})) << file;
  }
}

TEST(ConfigPresets, EveryPresetStartsWithAComment) {
  for (const auto& file : yaml_files_under(kConfigDir)) {
    std::ifstream in(file);
    std::string first;
    std::getline(in, first);
    EXPECT_EQ(first.rfind("# ", 0), 0u) << file;
  }
}

TEST(ConfigPresets, TinyModelsAloneValidateWithTheirOwnSequenceLength) {
  // A tiny model preset needs no train section: train.seq_len 0 resolves to its max_seq_len.
  for (const char* name : {"tiny-vanilla.yaml", "tiny-recursive.yaml", "tiny-mor-ec.yaml", "tiny-mor-tc.yaml"}) {
    SCOPED_TRACE(name);
    const Config c = load({(kConfigDir / "model" / name).string()});
    EXPECT_EQ(c.model.hidden_size, 64);
    EXPECT_EQ(c.model.max_seq_len, 256);
    EXPECT_EQ(c.train.seq_len, 0);
    EXPECT_EQ(resolved_seq_len(c), 256);
  }
}

TEST(ConfigPresets, SmolLmShapesMatchTheSpec) {
  struct Shape {
    const char* file;
    int64_t d, ff, layers, heads, kv_heads;
  };
  const Shape shapes[] = {{"smollm-135m.yaml", 576, 1536, 30, 9, 3},
                          {"smollm-360m.yaml", 960, 2560, 32, 15, 5},
                          {"smollm-1.7b.yaml", 2048, 8192, 24, 32, 32}};
  for (const auto& s : shapes) {
    SCOPED_TRACE(s.file);
    const ModelConfig m = load({(kConfigDir / "model" / s.file).string()}).model;
    EXPECT_EQ(m.hidden_size, s.d);
    EXPECT_EQ(m.intermediate_size, s.ff);
    EXPECT_EQ(m.num_layers, s.layers);
    EXPECT_EQ(m.num_heads, s.heads);
    EXPECT_EQ(m.num_kv_heads, s.kv_heads);
    EXPECT_EQ(m.resolved_head_dim(), 64);
    EXPECT_EQ(m.vocab_size, 49152);
    EXPECT_EQ(m.max_seq_len, 2048);
    EXPECT_EQ(m.rope_theta, 10000.0);
    EXPECT_EQ(m.rms_norm_eps, 1e-5);
    EXPECT_TRUE(m.tie_embeddings);
    EXPECT_EQ(m.recursion.sharing, Sharing::kNone);
    EXPECT_EQ(m.router.kind, RouterKind::kNone);
  }
}

TEST(ConfigPresets, Mor360mPresetsSplitIntoTheirRecursions) {
  struct Expect {
    const char* file;
    int64_t recursions, layers, block;
    RouterKind kind;
    KvMode kv_mode;
  };
  const Expect presets[] = {{"mor-360m-ec-r2.yaml", 2, 32, 15, RouterKind::kExpert, KvMode::kRecursion},
                            {"mor-360m-ec-r3.yaml", 3, 32, 10, RouterKind::kExpert, KvMode::kRecursion},
                            {"mor-360m-ec-r4.yaml", 4, 34, 8, RouterKind::kExpert, KvMode::kRecursion},
                            {"mor-360m-ec-r3-kvshare.yaml", 3, 32, 10, RouterKind::kExpert, KvMode::kShare},
                            {"mor-360m-tc-r3.yaml", 3, 32, 10, RouterKind::kToken, KvMode::kRecursion}};
  for (const auto& p : presets) {
    SCOPED_TRACE(p.file);
    const ModelConfig m = load({(kConfigDir / "model" / p.file).string()}).model;
    EXPECT_EQ(m.recursion.sharing, Sharing::kMiddleCycle);
    EXPECT_EQ(m.recursion.num_recursions, p.recursions);
    EXPECT_EQ(m.num_layers, p.layers);
    EXPECT_EQ(m.router.kind, p.kind);
    EXPECT_EQ(m.kv_mode, p.kv_mode);
    EXPECT_EQ(m.router.arch, RouterArch::kLinear);
    const model::Layout layout = model::make_layout(m);
    EXPECT_EQ(static_cast<int64_t>(layout.block.size()), p.block);
    EXPECT_EQ(layout.unrolled_depth(), p.layers);
    if (p.kind == RouterKind::kExpert) {
      EXPECT_EQ(m.router.expert.func, GateFunc::kSigmoid);
      EXPECT_EQ(m.router.expert.alpha, 0.1);
      EXPECT_EQ(m.router.expert.aux, ExpertAux::kLoss);
      EXPECT_EQ(m.router.expert.aux_coeff, 0.001);
      EXPECT_EQ(resolved_capacities(m).size(), static_cast<size_t>(p.recursions));
    } else {
      EXPECT_EQ(m.router.token.func, GateFunc::kSoftmax);
      EXPECT_EQ(m.router.token.alpha, 1.0);
      EXPECT_EQ(m.router.token.balancing, Balancing::kLoss);
      EXPECT_EQ(m.router.token.balance_coeff, 0.1);
      EXPECT_EQ(m.router.z_loss_coeff, 1e-5);
    }
  }
}

TEST(ConfigPresets, DemoIsATinyMorRunWithQuickstartSettings) {
  const Config c = load({(kConfigDir / "demo.yaml").string()});
  EXPECT_EQ(c.model.router.kind, RouterKind::kExpert);
  EXPECT_EQ(c.model.hidden_size, 64);
  EXPECT_EQ(c.train.out_dir, "runs/demo");
  EXPECT_EQ(c.train.seq_len, 128);
  EXPECT_EQ(resolved_seq_len(c), 128);
  EXPECT_EQ(c.train.micro_batch_size, 8);
  EXPECT_EQ(c.train.global_batch_size, 16);
  EXPECT_EQ(c.train.max_steps, 200);
  EXPECT_EQ(c.train.lr, 3e-3);
  EXPECT_EQ(c.train.warmup_steps, 20);
  EXPECT_EQ(c.data.train_shards.rfind("data/demo/", 0), 0u);
  EXPECT_EQ(c.data.tokenizer.rfind("data/demo/", 0), 0u);
  EXPECT_EQ(c.eval.tasks, (std::vector<std::string>{"lambada_openai"}));
  EXPECT_EQ(c.eval.limit, 100);
}

TEST(ConfigPresets, ModelAndTrainPresetsCombine) {
  const Config c = load({(kConfigDir / "model/mor-360m-ec-r3.yaml").string(),
                         (kConfigDir / "train/pretrain-360m.yaml").string(),
                         (kConfigDir / "eval/paper-suite.yaml").string()},
                        {"train.max_steps=14161"});
  EXPECT_EQ(c.train.global_batch_size, 1024);
  EXPECT_EQ(c.train.seq_len, 2048);
  EXPECT_EQ(c.train.max_steps, 14161);
  EXPECT_EQ(c.eval.tasks.size(), 7u);
  EXPECT_EQ(c.origin("model.num_layers"), (kConfigDir / "model/mor-360m-ec-r3.yaml").string() + ":7");
}

}  // namespace
}  // namespace mor::config
