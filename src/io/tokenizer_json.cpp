// tokenizer.json in and out: the Hugging Face `tokenizers` serialisation (version "1.0"), read with
// nlohmann-json into a TokenizerSpec, written back by to_json(); plus hash(), a SHA-256 over a
// canonical text of everything that decides the ids (see docs/formats/tokenizer.md).
// Errors name the file and the JSON path: "tokenizer.json: model.merges[12]: ...".
#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "mor/core/error.h"
#include "tokenizer_internal.h"

namespace mor::io {

using detail::PreStep;
using detail::SplitBehavior;
using json = nlohmann::json;

namespace {

class Parser {
 public:
  explicit Parser(const std::string& source) : src_(source) {}

  [[noreturn]] void fail_at(const std::string& path, const std::string& message) const {
    fail(src_, ": ", path, ": ", message);
  }

  static std::string type_name(const json& j) { return j.type_name(); }

  const json& object_at(const json& j, const std::string& path) const {
    if (!j.is_object()) fail_at(path, "expected an object, got " + type_name(j));
    return j;
  }
  bool get_bool(const json& obj, const char* key, const std::string& path, bool fallback) const {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return fallback;
    if (!it->is_boolean()) fail_at(path + "." + key, "expected true or false, got " + type_name(*it));
    return it->get<bool>();
  }
  std::string get_string(const json& obj, const char* key, const std::string& path) const {
    auto it = obj.find(key);
    if (it == obj.end()) fail_at(path + "." + key, "missing");
    if (!it->is_string()) fail_at(path + "." + key, "expected a string, got " + type_name(*it));
    return it->get<std::string>();
  }
  int32_t get_id(const json& j, const std::string& path) const {
    if (!j.is_number_integer()) fail_at(path, "expected an integer id, got " + type_name(j));
    const auto v = j.get<int64_t>();
    if (v < 0 || v > INT32_MAX) fail_at(path, "id " + std::to_string(v) + " is out of range [0, 2^31)");
    return static_cast<int32_t>(v);
  }

  void parse_model(const json& root, detail::TokenizerSpec& spec) const {
    auto it = root.find("model");
    if (it == root.end() || it->is_null()) fail_at("model", "missing");
    const json& m = object_at(*it, "model");
    if (auto t = m.find("type"); t != m.end() && !(t->is_string() && t->get<std::string>() == "BPE")) {
      fail_at("model.type", "unsupported model " + t->dump() + " (only BPE is supported)");
    }
    if (auto d = m.find("dropout"); d != m.end() && !d->is_null()) {
      if (!d->is_number() || d->get<double>() != 0.0) fail_at("model.dropout", "BPE dropout is not supported");
    }
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
      if (auto p = m.find(key); p != m.end() && !p->is_null() && !(p->is_string() && p->get<std::string>().empty())) {
        fail_at(std::string("model.") + key, "not supported by a byte-level BPE (expected null)");
      }
    }
    if (get_bool(m, "byte_fallback", "model", false)) {
      fail_at("model.byte_fallback", "byte_fallback = true is not supported (byte-level BPE needs none)");
    }
    spec.fuse_unk = get_bool(m, "fuse_unk", "model", false);
    spec.ignore_merges = get_bool(m, "ignore_merges", "model", false);
    if (auto u = m.find("unk_token"); u != m.end() && !u->is_null()) {
      if (!u->is_string()) fail_at("model.unk_token", "expected a string or null");
      spec.unk_token = u->get<std::string>();
    }
    auto v = m.find("vocab");
    if (v == m.end()) fail_at("model.vocab", "missing");
    if (!v->is_object()) fail_at("model.vocab", "expected an object {token: id}, got " + type_name(*v));
    spec.vocab.reserve(v->size());
    for (auto e = v->begin(); e != v->end(); ++e) {
      spec.vocab.emplace_back(e.key(), get_id(e.value(), "model.vocab[" + json(e.key()).dump() + "]"));
    }
    auto mg = m.find("merges");
    if (mg == m.end() || mg->is_null()) return;
    if (!mg->is_array()) fail_at("model.merges", "expected an array, got " + type_name(*mg));
    spec.merges.reserve(mg->size());
    for (size_t i = 0; i < mg->size(); ++i) {
      const json& e = (*mg)[i];
      const std::string path = "model.merges[" + std::to_string(i) + "]";
      if (e.is_string()) {
        const auto& s = e.get_ref<const std::string&>();
        const size_t space = s.find(' ');
        if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
          fail_at(path, "expected \"left right\" with exactly one space, got " + e.dump());
        }
        spec.merges.emplace_back(s.substr(0, space), s.substr(space + 1));
      } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
        spec.merges.emplace_back(e[0].get<std::string>(), e[1].get<std::string>());
      } else {
        fail_at(path, "expected \"left right\" or [\"left\", \"right\"], got " + e.dump());
      }
    }
  }

  void parse_added(const json& root, detail::TokenizerSpec& spec) const {
    auto it = root.find("added_tokens");
    if (it == root.end() || it->is_null()) return;
    if (!it->is_array()) fail_at("added_tokens", "expected an array, got " + type_name(*it));
    for (size_t i = 0; i < it->size(); ++i) {
      const std::string path = "added_tokens[" + std::to_string(i) + "]";
      const json& a = object_at((*it)[i], path);
      detail::AddedTokenSpec t;
      auto id = a.find("id");
      if (id == a.end()) fail_at(path + ".id", "missing");
      t.id = get_id(*id, path + ".id");
      t.content = get_string(a, "content", path);
      t.single_word = get_bool(a, "single_word", path, false);
      t.lstrip = get_bool(a, "lstrip", path, false);
      t.rstrip = get_bool(a, "rstrip", path, false);
      t.normalized = get_bool(a, "normalized", path, true);
      t.special = get_bool(a, "special", path, false);
      spec.added.push_back(std::move(t));
    }
  }

  PreStep parse_step(const json& node, const std::string& path) const {
    const json& o = object_at(node, path);
    const std::string type = get_string(o, "type", path);
    PreStep step;
    if (type == "ByteLevel") {
      step.kind = PreStep::Kind::ByteLevel;
      step.add_prefix_space = get_bool(o, "add_prefix_space", path, true);
      step.trim_offsets = get_bool(o, "trim_offsets", path, true);
      step.use_regex = get_bool(o, "use_regex", path, true);
    } else if (type == "Digits") {
      step.kind = PreStep::Kind::Digits;
      step.individual_digits = get_bool(o, "individual_digits", path, false);
    } else if (type == "Split") {
      step.kind = PreStep::Kind::Split;
      auto p = o.find("pattern");
      if (p == o.end()) fail_at(path + ".pattern", "missing");
      if (p->is_object() && p->size() == 1 && p->contains("Regex") && (*p)["Regex"].is_string()) {
        step.pattern = (*p)["Regex"].get<std::string>();
        step.pattern_is_regex = true;
      } else if (p->is_object() && p->size() == 1 && p->contains("String") && (*p)["String"].is_string()) {
        step.pattern = (*p)["String"].get<std::string>();
        step.pattern_is_regex = false;
      } else {
        fail_at(path + ".pattern", "expected {\"Regex\": \"...\"} or {\"String\": \"...\"}, got " + p->dump());
      }
      const std::string behavior = get_string(o, "behavior", path);
      bool known = false;
      for (auto b : {SplitBehavior::Removed, SplitBehavior::Isolated, SplitBehavior::MergedWithPrevious,
                     SplitBehavior::MergedWithNext, SplitBehavior::Contiguous}) {
        if (behavior == detail::split_behavior_name(b)) step.behavior = b, known = true;
      }
      if (!known) fail_at(path + ".behavior", "unknown behavior '" + behavior + "'");
      step.invert = get_bool(o, "invert", path, false);
    } else {
      fail_at(path + ".type",
              "unsupported pre-tokenizer '" + type +
                  "' (supported: ByteLevel, Digits, Split, and a Sequence of them ending in ByteLevel)");
    }
    return step;
  }

  void parse_pre(const json& root, detail::TokenizerSpec& spec) const {
    auto it = root.find("pre_tokenizer");
    if (it == root.end() || it->is_null()) {
      fail_at("pre_tokenizer", "missing: a byte-level BPE needs a ByteLevel pre-tokenizer");
    }
    const json& o = object_at(*it, "pre_tokenizer");
    if (get_string(o, "type", "pre_tokenizer") == "Sequence") {
      spec.pre_is_sequence = true;
      auto list = o.find("pretokenizers");
      if (list == o.end() || !list->is_array()) fail_at("pre_tokenizer.pretokenizers", "expected an array");
      for (size_t i = 0; i < list->size(); ++i) {
        spec.pre_steps.push_back(parse_step((*list)[i], "pre_tokenizer.pretokenizers[" + std::to_string(i) + "]"));
      }
    } else {
      spec.pre_steps.push_back(parse_step(o, "pre_tokenizer"));
    }
    const std::string where = spec.pre_is_sequence ? "pre_tokenizer.pretokenizers" : "pre_tokenizer";
    if (spec.pre_steps.empty() || spec.pre_steps.back().kind != PreStep::Kind::ByteLevel) {
      fail_at(where, "must end with a ByteLevel pre-tokenizer");
    }
    for (size_t i = 0; i + 1 < spec.pre_steps.size(); ++i) {
      if (spec.pre_steps[i].kind == PreStep::Kind::ByteLevel) {
        fail_at(where + "[" + std::to_string(i) + "]", "ByteLevel must be the last pre-tokenizer");
      }
    }
  }

  void parse_rest(const json& root) const {
    if (auto v = root.find("version"); v != root.end() && !(v->is_string() && v->get<std::string>() == "1.0")) {
      fail_at("version", "unknown tokenizer.json version " + v->dump() + " (expected \"1.0\")");
    }
    if (auto n = root.find("normalizer"); n != root.end() && !n->is_null()) {
      const bool empty_sequence = n->is_object() && n->value("type", "") == "Sequence" && n->contains("normalizers") &&
                                  (*n)["normalizers"].is_array() && (*n)["normalizers"].empty();
      if (!empty_sequence) {
        fail_at("normalizer", "unsupported normalizer " + (n->is_object() ? n->value("type", n->dump()) : n->dump()) +
                                  " (only null is supported)");
      }
    }
    if (auto d = root.find("decoder"); d != root.end()) {
      if (!d->is_object() || d->value("type", "") != "ByteLevel") {
        fail_at("decoder", "unsupported decoder " + (d->is_object() ? d->value("type", d->dump()) : d->dump()) +
                               " (only ByteLevel is supported)");
      }
    }
  }

 private:
  const std::string& src_;
};

// ---- Writing -----------------------------------------------------------------------------------

void append_json_string(std::string& out, std::string_view s) {
  static const char* hex = "0123456789abcdef";
  out += '"';
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += hex[c >> 4];
          out += hex[c & 15];
        } else {
          out += ch;
        }
    }
  }
  out += '"';
}

json step_json(const PreStep& s, bool with_offsets) {
  json j;
  switch (s.kind) {
    case PreStep::Kind::ByteLevel:
      j = {{"type", "ByteLevel"}, {"add_prefix_space", s.add_prefix_space}, {"use_regex", s.use_regex}};
      if (with_offsets) j["trim_offsets"] = s.trim_offsets;
      break;
    case PreStep::Kind::Digits: j = {{"type", "Digits"}, {"individual_digits", s.individual_digits}}; break;
    case PreStep::Kind::Split:
      j = {{"type", "Split"},
           {"pattern", {{s.pattern_is_regex ? "Regex" : "String", s.pattern}}},
           {"behavior", detail::split_behavior_name(s.behavior)},
           {"invert", s.invert}};
      break;
  }
  return j;
}

json pre_json(const Tokenizer::Impl& t, bool with_offsets) {
  if (!t.pre_is_sequence && t.pre_steps.size() == 1) return step_json(t.pre_steps[0], with_offsets);
  json list = json::array();
  for (const auto& s : t.pre_steps) list.push_back(step_json(s, with_offsets));
  return {{"type", "Sequence"}, {"pretokenizers", list}};
}

// ---- SHA-256 (FIPS 180-4) ----------------------------------------------------------------------

class Sha256 {
 public:
  void update(std::string_view data) {
    for (char c : data) {
      block_[fill_++] = static_cast<uint8_t>(c);
      if (fill_ == 64) {
        compress();
        fill_ = 0;
      }
    }
    length_ += data.size();
  }
  std::string hex() {
    const uint64_t bits = length_ * 8;
    const char pad = static_cast<char>(0x80);
    update(std::string_view(&pad, 1));
    while (fill_ != 56) update(std::string_view("\0", 1));
    for (int i = 7; i >= 0; --i) block_[fill_++] = static_cast<uint8_t>(bits >> (8 * i));
    compress();
    std::string out;
    static const char* digits = "0123456789abcdef";
    for (uint32_t v : h_) {
      for (int i = 28; i >= 0; i -= 4) out += digits[(v >> i) & 15];
    }
    return out;
  }

 private:
  static uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }
  void compress() {
    static const uint32_t k[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
    uint32_t w[64];
    for (int i = 0; i < 16; ++i) {
      w[i] = (uint32_t{block_[4 * i]} << 24) | (uint32_t{block_[4 * i + 1]} << 16) |
             (uint32_t{block_[4 * i + 2]} << 8) | uint32_t{block_[4 * i + 3]};
    }
    for (int i = 16; i < 64; ++i) {
      const uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      const uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h_[0], b = h_[1], c = h_[2], d = h_[3], e = h_[4], f = h_[5], g = h_[6], h = h_[7];
    for (int i = 0; i < 64; ++i) {
      const uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + k[i] + w[i];
      const uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      h = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    h_[0] += a, h_[1] += b, h_[2] += c, h_[3] += d, h_[4] += e, h_[5] += f, h_[6] += g, h_[7] += h;
  }
  uint32_t h_[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  uint8_t block_[64] = {};
  size_t fill_ = 0;
  uint64_t length_ = 0;
};

void append_counted(std::string& out, std::string_view s) {
  out += std::to_string(s.size());
  out += ':';
  out += s;
}

}  // namespace

namespace detail {
std::string sha256_hex(std::string_view data) {
  Sha256 h;
  h.update(data);
  return h.hex();
}
}  // namespace detail

// ---- Impl: canonical text and to_json ----------------------------------------------------------

std::string Tokenizer::Impl::canonical_text() const {
  std::string out = "mor-tokenizer-hash-v1\nmodel BPE ignore_merges=";
  out += ignore_merges ? '1' : '0';
  out += " fuse_unk=";
  out += fuse_unk ? '1' : '0';
  out += " unk=";
  if (unk_token) {
    append_counted(out, *unk_token);
  } else {
    out += '-';
  }
  out += "\nvocab " + std::to_string(vocab_by_id.size()) + "\n";
  for (const auto& [token, id] : vocab_by_id) {
    out += std::to_string(id);
    out += ' ';
    append_counted(out, token);
    out += '\n';
  }
  out += "merges " + std::to_string(merges.size()) + "\n";
  for (const auto& [a, b] : merges) {
    append_counted(out, a);
    out += ' ';
    append_counted(out, b);
    out += '\n';
  }
  out += "pre " + pre_json(*this, false).dump() + "\n";
  out += "added " + std::to_string(added.size()) + "\n";
  for (const auto& a : added) {
    out += std::to_string(a.id);
    out += ' ';
    append_counted(out, a.content);
    out += " single_word=" + std::to_string(a.single_word) + " lstrip=" + std::to_string(a.lstrip) +
           " rstrip=" + std::to_string(a.rstrip) + " normalized=" + std::to_string(a.normalized) +
           " special=" + std::to_string(a.special) + "\n";
  }
  return out;
}

std::string Tokenizer::Impl::to_json() const {
  std::string out;
  out.reserve(vocab_by_id.size() * 24 + merges.size() * 24 + 4096);
  out += "{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,\n\"added_tokens\":[";
  for (size_t i = 0; i < added.size(); ++i) {
    const auto& a = added[i];
    out += i ? ",\n" : "\n";
    out += "{\"id\":" + std::to_string(a.id) + ",\"content\":";
    append_json_string(out, a.content);
    auto flag = [&](const char* name, bool v) { out += std::string(",\"") + name + "\":" + (v ? "true" : "false"); };
    flag("single_word", a.single_word);
    flag("lstrip", a.lstrip);
    flag("rstrip", a.rstrip);
    flag("normalized", a.normalized);
    flag("special", a.special);
    out += '}';
  }
  out += "],\n\"normalizer\":null,\n\"pre_tokenizer\":" + pre_json(*this, true).dump();
  out += ",\n\"post_processor\":" + post_processor_json;
  out += ",\n\"decoder\":{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"trim_offsets\":true,\"use_regex\":true}";
  out += ",\n\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":";
  if (unk_token) {
    append_json_string(out, *unk_token);
  } else {
    out += "null";
  }
  out += ",\"continuing_subword_prefix\":null,\"end_of_word_suffix\":null,\"fuse_unk\":";
  out += fuse_unk ? "true" : "false";
  out += ",\"byte_fallback\":false,\"ignore_merges\":";
  out += ignore_merges ? "true" : "false";
  out += ",\n\"vocab\":{";
  for (size_t i = 0; i < vocab_by_id.size(); ++i) {
    if (i) out += ',';
    append_json_string(out, vocab_by_id[i].first);
    out += ':' + std::to_string(vocab_by_id[i].second);
  }
  // "a b" strings load in every tokenizers version; pairs are needed when a part holds a space.
  bool pairs = false;
  for (const auto& [a, b] : merges)
    pairs = pairs || a.find(' ') != std::string::npos || b.find(' ') != std::string::npos;
  out += "},\n\"merges\":[";
  for (size_t i = 0; i < merges.size(); ++i) {
    if (i) out += ',';
    if (pairs) {
      out += '[';
      append_json_string(out, merges[i].first);
      out += ',';
      append_json_string(out, merges[i].second);
      out += ']';
    } else {
      append_json_string(out, merges[i].first + " " + merges[i].second);
    }
  }
  out += "]}}\n";
  return out;
}

// ---- Public API --------------------------------------------------------------------------------

Tokenizer Tokenizer::from_json(std::string_view text, const std::string& source_name) {
  json root;
  try {
    root = json::parse(text.begin(), text.end());
  } catch (const json::parse_error& e) {
    fail(source_name, ": invalid JSON: ", e.what());
  }
  if (!root.is_object()) fail(source_name, ": expected a JSON object at the top level, got ", root.type_name());
  Parser p(source_name);
  detail::TokenizerSpec spec;
  spec.source = source_name;
  p.parse_rest(root);
  p.parse_model(root, spec);
  p.parse_added(root, spec);
  p.parse_pre(root, spec);
  if (auto pp = root.find("post_processor"); pp != root.end()) spec.post_processor_json = pp->dump();
  return Tokenizer(Impl::build(std::move(spec)));
}

Tokenizer Tokenizer::from_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, ": cannot open tokenizer file: ", std::strerror(errno));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) fail(path, ": read error");
  return from_json(buffer.str(), path);
}

std::string Tokenizer::hash() const {
  return detail::sha256_hex(impl_->canonical_text());
}

std::string Tokenizer::to_json() const {
  return impl_->to_json();
}

}  // namespace mor::io
