// Hugging Face `config.json` for our models, both ways (torch-free).
//
// Writing: the Llama keys transformers' LlamaConfig reads (architectures, model_type "llama",
// vocab_size, hidden_size, intermediate_size, num_hidden_layers, num_attention_heads,
// num_key_value_heads, head_dim, hidden_act "silu", max_position_embeddings, rms_norm_eps,
// rope_theta, rope_scaling null, tie_word_embeddings, attention_bias false, mlp_bias false,
// initializer_range, bos/eos_token_id, torch_dtype) plus a "mor" object holding everything else of
// config::ModelConfig (name, seed, unrolled num_layers, recursion, router with all its parameters
// and capacities, kv_mode, inference_routing). num_hidden_layers counts the parameter sets stored
// in the weights (= num_layers for vanilla models), so Llama tooling sees the real tensors.
// Recursive and MoR models get architectures ["MoRForCausalLM"] and model_type "mor".
//
// Reading: our own files round-trip exactly; plain Hugging Face Llama-family configs (SmolLM,
// Llama 2/3 without rope scaling) become vanilla ModelConfigs. Accepts rope_theta or transformers
// v5's rope_parameters, eos_token_id as a number or a list, torch_dtype or dtype. Unsupported
// features (rope_scaling other than null, attention_bias / mlp_bias true, a hidden_act other than
// silu) are a mor::Error naming the file and key.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "mor/config/config.h"

namespace mor::io {

struct HfConfigExtras {
  std::optional<int64_t> bos_token_id, eos_token_id;
  std::string torch_dtype = "float32";
};

std::string hf_config_json(const config::ModelConfig& model, const HfConfigExtras& extras = {});

struct HfConfigRead {
  config::ModelConfig model;
  HfConfigExtras extras;
  bool had_mor_section = false;
};
// `source` names the file in errors ("dir/config.json: rope_scaling: ...").
HfConfigRead model_config_from_hf(std::string_view json, const std::string& source);
HfConfigRead read_hf_config(const std::string& path);

}  // namespace mor::io
