// GGUF Llama models in HF terms (see include/mor/io/gguf_model.h): dequantisation of the ggml block
// formats, the GGUF <-> HF name mapping, the q/k RoPE row permutation, the llama.* metadata as a
// ModelConfig, and the tensor checks done before anything is dequantised.
#include "mor/io/gguf_model.h"

#include <bit>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <unordered_set>

#include "mor/core/error.h"
#include "mor/core/file.h"

namespace mor::io {

namespace {

constexpr uint32_t kF32 = 0, kF16 = 1, kQ4_0 = 2, kQ4_1 = 3, kQ8_0 = 8, kBF16 = 30;
constexpr uint64_t kQk = 32;  // values per Q8_0 / Q4_0 / Q4_1 block

struct Layout {
  const char* name;
  uint64_t block;  // values per block
  uint64_t bytes;  // bytes per block
};
std::optional<Layout> layout(uint32_t type) {
  switch (type) {
    case kF32: return Layout{"F32", 1, 4};
    case kF16: return Layout{"F16", 1, 2};
    case kBF16: return Layout{"BF16", 1, 2};
    case kQ8_0: return Layout{"Q8_0", kQk, 2 + kQk};
    case kQ4_0: return Layout{"Q4_0", kQk, 2 + kQk / 2};
    case kQ4_1: return Layout{"Q4_1", kQk, 4 + kQk / 2};
    default: return std::nullopt;
  }
}

uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

// A float32 metadata value as the shortest decimal that reads back to the same float (1e-05, not
// 9.999999747378752e-06), so configs written from it look like the originals.
double shortest(const GgufValue& v, double d) {
  if (v.type != GgufType::Float32) return d;
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof(buf), static_cast<float>(d));
  *r.ptr = '\0';
  return std::strtod(buf, nullptr);
}

struct LayerName {
  const char* gguf;  // after "blk.N."
  const char* hf;    // after "model.layers.N."
};
// In HF state_dict order (LlamaDecoderLayer: self_attn, mlp, input_layernorm, post_attention_layernorm).
constexpr LayerName kLayerNames[] = {
    {"attn_q.weight", "self_attn.q_proj.weight"},   {"attn_k.weight", "self_attn.k_proj.weight"},
    {"attn_v.weight", "self_attn.v_proj.weight"},   {"attn_output.weight", "self_attn.o_proj.weight"},
    {"ffn_gate.weight", "mlp.gate_proj.weight"},    {"ffn_up.weight", "mlp.up_proj.weight"},
    {"ffn_down.weight", "mlp.down_proj.weight"},    {"attn_norm.weight", "input_layernorm.weight"},
    {"ffn_norm.weight", "post_attention_layernorm.weight"},
};
constexpr std::pair<const char*, const char*> kGlobalNames[] = {
    {"token_embd.weight", "model.embed_tokens.weight"},
    {"output_norm.weight", "model.norm.weight"},
    {"output.weight", "lm_head.weight"},
};

// "12.rest" -> {12, "rest"}; canonical decimal only (no sign, no leading zeros).
std::optional<std::pair<int64_t, std::string_view>> split_layer(std::string_view s) {
  size_t n = 0;
  while (n < s.size() && s[n] >= '0' && s[n] <= '9') ++n;
  if (n == 0 || n > 9 || n >= s.size() || s[n] != '.' || (s[0] == '0' && n > 1)) return std::nullopt;
  int64_t layer = 0;
  for (size_t i = 0; i < n; ++i) layer = layer * 10 + (s[i] - '0');
  return std::make_pair(layer, s.substr(n + 1));
}

std::string dims(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

void permute_rows(std::vector<float>& w, int64_t rows, int64_t cols, int64_t n_head, bool undo) {
  if (rows < 0 || cols < 0 || static_cast<uint64_t>(rows) * static_cast<uint64_t>(cols) != w.size()) {
    fail("GGUF RoPE permutation: ", w.size(), " values are not a [", rows, ", ", cols, "] matrix");
  }
  if (n_head <= 0 || rows % (2 * n_head) != 0) {
    fail("GGUF RoPE permutation: ", rows, " rows do not split into ", n_head, " heads of an even size");
  }
  const int64_t head = rows / n_head, half = head / 2;
  const std::vector<float> src = w;
  const auto c = static_cast<size_t>(cols);
  for (int64_t h = 0; h < n_head; ++h) {
    for (int64_t i = 0; i < half; ++i) {
      for (int64_t j = 0; j < 2; ++j) {
        const auto hf_row = static_cast<size_t>(h * head + j * half + i);
        const auto gguf_row = static_cast<size_t>(h * head + 2 * i + j);
        const size_t to = undo ? hf_row : gguf_row, from = undo ? gguf_row : hf_row;
        std::memcpy(w.data() + to * c, src.data() + from * c, c * sizeof(float));
      }
    }
  }
}

}  // namespace

// ---- Dequantisation ----------------------------------------------------------------------------

bool gguf_type_supported(uint32_t ggml_type) {
  return layout(ggml_type).has_value();
}

const char* gguf_supported_types() {
  return "F32, F16, BF16, Q8_0, Q4_0, Q4_1";
}

float fp16_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  const uint32_t mant = h & 0x3FFu;
  if (exp == 0) {  // zero or subnormal: mant * 2^-24
    const float f = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -f : f;
  }
  const uint32_t bits = exp == 31 ? (sign | 0x7F800000u | (mant << 13)) : (sign | ((exp + 112) << 23) | (mant << 13));
  return std::bit_cast<float>(bits);
}

float bf16_to_float(uint16_t bits) {
  return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16);
}

void dequantize(uint32_t ggml_type, const std::byte* src, uint64_t src_bytes, float* dst, uint64_t elements,
                const std::string& where) {
  const std::optional<Layout> l = layout(ggml_type);
  if (!l) {
    std::string name = "type " + std::to_string(ggml_type);
    // Names of the other ggml types (the reader's table is private to gguf.cpp).
    static const std::pair<uint32_t, const char*> kOthers[] = {
        {6, "Q5_0"},   {7, "Q5_1"},   {9, "Q8_1"},    {10, "Q2_K"},  {11, "Q3_K"},   {12, "Q4_K"},
        {13, "Q5_K"},  {14, "Q6_K"},  {15, "Q8_K"},   {16, "IQ2_XXS"}, {17, "IQ2_XS"}, {18, "IQ3_XXS"},
        {19, "IQ1_S"}, {20, "IQ4_NL"}, {21, "IQ3_S"}, {22, "IQ2_S"}, {23, "IQ4_XS"}, {24, "I8"},
        {25, "I16"},   {26, "I32"},   {27, "I64"},    {28, "F64"},   {29, "IQ1_M"},  {34, "TQ1_0"},
        {35, "TQ2_0"}, {39, "MXFP4"}};
    for (const auto& [id, n] : kOthers) {
      if (id == ggml_type) name = n;
    }
    fail(where, ": unsupported quantisation ", name, "; supported: ", gguf_supported_types());
  }
  if (elements % l->block != 0) {
    fail(where, ": ", elements, " values are not a whole number of ", l->name, " blocks of ", l->block);
  }
  const uint64_t blocks = elements / l->block;
  if (blocks > std::numeric_limits<uint64_t>::max() / l->bytes || blocks * l->bytes != src_bytes) {
    fail(where, ": ", src_bytes, " bytes of data for ", elements, " ", l->name, " values (expected ",
         blocks * l->bytes, ")");
  }
  const auto* s = reinterpret_cast<const uint8_t*>(src);
  switch (ggml_type) {
    case kF32:
      std::memcpy(dst, s, elements * sizeof(float));
      return;
    case kF16:
      for (uint64_t i = 0; i < elements; ++i) dst[i] = fp16_to_float(load_u16(s + 2 * i));
      return;
    case kBF16:
      for (uint64_t i = 0; i < elements; ++i) dst[i] = bf16_to_float(load_u16(s + 2 * i));
      return;
    case kQ8_0:
      for (uint64_t b = 0; b < blocks; ++b, s += l->bytes, dst += kQk) {
        const float d = fp16_to_float(load_u16(s));
        const auto* q = reinterpret_cast<const int8_t*>(s + 2);
        for (uint64_t j = 0; j < kQk; ++j) dst[j] = static_cast<float>(q[j]) * d;
      }
      return;
    case kQ4_0:
      for (uint64_t b = 0; b < blocks; ++b, s += l->bytes, dst += kQk) {
        const float d = fp16_to_float(load_u16(s));
        const uint8_t* qs = s + 2;
        for (uint64_t j = 0; j < kQk / 2; ++j) {
          dst[j] = static_cast<float>((qs[j] & 0x0F) - 8) * d;
          dst[j + kQk / 2] = static_cast<float>((qs[j] >> 4) - 8) * d;
        }
      }
      return;
    case kQ4_1:
      for (uint64_t b = 0; b < blocks; ++b, s += l->bytes, dst += kQk) {
        const float d = fp16_to_float(load_u16(s));
        const float m = fp16_to_float(load_u16(s + 2));
        const uint8_t* qs = s + 4;
        for (uint64_t j = 0; j < kQk / 2; ++j) {
          dst[j] = static_cast<float>(qs[j] & 0x0F) * d + m;
          dst[j + kQk / 2] = static_cast<float>(qs[j] >> 4) * d + m;
        }
      }
      return;
    default: return;
  }
}

// ---- Names and the permutation -----------------------------------------------------------------

std::optional<std::string> gguf_to_hf_name(std::string_view name) {
  for (const auto& [g, h] : kGlobalNames) {
    if (name == g) return std::string(h);
  }
  if (!name.starts_with("blk.")) return std::nullopt;
  const auto split = split_layer(name.substr(4));
  if (!split) return std::nullopt;
  for (const LayerName& l : kLayerNames) {
    if (split->second == l.gguf) return "model.layers." + std::to_string(split->first) + "." + l.hf;
  }
  return std::nullopt;
}

std::optional<std::string> hf_to_gguf_name(std::string_view name) {
  for (const auto& [g, h] : kGlobalNames) {
    if (name == h) return std::string(g);
  }
  constexpr std::string_view kPrefix = "model.layers.";
  if (!name.starts_with(kPrefix)) return std::nullopt;
  const auto split = split_layer(name.substr(kPrefix.size()));
  if (!split) return std::nullopt;
  for (const LayerName& l : kLayerNames) {
    if (split->second == l.hf) return "blk." + std::to_string(split->first) + "." + l.gguf;
  }
  return std::nullopt;
}

void undo_gguf_rope_permutation(std::vector<float>& w, int64_t rows, int64_t cols, int64_t n_head) {
  permute_rows(w, rows, cols, n_head, true);
}

void apply_gguf_rope_permutation(std::vector<float>& w, int64_t rows, int64_t cols, int64_t n_head) {
  permute_rows(w, rows, cols, n_head, false);
}

// ---- Config ------------------------------------------------------------------------------------

config::ModelConfig gguf_model_config(const GgufFile& f, bool has_output) {
  const std::string& src = f.path();
  const std::string arch = f.get_string("general.architecture");
  if (arch != "llama") {
    fail(src, ": metadata 'general.architecture' is '", arch,
         "'; only 'llama' (Llama-family models such as Llama 2/3 and SmolLM) is supported");
  }
  auto key = [](const char* k) { return std::string("llama.") + k; };
  auto positive = [&](const std::string& k) {
    const int64_t v = f.get_int(k);
    if (v <= 0) fail(src, ": metadata '", k, "': ", v, " must be positive");
    if (v > std::numeric_limits<int32_t>::max()) fail(src, ": metadata '", k, "': ", v, " is implausibly large");
    return v;
  };
  auto real = [&](const std::string& k) {
    const GgufValue& v = f.at(k);
    const auto d = v.to_double();
    if (!d || !std::isfinite(*d) || *d <= 0) {
      fail(src, ": metadata '", k, "': expected a positive number, got ", gguf_type_name(v.type));
    }
    return shortest(v, *d);
  };

  config::ModelConfig m;
  if (f.find("general.name")) {
    m.name = f.get_string("general.name");
  } else {
    const size_t slash = src.find_last_of('/');
    m.name = src.substr(slash == std::string::npos ? 0 : slash + 1);
    if (m.name.ends_with(".gguf")) m.name.resize(m.name.size() - 5);
  }
  m.hidden_size = positive(key("embedding_length"));
  m.num_layers = positive(key("block_count"));
  m.intermediate_size = positive(key("feed_forward_length"));
  m.num_heads = positive(key("attention.head_count"));
  m.num_kv_heads = f.find(key("attention.head_count_kv")) ? positive(key("attention.head_count_kv")) : m.num_heads;
  if (m.num_heads % m.num_kv_heads != 0) {
    fail(src, ": metadata '", key("attention.head_count_kv"), "': ", m.num_kv_heads, " does not divide the ",
         m.num_heads, " attention heads");
  }
  m.max_seq_len = positive(key("context_length"));
  m.rope_theta = f.find(key("rope.freq_base")) ? real(key("rope.freq_base")) : 10000.0;
  m.rms_norm_eps = real(key("attention.layer_norm_rms_epsilon"));

  if (f.find(key("vocab_size"))) {
    m.vocab_size = positive(key("vocab_size"));
  } else if (const GgufValue* tokens = f.find("tokenizer.ggml.tokens"); tokens && tokens->array()) {
    m.vocab_size = static_cast<int64_t>(tokens->array()->size());
  } else {
    fail(src, ": neither metadata 'llama.vocab_size' nor 'tokenizer.ggml.tokens' gives the vocabulary size");
  }

  int64_t head_dim = 0;
  if (f.find(key("attention.key_length"))) {
    head_dim = positive(key("attention.key_length"));
    if (f.find(key("attention.value_length")) && positive(key("attention.value_length")) != head_dim) {
      fail(src, ": metadata '", key("attention.value_length"), "' differs from '", key("attention.key_length"),
           "' (not supported)");
    }
  } else {
    if (m.hidden_size % m.num_heads != 0) {
      fail(src, ": metadata '", key("embedding_length"), "' ", m.hidden_size, " is not a multiple of the ",
           m.num_heads, " heads and 'llama.attention.key_length' is missing");
    }
    head_dim = m.hidden_size / m.num_heads;
  }
  if (head_dim % 2 != 0) fail(src, ": head dimension ", head_dim, " is odd (RoPE needs pairs)");
  if (f.find(key("rope.dimension_count")) && positive(key("rope.dimension_count")) != head_dim) {
    fail(src, ": metadata '", key("rope.dimension_count"), "' ", f.get_int(key("rope.dimension_count")),
         " differs from the head dimension ", head_dim, " (partial rotary embeddings are not supported)");
  }
  m.head_dim = head_dim * m.num_heads == m.hidden_size ? 0 : head_dim;

  if (f.find(key("expert_count")) && f.get_int(key("expert_count")) > 0) {
    fail(src, ": metadata '", key("expert_count"), "' is ", f.get_int(key("expert_count")),
         "; mixture-of-experts models are not supported");
  }
  if (f.find(key("rope.scaling.type"))) {
    const std::string type = f.get_string(key("rope.scaling.type"));
    if (type != "none") fail(src, ": metadata '", key("rope.scaling.type"), "' is '", type, "'; RoPE scaling is not supported");
  }
  if (f.find(key("rope.scaling.factor"))) {
    const auto factor = f.at(key("rope.scaling.factor")).to_double();
    if (factor && *factor != 0.0 && *factor != 1.0) {
      fail(src, ": metadata '", key("rope.scaling.factor"), "' is ", *factor, "; RoPE scaling is not supported");
    }
  }
  m.tie_embeddings = !has_output;
  return m;
}

// ---- The model ---------------------------------------------------------------------------------

const GgufModelTensor& GgufModel::tensor(std::string_view hf_name) const {
  for (const GgufModelTensor& t : tensors) {
    if (t.hf_name == hf_name) return t;
  }
  const auto gguf = hf_to_gguf_name(hf_name);
  fail(path, ": no tensor '", hf_name, "' in this model",
       gguf ? " (GGUF name '" + *gguf + "')" : std::string(" (not a Llama tensor name)"));
}

GgufModel read_gguf_model(const std::string& path) {
  GgufModel m;
  m.path = path;
  auto map = std::make_shared<core::MappedFile>(core::MappedFile::open(path));
  auto file = std::make_shared<GgufFile>(GgufFile::parse(map->view(), path));
  m.map = map;
  m.file = file;
  m.model = gguf_model_config(*file, file->find_tensor("output.weight") != nullptr);
  const config::ModelConfig& c = m.model;
  const int64_t d = c.hidden_size, hd = c.resolved_head_dim();

  auto add = [&](const std::string& hf_name, std::vector<int64_t> shape, int64_t rope_heads) {
    GgufModelTensor t;
    t.hf_name = hf_name;
    t.gguf_name = *hf_to_gguf_name(hf_name);
    t.shape = std::move(shape);
    t.rope_heads = rope_heads;
    const GgufTensorInfo* info = file->find_tensor(t.gguf_name);
    if (info == nullptr) fail(path, ": tensor '", t.gguf_name, "' (", hf_name, ") is missing");
    std::vector<int64_t> hf_shape(info->shape.rbegin(), info->shape.rend());
    if (hf_shape != t.shape) {
      std::vector<int64_t> gguf_expected(t.shape.rbegin(), t.shape.rend());
      fail(path, ": tensor '", t.gguf_name, "' (", hf_name, "): GGUF shape ",
           dims(std::vector<int64_t>(info->shape.begin(), info->shape.end())), " does not match the config (expected ",
           dims(gguf_expected), ", i.e. HF ", dims(t.shape), ")");
    }
    if (!gguf_type_supported(info->type)) {
      fail(path, ": tensor '", t.gguf_name, "': unsupported quantisation ", info->type_name, "; supported: ",
           gguf_supported_types());
    }
    t.type_name = info->type_name;
    t.info = info;
    m.names.push_back(hf_name);
    m.tensors.push_back(std::move(t));
  };

  add("model.embed_tokens.weight", {c.vocab_size, d}, 0);
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    add(p + "self_attn.q_proj.weight", {c.num_heads * hd, d}, c.num_heads);
    add(p + "self_attn.k_proj.weight", {c.num_kv_heads * hd, d}, c.num_kv_heads);
    add(p + "self_attn.v_proj.weight", {c.num_kv_heads * hd, d}, 0);
    add(p + "self_attn.o_proj.weight", {d, c.num_heads * hd}, 0);
    add(p + "mlp.gate_proj.weight", {c.intermediate_size, d}, 0);
    add(p + "mlp.up_proj.weight", {c.intermediate_size, d}, 0);
    add(p + "mlp.down_proj.weight", {d, c.intermediate_size}, 0);
    add(p + "input_layernorm.weight", {d}, 0);
    add(p + "post_attention_layernorm.weight", {d}, 0);
  }
  add("model.norm.weight", {d}, 0);
  if (!c.tie_embeddings) add("lm_head.weight", {c.vocab_size, d}, 0);

  std::unordered_set<std::string> expected;
  for (const GgufModelTensor& t : m.tensors) expected.insert(t.gguf_name);
  for (const GgufTensorInfo& t : file->tensors()) {
    if (expected.count(t.name)) continue;
    const auto hf = gguf_to_hf_name(t.name);
    fail(path, ": tensor '", t.name, "' is unexpected",
         t.name == "rope_freqs.weight" ? " (RoPE frequency factors, i.e. RoPE scaling, are not supported)"
         : hf ? " (" + *hf + " is beyond the " + std::to_string(c.num_layers) + " layers of the config)"
              : std::string(" (not part of a Llama model)"));
  }

  const GgufTokenizerInfo info = gguf_tokenizer_info(*file);
  m.bos_id = info.bos_id;
  m.eos_id = info.eos_id;
  const Tokenizer tokenizer = tokenizer_from_gguf(*file);
  if (tokenizer.vocab_size() > c.vocab_size) {
    fail(path, ": the tokenizer has ", tokenizer.vocab_size(), " tokens but the model's vocabulary only ", c.vocab_size);
  }
  m.tokenizer_json = tokenizer.to_json();
  return m;
}

std::vector<float> read_gguf_tensor(const GgufModel& model, std::string_view hf_name) {
  const GgufModelTensor& t = model.tensor(hf_name);
  const GgufTensorInfo& info = *t.info;
  const std::string where = model.path + ": tensor '" + info.name + "'";
  if (!model.map || info.file_offset > model.map->size() || info.nbytes > model.map->size() - info.file_offset) {
    fail(where, ": data lies outside the file");
  }
  std::vector<float> out(info.elements);
  dequantize(info.type, model.map->data() + info.file_offset, info.nbytes, out.data(), info.elements, where);
  for (size_t i = 0; i < out.size(); ++i) {
    if (!std::isfinite(out[i])) fail(where, ": value ", i, " is not finite (", out[i], ")");
  }
  if (t.rope_heads > 0) undo_gguf_rope_permutation(out, t.shape[0], t.shape[1], t.rope_heads);
  return out;
}

}  // namespace mor::io
