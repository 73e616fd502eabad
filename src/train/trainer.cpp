// The training loop: setup (device, precision, process group, sharded model, optimizer, loaders,
// resume), steps with accumulation, clipping, skipping of non-finite steps, validation, metrics,
// checkpoints and the stop signal.
#include "mor/train/trainer.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/DeviceGuard.h>
#include <nlohmann/json.hpp>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <memory>
#include <optional>
#include <sstream>

#include "../dist/backend_factory.h"
#include "mor/core/error.h"
#include "mor/core/file.h"
#include "mor/core/progress.h"
#include "mor/data/loader.h"
#include "mor/dist/sharded_model.h"
#include "mor/io/tokenizer.h"
#include "mor/model/accounting.h"
#include "mor/model/bundle.h"
#include "mor/model/model.h"
#include "mor/train/checkpoint.h"
#include "mor/train/optimizer.h"
#include "mor/train/schedule.h"

namespace mor::train {

using config::ShardingMode;
using nlohmann::json;

namespace {

using Clock = std::chrono::steady_clock;

std::vector<int64_t> parse_steps(const char* name, const std::string& text) {
  std::vector<int64_t> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (item.empty()) continue;
    try {
      size_t used = 0;
      out.push_back(std::stoll(item, &used));
      MOR_CHECK(used == item.size(), "");
    } catch (const std::exception&) {
      fail("environment variable ", name, "=\"", text, "\": expected comma-separated step numbers");
    }
  }
  return out;
}

double peak_rss_mb() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;  // kB
  }
  return 0.0;
}

// Dense bf16 tensor-core peak of known accelerators (FLOP/s), for MFU; 0 when unknown.
double device_peak_flops(const std::string& name, at::ScalarType dtype) {
  if (dtype != at::kBFloat16 && dtype != at::kHalf) return 0.0;
  if (name.find("H100") != std::string::npos || name.find("H200") != std::string::npos) return 989.4e12;
  if (name.find("A100") != std::string::npos) return 312e12;
  return 0.0;
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--:--";
  const auto s = static_cast<int64_t>(seconds + 0.5);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%02lld:%02lld:%02lld", static_cast<long long>(s / 3600),
                static_cast<long long>(s / 60 % 60), static_cast<long long>(s % 60));
  return buf;
}

std::string format_rate(double v) {
  char buf[32];
  if (v >= 1e6) std::snprintf(buf, sizeof buf, "%.2fM", v / 1e6);
  else if (v >= 1e3) std::snprintf(buf, sizeof buf, "%.1fk", v / 1e3);
  else std::snprintf(buf, sizeof buf, "%.0f", v);
  return buf;
}

// The console and train.log of rank 0.
class Console {
 public:
  Console(bool enabled, const std::string& log_path) : enabled_(enabled) {
    if (enabled_) log_.open(log_path, std::ios::app);
    tty_ = enabled_ && ::isatty(STDERR_FILENO) && ::isatty(STDOUT_FILENO);
  }
  void line(const std::string& text) {
    if (!enabled_) return;
    std::fprintf(stdout, "%s%s\n", tty_ ? "\r\033[K" : "", text.c_str());
    std::fflush(stdout);
    if (log_) log_ << text << '\n' << std::flush;
  }
  bool tty() const { return tty_; }

 private:
  bool enabled_;
  bool tty_ = false;
  std::ofstream log_;
};

class Metrics {
 public:
  Metrics(bool enabled, const std::string& path) {
    if (enabled) out_.open(path, std::ios::app);
  }
  void write(const json& record) {
    if (out_) out_ << record.dump() << '\n' << std::flush;
  }

 private:
  std::ofstream out_;
};

at::Tensor rows_tensor(const std::vector<int32_t>& values, int64_t rows, int64_t seq) {
  return at::from_blob(const_cast<int32_t*>(values.data()), {rows, seq}, at::kInt).to(at::kLong);
}

at::Device resolve_device(const std::string& spec, int64_t local_rank) {
  const bool cuda_ok = at::hasCUDA();
  if (spec == "cpu" || (spec == "auto" && !cuda_ok)) return at::kCPU;
  MOR_CHECK(cuda_ok, "train.device: ", spec, " requested but no CUDA device is available (use cpu or auto)");
  if (spec.starts_with("cuda:")) return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(std::stoi(spec.substr(5))));
  return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(local_rank));
}

at::ScalarType resolve_dtype(config::Precision p, const at::Device& device) {
  switch (p) {
    case config::Precision::kFp32: return at::kFloat;
    case config::Precision::kBf16: return at::kBFloat16;
    case config::Precision::kAuto: break;
  }
  return device.is_cuda() ? at::kBFloat16 : at::kFloat;
}

// One line listing the model keys that differ: " num_layers 6 (bundle) vs 8 (config); ...".
std::string model_differences(const config::Config& a, const config::Config& b, const char* a_name) {
  auto model_lines = [](const config::Config& c) {
    std::vector<std::string> out;
    std::stringstream in(config::dump_yaml(c));
    std::string line;
    bool in_model = false;
    while (std::getline(in, line)) {
      if (!line.empty() && line[0] != ' ' && line[0] != '#') in_model = line.rfind("model:", 0) == 0;
      if (in_model) out.push_back(line);
    }
    return out;
  };
  auto trim = [](std::string x) {
    x.erase(0, x.find_first_not_of(' '));
    return x;
  };
  const auto la = model_lines(a), lb = model_lines(b);
  std::string diff;
  for (size_t i = 0; i < std::max(la.size(), lb.size()); ++i) {
    const std::string x = i < la.size() ? trim(la[i]) : "", y = i < lb.size() ? trim(lb[i]) : "";
    if (x == y) continue;
    const auto colon = x.find(':');
    const std::string key = colon == std::string::npos ? x : x.substr(0, colon);
    const std::string vy = y.find(':') == std::string::npos ? y : trim(y.substr(y.find(':') + 1));
    diff += std::string(diff.empty() ? " " : "; ") + key + " " + (colon == std::string::npos ? "" : trim(x.substr(colon + 1))) +
            " (" + a_name + ") vs " + vy + " (config)";
  }
  return diff;
}

}  // namespace

Faults faults_from_env() {
  Faults f;
  if (const char* v = std::getenv("MOR_FAULT_NAN_STEPS"); v && *v) f.nan_steps = parse_steps("MOR_FAULT_NAN_STEPS", v);
  if (const char* v = std::getenv("MOR_FAULT_KILL_AFTER_STEP"); v && *v) {
    std::string s = v;
    if (const auto colon = s.find(':'); colon != std::string::npos) {
      f.kill_rank = parse_steps("MOR_FAULT_KILL_AFTER_STEP", s.substr(0, colon)).at(0);
      s = s.substr(colon + 1);
    }
    f.kill_after_step = parse_steps("MOR_FAULT_KILL_AFTER_STEP", s).at(0);
  }
  if (const char* v = std::getenv("MOR_FAULT_KILL_IN_SAVE"); v && *v)
    f.kill_in_save_step = parse_steps("MOR_FAULT_KILL_IN_SAVE", v).at(0);
  return f;
}

int64_t budget_steps(const config::Config& c, int64_t world_size) {
  const auto& t = c.train;
  const int64_t seq = config::resolved_seq_len(c);
  MOR_CHECK(t.global_batch_size % (t.micro_batch_size * world_size) == 0, "train.global_batch_size (",
            t.global_batch_size, ") must be a multiple of train.micro_batch_size x ranks (", t.micro_batch_size,
            " x ", world_size, ")");
  const int64_t tokens_per_step = t.global_batch_size * seq;
  int64_t steps = 0;
  if (t.max_steps > 0) {
    steps = t.max_steps;
  } else if (t.max_tokens > 0) {
    steps = t.max_tokens / tokens_per_step;
    MOR_CHECK(steps > 0, "train.max_tokens (", t.max_tokens, ") is less than one step (", tokens_per_step,
              " tokens = global_batch_size x seq_len)");
  } else if (t.max_flops > 0) {
    const double per_step = model::account(c.model, seq).train_flops_per_token * static_cast<double>(tokens_per_step);
    steps = static_cast<int64_t>(std::floor(t.max_flops / per_step));
    MOR_CHECK(steps > 0, "train.max_flops (", t.max_flops, ") is less than one step (", per_step, " FLOPs)");
  } else {
    fail("train: no budget: set one of train.max_steps, train.max_tokens or train.max_flops");
  }
  return steps;
}

TrainResult train(const config::Config& cfg, const TrainOptions& options) {
  config::validate(cfg);
  const auto& t = cfg.train;
  MOR_CHECK(!cfg.data.train_shards.empty(), "data.train_shards: no training shards configured (run mor data "
                                            "prepare first, then point data.train_shards at its output)");
  const dist::WorldInfo& world = options.world;
  const int64_t world_size = world.world_size, rank = world.rank;
  const int64_t seq = config::resolved_seq_len(cfg);
  const int64_t total_steps = budget_steps(cfg, world_size);
  const int64_t rows_per_rank = t.global_batch_size / world_size;
  const int64_t accumulation = rows_per_rank / t.micro_batch_size;
  const int64_t tokens_per_step = t.global_batch_size * seq;
  const model::Accounting acct = model::account(cfg.model, seq);
  const double flops_per_step = acct.train_flops_per_token * static_cast<double>(tokens_per_step);

  const at::Device device = resolve_device(t.device, world.local_rank);
  const at::ScalarType dtype = resolve_dtype(t.precision, device);
  const c10::DeviceGuard device_guard(device);  // current CUDA device = this rank's (no-op on CPU)
  const bool lead = rank == 0;

  // Run directory (rank 0 writes; every rank may read checkpoints from it).
  if (lead) core::make_directories(t.out_dir);
  Console console(lead && options.console, t.out_dir + "/train.log");
  Metrics metrics(lead, t.out_dir + "/metrics.jsonl");

  dist::CommOptions co;
  co.world = world;
  co.device = device;
  co.file_store = options.file_store;
  co.timeout = std::chrono::milliseconds(static_cast<int64_t>(t.dist_timeout_s * 1000.0));
  std::unique_ptr<dist::Communicator> comm = dist::make_communicator(co);
  if (lead) core::atomic_write(t.out_dir + "/config.yaml", config::dump_yaml(cfg));

  // Model, shards, optimizer.
  model::MoRModel model(cfg.model, dtype, device);
  const bool resuming = options.resume && latest_checkpoint(t.out_dir).has_value();
  if (!t.init_from.empty() && !resuming) {
    // Every rank reads the bundle (a shared filesystem), so the shards start identical.
    model::BundleInfo info;
    try {
      info = model::read_bundle_info(t.init_from);
    } catch (const mor::Error& e) {
      fail("train.init_from: ", e.what());
    }
    if (!(info.model == cfg.model)) {
      config::Config bundled = cfg;
      bundled.model = info.model;
      fail("train.init_from: ", t.init_from, " holds a different model than model.* configures:",
           model_differences(bundled, cfg, "bundle"));
    }
    const auto source = model::load_bundle(t.init_from, at::kFloat, at::kCPU);
    const at::NoGradGuard no_grad;
    for (size_t i = 0; i < model.parameters().size(); ++i)
      model.parameters()[i].tensor.detach().copy_(source->parameters()[i].tensor);
    console.line("initialised from " + t.init_from);
  }
  dist::ShardedModel sharded(model, *comm, t.sharding, t.reshard_after_forward);
  AdamW optimizer(AdamWOptions{t.beta1, t.beta2, t.eps});
  const auto& params = model.parameters();
  auto decays = [&](model::ParamRole role) {
    switch (role) {
      case model::ParamRole::kMatmul: return true;
      case model::ParamRole::kEmbedding:
      case model::ParamRole::kLmHead: return t.decay_embeddings;
      case model::ParamRole::kRouter:
      case model::ParamRole::kAuxRouter: return t.decay_routers;
      case model::ParamRole::kNorm: return false;
    }
    return false;
  };
  // Per unit: spans of the main parameters and of the auxiliary router (own LR and clip).
  std::vector<std::vector<dist::ShardSpan>> main_spans(sharded.units().size()), aux_spans(sharded.units().size());
  for (size_t u = 0; u < sharded.units().size(); ++u) {
    std::vector<Segment> segments;
    for (const dist::ShardSpan& s : sharded.spans(static_cast<int64_t>(u))) {
      const model::ParamRole role = params[s.param].role;
      const bool aux = role == model::ParamRole::kAuxRouter;
      (aux ? aux_spans : main_spans)[u].push_back(s);
      segments.push_back({s.shard_offset, s.length, aux ? t.aux_router_lr_mult : 1.0,
                          decays(role) ? t.weight_decay : 0.0});
    }
    optimizer.add(sharded.units()[u].master, std::move(segments));
  }
  const bool replicated_grads = t.sharding == ShardingMode::kNone || world_size == 1;

  // Data.
  std::optional<int64_t> eos;
  if (t.document_masking) {
    MOR_CHECK(!cfg.data.tokenizer.empty(), "train.document_masking needs data.tokenizer (for the EOS id)");
    eos = io::Tokenizer::from_file(cfg.data.tokenizer).eos_id();
    MOR_CHECK(eos.has_value(), cfg.data.tokenizer, ": no end-of-text token, needed by train.document_masking");
  }
  data::LoaderOptions lo;
  lo.shards = {cfg.data.train_shards};
  lo.vocab_size = cfg.model.vocab_size;
  lo.seq_len = seq;
  lo.rows_per_rank = rows_per_rank;
  lo.rank = rank;
  lo.world_size = world_size;
  lo.seed = static_cast<uint64_t>(t.seed);
  lo.shuffle = true;
  lo.document_ids = eos.has_value();
  lo.eos_id = eos.value_or(-1);
  // Loader errors name the file; prefix the key that pointed there.
  auto open_loader = [](const data::LoaderOptions& o, const char* key) {
    try {
      return data::Loader(o);
    } catch (const mor::Error& e) {
      fail(key, ": ", e.what());
    }
  };
  data::Loader loader = open_loader(lo, "data.train_shards");
  std::optional<data::Loader> val_loader;
  if (!cfg.data.val_shards.empty() && t.eval_batches > 0) {
    data::LoaderOptions vo = lo;
    vo.shards = {cfg.data.val_shards};
    vo.rows_per_rank = t.micro_batch_size;
    vo.shuffle = false;
    val_loader.emplace(open_loader(vo, "data.val_shards"));
  }

  // Resume.
  CheckpointState state;
  state.total_steps = total_steps;
  state.world_size = world_size;
  TrainResult result;
  result.total_steps = total_steps;
  result.val_loss = std::numeric_limits<double>::quiet_NaN();
  if (options.resume) {
    if (const auto latest = latest_checkpoint(t.out_dir)) {
      const config::Config saved = checkpoint_config(*latest);
      const std::string diff = model_differences(saved, cfg, "checkpoint");
      MOR_CHECK(saved.model == cfg.model, *latest, ": the checkpoint's model configuration differs from the "
                                                   "current one (start a new train.out_dir or restore the model "
                                                   "keys):", diff);
      state = load_checkpoint(*latest, sharded, optimizer);
      state.total_steps = total_steps;
      state.world_size = world_size;
      loader.restore(data::cursor_from_json(state.loader_cursor));
      if (!state.balance_bias.empty()) {
        at::Tensor bias = model.balance_bias();
        bias.copy_(at::tensor(state.balance_bias, at::kDouble).to(bias.options()));
      }
      sharded.master_updated();
      result.start_step = state.step;
      result.last_checkpoint = *latest;
      console.line("resumed from " + *latest + " at step " + std::to_string(state.step));
    }
  }

  const int64_t n_r = model.layout().num_recursions;
  const bool token_choice = cfg.model.router.kind == config::RouterKind::kToken;
  const bool loss_free = token_choice && cfg.model.router.token.balancing == config::Balancing::kLossFree;
  const std::string device_name = device.is_cuda() ? dist::detail::cuda_device_name(device.index()) : "cpu";
  const double peak = device_peak_flops(device_name, dtype) * static_cast<double>(world_size);
  if (lead) {
    std::ostringstream head;
    head << "training " << cfg.model.name << " (" << model.num_parameters() << " parameters) on " << world_size
         << " rank(s) [" << comm->backend() << ", " << device_name << ", " << c10::toString(dtype) << ", "
         << config::to_string(t.sharding) << "]: " << total_steps << " steps x " << tokens_per_step
         << " tokens (global batch " << t.global_batch_size << " x " << seq << ", micro-batch "
         << t.micro_batch_size << ", accumulation " << accumulation << ")";
    console.line(head.str());
  }

  // Validation: the first eval_batches batches of the validation shards, every time.
  const data::LoaderCursor val_start = val_loader ? val_loader->cursor() : data::LoaderCursor{};
  auto validate = [&](int64_t step) {
    if (!val_loader) return std::numeric_limits<double>::quiet_NaN();
    const at::NoGradGuard no_grad;
    val_loader->restore(val_start);
    at::Tensor acc = at::zeros({2 + n_r + 1}, at::TensorOptions().dtype(at::kDouble));
    for (int64_t b = 0; b < t.eval_batches; ++b) {
      const data::Batch batch = val_loader->next();
      model::ForwardOptions fo;
      fo.hooks = sharded.hooks();
      if (eos) fo.documents = rows_tensor(batch.doc_ids, batch.rows, seq).to(device);
      const auto out = model.forward(rows_tensor(batch.inputs, batch.rows, seq).to(device), fo);
      model::LossOptions lopt;
      lopt.normalizer = 1.0;
      const auto terms = model.loss(out, rows_tensor(batch.targets, batch.rows, seq), lopt);
      acc[0] += terms.lm.item<double>();
      acc[1] += static_cast<double>(terms.targets);
      acc.narrow(0, 2, n_r + 1).add_(at::bincount(out.depth.reshape(-1).cpu(), {}, n_r + 1).to(at::kDouble));
    }
    sharded.release();
    at::Tensor reduced = acc.to(device);
    comm->all_reduce_sum(reduced);
    reduced = reduced.cpu();
    const double loss = reduced[0].item<double>() / std::max(1.0, reduced[1].item<double>());
    json rec = {{"kind", "val"}, {"step", step}, {"tokens", state.tokens}, {"val_loss", loss},
                {"val_ppl", std::exp(loss)}};
    std::string depth_text;
    if (n_r > 0) {
      const at::Tensor hist = reduced.narrow(0, 3, n_r) / std::max(1.0, reduced.narrow(0, 2, n_r + 1).sum().item<double>());
      std::vector<double> h(hist.data_ptr<double>(), hist.data_ptr<double>() + n_r);
      rec["depth_hist"] = h;
      for (int64_t d = 0; d < n_r; ++d) depth_text += " " + std::to_string(d + 1) + ":" + std::to_string(static_cast<int>(std::lround(h[d] * 100))) + "%";
    }
    metrics.write(rec);
    char buf[160];
    std::snprintf(buf, sizeof buf, "validation step %lld | loss %.4f | ppl %.2f", static_cast<long long>(step), loss,
                  std::exp(loss));
    console.line(std::string(buf) + (depth_text.empty() ? "" : " | depth" + depth_text));
    return loss;
  };

  auto save = [&](int64_t step) {
    state.step = step;
    state.optimizer_steps = optimizer.steps();
    state.loader_cursor = data::cursor_to_json(loader.cursor());
    state.balance_bias.clear();
    if (token_choice) {
      const at::Tensor b = model.balance_bias().to(at::kCPU, at::kDouble).contiguous();
      state.balance_bias.assign(b.data_ptr<double>(), b.data_ptr<double>() + b.numel());
    }
    SaveFault fault;
    if (options.faults.kill_in_save_step == step) fault = [](int64_t) { ::kill(::getpid(), SIGKILL); };
    if (options.faults.throw_in_save_step == step)
      fault = [](int64_t s) { fail("fault injection: failure while saving the checkpoint of step ", s); };
    result.last_checkpoint = save_checkpoint(sharded, optimizer, state, cfg, t.out_dir, t.keep_checkpoints, fault);
    metrics.write({{"kind", "event"}, {"event", "checkpoint"}, {"step", step}, {"path", result.last_checkpoint}});
    console.line("saved checkpoint " + result.last_checkpoint);
  };

  std::unique_ptr<core::Progress> bar;
  if (console.tty()) {
    core::Progress::Options po;
    po.mode = core::Progress::Mode::kTty;
    po.secondary_label = "tokens";
    bar = std::make_unique<core::Progress>("train", total_steps, po);
    bar->add(state.step, state.tokens);
  }

  // Statistics all-reduced once per step: [lm, aux, acc_sum, acc_n, nonfinite, stop,
  // grad_sq_main, grad_sq_aux, depth hist (n_r + 1), token-choice counts (n_r)].
  const int64_t kHist = 8, stats_size = kHist + (n_r + 1) + n_r;
  int64_t bad_streak = 0;
  int64_t saved_step = state.step;
  auto interval_start = Clock::now();
  int64_t interval_steps = 0;
  double step_time_avg = 0.0;

  while (state.step < total_steps) {
    const int64_t step = state.step;  // 0-based index of this step
    const double lr = learning_rate(t, step, total_steps);
    const auto step_begin = Clock::now();
    sharded.zero_grad_shards();
    const data::Batch batch = loader.next();
    const at::Tensor inputs = rows_tensor(batch.inputs, batch.rows, seq);
    const at::Tensor targets = rows_tensor(batch.targets, batch.rows, seq);
    const at::Tensor docs = eos ? rows_tensor(batch.doc_ids, batch.rows, seq) : at::Tensor();
    at::Tensor stats = at::zeros({stats_size}, at::TensorOptions().dtype(at::kDouble));
    const bool inject_nan =
        std::find(options.faults.nan_steps.begin(), options.faults.nan_steps.end(), step + 1) != options.faults.nan_steps.end();

    for (int64_t k = 0; k < accumulation; ++k) {
      const int64_t r0 = k * t.micro_batch_size;
      model::ForwardOptions fo;
      fo.training = true;
      fo.step = step;
      fo.hooks = sharded.hooks();
      fo.checkpoint_layers = t.activation_checkpointing;
      if (docs.defined()) fo.documents = docs.narrow(0, r0, t.micro_batch_size).to(device);
      const auto out = model.forward(inputs.narrow(0, r0, t.micro_batch_size).to(device), fo);
      model::LossOptions lopt;
      lopt.normalizer = static_cast<double>(tokens_per_step);
      auto terms = model.loss(out, targets.narrow(0, r0, t.micro_batch_size), lopt);
      if (inject_nan) terms.total = terms.total * std::numeric_limits<double>::quiet_NaN();
      terms.total.backward();
      sharded.reduce_gradients();
      const double lm = terms.lm.item<double>(), aux = terms.aux.item<double>();
      stats[0] += inject_nan ? std::numeric_limits<double>::quiet_NaN() : lm;
      stats[1] += aux;
      if (out.router_accuracy.defined()) {
        stats[2] += out.router_accuracy.item<double>();
        stats[3] += 1.0;
      }
      stats.narrow(0, kHist, n_r + 1).add_(at::bincount(out.depth.reshape(-1).cpu(), {}, n_r + 1).to(at::kDouble));
      if (out.depth_counts.defined()) stats.narrow(0, kHist + n_r + 1, n_r).add_(out.depth_counts.cpu());
    }
    // Gradient norms over this rank's shard elements (replicated ones counted once, on rank 0).
    // Summed on the device and read once per step (one synchronisation, not one per parameter).
    at::Tensor sq = at::zeros({2}, at::TensorOptions().dtype(at::kDouble).device(device));
    if (!replicated_grads || rank == 0) {
      for (size_t u = 0; u < sharded.units().size(); ++u) {
        const at::Tensor& g = sharded.units()[u].grad;
        for (const auto& s : main_spans[u]) sq[0] += g.narrow(0, s.shard_offset, s.length).to(at::kDouble).pow(2).sum();
        for (const auto& s : aux_spans[u]) sq[1] += g.narrow(0, s.shard_offset, s.length).to(at::kDouble).pow(2).sum();
      }
    }
    stats[5] = (options.stop != nullptr && options.stop->load()) ? 1.0 : 0.0;
    stats.narrow(0, 6, 2).copy_(sq);
    at::Tensor reduced = stats.to(device);
    comm->all_reduce_sum(reduced);
    reduced = reduced.cpu().contiguous();
    const double* st = reduced.data_ptr<double>();
    const double lm_loss = st[0], aux_loss = st[1];
    const double grad_norm = std::sqrt(st[6]), aux_norm = std::sqrt(st[7]);
    const bool finite = std::isfinite(lm_loss) && std::isfinite(aux_loss) && std::isfinite(grad_norm) &&
                        std::isfinite(aux_norm);
    const bool stop_requested = st[5] > 0.0;

    if (finite) {
      bad_streak = 0;
      auto clip = [&](const std::vector<std::vector<dist::ShardSpan>>& spans, double norm) {
        if (t.grad_clip <= 0.0 || norm <= t.grad_clip) return;
        const double coef = t.grad_clip / (norm + 1e-6);
        for (size_t u = 0; u < spans.size(); ++u)
          for (const auto& s : spans[u]) sharded.units()[u].grad.narrow(0, s.shard_offset, s.length).mul_(coef);
      };
      clip(main_spans, grad_norm);
      clip(aux_spans, aux_norm);
      std::vector<at::Tensor> grads;
      for (auto& u : sharded.units()) grads.push_back(u.grad);
      optimizer.step(lr, grads);
      sharded.master_updated();
      if (loss_free) model.apply_balance_update(reduced.narrow(0, kHist + n_r + 1, n_r));
    } else {
      ++state.skipped_steps;
      ++bad_streak;
      console.line("step " + std::to_string(step + 1) + ": non-finite loss or gradient (loss " + std::to_string(lm_loss) +
                   ", grad norm " + std::to_string(grad_norm) + "); update skipped (" + std::to_string(bad_streak) +
                   " in a row)");
      if (bad_streak >= t.max_bad_steps) {
        fail("stopping: ", bad_streak, " consecutive steps had a non-finite loss or gradient (train.max_bad_steps = ",
             t.max_bad_steps, "); the last good checkpoint is ",
             result.last_checkpoint.empty() ? std::string("none (no checkpoint was saved yet)") : result.last_checkpoint,
             ". Lower train.lr, check the data, or resume from that checkpoint.");
      }
    }
    state.step = step + 1;
    state.tokens += tokens_per_step;
    state.flops += flops_per_step;
    result.losses.push_back(lm_loss);
    const double step_s = std::chrono::duration<double>(Clock::now() - step_begin).count();
    step_time_avg = interval_steps == 0 && step_time_avg == 0.0 ? step_s : 0.9 * step_time_avg + 0.1 * step_s;
    ++interval_steps;
    if (bar) bar->add(1, tokens_per_step);

    const bool last = state.step == total_steps;
    if (lead && (state.step % t.log_interval == 0 || last || !finite)) {
      const double elapsed = std::chrono::duration<double>(Clock::now() - interval_start).count();
      const double tps = elapsed > 0 ? static_cast<double>(interval_steps * tokens_per_step) / elapsed : 0.0;
      const double mfu = peak > 0 && elapsed > 0 ? interval_steps * flops_per_step / elapsed / peak : -1.0;
      const double mem = device.is_cuda() ? dist::detail::cuda_peak_memory_mb(device.index()) : peak_rss_mb();
      json rec = {{"kind", "train"}, {"step", state.step}, {"tokens", state.tokens}, {"flops", state.flops},
                  {"loss", lm_loss + aux_loss}, {"lm_loss", lm_loss}, {"aux_loss", aux_loss},
                  {"grad_norm", grad_norm}, {"lr", lr}, {"tokens_per_s", tps},
                  {"mfu", mfu >= 0 ? json(mfu) : json(nullptr)}, {"mem_mb", mem}, {"skipped", state.skipped_steps}};
      char buf[320];
      std::snprintf(buf, sizeof buf, "step %*lld/%lld | loss %.4f (lm %.4f aux %.4f) | gnorm %.3f | lr %.2e | %s tok/s",
                    static_cast<int>(std::to_string(total_steps).size()), static_cast<long long>(state.step),
                    static_cast<long long>(total_steps), lm_loss + aux_loss, lm_loss, aux_loss, grad_norm, lr,
                    format_rate(tps).c_str());
      std::string text = buf;
      if (mfu >= 0) text += " | mfu " + std::to_string(static_cast<int>(std::lround(mfu * 100))) + "%";
      std::snprintf(buf, sizeof buf, " | mem %.0f MB | eta %s", mem,
                    format_duration(step_time_avg * static_cast<double>(total_steps - state.step)).c_str());
      text += buf;
      if (n_r > 0) {
        const double counted = std::max(1.0, reduced.narrow(0, kHist, n_r + 1).sum().item<double>());
        std::vector<double> h;
        text += " | depth";
        for (int64_t d = 1; d <= n_r; ++d) {
          h.push_back(st[kHist + d] / counted);
          text += " " + std::to_string(d) + ":" + std::to_string(static_cast<int>(std::lround(h.back() * 100))) + "%";
        }
        rec["depth_hist"] = h;
        if (st[3] > 0) {
          rec["router_accuracy"] = st[2] / st[3];
          text += " | router acc " + std::to_string(static_cast<int>(std::lround(st[2] / st[3] * 100))) + "%";
        }
        if (token_choice) {
          double entropy = 0.0, total = 0.0;
          for (int64_t d = 0; d < n_r; ++d) total += st[kHist + n_r + 1 + d];
          for (int64_t d = 0; d < n_r; ++d) {
            const double p = total > 0 ? st[kHist + n_r + 1 + d] / total : 0.0;
            if (p > 0) entropy -= p * std::log(p);
          }
          rec["balance_entropy"] = entropy;
        }
      }
      if (state.skipped_steps > 0) text += " | skipped " + std::to_string(state.skipped_steps);
      metrics.write(rec);
      console.line(text);
      interval_start = Clock::now();
      interval_steps = 0;
    } else if (!lead && (state.step % t.log_interval == 0 || last)) {
      interval_steps = 0;
    }

    if (t.eval_interval > 0 && state.step % t.eval_interval == 0 && !last) result.val_loss = validate(state.step);
    const bool periodic_save = t.save_interval > 0 && state.step % t.save_interval == 0;
    if (periodic_save || last || stop_requested) {
      save(state.step);
      saved_step = state.step;
    }
    if (options.faults.kill_after_step == state.step && (options.faults.kill_rank < 0 || options.faults.kill_rank == rank))
      ::kill(::getpid(), SIGKILL);
    if (options.faults.throw_after_step == state.step &&
        (options.faults.kill_rank < 0 || options.faults.kill_rank == rank))
      fail("fault injection: stopped after step ", state.step);
    if (stop_requested) {
      result.interrupted = true;
      console.line("stopped by a signal at step " + std::to_string(state.step) +
                   (saved_step == state.step ? "; checkpoint saved — run the same command to resume" : ""));
      break;
    }
  }
  if (bar) bar->finish();
  if (!result.interrupted && state.step == total_steps) {
    if (saved_step != state.step) save(state.step);
    result.val_loss = validate(state.step);
    console.line("done: " + std::to_string(state.step) + " steps, " + std::to_string(state.tokens) + " tokens" +
                 (state.skipped_steps ? ", " + std::to_string(state.skipped_steps) + " skipped" : "") +
                 (result.last_checkpoint.empty() ? "" : "; checkpoint " + result.last_checkpoint));
  }
  result.steps = state.step;
  result.tokens = state.tokens;
  result.flops = state.flops;
  result.skipped_steps = state.skipped_steps;
  comm->barrier();
  return result;
}

}  // namespace mor::train
