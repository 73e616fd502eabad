// Unit tests of the GGUF model reader (mor/io/gguf_model.h): every supported ggml type dequantised
// against values the test computes itself from hand-built blocks (literal blocks too), the q/k RoPE
// row permutation undone after permuting with convert_hf_to_gguf.py's reshape/swapaxes formula, a
// tiny Llama GGUF written here (mixed types, tied and untied) read back as config + HF tensors, and
// the errors (unsupported type, truncated data, wrong architecture, missing/extra tensors, bad
// shapes and metadata) naming the file and the tensor. With the real SmolLM2 GGUF (MOR_SMOLLM2_GGUF
// or tools/fetch_smollm2.sh's cache), every tensor dequantises and a few match values computed with
// the Python `gguf` package (tests/fixtures/gguf/smollm2_ref.json, from tools/gguf_reference.py).
#include "mor/io/gguf_model.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>

#include "error_testing.h"
#include "gguf_testing.h"
#include "mor/core/error.h"

#ifndef MOR_SOURCE_DIR
#define MOR_SOURCE_DIR "."
#endif

namespace mor::io {
namespace {

namespace fs = std::filesystem;
using mor::testing::expect_error;
using namespace mor::testing;  // GGUF byte builders (gguf_testing.h)

// ---- Hand-built blocks -------------------------------------------------------------------------

// fp16 bit patterns with their exact values, worked out by hand: sign, 5-bit exponent (bias 15),
// 10-bit mantissa. 0x2E66 = (1 + 614/1024) * 2^-4; 0x0200 is subnormal: 512 * 2^-24 = 2^-15.
struct Half {
  uint16_t bits;
  float value;
};
constexpr Half kScales[] = {{0x3C00, 1.0f},           {0xB800, -0.5f},     {0x2E66, 0.0999755859375f},
                            {0x0200, 3.0517578125e-05f}, {0xC4D0, -4.8125f}, {0x3555, 0.333251953125f}};
constexpr Half kMins[] = {{0x0000, 0.0f}, {0xBA00, -0.75f}, {0x4100, 2.5f}, {0x8000, -0.0f}};

// Values and bytes of `rows` rows of `cols` values, kept row by row so rows can be permuted.
struct Encoded {
  std::vector<std::string> row_bytes;
  std::vector<std::vector<float>> row_values;
  std::string bytes() const {
    std::string out;
    for (const auto& r : row_bytes) out += r;
    return out;
  }
  std::vector<float> values() const {
    std::vector<float> out;
    for (const auto& r : row_values) out.insert(out.end(), r.begin(), r.end());
    return out;
  }
};

// ggml ids: F32 0, F16 1, Q4_0 2, Q4_1 3, Q8_0 8, BF16 30. `seed` varies the data.
Encoded encode(uint32_t type, int64_t rows, int64_t cols, int seed) {
  Encoded e;
  int counter = seed * 7919;
  auto next = [&] { return counter = (counter * 1103515245 + 12345) & 0x7FFFFFFF; };
  for (int64_t r = 0; r < rows; ++r) {
    Bytes b;
    std::vector<float> v;
    if (type == 0) {  // F32: arbitrary floats
      for (int64_t c = 0; c < cols; ++c) {
        const float x = static_cast<float>(next() % 20001 - 10000) / 3.0f;
        b.put(x);
        v.push_back(x);
      }
    } else if (type == 1 || type == 30) {  // F16 / BF16 from k/8, exact in both
      for (int64_t c = 0; c < cols; ++c) {
        const int k = next() % 257 - 128;
        const float x = static_cast<float>(k) / 8.0f;
        if (type == 30) {
          uint32_t bits;
          std::memcpy(&bits, &x, 4);
          b.put<uint16_t>(static_cast<uint16_t>(bits >> 16));
        } else if (k == 0) {
          b.put<uint16_t>(0);
        } else {  // |x| = 2^e * (1 + f/1024)
          int e = 0;
          const float m = std::frexp(std::fabs(x), &e);  // m in [0.5, 1)
          const auto mant = static_cast<uint16_t>((m * 2.0f - 1.0f) * 1024.0f);
          b.put<uint16_t>(static_cast<uint16_t>((x < 0 ? 0x8000 : 0) | ((e - 1 + 15) << 10) | mant));
        }
        v.push_back(x);
      }
    } else {
      for (int64_t blk = 0; blk < cols / 32; ++blk) {
        const Half d = kScales[next() % std::size(kScales)];
        b.put(d.bits);
        if (type == 8) {  // Q8_0: d, int8 q[32]
          for (int j = 0; j < 32; ++j) {
            const auto q = static_cast<int8_t>(next() % 255 - 127);
            b.put(q);
            v.push_back(static_cast<float>(q) * d.value);
          }
          continue;
        }
        Half m{0, 0.0f};
        if (type == 3) {  // Q4_1: d, m, nibbles
          m = kMins[next() % std::size(kMins)];
          b.put(m.bits);
        }
        uint8_t q[32];
        for (auto& x : q) x = static_cast<uint8_t>(next() % 16);
        for (int j = 0; j < 16; ++j) b.put<uint8_t>(static_cast<uint8_t>(q[j] | (q[j + 16] << 4)));
        for (int j = 0; j < 32; ++j) {
          v.push_back(type == 2 ? static_cast<float>(q[j] - 8) * d.value : static_cast<float>(q[j]) * d.value + m.value);
        }
      }
    }
    e.row_bytes.push_back(b.b);
    e.row_values.push_back(v);
  }
  return e;
}

std::vector<float> dq(uint32_t type, const std::string& bytes, uint64_t elements) {
  std::vector<float> out(elements);
  dequantize(type, reinterpret_cast<const std::byte*>(bytes.data()), bytes.size(), out.data(), elements, "t");
  return out;
}

TEST(GgufDequant, HalfAndBfloatBitPatterns) {
  for (const Half& h : kScales) EXPECT_EQ(fp16_to_float(h.bits), h.value) << h.bits;
  EXPECT_EQ(fp16_to_float(0x7BFF), 65504.0f);
  EXPECT_EQ(fp16_to_float(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(fp16_to_float(0x83FF), -1023 * std::ldexp(1.0f, -24));
  EXPECT_TRUE(std::signbit(fp16_to_float(0x8000)));
  EXPECT_EQ(fp16_to_float(0x7C00), INFINITY);
  EXPECT_EQ(fp16_to_float(0xFC00), -INFINITY);
  EXPECT_TRUE(std::isnan(fp16_to_float(0x7E00)));
  EXPECT_EQ(bf16_to_float(0x3F80), 1.0f);
  EXPECT_EQ(bf16_to_float(0xC0A0), -5.0f);
  EXPECT_EQ(bf16_to_float(0x3DCD), 0.10009765625f);
}

TEST(GgufDequant, LiteralBlocks) {
  // Q8_0: d = -0.5, q = 0, 1, -1, 127, -128, ...
  Bytes q8;
  q8.put<uint16_t>(0xB800);
  const int8_t q[32] = {0, 1, -1, 127, -128, 5};
  for (int8_t x : q) q8.put(x);
  auto v = dq(8, q8.b, 32);
  EXPECT_EQ((std::vector<float>(v.begin(), v.begin() + 6)), (std::vector<float>{0, -0.5f, 0.5f, -63.5f, 64.0f, -2.5f}));
  // Q4_0: d = 0.5; byte 0 = 0xF1: element 0 is the low nibble (1), element 16 the high one (15).
  Bytes q4;
  q4.put<uint16_t>(0x3800).put<uint8_t>(0xF1).put<uint8_t>(0x08);
  for (int j = 2; j < 16; ++j) q4.put<uint8_t>(0x80);
  v = dq(2, q4.b, 32);
  EXPECT_EQ(v[0], -3.5f);
  EXPECT_EQ(v[16], 3.5f);
  EXPECT_EQ(v[1], 0.0f);
  EXPECT_EQ(v[17], -4.0f);
  EXPECT_EQ(v[2], -4.0f);
  EXPECT_EQ(v[18], 0.0f);
  // Q4_1: d = 0.0999755859375, m = -0.75; byte 0 = 0x3A: element 0 = 10 * d + m, element 16 = 3 * d + m.
  Bytes q41;
  q41.put<uint16_t>(0x2E66).put<uint16_t>(0xBA00).put<uint8_t>(0x3A);
  for (int j = 1; j < 16; ++j) q41.put<uint8_t>(0x00);
  v = dq(3, q41.b, 32);
  EXPECT_EQ(v[0], 10 * 0.0999755859375f - 0.75f);
  EXPECT_EQ(v[16], 3 * 0.0999755859375f - 0.75f);
  EXPECT_EQ(v[31], -0.75f);
}

TEST(GgufDequant, EveryTypeMatchesIndependentValues) {
  for (uint32_t type : {0u, 1u, 30u, 8u, 2u, 3u}) {
    const Encoded e = encode(type, 5, 96, static_cast<int>(type) + 1);
    const std::vector<float> got = dq(type, e.bytes(), 5 * 96);
    const std::vector<float> want = e.values();
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_EQ(got[i], want[i]) << "type " << type << " index " << i;
      ASSERT_EQ(std::signbit(got[i]), std::signbit(want[i])) << "type " << type << " index " << i;
    }
  }
}

TEST(GgufDequant, SizeAndTypeErrors) {
  const std::string q8 = encode(8, 1, 64, 1).bytes();
  expect_contains(expect_error([&] { dq(8, q8, 48); }), "t: 48 values are not a whole number of Q8_0 blocks of 32");
  expect_contains(expect_error([&] { dq(8, q8.substr(0, 67), 64); }), "t: 67 bytes of data for 64 Q8_0 values (expected 68)");
  expect_contains(expect_error([&] { dq(0, std::string(12, '\0'), 4); }), "12 bytes of data for 4 F32 values (expected 16)");
  expect_contains(expect_error([&] { dq(14, std::string(210, '\0'), 256); }),
                  "t: unsupported quantisation Q6_K; supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1");
  expect_contains(expect_error([&] { dq(12, std::string(144, '\0'), 256); }), "unsupported quantisation Q4_K");
  expect_contains(expect_error([&] { dq(77, "", 0); }), "unsupported quantisation type 77");
  EXPECT_TRUE(gguf_type_supported(30));
  EXPECT_FALSE(gguf_type_supported(6));  // Q5_0
}

// ---- Names and the q/k permutation -------------------------------------------------------------

// convert_hf_to_gguf.py's LlamaModel.permute, emulated index by index:
//   w.reshape(n_head, 2, rows // n_head // 2, ...).swapaxes(1, 2).reshape(w.shape)
template <typename Row>
std::vector<Row> converter_permute(const std::vector<Row>& w, int64_t n_head) {
  const int64_t half = static_cast<int64_t>(w.size()) / n_head / 2;
  std::vector<Row> out(w.size());
  for (int64_t a = 0; a < n_head; ++a) {
    for (int64_t b = 0; b < 2; ++b) {
      for (int64_t c = 0; c < half; ++c) {
        const int64_t in_flat = (a * 2 + b) * half + c;   // index in shape (n_head, 2, half)
        const int64_t out_flat = (a * half + c) * 2 + b;  // after swapaxes: shape (n_head, half, 2)
        out[static_cast<size_t>(out_flat)] = w[static_cast<size_t>(in_flat)];
      }
    }
  }
  return out;
}

TEST(GgufNames, MapBothWays) {
  const std::map<std::string, std::string> pairs = {
      {"token_embd.weight", "model.embed_tokens.weight"},
      {"output_norm.weight", "model.norm.weight"},
      {"output.weight", "lm_head.weight"},
      {"blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight"},
      {"blk.12.attn_k.weight", "model.layers.12.self_attn.k_proj.weight"},
      {"blk.3.attn_v.weight", "model.layers.3.self_attn.v_proj.weight"},
      {"blk.3.attn_output.weight", "model.layers.3.self_attn.o_proj.weight"},
      {"blk.29.ffn_gate.weight", "model.layers.29.mlp.gate_proj.weight"},
      {"blk.29.ffn_up.weight", "model.layers.29.mlp.up_proj.weight"},
      {"blk.29.ffn_down.weight", "model.layers.29.mlp.down_proj.weight"},
      {"blk.7.attn_norm.weight", "model.layers.7.input_layernorm.weight"},
      {"blk.7.ffn_norm.weight", "model.layers.7.post_attention_layernorm.weight"},
  };
  for (const auto& [g, h] : pairs) {
    EXPECT_EQ(gguf_to_hf_name(g), h);
    EXPECT_EQ(hf_to_gguf_name(h), g);
  }
  for (const char* bad : {"blk.01.attn_q.weight", "blk.x.attn_q.weight", "blk.3.attn_qq.weight", "blk.3.", "blk..a",
                          "rope_freqs.weight", "blk.-1.attn_q.weight", "model.layers.1.self_attn.q_proj.bias"}) {
    EXPECT_FALSE(gguf_to_hf_name(bad).has_value()) << bad;
    EXPECT_FALSE(hf_to_gguf_name(bad).has_value()) << bad;
  }
}

TEST(GgufPermutation, LiteralExamples) {
  // One head of 4: HF rows (0, 1 | 2, 3) pair 0-2 and 1-3; GGUF puts pairs next to each other.
  EXPECT_EQ(converter_permute<int>({0, 1, 2, 3}, 1), (std::vector<int>{0, 2, 1, 3}));
  EXPECT_EQ(converter_permute<int>({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, 2),
            (std::vector<int>{0, 3, 1, 4, 2, 5, 6, 9, 7, 10, 8, 11}));
  std::vector<float> w = {0, 10, 2, 12, 1, 11, 3, 13};  // GGUF rows 0, 2, 1, 3 of two columns
  undo_gguf_rope_permutation(w, 4, 2, 1);
  EXPECT_EQ(w, (std::vector<float>{0, 10, 1, 11, 2, 12, 3, 13}));
  w = {0, 3, 1, 4, 2, 5};  // one head of 6 (not an involution: the direction matters)
  undo_gguf_rope_permutation(w, 6, 1, 1);
  EXPECT_EQ(w, (std::vector<float>{0, 1, 2, 3, 4, 5}));
  apply_gguf_rope_permutation(w, 6, 1, 1);
  EXPECT_EQ(w, (std::vector<float>{0, 3, 1, 4, 2, 5}));
}

TEST(GgufPermutation, UndoesTheConverterFormula) {
  for (const auto& [heads, head_dim, cols] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
           {1, 2, 3}, {2, 8, 5}, {9, 64, 4}, {3, 64, 7}, {4, 6, 1}}) {
    const int64_t rows = heads * head_dim;
    std::vector<std::vector<float>> hf_rows(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) hf_rows[static_cast<size_t>(r)].push_back(static_cast<float>(r * 1000 + c));
    }
    auto flat = [](const std::vector<std::vector<float>>& m) {
      std::vector<float> out;
      for (const auto& r : m) out.insert(out.end(), r.begin(), r.end());
      return out;
    };
    const std::vector<float> hf = flat(hf_rows);
    const std::vector<float> gguf = flat(converter_permute(hf_rows, heads));
    std::vector<float> w = gguf;
    undo_gguf_rope_permutation(w, rows, cols, heads);
    EXPECT_EQ(w, hf) << heads << "x" << head_dim;
    apply_gguf_rope_permutation(w, rows, cols, heads);
    EXPECT_EQ(w, gguf) << heads << "x" << head_dim;
  }
  std::vector<float> w(12);
  expect_contains(expect_error([&] { undo_gguf_rope_permutation(w, 6, 2, 2); }), "6 rows do not split into 2 heads");
  expect_contains(expect_error([&] { undo_gguf_rope_permutation(w, 5, 2, 1); }), "not a [5, 2] matrix");
}

// ---- A tiny Llama GGUF -------------------------------------------------------------------------

struct TensorSpec {
  std::string name;
  std::vector<uint64_t> ne;  // GGUF order
  uint32_t type;
  std::string data;
};

// Header and tensor data, each tensor's data 32-byte aligned.
std::string write_gguf(const std::vector<Kv>& kvs, const std::vector<TensorSpec>& tensors) {
  std::vector<TensorInfoBytes> infos;
  std::string data;
  for (const TensorSpec& t : tensors) {
    infos.push_back({t.name, t.ne, t.type, data.size()});
    data += t.data;
    while (data.size() % 32) data += '\0';
  }
  return gguf_header(kvs, infos) + data;
}

// hidden 64, 2 heads of 32 (1 KV head), ff 256, 2 layers, vocab 258 (the byte tokenizer below).
struct Tiny {
  std::vector<Kv> kvs;
  std::vector<TensorSpec> tensors;
  std::map<std::string, std::vector<float>> hf_values;  // expected, HF layout
  std::string bytes() const { return write_gguf(kvs, tensors); }
  void drop_kv(const std::string& key) {
    std::erase_if(kvs, [&](const Kv& kv) { return kv.key == key; });
  }
  void set_kv(const Kv& kv) {
    drop_kv(kv.key);
    kvs.push_back(kv);
  }
  TensorSpec& tensor(const std::string& name) {
    for (auto& t : tensors) {
      if (t.name == name) return t;
    }
    throw std::runtime_error("no " + name);
  }
};

Tiny tiny_llama(bool untied) {
  Tiny m;
  Bytes tokens, types;
  int extra = 0;
  for (int b = 0; b < 256; ++b) {  // the 256 byte symbols of byte-level BPE, then "ab" and a control token
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    const int cp = printable ? b : 256 + extra++;
    std::string s;
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else {
      s += static_cast<char>(0xC0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    }
    tokens.str(s);
    types.put<int32_t>(1);
  }
  tokens.str("ab").str("<|end|>");
  types.put<int32_t>(1).put<int32_t>(3);
  m.kvs = {kv_str("general.architecture", "llama"),
           kv_str("general.name", "Tiny Llama"),
           kv_u32("llama.block_count", 2),
           kv_u32("llama.context_length", 128),
           kv_u32("llama.embedding_length", 64),
           kv_u32("llama.feed_forward_length", 256),
           kv_u32("llama.attention.head_count", 2),
           kv_u32("llama.attention.head_count_kv", 1),
           kv_f32("llama.rope.freq_base", 500000.0f),
           kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-6f),
           kv_u32("llama.rope.dimension_count", 32),
           kv_u32("llama.vocab_size", 258),
           kv_str("tokenizer.ggml.model", "gpt2"),
           kv_str("tokenizer.ggml.pre", "gpt2"),
           kv_array("tokenizer.ggml.tokens", 8, 258, tokens.b),
           kv_array("tokenizer.ggml.merges", 8, 1, Bytes().str("a b").b),
           kv_array("tokenizer.ggml.token_type", 5, 258, types.b),
           kv_u32("tokenizer.ggml.bos_token_id", 257),
           kv_u32("tokenizer.ggml.eos_token_id", 257),
           kv_bool("tokenizer.ggml.add_bos_token", false)};
  int seed = 0;
  // HF [out, in] stored as GGUF ne = [in, out]; q/k rows permuted like the converter does.
  auto add = [&](const std::string& gguf, int64_t out, int64_t in, uint32_t type, int64_t rope_heads = 0) {
    Encoded e = encode(type, out, in, ++seed);
    m.hf_values[*gguf_to_hf_name(gguf)] = e.values();
    if (rope_heads > 0) e.row_bytes = converter_permute(e.row_bytes, rope_heads);
    m.tensors.push_back({gguf, {static_cast<uint64_t>(in), static_cast<uint64_t>(out)}, type, e.bytes()});
  };
  auto add_norm = [&](const std::string& gguf) {
    Encoded e = encode(0, 1, 64, ++seed);
    m.hf_values[*gguf_to_hf_name(gguf)] = e.values();
    m.tensors.push_back({gguf, {64}, 0, e.bytes()});
  };
  add("token_embd.weight", 258, 64, 1);
  const uint32_t mix[2][7] = {{8, 2, 3, 30, 0, 1, 8}, {3, 3, 2, 8, 2, 3, 30}};
  for (int l = 0; l < 2; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    add_norm(p + "attn_norm.weight");
    add(p + "attn_q.weight", 64, 64, mix[l][0], 2);
    add(p + "attn_k.weight", 32, 64, mix[l][1], 1);
    add(p + "attn_v.weight", 32, 64, mix[l][2]);
    add(p + "attn_output.weight", 64, 64, mix[l][3]);
    add(p + "ffn_gate.weight", 256, 64, mix[l][4]);
    add(p + "ffn_up.weight", 256, 64, mix[l][5]);
    add(p + "ffn_down.weight", 64, 256, mix[l][6]);
    add_norm(p + "ffn_norm.weight");
  }
  add_norm("output_norm.weight");
  if (untied) add("output.weight", 258, 64, 8);
  return m;
}

TEST(GgufModel, ReadsConfigNamesShapesAndTensors) {
  for (bool untied : {false, true}) {
    const Tiny tiny = tiny_llama(untied);
    TempFile f(tiny.bytes());
    const GgufModel m = read_gguf_model(f.path());
    const config::ModelConfig& c = m.model;
    EXPECT_EQ(c.name, "Tiny Llama");
    EXPECT_EQ(c.vocab_size, 258);
    EXPECT_EQ(c.hidden_size, 64);
    EXPECT_EQ(c.intermediate_size, 256);
    EXPECT_EQ(c.num_layers, 2);
    EXPECT_EQ(c.num_heads, 2);
    EXPECT_EQ(c.num_kv_heads, 1);
    EXPECT_EQ(c.head_dim, 0);
    EXPECT_EQ(c.max_seq_len, 128);
    EXPECT_EQ(c.rope_theta, 500000.0);
    EXPECT_EQ(c.rms_norm_eps, 1e-6);  // the float32 1e-6f read back as the shortest decimal
    EXPECT_EQ(c.tie_embeddings, !untied);
    EXPECT_EQ(c.recursion.sharing, config::Sharing::kNone);
    EXPECT_EQ(c.router.kind, config::RouterKind::kNone);
    config::Config full;
    full.model = c;
    EXPECT_NO_THROW(config::validate(full));

    ASSERT_EQ(m.names.size(), untied ? 21u : 20u);
    EXPECT_EQ(m.names[0], "model.embed_tokens.weight");
    EXPECT_EQ(m.names[1], "model.layers.0.self_attn.q_proj.weight");
    EXPECT_EQ(m.names[7], "model.layers.0.mlp.down_proj.weight");
    EXPECT_EQ(m.names[9], "model.layers.0.post_attention_layernorm.weight");
    EXPECT_EQ(m.names[19], "model.norm.weight");
    if (untied) EXPECT_EQ(m.names[20], "lm_head.weight");
    EXPECT_EQ(m.shape("model.embed_tokens.weight"), (std::vector<int64_t>{258, 64}));
    EXPECT_EQ(m.shape("model.layers.1.self_attn.k_proj.weight"), (std::vector<int64_t>{32, 64}));
    EXPECT_EQ(m.shape("model.layers.1.mlp.down_proj.weight"), (std::vector<int64_t>{64, 256}));
    EXPECT_EQ(m.shape("model.norm.weight"), (std::vector<int64_t>{64}));
    EXPECT_EQ(m.tensor("model.layers.0.self_attn.q_proj.weight").rope_heads, 2);
    EXPECT_EQ(m.tensor("model.layers.0.self_attn.k_proj.weight").rope_heads, 1);
    EXPECT_EQ(m.tensor("model.layers.0.self_attn.v_proj.weight").rope_heads, 0);
    EXPECT_EQ(m.tensor("model.layers.1.self_attn.q_proj.weight").type_name, "Q4_1");

    ASSERT_EQ(tiny.hf_values.size(), m.names.size());
    for (const std::string& name : m.names) {
      const std::vector<float> got = read_gguf_tensor(m, name);
      EXPECT_EQ(got, tiny.hf_values.at(name)) << name;
      int64_t n = 1;
      for (int64_t d : m.shape(name)) n *= d;
      EXPECT_EQ(static_cast<int64_t>(got.size()), n) << name;
    }

    EXPECT_EQ(m.bos_id, 257);
    EXPECT_EQ(m.eos_id, 257);
    const Tokenizer tok = Tokenizer::from_json(m.tokenizer_json, "tokenizer.json");
    EXPECT_EQ(tok.vocab_size(), 258);
    EXPECT_EQ(tok.encode("ab<|end|>"), (std::vector<int32_t>{256, 257}));
  }
}

TEST(GgufModel, DefaultsAndExplicitHeadDim) {
  Tiny tiny = tiny_llama(false);
  tiny.drop_kv("llama.vocab_size");  // falls back to the token count
  tiny.drop_kv("llama.attention.head_count_kv");
  tiny.drop_kv("llama.rope.freq_base");
  tiny.drop_kv("llama.rope.dimension_count");
  tiny.drop_kv("general.name");
  for (const char* k : {"blk.0.attn_k.weight", "blk.0.attn_v.weight", "blk.1.attn_k.weight", "blk.1.attn_v.weight"}) {
    tiny.tensor(k) = {k, {64, 64}, 0, encode(0, 64, 64, 3).bytes()};  // MHA now: 2 KV heads
  }
  TempFile f(tiny.bytes());
  const GgufModel m = read_gguf_model(f.path());
  EXPECT_EQ(m.model.vocab_size, 258);
  EXPECT_EQ(m.model.num_kv_heads, 2);
  EXPECT_EQ(m.model.rope_theta, 10000.0);
  EXPECT_EQ(m.model.name, fs::path(f.path()).stem().string());
  EXPECT_EQ(m.tensor("model.layers.0.self_attn.k_proj.weight").rope_heads, 2);

  // An explicit head dim other than hidden / heads (2 heads of 48 over hidden 64).
  Tiny wide = tiny_llama(false);
  wide.set_kv(kv_u32("llama.attention.key_length", 48));
  wide.set_kv(kv_u32("llama.attention.value_length", 48));
  wide.set_kv(kv_u32("llama.rope.dimension_count", 48));
  for (int l = 0; l < 2; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    wide.tensor(p + "attn_q.weight") = {p + "attn_q.weight", {64, 96}, 0, encode(0, 96, 64, 1).bytes()};
    wide.tensor(p + "attn_k.weight") = {p + "attn_k.weight", {64, 48}, 0, encode(0, 48, 64, 1).bytes()};
    wide.tensor(p + "attn_v.weight") = {p + "attn_v.weight", {64, 48}, 0, encode(0, 48, 64, 1).bytes()};
    wide.tensor(p + "attn_output.weight") = {p + "attn_output.weight", {96, 64}, 8, encode(8, 64, 96, 1).bytes()};
  }
  TempFile w(wide.bytes());
  const GgufModel mw = read_gguf_model(w.path());
  EXPECT_EQ(mw.model.head_dim, 48);
  EXPECT_EQ(mw.shape("model.layers.0.self_attn.o_proj.weight"), (std::vector<int64_t>{64, 96}));
}

// read_gguf_model's error for `bytes`, which must start with the file name.
std::string model_error(const std::string& bytes, const std::function<void(const GgufModel&)>& then = {}) {
  TempFile f(bytes);
  const std::string e = expect_error([&] {
    const GgufModel m = read_gguf_model(f.path());
    if (then) then(m);
  });
  EXPECT_EQ(e.rfind(f.path() + ": ", 0), 0u) << e;
  return e;
}

TEST(GgufModelErrors, TensorsNameFileAndTensor) {
  Tiny t = tiny_llama(false);
  t.tensor("blk.1.ffn_down.weight").type = 14;  // Q6_K: 256 values in 210 bytes
  t.tensor("blk.1.ffn_down.weight").data = std::string(64 * 210, '\0');
  expect_contains(model_error(t.bytes()),
                  "tensor 'blk.1.ffn_down.weight': unsupported quantisation Q6_K; supported: F32, F16, BF16, Q8_0");
  t = tiny_llama(false);
  t.tensor("blk.0.attn_v.weight").type = 6;  // Q5_0
  t.tensor("blk.0.attn_v.weight").data = std::string(32 * 2 * 22, '\0');
  expect_contains(model_error(t.bytes()), "tensor 'blk.0.attn_v.weight': unsupported quantisation Q5_0");

  t = tiny_llama(true);
  const std::string full = t.bytes();  // the last tensor, output.weight, loses its last bytes (and the padding)
  const std::string cut = model_error(full.substr(0, full.size() - 40));
  expect_contains(cut, "tensor 'output.weight': data [");
  expect_contains(cut, "lies outside the data section");

  t = tiny_llama(false);
  std::erase_if(t.tensors, [](const TensorSpec& s) { return s.name == "blk.1.ffn_up.weight"; });
  expect_contains(model_error(t.bytes()), ": tensor 'blk.1.ffn_up.weight' (model.layers.1.mlp.up_proj.weight) is missing");

  t = tiny_llama(false);
  t.tensors.push_back({"rope_freqs.weight", {16}, 0, std::string(64, '\0')});
  expect_contains(model_error(t.bytes()), "tensor 'rope_freqs.weight' is unexpected (RoPE frequency factors");
  t = tiny_llama(false);
  t.tensors.push_back({"blk.2.attn_norm.weight", {64}, 0, std::string(256, '\0')});
  expect_contains(model_error(t.bytes()), "tensor 'blk.2.attn_norm.weight' is unexpected (model.layers.2.input_layernorm");
  t = tiny_llama(false);
  t.tensors.push_back({"foo", {64}, 0, std::string(256, '\0')});
  expect_contains(model_error(t.bytes()), "tensor 'foo' is unexpected (not part of a Llama model)");

  t = tiny_llama(false);
  t.tensor("blk.0.attn_k.weight").ne = {32, 64};  // transposed
  expect_contains(model_error(t.bytes()),
                  "tensor 'blk.0.attn_k.weight' (model.layers.0.self_attn.k_proj.weight): GGUF shape [32, 64] does not "
                  "match the config (expected [64, 32], i.e. HF [32, 64])");

  t = tiny_llama(false);  // a scale of +inf in the first Q8_0 block of blk.0.attn_q
  t.tensor("blk.0.attn_q.weight").data.replace(0, 2, "\x00\x7c", 2);
  expect_contains(model_error(t.bytes(), [](const GgufModel& m) { read_gguf_tensor(m, "model.layers.0.self_attn.q_proj.weight"); }),
                  "tensor 'blk.0.attn_q.weight': value 0 is not finite");
  expect_contains(model_error(tiny_llama(false).bytes(), [](const GgufModel& m) { m.shape("lm_head.weight"); }),
                  "no tensor 'lm_head.weight' in this model (GGUF name 'output.weight')");
  expect_contains(model_error(tiny_llama(false).bytes(), [](const GgufModel& m) { read_gguf_tensor(m, "x"); }),
                  "no tensor 'x' in this model (not a Llama tensor name)");
  expect_contains(expect_error([] { read_gguf_model("/nonexistent/m.gguf"); }), "/nonexistent/m.gguf");
}

TEST(GgufModelErrors, MetadataNamesFileAndKey) {
  auto err = [](const std::function<void(Tiny&)>& edit) {
    Tiny t = tiny_llama(false);
    edit(t);
    return model_error(t.bytes());
  };
  expect_contains(err([](Tiny& t) { t.set_kv(kv_str("general.architecture", "qwen2")); }),
                  "metadata 'general.architecture' is 'qwen2'; only 'llama'");
  expect_contains(err([](Tiny& t) { t.drop_kv("general.architecture"); }), "metadata 'general.architecture' is missing");
  expect_contains(err([](Tiny& t) { t.drop_kv("llama.embedding_length"); }), "metadata 'llama.embedding_length' is missing");
  expect_contains(err([](Tiny& t) { t.set_kv(kv_u32("llama.block_count", 0)); }), "'llama.block_count': 0 must be positive");
  expect_contains(err([](Tiny& t) { t.set_kv({"llama.block_count", 10, Bytes().put<uint64_t>(uint64_t{1} << 40).b}); }),
                  "'llama.block_count': 1099511627776 is implausibly large");
  expect_contains(err([](Tiny& t) {
                    t.set_kv(kv_u32("llama.vocab_size", 200));
                    t.tensor("token_embd.weight") = {"token_embd.weight", {64, 200}, 0, encode(0, 200, 64, 1).bytes()};
                  }),
                  "the tokenizer has 258 tokens but the model's vocabulary only 200");
  expect_contains(err([](Tiny& t) { t.set_kv(kv_str("llama.context_length", "x")); }),
                  "metadata 'llama.context_length': expected an integer");
  expect_contains(err([](Tiny& t) { t.set_kv(kv_u32("llama.attention.head_count_kv", 3)); }),
                  "'llama.attention.head_count_kv': 3 does not divide the 2 attention heads");
  expect_contains(err([](Tiny& t) { t.set_kv(kv_u32("llama.rope.dimension_count", 16)); }),
                  "'llama.rope.dimension_count' 16 differs from the head dimension 32 (partial rotary");
  expect_contains(err([](Tiny& t) { t.set_kv(kv_str("llama.rope.scaling.type", "linear")); }),
                  "'llama.rope.scaling.type' is 'linear'; RoPE scaling is not supported");
  expect_contains(err([](Tiny& t) { t.set_kv(kv_u32("llama.expert_count", 8)); }),
                  "'llama.expert_count' is 8; mixture-of-experts models are not supported");
  expect_contains(err([](Tiny& t) { t.set_kv(kv_f32("llama.attention.layer_norm_rms_epsilon", -1.0f)); }),
                  "'llama.attention.layer_norm_rms_epsilon': expected a positive number");
  expect_contains(err([](Tiny& t) { t.set_kv(kv_u32("llama.vocab_size", 300)); }),
                  "tensor 'token_embd.weight' (model.embed_tokens.weight): GGUF shape [64, 258] does not match");
  expect_contains(err([](Tiny& t) { t.set_kv(kv_str("tokenizer.ggml.model", "llama")); }),
                  "'tokenizer.ggml.model' is 'llama'; only 'gpt2'");
}

// ---- The real SmolLM2 GGUF, when available -----------------------------------------------------

TEST(GgufSmolLM2, DequantisesAndMatchesThePythonGgufPackage) {
  const std::string path = smollm2_gguf();
  if (path.empty()) GTEST_SKIP() << "no SmolLM2 GGUF (set MOR_SMOLLM2_GGUF or run tools/fetch_smollm2.sh)";
  const GgufModel m = read_gguf_model(path);
  const config::ModelConfig& c = m.model;
  EXPECT_EQ(c.vocab_size, 49152);
  EXPECT_EQ(c.hidden_size, 576);
  EXPECT_EQ(c.intermediate_size, 1536);
  EXPECT_EQ(c.num_layers, 30);
  EXPECT_EQ(c.num_heads, 9);
  EXPECT_EQ(c.num_kv_heads, 3);
  EXPECT_EQ(c.resolved_head_dim(), 64);
  EXPECT_EQ(c.max_seq_len, 8192);
  EXPECT_EQ(c.rope_theta, 100000.0);
  EXPECT_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_TRUE(c.tie_embeddings);
  config::Config full;
  full.model = c;
  EXPECT_NO_THROW(config::validate(full));
  EXPECT_EQ(m.names.size(), 272u);
  EXPECT_EQ(m.bos_id, 1);
  EXPECT_EQ(m.eos_id, 2);

  std::ifstream in(fs::path(MOR_SOURCE_DIR) / "tests" / "fixtures" / "gguf" / "smollm2_ref.json");
  ASSERT_TRUE(in) << "missing tests/fixtures/gguf/smollm2_ref.json";
  const nlohmann::json ref = nlohmann::json::parse(in);
  std::map<std::string, int> types;
  size_t checked = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (const std::string& name : m.names) {
    const std::vector<float> v = read_gguf_tensor(m, name);
    ++types[m.tensor(name).type_name];
    if (!ref["tensors"].contains(name)) continue;
    const nlohmann::json& r = ref["tensors"][name];
    ++checked;
    EXPECT_EQ(m.shape(name), r["shape"].get<std::vector<int64_t>>()) << name;
    EXPECT_EQ(m.tensor(name).type_name, r["type"].get<std::string>()) << name;
    for (const auto& [index, value] : r["samples"].get<std::vector<std::pair<int64_t, float>>>()) {
      EXPECT_EQ(v[static_cast<size_t>(index)], value) << name << "[" << index << "]";
    }
    double sum = 0, weighted = 0;
    for (size_t i = 0; i < v.size(); ++i) {
      sum += v[i];
      weighted += v[i] * static_cast<double>(i % 1009 + 1);
    }
    EXPECT_NEAR(sum, r["sum"].get<double>(), 1e-9 * r["abs_sum"].get<double>() + 1e-9) << name;
    EXPECT_NEAR(weighted, r["weighted_sum"].get<double>(), 1e-9 * 1009 * r["abs_sum"].get<double>() + 1e-9) << name;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(checked, ref["tensors"].size());
  EXPECT_EQ(types, (std::map<std::string, int>{{"F32", 61}, {"Q4_1", 210}, {"Q8_0", 1}}));
  std::printf("SmolLM2: %zu tensors dequantised in %.2f s (F32 %d, Q4_1 %d, Q8_0 %d)\n", m.names.size(), seconds,
              types["F32"], types["Q4_1"], types["Q8_0"]);
}

}  // namespace
}  // namespace mor::io
