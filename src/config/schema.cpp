// Everything derived from the key schema (schema.h) that does not parse input: value formatting,
// the key table and its suggestions, dump_yaml(), key_reference() and the enum spellings.
#include "schema.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <set>
#include <sstream>

namespace mor::config {
namespace schema {

namespace {

std::string format_bound(double v) {
  if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 1e15) {
    return std::to_string(static_cast<int64_t>(v));
  }
  return format_double(v);
}

std::vector<std::string> split_path(std::string_view path) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    const size_t dot = path.find('.', start);
    parts.emplace_back(path.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start));
    if (dot == std::string_view::npos) return parts;
    start = dot + 1;
  }
}

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t substitute = diagonal + (a[i - 1] == b[j - 1] ? 0 : 1);
      diagonal = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, substitute});
    }
  }
  return row[b.size()];
}

// Builds the key table once from the schema applied to a default Config.
struct Tables {
  std::vector<KeyInfo> keys;
  std::set<std::string, std::less<>> key_set;
  std::set<std::string, std::less<>> sections;

  Tables() {
    const Config defaults;
    for_each_field(defaults, [&](std::string_view key, const auto& value, const Meta& meta) {
      using T = std::remove_cvref_t<decltype(value)>;
      KeyInfo info{std::string(key), type_name<T>(), format_value(value), meta.description};
      if constexpr (std::is_enum_v<T>) {
        info.description += "; one of " + (meta.allowed ? std::string(meta.allowed) : enum_choices<T>());
      } else if (meta.range.bounded()) {
        info.description += "; must be " + meta.range.describe();
      }
      keys.push_back(std::move(info));
      key_set.emplace(key);
      for (size_t dot = key.find('.'); dot != std::string_view::npos; dot = key.find('.', dot + 1)) {
        sections.emplace(key.substr(0, dot));
      }
    });
  }
};

const Tables& tables() {
  static const Tables instance;
  return instance;
}

}  // namespace

bool Range::contains(double v) const {
  if (std::isnan(v)) return false;
  const bool above = lo_open ? v > lo : v >= lo;
  const bool below = hi_open ? v < hi : v <= hi;
  return above && below;
}

std::string Range::describe() const {
  if (hi == kInf) return (lo_open ? "> " : ">= ") + format_bound(lo);
  if (lo == -kInf) return (hi_open ? "< " : "<= ") + format_bound(hi);
  return std::string("in ") + (lo_open ? "(" : "[") + format_bound(lo) + ", " + format_bound(hi) +
         (hi_open ? ")" : "]");
}

std::string format_double(double v) {
  if (std::isnan(v)) return ".nan";
  if (std::isinf(v)) return v > 0 ? ".inf" : "-.inf";
  char buffer[64];
  const auto result = std::to_chars(buffer, buffer + sizeof(buffer), v);
  std::string text(buffer, result.ptr);
  if (text.find_first_of(".e") == std::string::npos) text += ".0";
  return text;
}

std::string quote(std::string_view s) {
  static const char kHex[] = "0123456789abcdef";
  std::string out = "\"";
  for (const char ch : s) {
    const auto byte = static_cast<unsigned char>(ch);
    switch (ch) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (byte < 0x20 || byte == 0x7f) {
          out += "\\x";
          out += kHex[byte >> 4];
          out += kHex[byte & 0xf];
        } else {
          out += ch;
        }
    }
  }
  return out + "\"";
}

const std::vector<KeyInfo>& keys() { return tables().keys; }

bool is_key(std::string_view path) { return tables().key_set.count(path) > 0; }

bool is_section(std::string_view path) { return tables().sections.count(path) > 0; }

std::string closest_key(std::string_view path) {
  std::vector<std::string> candidates(tables().key_set.begin(), tables().key_set.end());
  candidates.insert(candidates.end(), tables().sections.begin(), tables().sections.end());
  std::string best;
  size_t best_distance = std::string::npos;
  for (const auto& candidate : candidates) {
    const size_t d = edit_distance(path, candidate);
    if (d < best_distance) {
      best_distance = d;
      best = candidate;
    }
  }
  if (best_distance <= std::max<size_t>(2, path.size() / 3)) return best;
  // A truncated name in the right section ("train.warmup" for "train.warmup_steps").
  const size_t dot = path.rfind('.');
  const std::string_view section = dot == std::string_view::npos ? std::string_view() : path.substr(0, dot + 1);
  const std::string_view leaf = path.substr(section.size());
  if (leaf.size() >= 3) {
    for (const auto& candidate : candidates) {
      if (candidate.size() > path.size() && candidate.rfind(path, 0) == 0 &&
          candidate.find('.', path.size()) == std::string::npos) {
        return candidate;
      }
    }
  }
  // The right name in the wrong section ("train.hidden_size" for "model.hidden_size").
  for (const auto& candidate : candidates) {
    const size_t candidate_dot = candidate.rfind('.');
    if (candidate_dot != std::string::npos && candidate.substr(candidate_dot + 1) == leaf) return candidate;
  }
  return "";
}

}  // namespace schema

std::string dump_yaml(const Config& config) {
  std::ostringstream os;
  os << "# Resolved mor configuration: every key, defaults included.\n";
  std::vector<std::string> open;  // section path of the previous key
  schema::for_each_field(config, [&](std::string_view key, const auto& value, const schema::Meta&) {
    std::vector<std::string> section = schema::split_path(key);
    const std::string leaf = section.back();
    section.pop_back();
    size_t common = 0;
    while (common < open.size() && common < section.size() && open[common] == section[common]) ++common;
    if (common == 0 && !open.empty()) os << "\n";
    for (size_t i = common; i < section.size(); ++i) {
      os << std::string(2 * i, ' ') << section[i] << ":\n";
    }
    os << std::string(2 * section.size(), ' ') << leaf << ": " << schema::format_value(value) << "\n";
    open = std::move(section);
  });
  return os.str();
}

std::string key_reference() {
  const auto& keys = schema::keys();
  size_t key_width = 0, type_width = 0, default_width = 0;
  for (const auto& k : keys) {
    key_width = std::max(key_width, k.key.size());
    type_width = std::max(type_width, k.type.size());
    default_width = std::max(default_width, k.default_text.size());
  }
  std::ostringstream os;
  auto pad = [](const std::string& s, size_t width) { return s + std::string(width - s.size() + 2, ' '); };
  for (const auto& k : keys) {
    os << pad(k.key, key_width) << pad(k.type, type_width) << pad(k.default_text, default_width)
       << k.description << "\n";
  }
  return os.str();
}

namespace {
template <class E>
const char* name_of(E v) {
  const auto index = static_cast<size_t>(v);
  return index < schema::EnumNames<E>::kNames.size() ? schema::EnumNames<E>::kNames[index] : "?";
}
}  // namespace

const char* to_string(Sharing v) { return name_of(v); }
const char* to_string(RouterKind v) { return name_of(v); }
const char* to_string(RouterArch v) { return name_of(v); }
const char* to_string(KvMode v) { return name_of(v); }
const char* to_string(RoutingMode v) { return name_of(v); }
const char* to_string(GateFunc v) { return name_of(v); }
const char* to_string(ExpertAux v) { return name_of(v); }
const char* to_string(Balancing v) { return name_of(v); }
const char* to_string(LrSchedule v) { return name_of(v); }
const char* to_string(Precision v) { return name_of(v); }
const char* to_string(ShardingMode v) { return name_of(v); }

}  // namespace mor::config
