// results.json, results.md and samples_<task>.jsonl (see report.h).
#include "mor/eval/report.h"

#include <cmath>
#include <cstdio>
#include <sstream>

#include "mor/core/file.h"

namespace mor::eval {

namespace {

Value number_or_null(double v) { return std::isfinite(v) ? Value(v) : Value(nullptr); }

Value metrics_json(const std::vector<MetricResult>& metrics) {
  Value out = Value::object();
  for (const auto& m : metrics) {
    out[m.name] = number_or_null(m.value);
    out[m.name + "_stderr"] = number_or_null(m.standard_error);
  }
  return out;
}

std::string fmt(double v) {
  if (!std::isfinite(v)) return "N/A";
  char buf[32];
  std::snprintf(buf, sizeof buf, std::fabs(v) >= 1000 ? "%.2f" : "%.4f", v);
  return buf;
}

}  // namespace

Value results_json(const EvalResults& results, const Value& meta) {
  Value out = Value::object();
  Value tasks = Value::object();
  for (const auto& t : results.tasks) {
    Value r = metrics_json(t.metrics);
    r["version"] = t.version;
    r["num_fewshot"] = t.num_fewshot;
    r["n"] = t.docs;
    r["requests"] = t.requests;
    r["split"] = t.split;
    if (!t.fewshot_split.empty()) r["fewshot_split"] = t.fewshot_split;
    r["data_digest"] = t.data_digest;
    r["task_file"] = t.file;
    tasks[t.name] = std::move(r);
  }
  Value groups = Value::object();
  for (const auto& g : results.groups) {
    Value r = metrics_json(g.metrics);
    r["version"] = g.version;
    r["n"] = g.docs;
    r["aggregation"] = g.weight_by_size ? "weight_by_size" : "mean";
    r["members"] = g.members;
    groups[g.name] = std::move(r);
  }
  out["results"] = std::move(tasks);
  out["groups"] = std::move(groups);
  out["requests"] = results.requests;
  out["tokens"] = results.tokens;
  out["timing_s"] = {{"tokenize", results.tokenize_seconds}, {"score", results.score_seconds}};
  if (!results.depth_histogram.empty()) out["depth_histogram"] = results.depth_histogram;
  for (const auto& [k, v] : meta.items()) out[k] = v;
  return out;
}

std::string results_markdown(const EvalResults& results) {
  std::ostringstream os;
  os << "| Task | Version | Shots | Docs | Metric | Value | Stderr |\n";
  os << "|------|--------:|------:|-----:|--------|------:|-------:|\n";
  for (const auto& t : results.tasks) {
    bool first = true;
    for (const auto& m : t.metrics) {
      os << "| " << (first ? t.name : "") << " | " << (first ? t.version : "") << " | "
         << (first ? std::to_string(t.num_fewshot) : "") << " | " << (first ? std::to_string(t.docs) : "") << " | "
         << m.name << " | " << fmt(m.value) << " | " << (std::isfinite(m.standard_error) ? "± " + fmt(m.standard_error) : "N/A")
         << " |\n";
      first = false;
    }
  }
  if (!results.groups.empty()) {
    os << "\n| Group | Version | Docs | Metric | Value | Stderr |\n";
    os << "|-------|--------:|-----:|--------|------:|-------:|\n";
    for (const auto& g : results.groups) {
      bool first = true;
      for (const auto& m : g.metrics) {
        os << "| " << (first ? g.name : "") << " | " << (first ? g.version : "") << " | "
           << (first ? std::to_string(g.docs) : "") << " | " << m.name << " | " << fmt(m.value) << " | "
           << (std::isfinite(m.standard_error) ? "± " + fmt(m.standard_error) : "N/A") << " |\n";
        first = false;
      }
    }
  }
  return os.str();
}

std::vector<std::string> write_reports(const std::string& dir, const EvalResults& results, const Value& meta,
                                       const std::string& markdown_header) {
  core::make_directories(dir);
  std::vector<std::string> written;
  const std::string json_path = dir + "/results.json";
  core::atomic_write(json_path, results_json(results, meta).dump(2) + "\n");
  written.push_back(json_path);
  const std::string md_path = dir + "/results.md";
  core::atomic_write(md_path, markdown_header + results_markdown(results));
  written.push_back(md_path);
  for (const auto& t : results.tasks) {
    if (t.samples.empty()) continue;
    std::string text;
    for (const auto& s : t.samples) text += s.dump(-1, ' ', false, Value::error_handler_t::replace) + "\n";
    const std::string path = dir + "/samples_" + t.name + ".jsonl";
    core::atomic_write(path, text);
    written.push_back(path);
  }
  return written;
}

}  // namespace mor::eval
