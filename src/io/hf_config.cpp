// Hugging Face config.json <-> config::ModelConfig. See include/mor/io/hf_config.h.
//
// The "mor" section is derived from the configuration schema (schema::for_each_field): every
// model.* key without an exact Llama equivalent is written under "mor" with the same nesting, so a
// new model key is exported and imported without touching this file.
#include "mor/io/hf_config.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <map>
#include <type_traits>

#include "../config/schema.h"
#include "mor/core/error.h"
#include "mor/core/file.h"
#include "mor/model/layout.h"

namespace mor::io {

namespace {

using ojson = nlohmann::ordered_json;
namespace schema = config::schema;

// model.* keys stored as Llama keys (the rest goes to the "mor" section).
const std::map<std::string, std::string>& llama_keys() {
  static const std::map<std::string, std::string> keys = {
      {"model.vocab_size", "vocab_size"},
      {"model.hidden_size", "hidden_size"},
      {"model.intermediate_size", "intermediate_size"},
      {"model.num_heads", "num_attention_heads"},
      {"model.num_kv_heads", "num_key_value_heads"},
      {"model.max_seq_len", "max_position_embeddings"},
      {"model.rope_theta", "rope_theta"},
      {"model.rms_norm_eps", "rms_norm_eps"},
      {"model.tie_embeddings", "tie_word_embeddings"},
      {"model.init_std", "initializer_range"},
  };
  return keys;
}

// "model.router.expert.alpha" -> {"router", "expert", "alpha"}
std::vector<std::string> split_path(std::string_view key) {
  std::vector<std::string> parts;
  size_t start = key.find('.') + 1;  // drop "model."
  while (true) {
    const size_t dot = key.find('.', start);
    parts.emplace_back(key.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start));
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return parts;
}

template <class T>
ojson to_json_value(const T& v) {
  if constexpr (std::is_enum_v<T>) {
    return schema::EnumNames<T>::kNames[static_cast<size_t>(v)];
  } else {
    return v;
  }
}

bool is_model_key(std::string_view key) { return key.starts_with("model."); }

std::string describe(const ojson& v) {
  std::string text = v.dump();
  if (text.size() > 40) text = text.substr(0, 37) + "...";
  return text;
}

// Parses `v` as T; errors name `source` and `key`.
template <class T>
T from_json_value(const ojson& v, const std::string& source, const std::string& key) {
  auto wrong = [&](const std::string& expected) -> T {
    fail(source, ": ", key, ": expected ", expected, ", got ", describe(v));
  };
  if constexpr (std::is_same_v<T, bool>) {
    if (!v.is_boolean()) return wrong("true or false");
    return v.get<bool>();
  } else if constexpr (std::is_same_v<T, int64_t>) {
    if (v.is_number_integer()) return v.get<int64_t>();
    if (v.is_number_float()) {
      const double d = v.get<double>();
      if (d == std::floor(d) && std::fabs(d) <= 9007199254740992.0) return static_cast<int64_t>(d);
    }
    return wrong("an integer");
  } else if constexpr (std::is_same_v<T, double>) {
    if (!v.is_number()) return wrong("a number");
    return v.get<double>();
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (!v.is_string()) return wrong("a string");
    return v.get<std::string>();
  } else if constexpr (std::is_same_v<T, std::vector<double>> || std::is_same_v<T, std::vector<std::string>>) {
    if (v.is_null()) return {};
    if (!v.is_array()) return wrong("a list");
    T out;
    for (size_t i = 0; i < v.size(); ++i)
      out.push_back(from_json_value<typename T::value_type>(v[i], source, key + "[" + std::to_string(i) + "]"));
    return out;
  } else {
    static_assert(std::is_enum_v<T>);
    const auto& all = schema::EnumNames<T>::kNames;
    if (v.is_string()) {
      for (size_t i = 0; i < all.size(); ++i)
        if (v.get<std::string>() == all[i]) return static_cast<T>(i);
    }
    std::string expected = "one of";
    for (size_t i = 0; i < all.size(); ++i) expected.append(i ? "|" : " ").append(all[i]);
    return wrong(expected);
  }
}

// Keys of the "mor" section the schema knows ("router", "router.expert", "router.expert.alpha", ...).
bool known_mor_path(const std::string& path) {
  bool known = false;
  config::Config probe;
  schema::for_each_field(probe, [&](std::string_view key, const auto&, const schema::Meta&) {
    if (!is_model_key(key) || llama_keys().count(std::string(key))) return;
    const std::string rest(key.substr(6));
    if (rest == path || rest.starts_with(path + ".")) known = true;
  });
  return known;
}

// Rejects keys of the "mor" section that no model key corresponds to.
void check_unknown_mor_keys(const ojson& node, const std::string& prefix, const std::string& source) {
  for (auto it = node.begin(); it != node.end(); ++it) {
    const std::string path = prefix.empty() ? it.key() : prefix + "." + it.key();
    if (!known_mor_path(path)) fail(source, ": mor.", path, ": unknown key");
    bool leaf = false;
    config::Config probe;
    schema::for_each_field(probe, [&](std::string_view key, const auto&, const schema::Meta&) {
      if (key == "model." + path) leaf = true;
    });
    if (!leaf) {
      if (!it.value().is_object()) fail(source, ": mor.", path, ": expected a map of keys, got ", describe(it.value()));
      check_unknown_mor_keys(it.value(), path, source);
    }
  }
}

const ojson* find_key(const ojson& j, const char* key) {
  const auto it = j.find(key);
  return it == j.end() ? nullptr : &*it;
}

template <class T>
T required(const ojson& j, const char* key, const std::string& source) {
  const ojson* v = find_key(j, key);
  MOR_CHECK(v != nullptr && !v->is_null(), source, ": ", key, ": missing key");
  return from_json_value<T>(*v, source, key);
}

template <class T>
T optional_key(const ojson& j, const char* key, T fallback, const std::string& source) {
  const ojson* v = find_key(j, key);
  if (v == nullptr || v->is_null()) return fallback;
  return from_json_value<T>(*v, source, key);
}

// bos/eos ids: a number, a list (the first is taken) or null.
std::optional<int64_t> token_id(const ojson& j, const char* key, const std::string& source) {
  const ojson* v = find_key(j, key);
  if (v == nullptr || v->is_null()) return std::nullopt;
  if (v->is_array()) {
    if (v->empty()) return std::nullopt;
    return from_json_value<int64_t>((*v)[0], source, std::string(key) + "[0]");
  }
  return from_json_value<int64_t>(*v, source, key);
}

}  // namespace

std::string hf_config_json(const config::ModelConfig& model, const HfConfigExtras& extras) {
  const model::Layout layout = model::make_layout(model);
  const bool vanilla = model.recursion.sharing == config::Sharing::kNone && model.router.kind == config::RouterKind::kNone;
  ojson j;
  j["architectures"] = ojson::array({vanilla ? "LlamaForCausalLM" : "MoRForCausalLM"});
  j["model_type"] = vanilla ? "llama" : "mor";
  j["vocab_size"] = model.vocab_size;
  j["hidden_size"] = model.hidden_size;
  j["intermediate_size"] = model.intermediate_size;
  j["num_hidden_layers"] = layout.num_param_sets;
  j["num_attention_heads"] = model.num_heads;
  j["num_key_value_heads"] = model.num_kv_heads;
  j["head_dim"] = model.resolved_head_dim();
  j["hidden_act"] = "silu";
  j["max_position_embeddings"] = model.max_seq_len;
  j["rms_norm_eps"] = model.rms_norm_eps;
  j["rope_theta"] = model.rope_theta;
  j["rope_scaling"] = nullptr;
  j["tie_word_embeddings"] = model.tie_embeddings;
  j["attention_bias"] = false;
  j["attention_dropout"] = 0.0;
  j["mlp_bias"] = false;
  j["initializer_range"] = model.init_std;
  j["bos_token_id"] = extras.bos_token_id ? ojson(*extras.bos_token_id) : ojson(nullptr);
  j["eos_token_id"] = extras.eos_token_id ? ojson(*extras.eos_token_id) : ojson(nullptr);
  j["torch_dtype"] = extras.torch_dtype;
  j["use_cache"] = true;

  ojson mor = ojson::object();
  config::Config c;
  c.model = model;
  schema::for_each_field(c, [&](std::string_view key, const auto& value, const schema::Meta&) {
    if (!is_model_key(key) || llama_keys().count(std::string(key))) return;
    ojson* node = &mor;
    const auto parts = split_path(key);
    for (size_t i = 0; i + 1 < parts.size(); ++i) node = &(*node)[parts[i]];
    (*node)[parts.back()] = to_json_value(value);
  });
  j["mor"] = mor;
  return j.dump(2) + "\n";
}

HfConfigRead model_config_from_hf(std::string_view text, const std::string& source) {
  ojson j;
  try {
    j = ojson::parse(text);
  } catch (const ojson::exception& e) {
    fail(source, ": invalid JSON: ", e.what());
  }
  MOR_CHECK(j.is_object(), source, ": expected a JSON object");

  const std::string model_type = required<std::string>(j, "model_type", source);
  MOR_CHECK(model_type == "llama" || model_type == "mor", source, ": model_type: '", model_type,
            "' is not supported (llama, or mor for recursive models)");
  const std::string act = optional_key<std::string>(j, "hidden_act", "silu", source);
  MOR_CHECK(act == "silu", source, ": hidden_act: '", act, "' is not supported (silu only)");
  if (const ojson* rs = find_key(j, "rope_scaling"); rs != nullptr && !rs->is_null())
    fail(source, ": rope_scaling: ", describe(*rs), " is not supported (only null)");
  for (const char* key : {"attention_bias", "mlp_bias", "rope_interleaved"}) {
    MOR_CHECK(!optional_key<bool>(j, key, false, source), source, ": ", key, ": true is not supported");
  }

  HfConfigRead out;
  config::Config c;
  config::ModelConfig& m = c.model;
  m.vocab_size = required<int64_t>(j, "vocab_size", source);
  m.hidden_size = required<int64_t>(j, "hidden_size", source);
  m.intermediate_size = required<int64_t>(j, "intermediate_size", source);
  const int64_t hidden_layers = required<int64_t>(j, "num_hidden_layers", source);
  m.num_heads = required<int64_t>(j, "num_attention_heads", source);
  MOR_CHECK(m.num_heads > 0, source, ": num_attention_heads: must be > 0, got ", m.num_heads);
  m.num_kv_heads = optional_key<int64_t>(j, "num_key_value_heads", m.num_heads, source);
  m.max_seq_len = optional_key<int64_t>(j, "max_position_embeddings", 2048, source);
  m.rms_norm_eps = optional_key<double>(j, "rms_norm_eps", 1e-6, source);
  m.tie_embeddings = optional_key<bool>(j, "tie_word_embeddings", false, source);
  m.init_std = optional_key<double>(j, "initializer_range", 0.02, source);
  m.rope_theta = optional_key<double>(j, "rope_theta", 10000.0, source);
  if (const ojson* rp = find_key(j, "rope_parameters"); rp != nullptr && !rp->is_null()) {
    MOR_CHECK(rp->is_object(), source, ": rope_parameters: expected an object, got ", describe(*rp));
    const std::string type = optional_key<std::string>(*rp, "rope_type", "default", source + ": rope_parameters");
    MOR_CHECK(type == "default", source, ": rope_parameters.rope_type: '", type,
              "' is not supported (default only)");
    m.rope_theta = optional_key<double>(*rp, "rope_theta", m.rope_theta, source + ": rope_parameters");
  }
  const int64_t head_dim = optional_key<int64_t>(j, "head_dim", 0, source);
  m.head_dim = head_dim == m.hidden_size / m.num_heads ? 0 : head_dim;
  if (const ojson* name = find_key(j, "_name_or_path"); name != nullptr && name->is_string()) m.name = name->get<std::string>();

  out.extras.bos_token_id = token_id(j, "bos_token_id", source);
  out.extras.eos_token_id = token_id(j, "eos_token_id", source);
  if (const ojson* dt = find_key(j, "torch_dtype"); dt != nullptr && !dt->is_null()) {
    out.extras.torch_dtype = from_json_value<std::string>(*dt, source, "torch_dtype");
  } else if (const ojson* dt2 = find_key(j, "dtype"); dt2 != nullptr && !dt2->is_null()) {
    out.extras.torch_dtype = from_json_value<std::string>(*dt2, source, "dtype");
  }

  const ojson* mor = find_key(j, "mor");
  if (mor != nullptr && !mor->is_null()) {
    MOR_CHECK(mor->is_object(), source, ": mor: expected an object, got ", describe(*mor));
    check_unknown_mor_keys(*mor, "", source);
    out.had_mor_section = true;
    schema::for_each_field(c, [&](std::string_view key, auto& value, const schema::Meta&) {
      if (!is_model_key(key) || llama_keys().count(std::string(key))) return;
      const ojson* node = mor;
      for (const auto& part : split_path(key)) {
        node = node->is_object() ? find_key(*node, part.c_str()) : nullptr;
        if (node == nullptr) return;  // absent: the default
      }
      using T = std::remove_cvref_t<decltype(value)>;
      value = from_json_value<T>(*node, source, "mor." + std::string(key.substr(6)));
    });
  } else {
    MOR_CHECK(model_type == "llama", source, ": mor: missing key (model_type ", model_type, " needs it)");
    m.num_layers = hidden_layers;
  }
  // Errors of the validation name this file.
  schema::for_each_field(c, [&](std::string_view key, const auto&, const schema::Meta&) {
    if (is_model_key(key)) c.origins[std::string(key)] = source;
  });
  config::validate(c);
  const int64_t sets = model::make_layout(m).num_param_sets;
  MOR_CHECK(sets == hidden_layers, source, ": num_hidden_layers: ", hidden_layers, " does not match the ", sets,
            " parameter sets of ", m.num_layers, " layers under mor.recursion");
  out.model = m;
  return out;
}

HfConfigRead read_hf_config(const std::string& path) {
  MOR_CHECK(core::file_exists(path), path, ": no such file");
  return model_config_from_hf(core::read_file(path), path);
}

}  // namespace mor::io
