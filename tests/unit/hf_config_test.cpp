// io::hf_config: our config.json round-trips every model variant exactly (all router fields,
// capacities, KV and routing modes), Hugging Face Llama configs (SmolLM style, transformers v5
// rope_parameters/dtype, eos lists) become vanilla models, and unsupported or malformed configs are
// errors naming the file and the key.
#include "mor/io/hf_config.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>

#include "error_testing.h"
#include "mor/model/layout.h"

#ifndef MOR_SOURCE_DIR
#define MOR_SOURCE_DIR "."
#endif

namespace mor::io {
namespace {

using config::ModelConfig;
using mor::testing::expect_error;

ModelConfig base(config::Sharing sharing, int64_t n_r, int64_t layers) {
  ModelConfig m;
  m.name = "t";
  m.vocab_size = 320;
  m.hidden_size = 64;
  m.intermediate_size = 96;
  m.num_layers = layers;
  m.num_heads = 4;
  m.num_kv_heads = 2;
  m.max_seq_len = 128;
  m.recursion.sharing = sharing;
  m.recursion.num_recursions = n_r;
  return m;
}

std::vector<std::pair<std::string, ModelConfig>> variants() {
  std::vector<std::pair<std::string, ModelConfig>> out;
  ModelConfig vanilla = base(config::Sharing::kNone, 1, 5);
  vanilla.tie_embeddings = false;
  vanilla.head_dim = 8;  // explicit, not hidden / heads
  vanilla.rope_theta = 500000.0;
  vanilla.rms_norm_eps = 1e-6;
  vanilla.init_std = 0.041666666666666664;
  vanilla.seed = 77;
  out.emplace_back("vanilla", vanilla);
  out.emplace_back("cycle", base(config::Sharing::kCycle, 3, 6));
  out.emplace_back("sequence", base(config::Sharing::kSequence, 2, 6));
  ModelConfig ms = base(config::Sharing::kMiddleSequence, 2, 6);
  ms.recursion.share_norms = false;
  out.emplace_back("middle_sequence_unshared_norms", ms);

  ModelConfig ec = base(config::Sharing::kMiddleCycle, 3, 8);
  ec.router.kind = config::RouterKind::kExpert;
  ec.router.arch = config::RouterArch::kMlp;
  ec.router.temperature = 0.7;
  ec.router.z_loss_coeff = 0.001;
  ec.router.expert.func = config::GateFunc::kTanh;
  ec.router.expert.alpha = 0.25;
  ec.router.expert.capacities = {1.0, 0.6, 0.35};
  ec.router.expert.capacity_warmup_steps = 40;
  ec.router.expert.aux = config::ExpertAux::kRouter;
  ec.router.expert.aux_coeff = 0.003;
  ec.router.expert.threshold = -0.2;
  ec.kv_mode = config::KvMode::kShare;
  ec.inference_routing = config::RoutingMode::kTopk;
  out.emplace_back("expert_all_fields", ec);

  ModelConfig tc = base(config::Sharing::kCycle, 2, 4);
  tc.router.kind = config::RouterKind::kToken;
  tc.router.token.func = config::GateFunc::kSigmoid;
  tc.router.token.alpha = 0.5;
  tc.router.token.balancing = config::Balancing::kLossFree;
  tc.router.token.balance_coeff = 0.02;
  tc.router.token.bias_update_rate = 0.005;
  tc.router.token.balance_warmup_steps = 12;
  out.emplace_back("token_all_fields", tc);
  return out;
}

TEST(HfConfig, EveryVariantRoundTripsExactly) {
  for (const auto& [name, model] : variants()) {
    HfConfigExtras extras;
    extras.bos_token_id = 1;
    extras.eos_token_id = 2;
    extras.torch_dtype = "bfloat16";
    const std::string text = hf_config_json(model, extras);
    const HfConfigRead back = model_config_from_hf(text, "b/config.json");
    EXPECT_TRUE(back.model == model) << name << "\n" << text;
    EXPECT_TRUE(back.had_mor_section) << name;
    EXPECT_EQ(back.extras.bos_token_id, 1);
    EXPECT_EQ(back.extras.eos_token_id, 2);
    EXPECT_EQ(back.extras.torch_dtype, "bfloat16");
  }
}

TEST(HfConfig, PresetModelConfigsRoundTrip) {
  const auto dir = std::filesystem::path(MOR_SOURCE_DIR) / "configs" / "model";
  int count = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const ModelConfig model = config::load({entry.path().string()}).model;
    EXPECT_TRUE(model_config_from_hf(hf_config_json(model), "c.json").model == model) << entry.path();
    ++count;
  }
  EXPECT_GE(count, 5);
}

TEST(HfConfig, LlamaKeysDescribeTheStoredTensors) {
  for (const auto& [name, model] : variants()) {
    const auto j = nlohmann::json::parse(hf_config_json(model));
    const bool vanilla = name == "vanilla";
    EXPECT_EQ(j["model_type"], vanilla ? "llama" : "mor") << name;
    EXPECT_EQ(j["architectures"][0], vanilla ? "LlamaForCausalLM" : "MoRForCausalLM") << name;
    EXPECT_EQ(j["num_hidden_layers"].get<int64_t>(), model::make_layout(model).num_param_sets) << name;
    EXPECT_EQ(j["mor"]["num_layers"].get<int64_t>(), model.num_layers) << name;
    EXPECT_EQ(j["head_dim"].get<int64_t>(), model.resolved_head_dim()) << name;
    EXPECT_EQ(j["tie_word_embeddings"].get<bool>(), model.tie_embeddings) << name;
    EXPECT_TRUE(j["rope_scaling"].is_null());
    EXPECT_EQ(j["hidden_act"], "silu");
    EXPECT_FALSE(j["mor"].contains("vocab_size")) << "Llama keys are not repeated in the mor section";
  }
  // Defaults of an absent bos/eos: null.
  const auto j = nlohmann::json::parse(hf_config_json(variants()[0].second));
  EXPECT_TRUE(j["bos_token_id"].is_null());
  EXPECT_EQ(j["torch_dtype"], "float32");
}

constexpr const char* kSmolLM2 = R"({
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 0, "eos_token_id": 0, "hidden_act": "silu", "hidden_size": 576,
  "initializer_range": 0.041666666666666664, "intermediate_size": 1536, "is_llama_config": true,
  "max_position_embeddings": 8192, "model_type": "llama", "num_attention_heads": 9,
  "num_hidden_layers": 30, "num_key_value_heads": 3, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
  "rope_interleaved": false, "rope_scaling": null, "rope_theta": 100000, "tie_word_embeddings": true,
  "torch_dtype": "bfloat16", "transformers_version": "4.40.1", "use_cache": true, "vocab_size": 49152
})";

TEST(HfConfig, SmolLMConfigBecomesAVanillaModel) {
  const HfConfigRead r = model_config_from_hf(kSmolLM2, "smol/config.json");
  EXPECT_FALSE(r.had_mor_section);
  const ModelConfig& m = r.model;
  EXPECT_EQ(m.vocab_size, 49152);
  EXPECT_EQ(m.hidden_size, 576);
  EXPECT_EQ(m.intermediate_size, 1536);
  EXPECT_EQ(m.num_layers, 30);
  EXPECT_EQ(m.num_heads, 9);
  EXPECT_EQ(m.num_kv_heads, 3);
  EXPECT_EQ(m.head_dim, 0);
  EXPECT_EQ(m.max_seq_len, 8192);
  EXPECT_EQ(m.rope_theta, 100000.0);
  EXPECT_EQ(m.rms_norm_eps, 1e-5);
  EXPECT_EQ(m.init_std, 0.041666666666666664);
  EXPECT_TRUE(m.tie_embeddings);
  EXPECT_EQ(m.recursion.sharing, config::Sharing::kNone);
  EXPECT_EQ(m.router.kind, config::RouterKind::kNone);
  EXPECT_EQ(r.extras.bos_token_id, 0);
  EXPECT_EQ(r.extras.eos_token_id, 0);
  EXPECT_EQ(r.extras.torch_dtype, "bfloat16");
  // Our own writing of it reads back to the same model.
  EXPECT_TRUE(model_config_from_hf(hf_config_json(m, r.extras), "x").model == m);
}

TEST(HfConfig, TransformersV5RopeParametersDtypeAndEosLists) {
  auto j = nlohmann::json::parse(kSmolLM2);
  j.erase("rope_theta");
  j.erase("torch_dtype");
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 250000.0}};
  j["dtype"] = "float16";
  j["eos_token_id"] = {7, 8};
  j["head_dim"] = 64;  // = hidden / heads: stays implicit
  const HfConfigRead r = model_config_from_hf(j.dump(), "v5/config.json");
  EXPECT_EQ(r.model.rope_theta, 250000.0);
  EXPECT_EQ(r.extras.torch_dtype, "float16");
  EXPECT_EQ(r.extras.eos_token_id, 7);
  EXPECT_EQ(r.model.head_dim, 0);

  // Optional keys take LlamaConfig's defaults.
  for (const char* key : {"num_key_value_heads", "rms_norm_eps", "max_position_embeddings", "tie_word_embeddings",
                          "hidden_act", "eos_token_id", "bos_token_id"})
    j.erase(key);
  const HfConfigRead d = model_config_from_hf(j.dump(), "min/config.json");
  EXPECT_EQ(d.model.num_kv_heads, 9);
  EXPECT_EQ(d.model.rms_norm_eps, 1e-6);
  EXPECT_EQ(d.model.max_seq_len, 2048);
  EXPECT_FALSE(d.model.tie_embeddings);
  EXPECT_FALSE(d.extras.eos_token_id.has_value());
}

std::string error_for(const std::function<void(nlohmann::json&)>& edit) {
  auto j = nlohmann::json::parse(kSmolLM2);
  edit(j);
  return expect_error([&] { model_config_from_hf(j.dump(), "m/config.json"); });
}

TEST(HfConfig, UnsupportedFeaturesNameFileAndKey) {
  EXPECT_NE(error_for([](auto& j) { j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}}; })
                .find("m/config.json: rope_scaling:"),
            std::string::npos);
  EXPECT_NE(error_for([](auto& j) { j["attention_bias"] = true; }).find("m/config.json: attention_bias:"),
            std::string::npos);
  EXPECT_NE(error_for([](auto& j) { j["mlp_bias"] = true; }).find("m/config.json: mlp_bias:"), std::string::npos);
  EXPECT_NE(error_for([](auto& j) { j["hidden_act"] = "gelu"; }).find("m/config.json: hidden_act: 'gelu'"),
            std::string::npos);
  EXPECT_NE(error_for([](auto& j) { j["model_type"] = "qwen2"; }).find("m/config.json: model_type: 'qwen2'"),
            std::string::npos);
  EXPECT_NE(error_for([](auto& j) { j["rope_parameters"] = {{"rope_type", "yarn"}}; })
                .find("m/config.json: rope_parameters.rope_type: 'yarn'"),
            std::string::npos);
  EXPECT_NE(error_for([](auto& j) { j["rope_interleaved"] = true; }).find("m/config.json: rope_interleaved"),
            std::string::npos);
}

TEST(HfConfig, MissingAndMistypedKeysNameFileAndKey) {
  for (const char* key : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                          "num_attention_heads", "model_type"}) {
    const std::string msg = error_for([&](auto& j) { j.erase(key); });
    EXPECT_NE(msg.find(std::string("m/config.json: ") + key + ": missing key"), std::string::npos) << msg;
  }
  EXPECT_NE(error_for([](auto& j) { j["hidden_size"] = "576"; }).find("m/config.json: hidden_size: expected an integer"),
            std::string::npos);
  EXPECT_NE(error_for([](auto& j) { j["eos_token_id"] = {"x"}; }).find("m/config.json: eos_token_id[0]"),
            std::string::npos);
  // Validation of the resulting model names the file too.
  EXPECT_NE(error_for([](auto& j) { j["num_key_value_heads"] = 4; }).find("m/config.json: model.num_kv_heads"),
            std::string::npos);
  EXPECT_NE(expect_error([] { model_config_from_hf("{not json", "bad/config.json"); }).find("bad/config.json: invalid JSON"),
            std::string::npos);
  EXPECT_NE(expect_error([] { read_hf_config("/nonexistent/config.json"); }).find("/nonexistent/config.json"),
            std::string::npos);
}

TEST(HfConfig, BrokenMorSectionsNameFileAndKey) {
  const ModelConfig ec = variants()[4].second;
  auto edit = [&](const std::function<void(nlohmann::json&)>& fn) {
    auto j = nlohmann::json::parse(hf_config_json(ec));
    fn(j);
    return expect_error([&] { model_config_from_hf(j.dump(), "b/config.json"); });
  };
  EXPECT_NE(edit([](auto& j) { j["mor"]["router"]["expert"]["colour"] = 1; }).find("b/config.json: mor.router.expert.colour: unknown key"),
            std::string::npos);
  EXPECT_NE(edit([](auto& j) { j["mor"]["router"]["kind"] = "sideways"; }).find("b/config.json: mor.router.kind: expected one of none|expert|token"),
            std::string::npos);
  EXPECT_NE(edit([](auto& j) { j["mor"]["router"]["expert"]["capacities"] = {1.0, "x", 0.2}; })
                .find("b/config.json: mor.router.expert.capacities[1]"),
            std::string::npos);
  EXPECT_NE(edit([](auto& j) { j["mor"]["recursion"] = 3; }).find("b/config.json: mor.recursion: expected a map"),
            std::string::npos);
  EXPECT_NE(edit([](auto& j) { j["num_hidden_layers"] = 8; }).find("b/config.json: num_hidden_layers: 8 does not match the 4 parameter sets"),
            std::string::npos);
  EXPECT_NE(edit([](auto& j) { j["mor"]["router"]["expert"]["capacities"] = {1.0, 0.2, 0.5}; })
                .find("b/config.json: model.router.expert.capacities[2]: capacities must be non-increasing"),
            std::string::npos);
  EXPECT_NE(edit([](auto& j) { j.erase("mor"); j["model_type"] = "mor"; }).find("b/config.json: mor: missing key"),
            std::string::npos);
}

}  // namespace
}  // namespace mor::io
