// The evaluation pipeline (see evaluator.h): build every task's requests, tokenize them in
// parallel, score them in one pass, then compute and aggregate the harness's metrics.
#include "mor/eval/evaluator.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <set>

#include "mor/core/error.h"
#include "mor/core/progress.h"
#include "mor/eval/metrics.h"
#include "mor/eval/pystr.h"

namespace mor::eval {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Groups under `name` (itself first), depth first, each once.
void collect_groups(const TaskRegistry& registry, const std::string& name, std::vector<std::string>& out) {
  if (!registry.has_group(name) || std::find(out.begin(), out.end(), name) != out.end()) return;
  out.push_back(name);
  for (const auto& m : registry.group(name).members) collect_groups(registry, m, out);
}

}  // namespace

EvalResults run_evaluation(const EvalOptions& options, const TaskRegistry& registry, const io::Tokenizer& tokenizer,
                           LoglikelihoodScorer& scorer) {
  MOR_CHECK(!options.tasks.empty(), "--tasks: no tasks given");
  MOR_CHECK(options.limit >= 0, "--limit must be >= 0, got ", options.limit);
  MOR_CHECK(options.num_fewshot >= -1, "--num-fewshot must be >= 0, got ", options.num_fewshot);
  std::vector<std::string> leaves, group_names;
  for (const auto& name : options.tasks) {
    for (auto& t : registry.leaf_tasks(name)) {
      if (std::find(leaves.begin(), leaves.end(), t) == leaves.end()) leaves.push_back(std::move(t));
    }
    collect_groups(registry, name, group_names);
  }

  // 1. Documents and prompts.
  struct Pending {
    TaskResult result;
    TaskSpec spec;
    std::vector<DocRequests> docs;
    int64_t first_request = 0;
  };
  std::vector<Pending> pending;
  std::vector<const Request*> flat;
  for (const auto& name : leaves) {
    const TaskSpec& spec = registry.task(name);
    const int64_t shots = options.num_fewshot >= 0 ? options.num_fewshot : spec.num_fewshot;
    Task task(spec, options.data_dir, shots);
    Pending p;
    p.spec = spec;
    p.docs = task.build(shots, options.seed, options.limit);
    p.result.name = name;
    p.result.version = spec.version;
    p.result.file = spec.file;
    p.result.split = task.eval_split();
    p.result.fewshot_split = shots > 0 ? task.fewshot_split() : "";
    p.result.data_digest = task.data_digest();
    p.result.num_fewshot = shots;
    p.result.docs = static_cast<int64_t>(p.docs.size());
    pending.push_back(std::move(p));
  }
  for (auto& p : pending) {
    p.first_request = static_cast<int64_t>(flat.size());
    for (const auto& d : p.docs) {
      for (const auto& r : d.requests) flat.push_back(&r);
    }
    p.result.requests = static_cast<int64_t>(flat.size()) - p.first_request;
  }

  // 2. Tokenization (the harness's _encode_pair), on every core.
  EvalResults results;
  results.requests = static_cast<int64_t>(flat.size());
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<TokenizedRequest> tokenized(flat.size());
  {
    core::Progress::Options po;
    po.mode = options.progress ? core::Progress::Mode::kAuto : core::Progress::Mode::kSilent;
    core::Progress progress("tokenizing", static_cast<int64_t>(flat.size()), po);
    // In slices, so that the progress display moves on long suites.
    constexpr size_t kSlice = 4096;
    for (size_t begin = 0; begin < flat.size(); begin += kSlice) {
      const size_t end = std::min(flat.size(), begin + kSlice);
      const std::vector<const Request*> slice(flat.begin() + static_cast<std::ptrdiff_t>(begin),
                                              flat.begin() + static_cast<std::ptrdiff_t>(end));
      auto pairs = encode_pairs(tokenizer, slice, options.prefix_token, options.threads);
      for (size_t i = 0; i < pairs.size(); ++i) {
        const Request& r = *slice[i];
        MOR_CHECK(!pairs[i].second.empty(), "the continuation '", r.continuation, "' encodes to no tokens");
        tokenized[begin + i] = {std::move(pairs[i].first), std::move(pairs[i].second)};
      }
      progress.add(static_cast<int64_t>(end - begin));
    }
  }
  results.tokenize_seconds = seconds_since(t0);
  for (const auto& t : tokenized) {
    results.tokens += std::min<int64_t>(static_cast<int64_t>(t.context.size() + t.continuation.size()) - 1,
                                        scorer.max_length());
  }

  // 3. Scoring, one pass over all tasks' requests.
  const auto t1 = std::chrono::steady_clock::now();
  std::vector<LoglikelihoodResult> scored;
  {
    core::Progress::Options po;
    po.mode = options.progress ? core::Progress::Mode::kAuto : core::Progress::Mode::kSilent;
    po.interval_s = 30.0;
    core::Progress progress("scoring requests", static_cast<int64_t>(flat.size()), po);
    scored = scorer.score(tokenized, &progress);
  }
  results.score_seconds = seconds_since(t1);
  results.depth_histogram = scorer.depth_histogram();

  // 4. Per-document metrics and task aggregates.
  for (auto& p : pending) {
    std::map<std::string, std::vector<double>> values;
    int64_t req = p.first_request;
    for (const auto& d : p.docs) {
      std::vector<LoglikelihoodResult> res(scored.begin() + req, scored.begin() + req + static_cast<int64_t>(d.requests.size()));
      Value metrics = Value::object();
      if (p.spec.output_type == OutputType::kLoglikelihood) {
        for (const auto& m : p.spec.metrics) {
          const double v = m == "perplexity" ? res[0].ll : (res[0].is_greedy ? 1.0 : 0.0);
          values[m].push_back(v);
          metrics[m] = v;
        }
      } else {
        std::vector<int64_t> lengths;
        for (const auto& c : d.choices) lengths.push_back(py::len(c));
        const ChoiceScores s = score_choices(res, lengths, d.target.get<int64_t>());
        for (const auto& m : p.spec.metrics) {
          const double v = m == "acc_norm" ? s.acc_norm : s.acc;
          values[m].push_back(v);
          metrics[m] = v;
        }
      }
      if (options.log_samples) {
        Value rec = {{"task", p.result.name}, {"doc_id", d.doc_id}, {"doc", d.doc}, {"target", d.target}};
        Value args = Value::array(), resps = Value::array(), ctx_tokens = Value::array(), cont_tokens = Value::array();
        for (size_t k = 0; k < d.requests.size(); ++k) {
          args.push_back({d.requests[k].context, d.requests[k].continuation});
          resps.push_back({res[k].ll, res[k].is_greedy});
          const auto& t = tokenized[static_cast<size_t>(req) + k];
          ctx_tokens.push_back(t.context.size());
          cont_tokens.push_back(t.continuation.size());
        }
        rec["arguments"] = std::move(args);
        rec["resps"] = std::move(resps);
        rec["context_tokens"] = std::move(ctx_tokens);
        rec["continuation_tokens"] = std::move(cont_tokens);
        rec["metrics"] = std::move(metrics);
        p.result.samples.push_back(std::move(rec));
      }
      req += static_cast<int64_t>(d.requests.size());
    }
    for (const auto& m : p.spec.metrics) {
      const auto& v = values[m];
      MetricResult r;
      r.name = m;
      if (m == "perplexity") {
        r.value = perplexity(v);
        r.standard_error = bootstrap_perplexity_stderr(v, options.bootstrap_iters);
      } else {
        r.value = mean(v);
        r.standard_error = mean_stderr(v);
      }
      p.result.metrics.push_back(r);
    }
    results.tasks.push_back(std::move(p.result));
  }

  // 5. Groups: size-weighted (or plain) means of their members, innermost first.
  std::map<std::string, std::pair<std::vector<MetricResult>, int64_t>> scores;  // name -> metrics, docs
  for (const auto& t : results.tasks) scores[t.name] = {t.metrics, t.docs};
  std::function<void(const std::string&)> compute = [&](const std::string& name) {
    if (scores.count(name)) return;
    const GroupSpec& g = registry.group(name);
    GroupResult gr;
    gr.name = name;
    gr.version = g.version;
    gr.weight_by_size = g.weight_by_size;
    gr.members = g.members;
    for (const auto& m : g.members) compute(m);
    for (const auto& metric : g.metrics) {
      std::vector<double> values, errors;
      std::vector<int64_t> sizes;
      for (const auto& m : g.members) {
        const auto& [ms, docs] = scores.at(m);
        for (const auto& r : ms) {
          if (r.name != metric) continue;
          values.push_back(r.value);
          errors.push_back(r.standard_error);
          sizes.push_back(docs);
        }
      }
      if (values.empty()) continue;
      MetricResult r;
      r.name = metric;
      r.value = aggregate_means(values, sizes, g.weight_by_size);
      const bool all_errors = std::none_of(errors.begin(), errors.end(), [](double e) { return std::isnan(e); });
      r.standard_error = all_errors ? aggregate_stderrs(errors, sizes, g.weight_by_size) : kNaN;
      gr.metrics.push_back(r);
    }
    for (const auto& m : g.members) gr.docs += scores.at(m).second;
    scores[name] = {gr.metrics, gr.docs};
    results.groups.push_back(std::move(gr));
  };
  for (const auto& g : group_names) compute(g);
  // Report groups outermost first (the order they were found).
  std::vector<GroupResult> ordered;
  for (const auto& g : group_names) {
    for (auto& r : results.groups) {
      if (r.name == g) ordered.push_back(r);
    }
  }
  results.groups = std::move(ordered);
  return results;
}

}  // namespace mor::eval
