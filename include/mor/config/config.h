// Typed configuration: the single source of truth for a model, a run, an evaluation or a server.
//
// A Config is built from defaults, then YAML files merged in order, then `--set key.path=value`
// overrides (defaults < files < --set). Unknown keys, wrong types and out-of-range values are
// mor::Error naming the key path and where it came from (file:line, or "--set"). The resolved
// Config is dumped back to YAML by dump_yaml() and embedded in every later output.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace mor::config {

// Parameter-sharing strategy of the unrolled layer stack (mor-spec §2.1).
enum class Sharing { kNone, kCycle, kSequence, kMiddleCycle, kMiddleSequence };
// kNone: vanilla / recursive-without-router; kExpert: expert-choice MoR; kToken: token-choice MoR.
enum class RouterKind { kNone, kExpert, kToken };
// Router network: linear d->out, or MLP d->2d->GELU->out. No biases.
enum class RouterArch { kLinear, kMlp };
// KV mode at training/prefill: recursion-wise caching, or recursive KV sharing (first recursion's K/V).
enum class KvMode { kRecursion, kShare };
// Routing at inference/evaluation: causal per-token decisions, or the training-time top-k (non-causal).
enum class RoutingMode { kCausal, kTopk };
// Router activation. Expert-choice: sigmoid | tanh. Token-choice: softmax | sigmoid.
enum class GateFunc { kSigmoid, kTanh, kSoftmax };
// Expert-choice auxiliary objective: BCE on the main router ("loss"), or a separate router trained
// on detached inputs ("router") that makes the causal decision at inference.
enum class ExpertAux { kLoss, kRouter };
// Token-choice balancing: none, auxiliary balancing loss, or loss-free bias balancing.
enum class Balancing { kNone, kLoss, kLossFree };
enum class LrSchedule { kWsd, kCosine, kLinear, kConstant };
enum class Precision { kAuto, kFp32, kBf16 };
enum class ShardingMode { kNone, kZero2, kZero3 };

struct RecursionConfig {
  Sharing sharing = Sharing::kNone;
  int64_t num_recursions = 1;  // N_r
  bool share_norms = true;     // tie the two RMSNorm weights of shared layers too

  bool operator==(const RecursionConfig&) const = default;
};

struct ExpertRouterConfig {
  GateFunc func = GateFunc::kSigmoid;
  double alpha = 0.1;                 // gate scale: g = alpha * func(z)
  std::vector<double> capacities;     // per recursion, in (0,1], non-increasing; empty: (N_r-r)/N_r
  int64_t capacity_warmup_steps = 0;  // cosine warm-up from capacity 1 to c_r over these optimizer steps
  ExpertAux aux = ExpertAux::kLoss;
  double aux_coeff = 0.001;           // coefficient of the BCE auxiliary loss (aux: loss)
  double threshold = 0.5;             // causal routing: a token continues when func-prob >= threshold

  bool operator==(const ExpertRouterConfig&) const = default;
};

struct TokenRouterConfig {
  GateFunc func = GateFunc::kSoftmax;
  double alpha = 1.0;
  Balancing balancing = Balancing::kLoss;
  double balance_coeff = 0.1;       // coefficient of the balancing loss (balancing: loss)
  double bias_update_rate = 0.001;  // u of loss-free balancing: b_i += u * sign(mean(c) - c_i)
  int64_t balance_warmup_steps = 0; // all tokens take the full depth for these optimizer steps

  bool operator==(const TokenRouterConfig&) const = default;
};

struct RouterConfig {
  RouterKind kind = RouterKind::kNone;
  RouterArch arch = RouterArch::kLinear;
  double temperature = 1.0;  // router input is h / temperature
  double z_loss_coeff = 0.0; // router z-loss coefficient (0: off)
  ExpertRouterConfig expert;
  TokenRouterConfig token;

  bool operator==(const RouterConfig&) const = default;
};

struct ModelConfig {
  std::string name;
  int64_t vocab_size = 49152;
  int64_t hidden_size = 576;
  int64_t intermediate_size = 1536;
  int64_t num_layers = 30;  // unrolled depth L (never silently changed)
  int64_t num_heads = 9;
  int64_t num_kv_heads = 3;
  int64_t head_dim = 0;     // 0: hidden_size / num_heads
  int64_t max_seq_len = 2048;
  double rope_theta = 10000.0;
  double rms_norm_eps = 1e-5;
  bool tie_embeddings = true;
  double init_std = 0.02;
  int64_t seed = 1234;      // parameter initialisation seed
  RecursionConfig recursion;
  RouterConfig router;
  KvMode kv_mode = KvMode::kRecursion;
  RoutingMode inference_routing = RoutingMode::kCausal;

  bool operator==(const ModelConfig&) const = default;
  int64_t resolved_head_dim() const { return head_dim > 0 ? head_dim : hidden_size / num_heads; }
};

struct TrainConfig {
  std::string out_dir = "runs/default";
  int64_t seed = 42;
  int64_t seq_len = 0;            // tokens per training sequence; 0: model.max_seq_len
  int64_t micro_batch_size = 8;   // sequences per rank per forward
  int64_t global_batch_size = 8;  // sequences per optimizer step, all ranks and accumulation
  int64_t max_steps = 0;          // budgets: at most one of max_steps / max_tokens / max_flops is set
  int64_t max_tokens = 0;
  double max_flops = 0.0;
  double lr = 3e-3;
  LrSchedule schedule = LrSchedule::kWsd;
  int64_t warmup_steps = 0;
  double decay_fraction = 0.2;    // WSD: final fraction of steps decaying linearly
  double min_lr_ratio = 0.0;
  double weight_decay = 0.1;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double grad_clip = 1.0;         // global L2 norm; 0: off
  bool decay_embeddings = true;
  bool decay_routers = true;
  double aux_router_lr_mult = 10.0;
  Precision precision = Precision::kAuto;
  ShardingMode sharding = ShardingMode::kZero3;
  bool activation_checkpointing = false;
  int64_t log_interval = 10;
  int64_t eval_interval = 0;      // 0: only at the end
  int64_t eval_batches = 16;
  int64_t save_interval = 0;      // 0: only at the end
  int64_t keep_checkpoints = 3;   // newest complete checkpoints kept; 0: all
  std::string device = "auto";    // auto (cuda when available, else cpu), cpu, cuda, cuda:N
  bool reshard_after_forward = true;  // zero3: free gathered units after forward, re-gather in backward
  bool document_masking = false;  // no attention across EOS boundaries (per-document positions)
  int64_t max_bad_steps = 5;      // consecutive non-finite steps that abort the run
  double dist_timeout_s = 300.0;  // collective / rendezvous timeout: a dead rank stops the others
  std::string init_from;          // bundle whose weights start a fresh run (uptraining); "": random init

  bool operator==(const TrainConfig&) const = default;
};

struct DataConfig {
  std::string train_shards;       // directory or glob of token shards
  std::string val_shards;
  std::string tokenizer;          // tokenizer.json
  std::string text_field = "text";
  double val_fraction = 0.005;
  int64_t seed = 1234;

  bool operator==(const DataConfig&) const = default;
};

struct EvalConfig {
  std::vector<std::string> tasks;
  int64_t num_fewshot = -1;       // -1: each task's own default
  int64_t batch_size = 16;
  int64_t limit = 0;              // 0: all documents
  std::string data_dir = "data/eval";
  int64_t seed = 1234;
  RoutingMode routing = RoutingMode::kCausal;

  bool operator==(const EvalConfig&) const = default;
};

struct EngineConfig {
  std::string host = "127.0.0.1";
  int64_t port = 8080;
  int64_t kv_block_size = 16;
  int64_t kv_memory_mb = 1024;
  int64_t max_batch_tokens = 2048;
  int64_t max_running = 64;
  int64_t max_queue = 256;
  RoutingMode routing = RoutingMode::kCausal;

  bool operator==(const EngineConfig&) const = default;
};

struct Config {
  ModelConfig model;
  TrainConfig train;
  DataConfig data;
  EvalConfig eval;
  EngineConfig engine;
  // Where each explicitly set key came from: "section.key" -> "file.yaml:LINE" or "--set".
  std::map<std::string, std::string> origins;

  // "file.yaml:12" / "--set" for a key that was set, "default" otherwise.
  std::string origin(const std::string& key_path) const;
};

// Loads defaults, then each YAML file in order, then each "a.b.c=value" override; validates the
// result (validate()) and returns it. Throws mor::Error naming the key path and file:line at fault.
Config load(const std::vector<std::string>& files, const std::vector<std::string>& overrides = {});

// Same, from YAML text (tests, embedded presets); `source_name` stands in for the file name.
Config load_from_string(const std::string& yaml, const std::string& source_name,
                        const std::vector<std::string>& overrides = {});

// Cross-field and range validation; throws mor::Error "ORIGIN: key.path: message".
void validate(const Config& config);

// The resolved configuration as YAML (every key, defaults included); load_from_string(dump_yaml(c))
// reproduces c.
std::string dump_yaml(const Config& config);

// One line per key: "section.key  type  default  description", for docs and `mor config keys`.
std::string key_reference();

// train.seq_len, or model.max_seq_len when it is 0.
int64_t resolved_seq_len(const Config& config);

// How model.num_layers splits under model.recursion: `fixed` unique layers (2 for the middle_*
// strategies, else 0) plus `num_recursions` x `block_depth` shared ones (block_depth = 0 and
// fixed = num_layers without sharing). Throws mor::Error "model.num_layers: ..." (with the nearest
// valid counts) or "model.recursion.num_recursions: ..." when it does not split; layers are never
// dropped silently.
struct LayerSplit {
  int64_t fixed = 0;
  int64_t block_depth = 0;
};
LayerSplit layer_split(const ModelConfig& model);

// Capacity of each recursion after defaults: explicit capacities, else (N_r - r) / N_r.
std::vector<double> resolved_capacities(const ModelConfig& model);

// Names used in YAML for the enums ("middle_cycle", "expert", ...).
const char* to_string(Sharing v);
const char* to_string(RouterKind v);
const char* to_string(RouterArch v);
const char* to_string(KvMode v);
const char* to_string(RoutingMode v);
const char* to_string(GateFunc v);
const char* to_string(ExpertAux v);
const char* to_string(Balancing v);
const char* to_string(LrSchedule v);
const char* to_string(Precision v);
const char* to_string(ShardingMode v);

}  // namespace mor::config
