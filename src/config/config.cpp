// Loading (defaults < YAML files < --set overrides) and validation of mor::config::Config.
// Every key is reached through schema::for_each_field(); this file adds the YAML parsing, the
// error messages ("ORIGIN: key.path: message") and the cross-field rules.
#include "mor/config/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "mor/core/error.h"
#include "schema.h"

namespace mor::config {

std::string Config::origin(const std::string& key_path) const {
  const auto it = origins.find(key_path);
  return it == origins.end() ? "default" : it->second;
}

namespace {

constexpr const char* kOverrideOrigin = "--set";

// Where values come from while loading: a YAML file (positions from marks) or --set.
struct Source {
  std::string name;  // file name as given; unused for --set
  bool is_file = true;

  // "file.yaml:LINE" (1-based) at `mark`, or at `fallback` when `mark` has no position.
  std::string at(const YAML::Mark& mark, const YAML::Mark& fallback = YAML::Mark::null_mark()) const {
    if (!is_file) return kOverrideOrigin;
    const int line = mark.line >= 0 ? mark.line : fallback.line;
    return name + ":" + std::to_string(std::max(line, 0) + 1);
  }
};

std::string describe_node(const YAML::Node& node) {
  if (!node.IsDefined() || node.IsNull()) return "nothing (null)";
  if (node.IsMap()) return "a map";
  if (node.IsSequence()) return "a list";
  return "'" + node.Scalar() + "'";
}

std::string did_you_mean(const std::string& path) {
  const std::string best = schema::closest_key(path);
  if (best.empty()) return " (`mor config keys` lists every key)";
  return "; did you mean '" + best + "'?";
}

std::string trim(std::string_view s) {
  const size_t begin = s.find_first_not_of(" \t\r\n");
  if (begin == std::string_view::npos) return "";
  const size_t end = s.find_last_not_of(" \t\r\n");
  return std::string(s.substr(begin, end - begin + 1));
}

std::optional<double> parse_float(std::string_view s) {
  if (!s.empty() && s[0] == '+') s.remove_prefix(1);
  if (s.empty() || s[0] == '+') return std::nullopt;
  double value = 0.0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc() || end != s.data() + s.size() || !std::isfinite(value)) return std::nullopt;
  return value;
}

// Integers; an exact integer written as a float ("2e10", "64.0") is accepted, 3.5 is not.
std::optional<int64_t> parse_int(std::string_view s) {
  std::string_view digits = s;
  if (!digits.empty() && digits[0] == '+') digits.remove_prefix(1);
  if (digits.empty() || digits[0] == '+') return std::nullopt;
  int64_t value = 0;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (ec == std::errc() && end == digits.data() + digits.size()) return value;
  constexpr double kExactLimit = 9007199254740992.0;  // 2^53
  const std::optional<double> real = parse_float(s);
  if (real && *real == std::floor(*real) && std::fabs(*real) <= kExactLimit) {
    return static_cast<int64_t>(*real);
  }
  return std::nullopt;
}

template <class E>
std::string enum_list() {
  std::string out;
  for (const char* name : schema::EnumNames<E>::kNames) out += (out.empty() ? "" : ", ") + std::string(name);
  return out;
}

// Parses `node` into `out`; errors name `key` at the node's line (the key's line, `key_mark`, when
// the node has none).
template <class T>
void parse_value(T& out, const YAML::Node& node, const std::string& key, const Source& source,
                 const YAML::Mark& key_mark) {
  const std::string origin = node.IsNull() ? source.at(key_mark) : source.at(node.Mark(), key_mark);
  auto wrong = [&](const char* expected) {
    fail(origin, ": ", key, ": expected ", expected, ", got ", describe_node(node));
  };
  if constexpr (std::is_same_v<T, std::vector<double>> || std::is_same_v<T, std::vector<std::string>>) {
    if (node.IsNull()) {
      out.clear();
      return;
    }
    if (!node.IsSequence()) wrong("a list such as [a, b]");
    T values;
    for (size_t i = 0; i < node.size(); ++i) {
      typename T::value_type element{};
      parse_value(element, node[i], key + "[" + std::to_string(i) + "]", source, key_mark);
      values.push_back(std::move(element));
    }
    out = std::move(values);
  } else {
    if (!node.IsScalar()) {
      if constexpr (std::is_same_v<T, int64_t>) wrong("an integer");
      else if constexpr (std::is_same_v<T, double>) wrong("a number");
      else if constexpr (std::is_same_v<T, bool>) wrong("true or false");
      else if constexpr (std::is_same_v<T, std::string>) wrong("a string");
      else wrong(("one of " + enum_list<T>()).c_str());
    }
    const std::string& text = node.Scalar();
    if constexpr (std::is_same_v<T, int64_t>) {
      const auto value = parse_int(text);
      if (!value) wrong("an integer");
      out = *value;
    } else if constexpr (std::is_same_v<T, double>) {
      const auto value = parse_float(text);
      if (!value) wrong("a finite number");
      out = *value;
    } else if constexpr (std::is_same_v<T, bool>) {
      if (text != "true" && text != "false") wrong("true or false");
      out = text == "true";
    } else if constexpr (std::is_same_v<T, std::string>) {
      out = text;
    } else {
      const auto& names = schema::EnumNames<T>::kNames;
      for (size_t i = 0; i < names.size(); ++i) {
        if (text == names[i]) {
          out = static_cast<T>(i);
          return;
        }
      }
      fail(origin, ": ", key, ": unknown value '", text, "'; allowed: ", enum_list<T>());
    }
  }
}

// Applies YAML maps and overrides to a Config, recording where each key was set.
class Loader {
 public:
  explicit Loader(Config& config) : config_(config) {}

  void apply_document(const std::string& text, const std::string& file) {
    YAML::Node root;
    try {
      root = YAML::Load(text);
    } catch (const YAML::ParserException& e) {
      fail(file, ":", std::max(e.mark.line, 0) + 1, ": YAML syntax error: ", e.msg);
    } catch (const YAML::Exception& e) {
      fail(file, ": YAML error: ", e.what());
    }
    const Source source{file, true};
    if (root.IsNull()) return;
    if (!root.IsMap()) {
      fail(source.at(root.Mark()), ": expected a map of sections (model, train, data, eval, engine), got ",
           describe_node(root));
    }
    apply_map("", root, source);
  }

  void apply_override(const std::string& text) {
    const size_t eq = text.find('=');
    if (eq == std::string::npos) {
      fail(kOverrideOrigin, ": malformed override '", text, "': expected key.path=value");
    }
    const std::string key = trim(std::string_view(text).substr(0, eq));
    const std::string raw = trim(std::string_view(text).substr(eq + 1));
    if (key.empty()) fail(kOverrideOrigin, ": malformed override '", text, "': no key before '='");
    const bool leaf = schema::is_key(key);
    if (!leaf && !schema::is_section(key)) {
      fail(kOverrideOrigin, ": ", key, ": unknown key in override '", text, "'", did_you_mean(key));
    }
    YAML::Node value;
    const bool quoted = !raw.empty() && (raw[0] == '"' || raw[0] == '\'');
    if (raw.empty() || (leaf && key_type(key) == "string" && !quoted)) {
      value = YAML::Node(raw);  // strings are taken verbatim unless quoted
    } else {
      try {
        value = YAML::Load(raw);
      } catch (const YAML::Exception& e) {
        fail(kOverrideOrigin, ": ", key, ": cannot parse value '", raw, "' in override '", text, "': ",
             e.msg);
      }
    }
    const Source source{kOverrideOrigin, false};
    if (leaf) {
      assign(key, value, source, YAML::Mark::null_mark());
    } else {
      if (!value.IsNull() && !value.IsMap()) {
        fail(kOverrideOrigin, ": ", key, ": expected a map of keys such as {a: 1}, got ", describe_node(value));
      }
      apply_map(key, value, source);
    }
  }

 private:
  static std::string key_type(const std::string& key) {
    for (const auto& info : schema::keys()) {
      if (info.key == key) return info.type;
    }
    return "";
  }

  void apply_map(const std::string& prefix, const YAML::Node& map, const Source& source) {
    std::map<std::string, std::string> seen;
    for (const auto& item : map) {
      const YAML::Node& name = item.first;
      const YAML::Node& value = item.second;
      const std::string origin = source.at(name.Mark());
      if (!name.IsScalar()) {
        fail(origin, ": ", prefix.empty() ? "(top level)" : prefix, ": keys must be plain names, got ",
             describe_node(name));
      }
      const std::string path = prefix.empty() ? name.Scalar() : prefix + "." + name.Scalar();
      if (const auto [it, inserted] = seen.emplace(path, origin); !inserted) {
        fail(origin, ": ", path, ": duplicate key (first set at ", it->second, ")");
      }
      if (schema::is_section(path)) {
        if (!value.IsNull() && !value.IsMap()) {
          fail(origin, ": ", path, ": expected a map of keys (a section), got ", describe_node(value));
        }
        if (value.IsMap()) apply_map(path, value, source);
      } else if (schema::is_key(path)) {
        assign(path, value, source, name.Mark());
      } else {
        fail(origin, ": ", path, ": unknown key", did_you_mean(path));
      }
    }
  }

  void assign(const std::string& key, const YAML::Node& value, const Source& source, const YAML::Mark& key_mark) {
    schema::for_each_field(config_, [&](std::string_view field, auto& member, const schema::Meta&) {
      if (field == key) parse_value(member, value, key, source, key_mark);
    });
    config_.origins[key] = source.at(key_mark);
  }

  Config& config_;
};

std::string read_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) fail("cannot open config file '", path, "': it is a directory");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot open config file '", path, "'");
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) fail("cannot read config file '", path, "'");
  return text.str();
}

// ---- validation ----

template <class... Args>
[[noreturn]] void fail_key(const Config& c, const std::string& key, Args&&... args) {
  fail(c.origin(key), ": ", key, ": ", std::forward<Args>(args)...);
}

bool in_choices(std::string_view choices, std::string_view name) {
  size_t start = 0;
  while (start <= choices.size()) {
    const size_t bar = std::min(choices.find('|', start), choices.size());
    if (choices.substr(start, bar - start) == name) return true;
    start = bar + 1;
  }
  return false;
}

// Ranges and enum subsets declared in the schema.
void check_schema_rules(const Config& c) {
  schema::for_each_field(c, [&](std::string_view field, const auto& value, const schema::Meta& meta) {
    using T = std::remove_cvref_t<decltype(value)>;
    const std::string key(field);
    if constexpr (std::is_same_v<T, double>) {
      if (!std::isfinite(value)) fail_key(c, key, "must be a finite number, got ", schema::format_value(value));
    }
    if constexpr (std::is_same_v<T, double> || std::is_same_v<T, int64_t>) {
      if (meta.range.bounded() && !meta.range.contains(static_cast<double>(value))) {
        fail_key(c, key, "must be ", meta.range.describe(), ", got ", schema::format_value(value));
      }
    } else if constexpr (std::is_enum_v<T>) {
      if (meta.allowed != nullptr && !in_choices(meta.allowed, to_string(value))) {
        std::string allowed;
        for (const char* ch = meta.allowed; *ch != '\0'; ++ch) {
          allowed += *ch == '|' ? std::string(", ") : std::string(1, *ch);
        }
        fail_key(c, key, "must be one of ", allowed, ", got ", to_string(value));
      }
    }
  });
}

void check_model(const Config& c) {
  const ModelConfig& m = c.model;
  if (m.head_dim > 0 && m.head_dim % 2 != 0) {
    fail_key(c, "model.head_dim", "must be 0 or a positive even number (RoPE rotates half-dimensions), got ",
             m.head_dim);
  }
  if (m.head_dim == 0) {
    if (m.hidden_size % m.num_heads != 0) {
      fail_key(c, "model.num_heads", "model.hidden_size (", m.hidden_size, ", ", c.origin("model.hidden_size"),
               ") is not divisible by num_heads (", m.num_heads, "); change one, or set model.head_dim");
    }
    if ((m.hidden_size / m.num_heads) % 2 != 0) {
      fail_key(c, "model.num_heads", "head_dim = hidden_size / num_heads = ", m.hidden_size / m.num_heads,
               " must be even (RoPE rotates half-dimensions); set model.head_dim");
    }
  }
  if (m.num_heads % m.num_kv_heads != 0) {
    fail_key(c, "model.num_kv_heads", "model.num_heads (", m.num_heads, ") is not divisible by num_kv_heads (",
             m.num_kv_heads, ")");
  }
  try {
    layer_split(m);
  } catch (const Error& e) {
    // layer_split's messages start with the key at fault; prefix that key's origin.
    const std::string message = e.what();
    const size_t colon = message.find(": ");
    const std::string key = colon == std::string::npos ? "" : message.substr(0, colon);
    if (schema::is_key(key)) fail(c.origin(key), ": ", message);
    fail(c.origin("model.num_layers"), ": model.num_layers: ", message);
  }
  const Sharing sharing = m.recursion.sharing;
  const bool cyclic = sharing == Sharing::kCycle || sharing == Sharing::kMiddleCycle;
  if (m.router.kind != RouterKind::kNone && !cyclic) {
    fail_key(c, "model.router.kind", "router kind ", to_string(m.router.kind),
             " needs model.recursion.sharing cycle or middle_cycle, got ", to_string(sharing));
  }
  if (m.kv_mode == KvMode::kShare && !cyclic) {
    fail_key(c, "model.kv_mode", "kv_mode share needs model.recursion.sharing cycle or middle_cycle, got ",
             to_string(sharing));
  }

  const ExpertRouterConfig& ex = m.router.expert;
  const std::string caps = "model.router.expert.capacities";
  const auto count = static_cast<int64_t>(ex.capacities.size());
  if (count != 0 && count != m.recursion.num_recursions) {
    fail_key(c, caps, "has ", count, " entries but model.recursion.num_recursions is ", m.recursion.num_recursions,
             " (give one per recursion, or [] for (N_r - r) / N_r)");
  }
  for (size_t i = 0; i < ex.capacities.size(); ++i) {
    const double cap = ex.capacities[i];
    const std::string at = caps + "[" + std::to_string(i) + "]";
    if (!(cap > 0.0 && cap <= 1.0)) {
      fail(c.origin(caps), ": ", at, ": must be in (0, 1], got ", schema::format_double(cap));
    }
    if (i > 0 && cap > ex.capacities[i - 1]) {
      fail(c.origin(caps), ": ", at, ": capacities must be non-increasing, got ", schema::format_double(cap),
           " after ", schema::format_double(ex.capacities[i - 1]));
    }
  }
  const bool tanh = ex.func == GateFunc::kTanh;
  const double low = tanh ? -1.0 : 0.0;
  if (!(ex.threshold > low && ex.threshold < 1.0)) {
    fail_key(c, "model.router.expert.threshold", "must be in (", tanh ? "-1" : "0", ", 1) for func ",
             to_string(ex.func), ", got ", schema::format_double(ex.threshold));
  }
}

void check_train(const Config& c) {
  const TrainConfig& t = c.train;
  if (t.global_batch_size % t.micro_batch_size != 0) {
    fail_key(c, "train.global_batch_size", "must be a multiple of train.micro_batch_size (", t.micro_batch_size,
             "), got ", t.global_batch_size);
  }
  std::string first_budget;
  const std::pair<const char*, bool> budgets[] = {{"train.max_steps", t.max_steps > 0},
                                                  {"train.max_tokens", t.max_tokens > 0},
                                                  {"train.max_flops", t.max_flops > 0.0}};
  for (const auto& [key, set] : budgets) {
    if (!set) continue;
    if (!first_budget.empty()) {
      fail_key(c, key, "only one of train.max_steps, train.max_tokens, train.max_flops may be set; ", first_budget,
               " is also set (", c.origin(first_budget), ")");
    }
    first_budget = key;
  }
  {
    const std::string& dev = t.device;
    bool ok = dev == "auto" || dev == "cpu" || dev == "cuda";
    if (!ok && dev.starts_with("cuda:") && dev.size() > 5) {
      ok = dev.find_first_not_of("0123456789", 5) == std::string::npos;
    }
    if (!ok) fail_key(c, "train.device", "must be auto, cpu, cuda or cuda:N, got \"", dev, "\"");
  }
  if (t.seq_len > 0 && t.seq_len > c.model.max_seq_len) {
    fail_key(c, "train.seq_len", "must be <= model.max_seq_len (", c.model.max_seq_len, "), got ", t.seq_len);
  }
}

}  // namespace

void validate(const Config& config) {
  check_schema_rules(config);
  check_model(config);
  check_train(config);
}

int64_t resolved_seq_len(const Config& config) {
  return config.train.seq_len > 0 ? config.train.seq_len : config.model.max_seq_len;
}

std::vector<double> resolved_capacities(const ModelConfig& model) {
  if (model.recursion.sharing == Sharing::kNone) return {};
  if (!model.router.expert.capacities.empty()) return model.router.expert.capacities;
  const int64_t n = model.recursion.num_recursions;
  std::vector<double> out;
  for (int64_t r = 0; r < n; ++r) out.push_back(static_cast<double>(n - r) / static_cast<double>(n));
  return out;
}

Config load(const std::vector<std::string>& files, const std::vector<std::string>& overrides) {
  Config config;
  Loader loader(config);
  for (const auto& file : files) loader.apply_document(read_file(file), file);
  for (const auto& text : overrides) loader.apply_override(text);
  validate(config);
  return config;
}

Config load_from_string(const std::string& yaml, const std::string& source_name,
                        const std::vector<std::string>& overrides) {
  Config config;
  Loader loader(config);
  loader.apply_document(yaml, source_name);
  for (const auto& text : overrides) loader.apply_override(text);
  validate(config);
  return config;
}

}  // namespace mor::config
