// A Llama-family model stored in a GGUF file (as written by llama.cpp's convert_hf_to_gguf.py and
// llama-quantize), read back in Hugging Face terms, torch-free:
//   - the config: llama.* metadata -> config::ModelConfig (vanilla; general.architecture "llama");
//   - the tensors: GGUF names -> HF names (token_embd.weight -> model.embed_tokens.weight,
//     blk.N.attn_q.weight -> model.layers.N.self_attn.q_proj.weight, ...), HF shapes ([out, in]; GGUF
//     stores ne[0] first, i.e. [in, out], with the same row-major bytes), dequantised to float32 from
//     F32, F16, BF16, Q8_0, Q4_0 or Q4_1, one tensor at a time from a memory map (an importer can
//     stream); the rows of q_proj / k_proj are put back from llama.cpp's RoPE layout into HF's
//     rotate-half layout (see undo_gguf_rope_permutation);
//   - the tokenizer: tokenizer_from_gguf(...).to_json() plus the BOS/EOS ids.
// Every failure is a mor::Error naming the file and, where one is involved, the tensor
// ("m.gguf: tensor 'blk.3.ffn_down.weight': unsupported quantisation Q6_K; supported: ...").
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mor/config/config.h"
#include "mor/io/gguf.h"

namespace mor::core {
class MappedFile;
}

namespace mor::io {

// ---- Dequantisation ----------------------------------------------------------------------------

// The ggml types dequantise() reads: F32 (0), F16 (1), Q4_0 (2), Q4_1 (3), Q8_0 (8), BF16 (30).
bool gguf_type_supported(uint32_t ggml_type);
// "F32, F16, BF16, Q8_0, Q4_0, Q4_1"
const char* gguf_supported_types();

// Dequantises `elements` values of ggml type `ggml_type` from `src` (exactly `src_bytes` bytes) into
// `dst`. Block layouts (little-endian, fp16 = IEEE half):
//   Q8_0 (34 bytes / 32 values): fp16 d, int8 q[32];              x[j] = q[j] * d
//   Q4_0 (18 bytes / 32 values): fp16 d, u8 qs[16];               x[j] = ((qs[j] & 15) - 8) * d,
//                                                                 x[j+16] = ((qs[j] >> 4) - 8) * d
//   Q4_1 (20 bytes / 32 values): fp16 d, fp16 m, u8 qs[16];       x[j] = (qs[j] & 15) * d + m,
//                                                                 x[j+16] = (qs[j] >> 4) * d + m
// `where` ("file: tensor 'x'") prefixes the errors: an unsupported type, a count that is not a
// multiple of the block size, a byte count that does not match.
void dequantize(uint32_t ggml_type, const std::byte* src, uint64_t src_bytes, float* dst, uint64_t elements,
                const std::string& where);

// IEEE binary16 and bfloat16 bit patterns to float (subnormals, infinities and NaNs included).
float fp16_to_float(uint16_t bits);
float bf16_to_float(uint16_t bits);

// ---- Names and the q/k row permutation ---------------------------------------------------------

// GGUF <-> HF tensor names of the Llama architecture; nullopt for names outside the mapping.
std::optional<std::string> gguf_to_hf_name(std::string_view gguf_name);
std::optional<std::string> hf_to_gguf_name(std::string_view hf_name);

// convert_hf_to_gguf.py (LlamaModel.permute) stores q_proj with n_head = head_count and k_proj with
// n_head = head_count_kv as w.reshape(n_head, 2, rows/n_head/2, cols).swapaxes(1, 2): within each
// head, HF row j*(d/2) + i (rotate-half pairs i and i + d/2) becomes row 2*i + j (adjacent pairs,
// ggml's RoPE). These undo / apply it in place on a row-major [rows, cols] matrix; rows must be a
// multiple of 2 * n_head.
void undo_gguf_rope_permutation(std::vector<float>& w, int64_t rows, int64_t cols, int64_t n_head);
void apply_gguf_rope_permutation(std::vector<float>& w, int64_t rows, int64_t cols, int64_t n_head);

// ---- The model ---------------------------------------------------------------------------------

struct GgufModelTensor {
  std::string hf_name;            // "model.layers.0.self_attn.q_proj.weight"
  std::string gguf_name;          // "blk.0.attn_q.weight"
  std::vector<int64_t> shape;     // HF order: [out, in] for weights, [hidden] for norms
  std::string type_name;          // ggml type of the stored data ("Q4_1")
  int64_t rope_heads = 0;         // > 0: rows un-permuted for this many heads (q_proj, k_proj)
  const GgufTensorInfo* info = nullptr;  // into GgufModel::file
};

struct GgufModel {
  std::string path;
  config::ModelConfig model;               // vanilla Llama config (recursion/router defaults)
  std::vector<std::string> names;          // HF names in HF state_dict order
  std::vector<GgufModelTensor> tensors;    // same order as `names`
  std::string tokenizer_json;              // tokenizer_from_gguf(file).to_json()
  std::optional<int32_t> bos_id, eos_id;   // tokenizer.ggml.bos_token_id / eos_token_id
  std::shared_ptr<const GgufFile> file;    // metadata and tensor infos
  std::shared_ptr<const core::MappedFile> map;  // the file's bytes (read lazily by the OS)

  // The entry of an HF name; a mor::Error naming the file and the tensor when there is none.
  const GgufModelTensor& tensor(std::string_view hf_name) const;
  const std::vector<int64_t>& shape(std::string_view hf_name) const { return tensor(hf_name).shape; }
};

// Maps `path`, parses it, checks the architecture, builds the config, checks every tensor (all
// expected ones present, none extra, shapes matching the config, types supported) and builds the
// tokenizer. Nothing is dequantised yet.
GgufModel read_gguf_model(const std::string& path);

// The llama.* metadata as a ModelConfig (used by read_gguf_model; `has_output` = an output.weight
// tensor exists, i.e. untied embeddings).
config::ModelConfig gguf_model_config(const GgufFile& file, bool has_output);

// One tensor as float32 in HF layout (row-major in the order of shape(hf_name)).
std::vector<float> read_gguf_tensor(const GgufModel& model, std::string_view hf_name);

}  // namespace mor::io
