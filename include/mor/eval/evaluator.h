// Runs an evaluation suite: task/group names -> documents -> prompts -> tokenized requests (the
// harness's _encode_pair) -> one scoring pass over every request of every task (a
// LoglikelihoodScorer) -> per-document metrics -> task and group aggregates. Torch-free.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "mor/eval/scorer.h"
#include "mor/eval/task.h"
#include "mor/io/tokenizer.h"

namespace mor::eval {

struct EvalOptions {
  std::vector<std::string> tasks;  // task or group names
  int64_t num_fewshot = -1;        // -1: each task's own default
  std::string data_dir = "data/eval";
  int64_t limit = 0;               // first N documents per task; 0: all
  int64_t seed = 1234;             // few-shot sampling seed (the harness's fewshot_random_seed)
  int64_t bootstrap_iters = 100000;  // perplexity stderr resamples (the harness's default); 0: none
  bool log_samples = false;        // keep per-document records (TaskResult::samples)
  int32_t prefix_token = 0;        // stands in for an empty context (the harness's prefix_token_id)
  int threads = 0;                 // tokenization threads; 0: all cores
  bool progress = true;            // progress bars on stderr
};

struct MetricResult {
  std::string name;   // acc, acc_norm, perplexity
  double value = 0.0;
  double standard_error = 0.0;  // NaN when not available
};

struct TaskResult {
  std::string name, version, file, split, fewshot_split, data_digest;
  int64_t num_fewshot = 0;
  int64_t docs = 0;
  int64_t requests = 0;
  std::vector<MetricResult> metrics;
  std::vector<Value> samples;  // with log_samples: one record per document (docs/evaluation.md)
};

struct GroupResult {
  std::string name, version;
  bool weight_by_size = true;
  int64_t docs = 0;
  std::vector<std::string> members;
  std::vector<MetricResult> metrics;
};

struct EvalResults {
  std::vector<TaskResult> tasks;    // leaf tasks, in the order they were asked for
  std::vector<GroupResult> groups;  // every group asked for, and the groups inside them
  int64_t requests = 0;
  int64_t tokens = 0;               // model input tokens scored (after truncation)
  double tokenize_seconds = 0.0, score_seconds = 0.0;
  std::vector<int64_t> depth_histogram;  // scorer's, see LoglikelihoodScorer::depth_histogram
};

EvalResults run_evaluation(const EvalOptions& options, const TaskRegistry& registry, const io::Tokenizer& tokenizer,
                           LoglikelihoodScorer& scorer);

}  // namespace mor::eval
