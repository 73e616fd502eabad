// `mor eval MODEL --tasks ...`: few-shot evaluation comparable with lm-evaluation-harness, and
// `mor eval MODEL --ppl SHARDS`: loss and perplexity on token shards. MODEL is a bundle (mor export /
// mor import) or a training checkpoint / run directory.
#include <ATen/ATen.h>
#include <ATen/Context.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <memory>
#include <sstream>

#include "commands.h"
#include "model_loading.h"
#include "mor/config/config.h"
#include "mor/core/error.h"
#include "mor/core/file.h"
#include "mor/core/hash.h"
#include "mor/eval/evaluator.h"
#include "mor/eval/perplexity.h"
#include "mor/eval/report.h"
#include "mor/eval/scorer.h"
#include "mor/eval/task.h"
#include "mor/io/tokenizer.h"
#include "mor/model/bundle.h"
#include "mor/model/model.h"
#include "mor/train/export.h"

namespace mor::tools {

namespace {

struct EvalFlags {
  std::string model;
  ConfigFlags config;
  std::string tasks;
  int64_t num_fewshot = -1;
  std::string data_dir;
  std::vector<std::string> include_paths;
  int64_t limit = 0;
  int64_t batch_size = 0;
  bool log_samples = false;
  std::string output;
  std::string routing;
  int64_t seed = 1234;
  int64_t bootstrap_iters = 100000;
  std::vector<std::string> ppl;
  int64_t seq_len = 0;
  int64_t max_rows = 0;
  std::string tokenizer;
  std::string device = "auto";
  std::string dtype = "auto";
  int threads = 0;
  bool list = false;
  bool quiet = false;
  // Which flags were given explicitly (they override the --config eval section).
  bool has_num_fewshot = false, has_data_dir = false, has_limit = false, has_batch = false, has_routing = false,
       has_seed = false;
};

std::string basename_of(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

// What "causal" means for this model, for the report.
std::string routing_description(const config::ModelConfig& m, config::RoutingMode mode) {
  using config::RouterKind;
  if (m.router.kind == RouterKind::kNone) return "none (no router)";
  if (m.router.kind == RouterKind::kToken) return "token-choice (causal by construction)";
  if (mode == config::RoutingMode::kTopk) {
    return "topk (non-causal: each recursion keeps the top-k of the whole sequence, as the original code)";
  }
  if (m.router.expert.aux == config::ExpertAux::kRouter) return "causal (auxiliary router decides per token)";
  char buf[96];
  std::snprintf(buf, sizeof buf, "causal (router probability >= %g per token)", m.router.expert.threshold);
  return buf;
}

int run_eval(EvalFlags& f) {
  // Defaults < --config eval section < explicit flags.
  config::EvalConfig ec;
  if (!f.config.files.empty() || !f.config.overrides.empty()) {
    ec = config::load(f.config.files, f.config.overrides).eval;
  }
  if (!f.tasks.empty()) {
    ec.tasks.clear();
    std::stringstream ss(f.tasks);
    std::string item;
    while (std::getline(ss, item, ',')) {
      if (!item.empty()) ec.tasks.push_back(item);
    }
  }
  if (f.has_num_fewshot) ec.num_fewshot = f.num_fewshot;
  if (f.has_data_dir) ec.data_dir = f.data_dir;
  if (f.has_limit) ec.limit = f.limit;
  if (f.has_batch) ec.batch_size = f.batch_size;
  if (f.has_seed) ec.seed = f.seed;
  if (f.has_routing) {
    MOR_CHECK(f.routing == "causal" || f.routing == "topk", "--routing: '", f.routing,
              "' is not a routing mode (causal | topk)");
    ec.routing = f.routing == "topk" ? config::RoutingMode::kTopk : config::RoutingMode::kCausal;
  }
  MOR_CHECK(ec.batch_size > 0, "--batch-size must be positive, got ", ec.batch_size);
  MOR_CHECK(ec.limit >= 0, "--limit must be >= 0, got ", ec.limit);
  MOR_CHECK(ec.num_fewshot >= -1, "--num-fewshot must be >= 0, got ", ec.num_fewshot);
  MOR_CHECK(f.bootstrap_iters >= 0, "--bootstrap-iters must be >= 0, got ", f.bootstrap_iters);

  std::vector<std::string> dirs = f.include_paths;
  for (const auto& d : f.include_paths) MOR_CHECK(core::is_directory(d), "--include-path: ", d, " is not a directory");
  for (auto& d : eval::TaskRegistry::default_dirs()) dirs.push_back(std::move(d));
  const eval::TaskRegistry registry = eval::TaskRegistry::load(dirs);
  if (f.list) {
    std::cout << "tasks:";
    for (const auto& t : registry.task_names()) {
      if (t.rfind("mmlu_", 0) != 0) std::cout << " " << t;
    }
    std::cout << "\ngroups:";
    for (const auto& g : registry.group_names()) std::cout << " " << g;
    std::cout << "\n(and the 57 mmlu_<subject> tasks of the mmlu group)\n";
    return 0;
  }
  MOR_CHECK(!f.model.empty(), "MODEL is required (a bundle, checkpoint or run directory)");
  MOR_CHECK(!ec.tasks.empty() || !f.ppl.empty(), "nothing to do: give --tasks (e.g. --tasks hellaswag,piqa) or --ppl SHARDS");
  // Validate task names before loading a model.
  for (const auto& t : ec.tasks) registry.leaf_tasks(t);

  const Placement place = resolve_placement(f.device, f.dtype);
  const bool cuda = place.cuda;
  const at::ScalarType dtype = place.dtype;
  const auto t0 = std::chrono::steady_clock::now();
  InferenceModel lm = load_inference_model(f.model, place);
  uint64_t digest = core::kFnv1aOffset;
  for (const auto& w : lm.weight_files) digest = core::fnv1a64_file(digest, w);
  const std::string model_digest = "fnv1a64:" + core::hex64(digest);
  const config::ModelConfig& mc = lm.model->config();
  if (!f.tokenizer.empty()) lm.tokenizer_path = f.tokenizer;
  const std::string routing = routing_description(mc, ec.routing);
  if (!f.quiet) {
    std::fprintf(stderr, "model %s (%s, %lld parameters, %s, %s), routing: %s\n", f.model.c_str(), lm.kind.c_str(),
                 static_cast<long long>(lm.model->num_parameters()), c10::toString(dtype), cuda ? "cuda" : "cpu",
                 routing.c_str());
  }

  eval::Value meta = eval::Value::object();
  meta["mor_version"] = MOR_VERSION;
  meta["date"] = utc_now();
  meta["harness_compat"] = "lm-evaluation-harness 0.4.13 (prompts, few-shot sampling, metrics)";
  meta["model"] = {{"path", f.model},
                   {"kind", lm.kind},
                   {"name", mc.name},
                   {"parameters", lm.model->num_parameters()},
                   {"digest", model_digest},
                   {"dtype", c10::toString(dtype)},
                   {"device", cuda ? "cuda" : "cpu"},
                   {"max_length", mc.max_seq_len},
                   {"tokenizer", lm.tokenizer_path}};
  meta["routing"] = {{"mode", config::to_string(ec.routing)}, {"description", routing}};
  std::string out_dir = f.output.empty() ? "eval_results/" + basename_of(f.model) : f.output;

  eval::Value ppl_json;
  if (!f.ppl.empty()) {
    eval::PerplexityOptions po;
    po.shards = f.ppl;
    po.seq_len = f.seq_len;
    po.batch_size = ec.batch_size;
    po.max_rows = f.max_rows;
    po.routing = ec.routing;
    po.progress = !f.quiet;
    const eval::PerplexityResult r = eval::shard_perplexity(*lm.model, po);
    std::printf("perplexity on %zu shard(s): %lld rows x %lld tokens: loss %.4f | ppl %.3f | %.1f s\n",
                r.shard_paths.size(), static_cast<long long>(r.rows),
                static_cast<long long>(r.rows > 0 ? r.tokens / r.rows : 0), r.loss, r.perplexity, r.seconds);
    ppl_json = {{"shards", r.shard_paths}, {"rows", r.rows}, {"tokens", r.tokens}, {"loss", r.loss},
                {"perplexity", r.perplexity}, {"seconds", r.seconds}};
    if (!r.depth_histogram.empty()) {
      ppl_json["depth_histogram"] = r.depth_histogram;
      std::printf("depth histogram (tokens by recursions received):");
      int64_t total = 0;
      for (auto c : r.depth_histogram) total += c;
      for (size_t d = 0; d < r.depth_histogram.size(); ++d) {
        std::printf(" %zu:%.1f%%", d, 100.0 * static_cast<double>(r.depth_histogram[d]) / std::max<int64_t>(1, total));
      }
      std::printf("\n");
    }
  }

  if (ec.tasks.empty()) {
    if (!f.output.empty()) {
      meta["perplexity"] = ppl_json;
      meta["config"] = {{"routing", config::to_string(ec.routing)}, {"batch_size", ec.batch_size}};
      core::make_directories(out_dir);
      core::atomic_write(out_dir + "/results.json", meta.dump(2) + "\n");
      std::printf("wrote %s/results.json\n", out_dir.c_str());
    }
    return 0;
  }

  MOR_CHECK(!lm.tokenizer_path.empty() && core::file_exists(lm.tokenizer_path), f.model,
            lm.kind == "bundle" ? ": the bundle has no tokenizer.json; pass --tokenizer FILE"
                                : ": the checkpoint's data.tokenizer (" + lm.tokenizer_path +
                                      ") does not exist; pass --tokenizer FILE");
  const io::Tokenizer tokenizer = io::Tokenizer::from_file(lm.tokenizer_path);
  MOR_CHECK(tokenizer.vocab_size() <= mc.vocab_size, lm.tokenizer_path, ": the tokenizer has ", tokenizer.vocab_size(),
            " tokens, more than the model's vocab_size ", mc.vocab_size);
  eval::EvalOptions eo;
  eo.tasks = ec.tasks;
  eo.num_fewshot = ec.num_fewshot;
  eo.data_dir = ec.data_dir;
  eo.limit = ec.limit;
  eo.seed = ec.seed;
  eo.bootstrap_iters = f.bootstrap_iters;
  eo.log_samples = f.log_samples;
  eo.threads = f.threads;
  eo.progress = !f.quiet;
  // The harness's prefix_token_id: BOS if the model has one, else EOS.
  std::optional<int64_t> prefix = lm.bos ? lm.bos : lm.eos;
  if (!prefix) {
    if (auto e = tokenizer.eos_id()) prefix = *e;
  }
  eo.prefix_token = static_cast<int32_t>(prefix.value_or(0));
  eval::ScorerOptions so;
  so.batch_size = ec.batch_size;
  so.routing = ec.routing;
  auto scorer = eval::make_model_scorer(*lm.model, so);
  const eval::EvalResults results = eval::run_evaluation(eo, registry, tokenizer, *scorer);

  eval::Value tasks_json = eval::Value::array();
  for (const auto& t : ec.tasks) tasks_json.push_back(t);
  meta["config"] = {{"tasks", tasks_json},
                    {"num_fewshot", ec.num_fewshot},
                    {"batch_size", ec.batch_size},
                    {"limit", ec.limit},
                    {"data_dir", ec.data_dir},
                    {"include_paths", f.include_paths},
                    {"routing", config::to_string(ec.routing)},
                    {"bootstrap_iters", f.bootstrap_iters},
                    {"add_bos_token", false},
                    {"prefix_token_id", eo.prefix_token}};
  meta["seeds"] = {{"fewshot_random_seed", ec.seed}};
  if (!ppl_json.is_null()) meta["perplexity"] = ppl_json;
  meta["total_seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  std::ostringstream header;
  header << "# Evaluation of " << f.model << "\n\n"
         << "- model: " << mc.name << " (" << lm.kind << ", " << lm.model->num_parameters() << " parameters, digest "
         << model_digest << ")\n"
         << "- routing: " << routing << "\n"
         << "- few-shot seed " << ec.seed << ", batch size " << ec.batch_size
         << (ec.limit > 0 ? ", limit " + std::to_string(ec.limit) + " documents per task" : "") << "\n"
         << "- " << results.requests << " requests, " << results.tokens << " tokens, scored in "
         << static_cast<int64_t>(std::lround(results.score_seconds)) << " s; " << utc_now() << "\n\n";
  const std::string table = eval::results_markdown(results);
  std::cout << "\n" << table;
  if (!results.depth_histogram.empty()) {
    int64_t total = 0;
    for (auto c : results.depth_histogram) total += c;
    std::cout << "\ndepth histogram of scored tokens:";
    for (size_t d = 0; d < results.depth_histogram.size(); ++d) {
      std::printf(" %zu:%.1f%%", d,
                  100.0 * static_cast<double>(results.depth_histogram[d]) / static_cast<double>(std::max<int64_t>(1, total)));
    }
    std::cout << "\n";
  }
  const auto written = eval::write_reports(out_dir, results, meta, header.str());
  std::cout << "\nwrote";
  for (const auto& p : written) std::cout << " " << p;
  std::cout << "\n";
  return 0;
}

void register_eval_commands(CLI::App& app, Action& action) {
  auto f = std::make_shared<EvalFlags>();
  CLI::App* cmd = app.add_subcommand(
      "eval", "Few-shot evaluation comparable with lm-evaluation-harness (--tasks), or perplexity on shards (--ppl)");
  cmd->add_option("model", f->model, "Bundle (mor export / mor import), checkpoint or run directory");
  cmd->add_option("--tasks", f->tasks,
                  "Comma-separated tasks or groups: lambada_openai, hellaswag, piqa, winogrande, arc_easy, "
                  "arc_challenge, openbookqa, mmlu, mmlu_<subject>, ... (--list shows them)");
  cmd->add_option("--config", f->config.files, "YAML file(s) with an eval section (e.g. configs/eval/paper-suite.yaml)");
  cmd->add_option("--set", f->config.overrides, "Override a config key, e.g. --set eval.limit=100");
  cmd->add_option("--num-fewshot", f->num_fewshot, "Shots for every task (default: each task's own)");
  cmd->add_option("--data-dir", f->data_dir, "Directory of the JSONL datasets (default data/eval; docs/eval-data.md)");
  cmd->add_option("--include-path", f->include_paths, "Extra directory of task YAML files (overrides built-ins)");
  cmd->add_option("--limit", f->limit, "Evaluate only the first N documents of each task");
  cmd->add_option("--batch-size", f->batch_size, "Sequences per forward (results do not depend on it; default 16)");
  cmd->add_flag("--log-samples", f->log_samples, "Write per-document records (samples_<task>.jsonl)");
  cmd->add_option("-o,--output", f->output, "Output directory (default eval_results/<model name>)");
  cmd->add_option("--routing", f->routing,
                  "MoR routing: causal (default: per-token decisions) or topk (the original non-causal top-k)");
  cmd->add_option("--seed", f->seed, "Few-shot sampling seed (the harness's fewshot_random_seed)")->capture_default_str();
  cmd->add_option("--bootstrap-iters", f->bootstrap_iters, "Resamples for the perplexity stderr (0: none)")
      ->capture_default_str();
  cmd->add_option("--ppl", f->ppl, "Token shards (files, directories or globs): report loss and perplexity");
  cmd->add_option("--seq-len", f->seq_len, "--ppl: tokens per row (default: the model's context)");
  cmd->add_option("--max-rows", f->max_rows, "--ppl: score at most this many rows");
  cmd->add_option("--tokenizer", f->tokenizer, "tokenizer.json to use instead of the model's");
  cmd->add_option("--device", f->device, "auto | cpu | cuda")->capture_default_str();
  cmd->add_option("--dtype", f->dtype, "auto (bfloat16 on CUDA, float32 on CPU) | float32 | bfloat16")
      ->capture_default_str();
  cmd->add_option("--threads", f->threads, "Tokenization threads (0: all cores)");
  cmd->add_flag("--list", f->list, "List the available tasks and groups");
  cmd->add_flag("-q,--quiet", f->quiet, "No progress display");
  cmd->callback([f, cmd, &action] {
    f->has_num_fewshot = cmd->count("--num-fewshot") > 0;
    f->has_data_dir = cmd->count("--data-dir") > 0;
    f->has_limit = cmd->count("--limit") > 0;
    f->has_batch = cmd->count("--batch-size") > 0;
    f->has_routing = cmd->count("--routing") > 0;
    f->has_seed = cmd->count("--seed") > 0;
    action = [f] { return run_eval(*f); };
  });
}

}  // namespace

MOR_REGISTER_COMMANDS("eval", register_eval_commands);

}  // namespace mor::tools
