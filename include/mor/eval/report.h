// Evaluation reports: results.json (scores, standard errors, task versions, seeds, data and model
// digests, the resolved configuration), a Markdown results table (also printed on the console), and
// per-document sample records as JSON Lines. Torch-free.
#pragma once

#include <string>

#include "mor/eval/evaluator.h"

namespace mor::eval {

// `meta` (an object) is merged in at the top level: model, config, routing, versions, timings.
Value results_json(const EvalResults& results, const Value& meta);
// A table of every task and group (lm-eval's layout: task, version, shots, metric, value, stderr).
std::string results_markdown(const EvalResults& results);
// Writes results.json, results.md and, for tasks with samples, samples_<task>.jsonl into `dir`
// (created), each atomically. Returns the paths written.
std::vector<std::string> write_reports(const std::string& dir, const EvalResults& results, const Value& meta,
                                       const std::string& markdown_header);

}  // namespace mor::eval
