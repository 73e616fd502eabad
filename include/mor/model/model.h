// The MoR model: a Llama-style decoder whose shared block is applied up to N_r times, with
// expert-choice or token-choice routing, recursion-wise or shared KV, on a single device.
//
// Parameters are plain ATen tensors (requires_grad) held in one ordered list; layers that share a
// parameter set use the very same tensors, so gradients accumulate over recursions. Tokens active
// at a recursion are compacted (gathered with their original positions), pushed through the block
// and scattered back: compute is proportional to the active fraction in both KV modes.
//
// Shapes: tokens [B, T] int64; logits [B, T, V] in the model dtype.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "mor/config/config.h"
#include "mor/model/attention.h"
#include "mor/model/decode.h"
#include "mor/model/layout.h"

namespace mor::model {

// Parameter roles, for optimizer groups and sharding.
enum class ParamRole { kEmbedding, kLmHead, kNorm, kMatmul, kRouter, kAuxRouter };

struct NamedParam {
  std::string name;  // Hugging-Face-like: model.layers.3.self_attn.q_proj.weight
  at::Tensor tensor;
  ParamRole role;
};

// A parameter unit: parameters a sharding trainer gathers, frees and reduces together (an FSDP
// unit). Units, in forward order: 0 "root" (embedding, final norm, LM head), then one unit per
// distinct parameter set before the block ("layers.P", with that set's unrolled norms), one unit
// "block" for the whole shared block (all its parameter sets and unrolled norms, the routers and
// auxiliary routers: gathered once per forward and kept for every recursion), then one unit per
// parameter set after the block. Every parameter belongs to exactly one unit.
struct ParamUnit {
  std::string name;
  std::vector<int64_t> params;  // indices into MoRModel::parameters(), ascending
};

// Called by forward() around each use of a unit (the model itself knows nothing about sharding):
// before(u) right before unit u's parameters are first read, after(u, output) once its output is
// computed; forward continues with the tensor after() returns (a sharding trainer may return an
// autograd view of `output` carrying a pre-backward hook). Root: before(0) first, after(0, logits)
// last. A unit used several times in a row (sequence sharing) is entered once per use.
class UnitHooks {
 public:
  virtual ~UnitHooks() = default;
  virtual void before(int64_t unit) = 0;
  virtual at::Tensor after(int64_t unit, const at::Tensor& output) = 0;
};

struct ForwardOptions {
  // Training: top-k expert-choice routing, auxiliary losses, capacity and balance warm-up.
  // Off by default: a plain forward() is inference with causal routing.
  bool training = false;
  // Expert-choice routing outside training; unset: model.inference_routing (causal by default,
  // top-k only when asked for by name). Ignored while training (always top-k). Token-choice is
  // causal by construction.
  std::optional<config::RoutingMode> routing;
  int64_t step = 0;  // optimizer step, for warm-ups
  // Document masking: [B, T] document ids (contiguous runs; see document_ids()). Tokens attend only
  // within their run and RoPE positions restart at 0 at each run's first token. Undefined: off.
  at::Tensor documents;
  UnitHooks* hooks = nullptr;  // sharded training; null: parameters are always present
  // Activation checkpointing: each decoder layer keeps only its input and recomputes its
  // activations during backward (same gradients, less memory). Layers that write or read the
  // shared recursion-0 K/V (kv_mode share, inside the block) are not recomputed. Training only.
  bool checkpoint_layers = false;
};

// Document ids for packed rows: 0 at each row's start, +1 after every `eos_id` token (the EOS ends
// its document). tokens [B, T] integer -> [B, T] int64.
at::Tensor document_ids(const at::Tensor& tokens, int64_t eos_id);

// What one recursion did, for tests and routing statistics.
struct RecursionStats {
  int64_t candidates = 0;     // tokens the router scored (all rows)
  int64_t active = 0;         // tokens pushed through the shared block (all rows)
  int64_t computed_rows = 0;  // rows the block computed, padding included (B * padded length)
};

struct ForwardOutput {
  at::Tensor logits;  // [B, T, V]
  at::Tensor depth;   // [B, T] int64: recursions each token received (0..N_r); zeros if none
  std::vector<RecursionStats> recursions;
  // Auxiliary terms, means over this micro-batch; undefined when not applicable.
  at::Tensor router_bce;       // expert-choice, aux: loss — sum over recursions of mean BCE
  at::Tensor aux_router_bce;   // expert-choice, aux: router — BCE of the detached auxiliary router
  at::Tensor balance_loss;     // token-choice, balancing: loss — sum_i P_i f_i
  at::Tensor z_loss;           // router z-loss (when z_loss_coeff > 0)
  at::Tensor router_accuracy;  // expert-choice training: threshold decision agrees with top-k
  at::Tensor depth_counts;     // token-choice: [N_r] float64 tokens per chosen depth (no grad)
};

struct LossOptions {
  // Target tokens over the whole optimizer step (accumulation window x ranks); 0: this batch's.
  // The LM loss is sum CE / normalizer and each auxiliary mean is weighted by
  // (this batch's targets / normalizer), so summing micro-batch gradients over the window and
  // the ranks gives the same effective coefficients at any accumulation or world size.
  double normalizer = 0.0;
};

struct LossTerms {
  at::Tensor total;    // scalar to backpropagate
  at::Tensor lm;       // sum CE / normalizer
  at::Tensor aux;      // weighted auxiliary terms (coefficients applied), 0-dim
  int64_t targets = 0; // target tokens in this micro-batch (labels != -100)
};

class MoRModel {
 public:
  // Builds and initialises (N(0, init_std), norms 1) from model.seed on the CPU in fp32, then
  // moves to `device` and `dtype`, so initial values do not depend on the device.
  explicit MoRModel(const config::ModelConfig& model, at::ScalarType dtype = at::kFloat,
                    at::Device device = at::kCPU);

  const config::ModelConfig& config() const { return config_; }
  const Layout& layout() const { return layout_; }
  // Where incremental decoding stores K/V (cache_layout(config()), computed once).
  const CacheLayout& cache_slots() const { return cache_slots_; }
  at::ScalarType dtype() const { return dtype_; }
  at::Device device() const { return device_; }

  ForwardOutput forward(const at::Tensor& tokens, const ForwardOptions& options = {}) const;

  // Incremental inference over an external K/V cache (model/decode.h): the new tokens of every
  // chunk, the same logits and depths as forward() with causal routing on the whole sequences.
  // Inference only (no autograd), always with causal routing. Throws mor::Error for positions past
  // max_seq_len or token ids outside the vocabulary.
  DecodeOutput forward_cached(const std::vector<DecodeChunk>& chunks, KvCache& cache,
                              const DecodeOptions& options = {}) const;
  // The stages of forward_cached (model/decode.h, FlightChunk): enter = embedding + prelude layers
  // (and the token-choice router); recursion = one recursion of every given chunk that is in the
  // block, each at its own next_r, all chunks' active tokens in one batched call per block layer;
  // exit = coda layers, final norm and LM head for chunks that left the block: logits [rows, V]
  // (every token, or each chunk's last with last_only), chunk order.
  void decode_enter(const std::vector<FlightChunk*>& chunks, KvCache& cache) const;
  void decode_recursion(const std::vector<FlightChunk*>& chunks, KvCache& cache) const;
  at::Tensor decode_exit(const std::vector<FlightChunk*>& chunks, KvCache& cache, bool last_only) const;

  // targets [B, T] int64 aligned with the logits (already shifted); -100 is ignored.
  LossTerms loss(const ForwardOutput& out, const at::Tensor& targets,
                 const LossOptions& options = {}) const;

  // Every distinct parameter tensor once, in a fixed order.
  const std::vector<NamedParam>& parameters() const { return params_; }
  int64_t num_parameters() const;
  // The parameter units (see ParamUnit), a function of the configuration only.
  const std::vector<ParamUnit>& param_units() const { return units_; }
  // Zeroes (undefines) every parameter's gradient.
  void zero_grad();

  // Loss-free balancing (token-choice): bias += u * sign(mean(c) - c) with c = counts / sum.
  // `depth_counts` are ForwardOutput::depth_counts summed over micro-batches and ranks.
  void apply_balance_update(const at::Tensor& depth_counts);
  const at::Tensor& balance_bias() const { return balance_bias_; }

  void set_attention_backend(std::shared_ptr<AttentionBackend> backend);
  const AttentionBackend& attention_backend() const { return *attention_; }

  struct LayerParams;   // one decoder-layer parameter set (defined in model.cpp)
  struct DecodeGroup;   // rows of one in-flight chunk at one unrolled layer (decode.cpp)
  struct RouterParams;  // one router network

 private:
  void build_units();
  // One decoder layer over the rows of several in-flight chunks (decode.cpp); x [M, d] holds the
  // groups' rows in order. Groups may sit at different unrolled layers of the same parameter set.
  at::Tensor decode_layer(const at::Tensor& x, const std::vector<DecodeGroup>& groups, KvCache& cache) const;

  config::ModelConfig config_;
  Layout layout_;
  CacheLayout cache_slots_;
  at::ScalarType dtype_;
  at::Device device_;
  std::vector<NamedParam> params_;
  std::vector<ParamUnit> units_;
  std::vector<int64_t> unit_of_set_;  // parameter set -> unit
  int64_t block_unit_ = -1;
  std::vector<std::shared_ptr<LayerParams>> layers_;      // one per parameter set
  std::vector<std::pair<at::Tensor, at::Tensor>> norms_;  // per unrolled layer (input, post)
  std::vector<std::shared_ptr<RouterParams>> routers_;    // EC: one per recursion; TC: one
  std::vector<std::shared_ptr<RouterParams>> aux_routers_;
  at::Tensor embed_, lm_head_, final_norm_;
  at::Tensor balance_bias_;  // [N_r] float32, token-choice loss-free balancing
  std::shared_ptr<AttentionBackend> attention_;
};

}  // namespace mor::model
