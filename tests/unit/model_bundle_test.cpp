// Serving bundles: save -> load reproduces every parameter and the logits exactly for vanilla,
// recursive, expert-choice, token-choice (with a loss-free bias) and KV-sharing models; sharded
// and bf16 bundles load; tied models store no lm_head; Hugging Face import copies tensors bit for
// bit; every corruption (unknown format or version, missing / extra / mis-shaped / mis-typed
// tensors, broken index) is an error naming the file and the tensor; meta-device models give the
// parameter specs without memory.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <cstdlib>

#include "mor/core/error.h"
#include "mor/core/file.h"
#include "mor/io/safetensors.h"
#include "mor/model/bundle.h"
#include "support/test_helpers.h"

namespace mor::testing {
namespace {

using model::BundleOptions;
using model::MoRModel;

class TempDir {
 public:
  TempDir() {
    std::string tmpl = ::testing::TempDir() + "mor_bundle_XXXXXX";
    MOR_CHECK(::mkdtemp(tmpl.data()) != nullptr, "mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() { core::remove_tree(path_); }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

struct Variant {
  std::string name;
  config::ModelConfig cfg;
};

std::vector<Variant> variants() {
  std::vector<Variant> out;
  out.push_back({"vanilla_tied", tiny_config()});
  auto untied = tiny_config();
  untied.tie_embeddings = false;
  out.push_back({"vanilla_untied", untied});
  out.push_back({"recursive_cycle", recursive_config(config::Sharing::kCycle, 2, 4)});
  auto ec = expert_config(config::Sharing::kMiddleCycle, 2, 4);
  ec.router.arch = config::RouterArch::kMlp;
  ec.router.expert.aux = config::ExpertAux::kRouter;
  out.push_back({"expert_mlp_aux_router", ec});
  auto tc = token_config(config::Sharing::kMiddleCycle, 2, 4);
  tc.router.token.balancing = config::Balancing::kLossFree;
  out.push_back({"token_loss_free", tc});
  auto share = expert_config(config::Sharing::kMiddleCycle, 2, 4);
  share.kv_mode = config::KvMode::kShare;
  out.push_back({"expert_kv_share", share});
  return out;
}

// Moves every parameter away from its seeded initialisation (a reloaded model starts from that
// same initialisation, so an ineffective load would otherwise go unnoticed).
void perturb(const MoRModel& m, uint64_t seed) {
  const at::NoGradGuard no_grad;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (const auto& p : m.parameters())
    p.tensor.add_(at::empty(p.tensor.sizes(), p.tensor.options()).normal_(0.0, 0.05, gen));
}

at::Tensor logits_of(const MoRModel& m, const at::Tensor& tokens) {
  const at::NoGradGuard no_grad;
  return m.forward(tokens).logits;
}

TEST(ModelBundle, SaveLoadGivesIdenticalParametersAndLogits) {
  for (const Variant& v : variants()) {
    TempDir tmp;
    MoRModel m(v.cfg);
    perturb(m, 7);
    const at::Tensor tokens = random_tokens(2, 16, v.cfg.vocab_size, 5);
    if (v.cfg.router.kind != config::RouterKind::kNone) mix_routing_depth(m, tokens, {});
    if (v.cfg.router.kind == config::RouterKind::kToken) {
      m.apply_balance_update(at::tensor({10.0, 1.0}, at::kDouble));
      ASSERT_GT(max_abs(m.balance_bias()), 0.0);
    }
    model::save_bundle(m, tmp / "b", {});
    const auto loaded = model::load_bundle(tmp / "b");
    ASSERT_EQ(loaded->parameters().size(), m.parameters().size()) << v.name;
    for (size_t i = 0; i < m.parameters().size(); ++i) {
      EXPECT_TRUE(at::equal(loaded->parameters()[i].tensor, m.parameters()[i].tensor))
          << v.name << " " << m.parameters()[i].name;
    }
    const at::Tensor want = logits_of(m, tokens);
    EXPECT_TRUE(at::equal(logits_of(*loaded, tokens), want)) << v.name;
    EXPECT_FALSE(at::equal(logits_of(MoRModel(v.cfg), tokens), want)) << v.name << ": the test cannot fail";
    if (v.cfg.router.kind == config::RouterKind::kToken)
      EXPECT_TRUE(at::equal(loaded->balance_bias(), m.balance_bias())) << v.name;
    EXPECT_TRUE(loaded->config() == v.cfg) << v.name;
  }
}

TEST(ModelBundle, LayoutFilesAndTiedEmbeddings) {
  TempDir tmp;
  for (bool tied : {true, false}) {
    auto cfg = tiny_config();
    cfg.tie_embeddings = tied;
    MoRModel m(cfg);
    BundleOptions o;
    o.bos_token_id = 3;
    o.eos_token_id = 4;
    o.source = "unit test";
    o.tokenizer_json = std::string(MOR_SOURCE_DIR) + "/tests/fixtures/tokenizer/mor-trained/bytelevel.json";
    const std::string dir = tmp / (tied ? "tied" : "untied");
    model::save_bundle(m, dir, o);
    for (const char* f : {"mor_bundle.json", "config.json", "generation_config.json", "tokenizer.json",
                          "model.safetensors"})
      EXPECT_TRUE(core::file_exists(dir + "/" + f)) << f;
    EXPECT_FALSE(core::file_exists(dir + "/mor_config.yaml"));  // no full config given
    const io::SafetensorsReader r(dir + "/model.safetensors");
    EXPECT_EQ(r.find("lm_head.weight") != nullptr, !tied);
    EXPECT_EQ(r.metadata().at("format"), "pt");
    const auto info = model::read_bundle_info(dir);
    EXPECT_EQ(info.format_version, model::kBundleFormatVersion);
    EXPECT_EQ(info.dtype, "float32");
    EXPECT_EQ(info.bos_token_id, 3);
    EXPECT_EQ(info.eos_token_id, 4);
    EXPECT_EQ(info.source, "unit test");
    EXPECT_EQ(info.tokenizer_json, dir + "/tokenizer.json");
    const auto gen = nlohmann::json::parse(core::read_file(dir + "/generation_config.json"));
    EXPECT_EQ(gen["eos_token_id"], 4);
    EXPECT_EQ(gen["max_length"], cfg.max_seq_len);
  }
  // Saving again replaces the bundle; a directory with other files is never replaced.
  MoRModel m(tiny_config());
  model::save_bundle(m, tmp / "tied", {});
  EXPECT_FALSE(core::file_exists(tmp / "tied/tokenizer.json"));
  core::make_directories(tmp / "precious");
  core::atomic_write(tmp / "precious/notes.txt", "keep me");
  EXPECT_TRUE(throws_error_containing([&] { model::save_bundle(m, tmp / "precious", {}); },
                                      "precious: exists and is not a bundle"));
  EXPECT_TRUE(core::file_exists(tmp / "precious/notes.txt"));
  const config::Config full;
  BundleOptions with_config;
  with_config.full_config = &full;
  model::save_bundle(m, tmp / "full", with_config);
  EXPECT_EQ(core::read_file(tmp / "full/mor_config.yaml"), config::dump_yaml(full));
}

TEST(ModelBundle, ShardedBundlesWriteAnIndexAndLoad) {
  TempDir tmp;
  auto cfg = expert_config(config::Sharing::kMiddleCycle, 2, 4);
  MoRModel m(cfg);
  perturb(m, 11);
  BundleOptions o;
  o.max_shard_bytes = 8192;  // embedding alone is 61 x 32 x 4 = 7808 bytes
  model::save_bundle(m, tmp / "s", o);
  EXPECT_FALSE(core::file_exists(tmp / "s/model.safetensors"));
  const auto index = nlohmann::json::parse(core::read_file(tmp / "s/model.safetensors.index.json"));
  EXPECT_EQ(index["weight_map"].size(), m.parameters().size());
  int64_t total = 0;
  for (const auto& p : m.parameters()) total += p.tensor.numel() * 4;
  EXPECT_EQ(index["metadata"]["total_size"].get<int64_t>(), total);
  const auto info = model::read_bundle_info(tmp / "s");
  ASSERT_GT(info.files.size(), 2u);
  EXPECT_EQ(info.files[0], "model-00001-of-" + std::string(5 - std::to_string(info.files.size()).size(), '0') +
                               std::to_string(info.files.size()) + ".safetensors");
  for (const auto& f : info.files) {
    const io::SafetensorsReader r(tmp / ("s/" + f));
    int64_t bytes = 0;
    for (const auto& t : r.tensors()) bytes += static_cast<int64_t>(t.nbytes());
    EXPECT_TRUE(bytes <= o.max_shard_bytes || r.tensors().size() == 1) << f;
  }
  const auto loaded = model::load_bundle(tmp / "s");
  const at::Tensor tokens = random_tokens(2, 12, cfg.vocab_size, 3);
  EXPECT_TRUE(at::equal(logits_of(*loaded, tokens), logits_of(m, tokens)));
}

TEST(ModelBundle, Bfloat16BundlesStoreRoundedWeights) {
  TempDir tmp;
  MoRModel m(tiny_config());
  perturb(m, 3);
  BundleOptions o;
  o.dtype = at::kBFloat16;
  model::save_bundle(m, tmp / "bf", o);
  const io::SafetensorsReader r(tmp / "bf/model.safetensors");
  for (const auto& t : r.tensors()) EXPECT_EQ(t.dtype, io::DType::kBF16) << t.name;
  EXPECT_EQ(model::read_bundle_info(tmp / "bf").dtype, "bfloat16");
  const auto loaded = model::load_bundle(tmp / "bf");  // fp32 model from bf16 weights
  for (size_t i = 0; i < m.parameters().size(); ++i) {
    const at::Tensor want = m.parameters()[i].tensor.to(at::kBFloat16).to(at::kFloat);
    EXPECT_TRUE(at::equal(loaded->parameters()[i].tensor, want)) << m.parameters()[i].name;
  }
  const auto bf_model = model::load_bundle(tmp / "bf", at::kBFloat16);
  EXPECT_EQ(bf_model->parameters()[0].tensor.scalar_type(), at::kBFloat16);
}

// Rewrites dir/model.safetensors through `edit` (name -> tensor map, in file order).
void rewrite_weights(const std::string& dir,
                     const std::function<void(std::vector<std::pair<std::string, at::Tensor>>&)>& edit) {
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  {
    const io::SafetensorsReader r(dir + "/model.safetensors");
    for (const auto& t : r.tensors()) tensors.emplace_back(t.name, model::read_tensor(r, t));
  }
  edit(tensors);
  std::vector<io::TensorView> views;
  for (auto& [name, t] : tensors) {
    t = t.contiguous();
    const auto dtype = t.scalar_type() == at::kFloat ? io::DType::kF32 : io::DType::kF16;
    views.push_back({name, dtype, t.sizes().vec(), t.data_ptr()});
  }
  io::write_safetensors(dir + "/model.safetensors", views, {{"format", "pt"}});
}

TEST(ModelBundle, CorruptBundlesAreErrorsNamingFileAndTensor) {
  TempDir tmp;
  MoRModel m(tiny_config());
  const std::string dir = tmp / "c";
  auto fresh = [&] {
    core::remove_tree(dir);
    model::save_bundle(m, dir, {});
  };
  auto load = [&] { model::load_bundle(dir); };
  const std::string file = dir + "/model.safetensors";

  fresh();
  auto manifest = nlohmann::json::parse(core::read_file(dir + "/mor_bundle.json"));
  manifest["format_version"] = 2;
  core::atomic_write(dir + "/mor_bundle.json", manifest.dump());
  EXPECT_TRUE(throws_error_containing(load, dir + "/mor_bundle.json: format_version: bundle format version 2 is not "
                                                  "supported (this build reads version 1)"));
  manifest["format_version"] = 1;
  manifest["format"] = "something-else";
  core::atomic_write(dir + "/mor_bundle.json", manifest.dump());
  EXPECT_TRUE(throws_error_containing(load, dir + "/mor_bundle.json: format: 'something-else'"));
  core::remove_file(dir + "/mor_bundle.json");
  EXPECT_TRUE(throws_error_containing(load, dir + ": not a mor bundle (no mor_bundle.json"));

  fresh();
  rewrite_weights(dir, [](auto& ts) { ts.erase(ts.begin() + 2); });
  const std::string missing = m.parameters()[2].name;
  EXPECT_TRUE(throws_error_containing(load, file + ": tensor '" + missing + "' is missing"));

  fresh();
  rewrite_weights(dir, [](auto& ts) { ts.emplace_back("model.layers.9.mlp.up_proj.weight", at::ones({2, 2})); });
  EXPECT_TRUE(throws_error_containing(load, file + ": tensor 'model.layers.9.mlp.up_proj.weight' is not a parameter"));

  fresh();
  rewrite_weights(dir, [](auto& ts) {
    for (auto& [name, t] : ts)
      if (name == "model.norm.weight") t = at::ones({31});
  });
  EXPECT_TRUE(throws_error_containing(load, file + ": tensor 'model.norm.weight': shape [31] does not match the "
                                                   "model's [32]"));

  fresh();
  rewrite_weights(dir, [](auto& ts) {
    for (auto& [name, t] : ts)
      if (name == "model.norm.weight") t = t.to(at::kHalf);
  });
  EXPECT_TRUE(throws_error_containing(load, file + ": tensor 'model.norm.weight': dtype F16 differs from the "
                                                   "bundle's float32"));

  fresh();
  core::atomic_write(dir + "/config.json", "{\"model_type\": \"llama\"}");
  EXPECT_TRUE(throws_error_containing(load, dir + "/config.json: vocab_size: missing key"));

  // Sharded: the index must agree with the files.
  BundleOptions small;
  small.max_shard_bytes = 8192;
  core::remove_tree(dir);
  model::save_bundle(m, dir, small);
  auto index = nlohmann::json::parse(core::read_file(dir + "/model.safetensors.index.json"));
  index["weight_map"]["model.norm.weight"] = "model-00001-of-00099.safetensors";
  core::atomic_write(dir + "/model.safetensors.index.json", index.dump());
  EXPECT_TRUE(throws_error_containing(load, "model.safetensors.index.json: lists model-00001-of-00099.safetensors, "
                                            "which does not exist"));
}

TEST(ModelBundle, WriterChecksTheSourceShapes) {
  TempDir tmp;
  MoRModel m(tiny_config());
  EXPECT_TRUE(throws_error_containing(
      [&] {
        model::write_bundle(tmp / "w", m.config(), m.parameters(),
                            [](const model::NamedParam&) { return at::zeros({3}); }, {});
      },
      "tensor 'model.embed_tokens.weight': the source gave shape [3], expected [61, 32]"));
  EXPECT_FALSE(core::is_directory(tmp / "w"));
  EXPECT_FALSE(core::is_directory(tmp / "w.tmp")) << "a failed write leaves no temporary directory";
}

TEST(ModelBundle, MetaDeviceModelsListTheParametersWithoutMemory) {
  for (const Variant& v : variants()) {
    const MoRModel cpu(v.cfg);
    const MoRModel meta(v.cfg, at::kBFloat16, at::kMeta);
    ASSERT_EQ(meta.parameters().size(), cpu.parameters().size()) << v.name;
    for (size_t i = 0; i < cpu.parameters().size(); ++i) {
      const auto& a = meta.parameters()[i];
      const auto& b = cpu.parameters()[i];
      EXPECT_EQ(a.name, b.name);
      EXPECT_EQ(a.tensor.sizes(), b.tensor.sizes()) << a.name;
      EXPECT_EQ(a.role, b.role) << a.name;
      EXPECT_TRUE(a.tensor.is_meta()) << a.name;
      EXPECT_EQ(a.tensor.scalar_type(), at::kBFloat16) << a.name;
    }
    EXPECT_EQ(meta.num_parameters(), cpu.num_parameters()) << v.name;
    EXPECT_EQ(meta.param_units().size(), cpu.param_units().size()) << v.name;
  }
}

TEST(ModelBundle, HfImportCopiesTensorsBitForBit) {
  TempDir tmp;
  MoRModel m(tiny_config());
  perturb(m, 5);
  model::save_bundle(m, tmp / "hf", {});
  // A Hugging Face directory: our config.json and weights plus what transformers sometimes saves.
  core::remove_file(tmp / "hf/mor_bundle.json");
  rewrite_weights(tmp / "hf", [&](auto& ts) {
    ts.emplace_back("lm_head.weight", m.parameters()[0].tensor.detach().clone());
    ts.emplace_back("model.layers.0.self_attn.rotary_emb.inv_freq", at::ones({4}));
  });
  const auto r = model::import_hf(tmp / "hf", tmp / "ours");
  EXPECT_EQ(r.dtype, at::kFloat);
  EXPECT_EQ(r.notes.size(), 3u);  // lm_head, inv_freq, no tokenizer
  const auto loaded = model::load_bundle(tmp / "ours");
  const at::Tensor tokens = random_tokens(1, 10, 61, 1);
  EXPECT_TRUE(at::equal(logits_of(*loaded, tokens), logits_of(m, tokens)));

  // Importing our own export reproduces model.safetensors byte for byte.
  model::save_bundle(m, tmp / "exported", {});
  model::import_hf(tmp / "exported", tmp / "again");
  EXPECT_EQ(core::read_file(tmp / "again/model.safetensors"), core::read_file(tmp / "exported/model.safetensors"));

  rewrite_weights(tmp / "hf", [](auto& ts) { ts.emplace_back("model.layers.0.mlp.bias", at::ones({4})); });
  EXPECT_TRUE(throws_error_containing([&] { model::import_hf(tmp / "hf", tmp / "x"); },
                                      "hf/model.safetensors: tensor 'model.layers.0.mlp.bias' is not part of the model"));
  rewrite_weights(tmp / "hf", [](auto& ts) {
    std::erase_if(ts, [](const auto& t) { return t.first == "model.norm.weight" || t.first == "model.layers.0.mlp.bias"; });
  });
  EXPECT_TRUE(throws_error_containing([&] { model::import_hf(tmp / "hf", tmp / "x"); },
                                      "hf/model.safetensors: tensor 'model.norm.weight' is missing"));
}

}  // namespace
}  // namespace mor::testing
