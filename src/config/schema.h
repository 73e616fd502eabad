// Private to src/config: the one description of every configuration key.
//
// for_each_field() lists each key once (path, member reference, allowed range or enum subset,
// one-line description). Loading, unknown-key detection, validation of ranges, dump_yaml(),
// key_reference() and docs/configuration.md are all derived from it. Invariant: the listing keeps
// every section contiguous, so the dumped YAML never reopens a section.
#pragma once

#include <array>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "mor/config/config.h"

namespace mor::config::schema {

inline constexpr double kInf = std::numeric_limits<double>::infinity();

// Allowed numeric interval; an infinite end is unbounded.
struct Range {
  double lo = -kInf;
  double hi = kInf;
  bool lo_open = false;
  bool hi_open = false;

  bool bounded() const { return lo != -kInf || hi != kInf; }
  bool contains(double v) const;
  // "> 0", ">= -1", "in [0, 1)".
  std::string describe() const;
};

inline constexpr Range kAnyValue{};
inline constexpr Range kPositive{0.0, kInf, true, false};
inline constexpr Range kNonNegative{0.0, kInf, false, false};
inline constexpr Range kAtLeastOne{1.0, kInf, false, false};
inline constexpr Range kUnitClosed{0.0, 1.0, false, false};
inline constexpr Range kUnitHalfOpen{0.0, 1.0, false, true};

// What the schema says about one key besides its type.
struct Meta {
  Range range;
  const char* description;
  // Enum keys only: the subset of names allowed ("sigmoid|tanh"); nullptr: every name.
  const char* allowed = nullptr;
};

// YAML spellings of each enum, indexed by the enumerator's value.
template <class E>
struct EnumNames;
template <>
struct EnumNames<Sharing> {
  static constexpr std::array<const char*, 5> kNames = {"none", "cycle", "sequence", "middle_cycle",
                                                         "middle_sequence"};
};
template <>
struct EnumNames<RouterKind> {
  static constexpr std::array<const char*, 3> kNames = {"none", "expert", "token"};
};
template <>
struct EnumNames<RouterArch> {
  static constexpr std::array<const char*, 2> kNames = {"linear", "mlp"};
};
template <>
struct EnumNames<KvMode> {
  static constexpr std::array<const char*, 2> kNames = {"recursion", "share"};
};
template <>
struct EnumNames<RoutingMode> {
  static constexpr std::array<const char*, 2> kNames = {"causal", "topk"};
};
template <>
struct EnumNames<GateFunc> {
  static constexpr std::array<const char*, 3> kNames = {"sigmoid", "tanh", "softmax"};
};
template <>
struct EnumNames<ExpertAux> {
  static constexpr std::array<const char*, 2> kNames = {"loss", "router"};
};
template <>
struct EnumNames<Balancing> {
  static constexpr std::array<const char*, 3> kNames = {"none", "loss", "loss_free"};
};
template <>
struct EnumNames<LrSchedule> {
  static constexpr std::array<const char*, 4> kNames = {"wsd", "cosine", "linear", "constant"};
};
template <>
struct EnumNames<Precision> {
  static constexpr std::array<const char*, 3> kNames = {"auto", "fp32", "bf16"};
};
template <>
struct EnumNames<ShardingMode> {
  static constexpr std::array<const char*, 3> kNames = {"none", "zero2", "zero3"};
};

// Calls v(key_path, member, meta) for every key, in dump order. C is Config or const Config.
template <class C, class V>
void for_each_field(C& c, V&& v) {
  auto& m = c.model;
  v("model.name", m.name, Meta{kAnyValue, "free-text model name, recorded in outputs"});
  v("model.vocab_size", m.vocab_size, Meta{kPositive, "vocabulary size V"});
  v("model.hidden_size", m.hidden_size, Meta{kPositive, "model width d"});
  v("model.intermediate_size", m.intermediate_size, Meta{kPositive, "SwiGLU inner width ff"});
  v("model.num_layers", m.num_layers,
    Meta{kPositive, "unrolled depth L, never changed silently (must split by the sharing)"});
  v("model.num_heads", m.num_heads, Meta{kPositive, "query heads"});
  v("model.num_kv_heads", m.num_kv_heads, Meta{kPositive, "key/value heads (GQA), dividing num_heads"});
  v("model.head_dim", m.head_dim,
    Meta{kNonNegative, "per-head size, even for RoPE (0: hidden_size / num_heads)"});
  v("model.max_seq_len", m.max_seq_len, Meta{kPositive, "longest sequence (RoPE table length)"});
  v("model.rope_theta", m.rope_theta, Meta{kPositive, "RoPE base theta"});
  v("model.rms_norm_eps", m.rms_norm_eps, Meta{kPositive, "RMSNorm epsilon"});
  v("model.tie_embeddings", m.tie_embeddings, Meta{kAnyValue, "LM head reuses the token embedding"});
  v("model.init_std", m.init_std, Meta{kPositive, "std of the N(0, std) init of linear/embedding weights"});
  v("model.seed", m.seed, Meta{kAnyValue, "parameter initialisation seed"});
  v("model.kv_mode", m.kv_mode,
    Meta{kAnyValue, "KV at training/prefill: per-recursion caches, or first-recursion K/V shared"});
  v("model.inference_routing", m.inference_routing,
    Meta{kAnyValue, "MoR routing at inference: causal decisions, or training top-k (non-causal)"});

  auto& rec = m.recursion;
  v("model.recursion.sharing", rec.sharing, Meta{kAnyValue, "parameter sharing of the unrolled stack"});
  v("model.recursion.num_recursions", rec.num_recursions,
    Meta{kAtLeastOne, "N_r: passes through the shared block (1 with sharing none)"});
  v("model.recursion.share_norms", rec.share_norms,
    Meta{kAnyValue, "shared layers also share their RMSNorm weights"});

  auto& router = m.router;
  v("model.router.kind", router.kind,
    Meta{kAnyValue, "MoR router: none, expert-choice or token-choice (needs cycle/middle_cycle)"});
  v("model.router.arch", router.arch, Meta{kAnyValue, "router network: linear, or MLP d->2d->GELU->out"});
  v("model.router.temperature", router.temperature, Meta{kPositive, "router input is h / temperature"});
  v("model.router.z_loss_coeff", router.z_loss_coeff,
    Meta{kNonNegative, "router z-loss coefficient (0: off)"});

  auto& ex = router.expert;
  v("model.router.expert.func", ex.func,
    Meta{kAnyValue, "expert-choice gate activation", "sigmoid|tanh"});
  v("model.router.expert.alpha", ex.alpha, Meta{kPositive, "gate scale: g = alpha * func(z)"});
  v("model.router.expert.capacities", ex.capacities,
    Meta{kAnyValue, "token fraction kept per recursion, in (0, 1], non-increasing; []: (N_r - r) / N_r"});
  v("model.router.expert.capacity_warmup_steps", ex.capacity_warmup_steps,
    Meta{kNonNegative, "optimizer steps of cosine warm-up from capacity 1 to c_r"});
  v("model.router.expert.aux", ex.aux,
    Meta{kAnyValue, "auxiliary objective: BCE on the router, or a separate causal router"});
  v("model.router.expert.aux_coeff", ex.aux_coeff, Meta{kNonNegative, "coefficient of the BCE auxiliary loss"});
  v("model.router.expert.threshold", ex.threshold,
    Meta{kAnyValue, "causal routing: continue when func(z) >= threshold; (0, 1) sigmoid, (-1, 1) tanh"});

  auto& tok = router.token;
  v("model.router.token.func", tok.func,
    Meta{kAnyValue, "token-choice gate activation", "softmax|sigmoid"});
  v("model.router.token.alpha", tok.alpha, Meta{kPositive, "gate scale: g = alpha * func(z)"});
  v("model.router.token.balancing", tok.balancing,
    Meta{kAnyValue, "load balancing: none, auxiliary loss, or loss-free bias"});
  v("model.router.token.balance_coeff", tok.balance_coeff,
    Meta{kNonNegative, "coefficient of the balancing loss"});
  v("model.router.token.bias_update_rate", tok.bias_update_rate,
    Meta{kNonNegative, "loss-free balancing step u: b_i += u * sign(mean(c) - c_i)"});
  v("model.router.token.balance_warmup_steps", tok.balance_warmup_steps,
    Meta{kNonNegative, "optimizer steps during which every token takes the full depth"});

  auto& t = c.train;
  v("train.out_dir", t.out_dir, Meta{kAnyValue, "run directory (checkpoints, metrics, resolved config)"});
  v("train.seed", t.seed, Meta{kAnyValue, "training RNG seed (data order, sampling)"});
  v("train.seq_len", t.seq_len, Meta{kNonNegative, "tokens per training sequence; 0: model.max_seq_len"});
  v("train.micro_batch_size", t.micro_batch_size, Meta{kPositive, "sequences per rank per forward"});
  v("train.global_batch_size", t.global_batch_size,
    Meta{kPositive, "sequences per optimizer step over ranks and accumulation (a multiple of micro_batch_size)"});
  v("train.max_steps", t.max_steps, Meta{kNonNegative, "budget in optimizer steps (0: unset)"});
  v("train.max_tokens", t.max_tokens, Meta{kNonNegative, "budget in training tokens (0: unset)"});
  v("train.max_flops", t.max_flops,
    Meta{kNonNegative, "budget in training FLOPs (0: unset; at most one budget may be set)"});
  v("train.lr", t.lr, Meta{kPositive, "peak learning rate"});
  v("train.schedule", t.schedule, Meta{kAnyValue, "LR schedule: warmup-stable-decay, cosine, linear, constant"});
  v("train.warmup_steps", t.warmup_steps, Meta{kNonNegative, "linear LR warm-up steps"});
  v("train.decay_fraction", t.decay_fraction, Meta{kUnitClosed, "WSD: final fraction of steps decaying linearly"});
  v("train.min_lr_ratio", t.min_lr_ratio, Meta{kUnitClosed, "final LR as a fraction of the peak"});
  v("train.weight_decay", t.weight_decay, Meta{kNonNegative, "AdamW decoupled weight decay"});
  v("train.beta1", t.beta1, Meta{kUnitHalfOpen, "AdamW beta1"});
  v("train.beta2", t.beta2, Meta{kUnitHalfOpen, "AdamW beta2"});
  v("train.eps", t.eps, Meta{kPositive, "AdamW epsilon"});
  v("train.grad_clip", t.grad_clip, Meta{kNonNegative, "global L2 gradient-norm clip (0: off)"});
  v("train.decay_embeddings", t.decay_embeddings, Meta{kAnyValue, "apply weight decay to embeddings"});
  v("train.decay_routers", t.decay_routers, Meta{kAnyValue, "apply weight decay to routers"});
  v("train.aux_router_lr_mult", t.aux_router_lr_mult,
    Meta{kPositive, "LR multiplier of the auxiliary router (expert.aux: router)"});
  v("train.precision", t.precision, Meta{kAnyValue, "compute precision; auto: bf16 on GPU, fp32 on CPU"});
  v("train.sharding", t.sharding, Meta{kAnyValue, "parameter/gradient sharding across ranks"});
  v("train.activation_checkpointing", t.activation_checkpointing,
    Meta{kAnyValue, "recompute each decoder layer in the backward pass (less activation memory)"});
  v("train.log_interval", t.log_interval, Meta{kPositive, "optimizer steps between metric lines"});
  v("train.eval_interval", t.eval_interval, Meta{kNonNegative, "steps between validation runs (0: only at the end)"});
  v("train.eval_batches", t.eval_batches, Meta{kNonNegative, "validation batches per evaluation"});
  v("train.save_interval", t.save_interval, Meta{kNonNegative, "steps between checkpoints (0: only at the end)"});
  v("train.keep_checkpoints", t.keep_checkpoints,
    Meta{kNonNegative, "newest complete checkpoints to keep (0: all)"});
  v("train.device", t.device, Meta{kAnyValue, "auto (cuda when available), cpu, cuda or cuda:N"});
  v("train.reshard_after_forward", t.reshard_after_forward,
    Meta{kAnyValue, "zero3: free each gathered unit after its forward and re-gather it for backward"});
  v("train.document_masking", t.document_masking,
    Meta{kAnyValue, "no attention across EOS boundaries; positions restart per document"});
  v("train.max_bad_steps", t.max_bad_steps,
    Meta{kPositive, "consecutive steps with a non-finite loss or gradient that abort the run"});
  v("train.dist_timeout_s", t.dist_timeout_s,
    Meta{kPositive, "seconds a collective may wait for the other ranks before the run stops"});
  v("train.init_from", t.init_from,
    Meta{kAnyValue, "bundle (mor export / import / uptrain) whose weights start a fresh run; ignored when resuming"});

  auto& d = c.data;
  v("data.train_shards", d.train_shards, Meta{kAnyValue, "directory or glob of training token shards"});
  v("data.val_shards", d.val_shards, Meta{kAnyValue, "directory or glob of validation token shards"});
  v("data.tokenizer", d.tokenizer, Meta{kAnyValue, "tokenizer.json (byte-level BPE)"});
  v("data.text_field", d.text_field, Meta{kAnyValue, "JSONL field holding the document text"});
  v("data.val_fraction", d.val_fraction, Meta{kUnitHalfOpen, "fraction of documents held out for validation"});
  v("data.seed", d.seed, Meta{kAnyValue, "data preparation seed (validation split)"});

  auto& e = c.eval;
  v("eval.tasks", e.tasks, Meta{kAnyValue, "task names, e.g. [lambada_openai, hellaswag]"});
  v("eval.num_fewshot", e.num_fewshot, Meta{Range{-1.0, kInf}, "few-shot examples (-1: each task's default)"});
  v("eval.batch_size", e.batch_size, Meta{kPositive, "requests per forward"});
  v("eval.limit", e.limit, Meta{kNonNegative, "documents per task (0: all)"});
  v("eval.data_dir", e.data_dir, Meta{kAnyValue, "directory of the task data files"});
  v("eval.seed", e.seed, Meta{kAnyValue, "few-shot sampling seed"});
  v("eval.routing", e.routing, Meta{kAnyValue, "MoR routing during evaluation (topk looks ahead)"});

  auto& g = c.engine;
  v("engine.host", g.host, Meta{kAnyValue, "HTTP listen address"});
  v("engine.port", g.port, Meta{Range{0.0, 65535.0}, "HTTP port (0: any free port)"});
  v("engine.kv_block_size", g.kv_block_size, Meta{kPositive, "tokens per paged KV block"});
  v("engine.kv_memory_mb", g.kv_memory_mb, Meta{kPositive, "KV cache budget in MiB"});
  v("engine.max_batch_tokens", g.max_batch_tokens, Meta{kPositive, "tokens per engine step"});
  v("engine.max_running", g.max_running, Meta{kPositive, "sequences decoded concurrently"});
  v("engine.max_queue", g.max_queue, Meta{kPositive, "waiting requests before new ones are rejected"});
  v("engine.routing", g.routing, Meta{kAnyValue, "MoR routing at serving time (topk looks ahead)"});
}

// Shortest text that parses back to exactly `v`, always with a '.' or an exponent ("1.0", "1e-05").
std::string format_double(double v);
// YAML double-quoted scalar.
std::string quote(std::string_view s);

// The value as it appears in dumped YAML and in key_reference().
template <class T>
std::string format_value(const T& v) {
  if constexpr (std::is_enum_v<T>) {
    return EnumNames<T>::kNames[static_cast<size_t>(v)];
  } else if constexpr (std::is_same_v<T, bool>) {
    return v ? "true" : "false";
  } else if constexpr (std::is_same_v<T, int64_t>) {
    return std::to_string(v);
  } else if constexpr (std::is_same_v<T, double>) {
    return format_double(v);
  } else if constexpr (std::is_same_v<T, std::string>) {
    return quote(v);
  } else {
    static_assert(std::is_same_v<T, std::vector<double>> || std::is_same_v<T, std::vector<std::string>>);
    std::string out = "[";
    for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + format_value(v[i]);
    return out + "]";
  }
}

// "int", "float", "bool", "string", "enum", "list[float]", "list[string]".
template <class T>
const char* type_name() {
  if constexpr (std::is_enum_v<T>) return "enum";
  else if constexpr (std::is_same_v<T, bool>) return "bool";
  else if constexpr (std::is_same_v<T, int64_t>) return "int";
  else if constexpr (std::is_same_v<T, double>) return "float";
  else if constexpr (std::is_same_v<T, std::string>) return "string";
  else if constexpr (std::is_same_v<T, std::vector<double>>) return "list[float]";
  else return "list[string]";
}

// "none|cycle|sequence" for an enum type.
template <class E>
std::string enum_choices() {
  std::string out;
  for (const char* name : EnumNames<E>::kNames) out += (out.empty() ? "" : "|") + std::string(name);
  return out;
}

// One row of the key reference, derived from for_each_field() on a default Config.
struct KeyInfo {
  std::string key;
  std::string type;
  std::string default_text;  // as format_value() prints it
  std::string description;   // with the allowed range or enum names appended
};

const std::vector<KeyInfo>& keys();
bool is_key(std::string_view path);
// Section paths: "model", "model.router", "model.router.expert", ...
bool is_section(std::string_view path);
// Nearest known key or section by edit distance, or "" when nothing is close.
std::string closest_key(std::string_view path);

}  // namespace mor::config::schema
