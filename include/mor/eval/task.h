// Evaluation tasks in a documented subset of lm-evaluation-harness's task dialect (docs/evaluation.md):
// YAML task files (configs/eval/tasks/*.yaml, or any --include-path directory) describe where the
// local JSONL dataset files are, how documents become prompts (templates, template.h), the number
// of shots and the metrics; group files (e.g. MMLU) stamp out subtasks from a task template and
// aggregate them. Prompts and few-shot sets are built exactly as lm-eval 0.4.13 builds them:
//   context = description + shots x (text + target_delimiter + target + fewshot_delimiter) + text
//   multiple choice: one request per choice (context, target_delimiter + choice)
//   multiple input (doc_to_text is an int, WinoGrande): (shots + choice_i, target_delimiter + target)
//   loglikelihood (LAMBADA): (context, target_delimiter + target)
// Few-shot documents come from the fewshot split, else train, else validation, else test; the
// default sampler is one CPython random.Random(seed) per task (core::PyRandom) drawing
// sample(docs, n) per evaluated document in order -- n + 1 with the evaluated document removed
// when the fewshot split equals the test split (both may be unset, as in lm-eval 0.4.13) --, and
// `first_n` takes the first n in file order. Torch-free.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "mor/core/hash.h"
#include "mor/eval/template.h"
#include "mor/io/tokenizer.h"

namespace mor::eval {

enum class OutputType { kMultipleChoice, kLoglikelihood };

// One task file (or one subtask of a group, with the group's variables substituted).
struct TaskSpec {
  std::string name;
  std::string file;          // the YAML it came from (errors name it)
  std::string version = "1.0";
  OutputType output_type = OutputType::kMultipleChoice;
  std::string dataset_source;                      // upstream dataset, for messages ("Rowan/hellaswag")
  std::vector<std::string> dataset_fields;         // expected fields, for messages
  std::map<std::string, std::string> files;        // split -> path relative to the data directory
  std::optional<std::string> training_split, validation_split, test_split, fewshot_split;
  std::string sampler = "default";                 // default | first_n
  int64_t num_fewshot = 0;                         // the task's default number of shots
  Macros macros;
  std::vector<std::pair<std::string, Template>> process_docs;  // new field = template, in order
  std::shared_ptr<Template> description;          // may be null
  std::shared_ptr<Template> doc_to_text, doc_to_target, doc_to_choice;  // choice may be null
  std::vector<std::shared_ptr<Template>> choice_list;  // doc_to_choice given as a YAML list
  std::string target_delimiter = " ";
  std::string fewshot_delimiter = "\n\n";
  std::vector<std::string> metrics;                // acc, acc_norm, perplexity
};

// A group: its members (tasks or groups) and how their metrics combine.
struct GroupSpec {
  std::string name;
  std::string file;
  std::string version;
  bool weight_by_size = true;   // size-weighted mean of members (micro-average); else plain mean
  std::vector<std::string> members;
  std::vector<std::string> metrics;  // aggregated metrics (e.g. acc)
};

// All task and group definitions found in the search directories, by name. Earlier directories
// win (an --include-path directory overrides the built-in task of the same name).
class TaskRegistry {
 public:
  // Reads every *.yaml file in `dirs` (non-recursive). A malformed file is a mor::Error naming the
  // file and key. Missing directories are skipped.
  static TaskRegistry load(const std::vector<std::string>& dirs);
  // The default search path: $MOR_TASK_PATH (':'-separated), then configs/eval/tasks found next to
  // the executable (<exe>/../configs/eval/tasks, <exe>/../share/mor/eval/tasks) and in the current
  // directory.
  static std::vector<std::string> default_dirs();

  bool has_task(const std::string& name) const;
  bool has_group(const std::string& name) const;
  const TaskSpec& task(const std::string& name) const;
  const GroupSpec& group(const std::string& name) const;
  // The tasks under `name` (itself for a task; leaves of a group, in definition order).
  std::vector<std::string> leaf_tasks(const std::string& name) const;
  std::vector<std::string> task_names() const;   // sorted
  std::vector<std::string> group_names() const;  // sorted
  const std::vector<std::string>& dirs() const { return dirs_; }

 private:
  std::vector<std::string> dirs_;
  std::map<std::string, TaskSpec> tasks_;
  std::map<std::string, GroupSpec> groups_;
};

// Parses one task or group YAML file into `tasks`/`groups` (existing names are kept, not replaced).
void parse_task_file(const std::string& path, std::map<std::string, TaskSpec>& tasks,
                     std::map<std::string, GroupSpec>& groups);

struct Request {
  std::string context;
  std::string continuation;
};

// One evaluated document and its requests.
struct DocRequests {
  int64_t doc_id = 0;             // index in the evaluated split
  Value doc;                      // the processed document
  Value target;                   // multiple choice: gold index (int), or -100 when out of range;
                                  // loglikelihood: the target string
  std::vector<std::string> choices;  // multiple choice: the choices (acc_norm divides by their length)
  std::vector<Request> requests;
};

class Task {
 public:
  // Reads the evaluated split (test, else validation) from `data_dir`, and the few-shot split when
  // `num_fewshot` > 0; a missing or malformed file is a mor::Error saying which file is expected,
  // its format and how to obtain it. Documents go through process_docs as they are read.
  Task(TaskSpec spec, const std::string& data_dir, int64_t num_fewshot);

  const TaskSpec& spec() const { return spec_; }
  const std::string& eval_split() const { return eval_split_; }
  const std::string& fewshot_split() const { return fewshot_split_; }
  int64_t num_eval_docs() const { return static_cast<int64_t>(eval_docs_.size()); }
  int64_t num_fewshot_docs() const { return static_cast<int64_t>(fewshot_docs_.size()); }
  // FNV-1a 64 (hex) over the bytes of the files read, identifying the data a score came from.
  std::string data_digest() const;

  // Requests for the first `limit` evaluated documents (0: all) with `num_fewshot` shots (at most
  // the constructor's) drawn with a fresh random.Random(seed), documents in order (the harness's
  // fewshot_random_seed).
  std::vector<DocRequests> build(int64_t num_fewshot, int64_t seed, int64_t limit = 0) const;

 private:
  std::vector<Value> read_split(const std::string& split);
  Value process(Value doc, const std::string& where) const;

  TaskSpec spec_;
  std::string data_dir_;
  std::string eval_split_, fewshot_split_;
  std::vector<Value> eval_docs_;
  std::vector<Value> fewshot_docs_;
  bool fewshot_is_eval_ = false;  // the sampler removes the evaluated doc (fewshot split == test split)
  uint64_t digest_ = core::kFnv1aOffset;
};

// The harness's _encode_pair: trailing whitespace of the context moves to the continuation, then
// continuation = encode(context + continuation)[len(encode(context)):]. An empty context becomes
// [prefix_token] and the continuation is encoded alone (when that encoding starts with the prefix
// token, its first token is the context instead, as the harness does).
std::pair<std::vector<int32_t>, std::vector<int32_t>> encode_pair(const io::Tokenizer& tokenizer,
                                                                  const std::string& context,
                                                                  const std::string& continuation,
                                                                  int32_t prefix_token);
// encode_pair for many requests at once, encoding on `threads` threads (io::Tokenizer::encode_batch;
// 0: every core). The same result as encode_pair for each request, in order.
std::vector<std::pair<std::vector<int32_t>, std::vector<int32_t>>> encode_pairs(
    const io::Tokenizer& tokenizer, const std::vector<const Request*>& requests, int32_t prefix_token, int threads = 0);

}  // namespace mor::eval

