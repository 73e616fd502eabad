// Task files (YAML) -> TaskSpec / GroupSpec, local JSONL datasets -> documents, and documents ->
// few-shot prompts and log-likelihood requests, exactly as lm-evaluation-harness 0.4.13 builds them.
#include "mor/eval/task.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <set>
#include <cstdio>
#include <sstream>

#include <unistd.h>

#include "mor/core/error.h"
#include "mor/core/file.h"
#include "mor/core/hash.h"
#include "mor/core/py_random.h"
#include "mor/eval/pystr.h"

namespace mor::eval {

namespace {

std::string at_line(const std::string& file, const YAML::Node& node) {
  const YAML::Mark m = node.Mark();
  return m.line >= 0 ? file + ":" + std::to_string(m.line + 1) : file;
}

std::string scalar(const YAML::Node& node, const std::string& file, const std::string& key) {
  MOR_CHECK(node.IsScalar(), at_line(file, node), ": ", key, ": expected a string");
  return node.Scalar();
}

std::optional<std::string> optional_scalar(const YAML::Node& node, const std::string& file, const std::string& key) {
  if (!node || node.IsNull()) return std::nullopt;
  return scalar(node, file, key);
}

std::vector<std::string> string_list(const YAML::Node& node, const std::string& file, const std::string& key) {
  std::vector<std::string> out;
  if (!node || node.IsNull()) return out;
  MOR_CHECK(node.IsSequence(), at_line(file, node), ": ", key, ": expected a list of strings");
  for (const auto& item : node) out.push_back(scalar(item, file, key));
  return out;
}

// Replaces every string scalar below `node` by its rendering with `${...}` holes evaluated in `vars`.
YAML::Node substitute(const YAML::Node& node, const Value& vars, const std::string& where) {
  if (node.IsScalar()) {
    const std::string& text = node.Scalar();
    if (text.find("${") == std::string::npos) return YAML::Clone(node);
    YAML::Node out(Template::parse(text, where, "${", "}").render(vars));
    return out;
  }
  if (node.IsSequence()) {
    YAML::Node out(YAML::NodeType::Sequence);
    for (const auto& item : node) out.push_back(substitute(item, vars, where));
    return out;
  }
  if (node.IsMap()) {
    YAML::Node out(YAML::NodeType::Map);
    for (const auto& kv : node) out[kv.first.Scalar()] = substitute(kv.second, vars, where);
    return out;
  }
  return YAML::Clone(node);
}

const std::set<std::string> kTaskKeys = {
    "task", "version", "output_type", "dataset", "training_split", "validation_split", "test_split",
    "fewshot_split", "sampler", "num_fewshot", "macros", "process_docs", "description", "doc_to_text",
    "doc_to_target", "doc_to_choice", "target_delimiter", "fewshot_delimiter", "metrics"};
const std::set<std::string> kGroupKeys = {"group", "version", "aggregate", "metrics", "members",
                                          "task_template", "template_var", "subgroups"};
const std::set<std::string> kMetrics = {"acc", "acc_norm", "perplexity"};

std::shared_ptr<Template> make_template(const std::string& text, const std::string& where) {
  return std::make_shared<Template>(Template::parse(text, where));
}

TaskSpec parse_task_node(const YAML::Node& root, const std::string& file) {
  TaskSpec spec;
  spec.file = file;
  for (const auto& kv : root) {
    const std::string key = kv.first.Scalar();
    MOR_CHECK(kTaskKeys.count(key), at_line(file, kv.first), ": unknown task key '", key,
              "' (known: task, version, output_type, dataset, *_split, sampler, num_fewshot, macros, process_docs, "
              "description, doc_to_text, doc_to_target, doc_to_choice, target_delimiter, fewshot_delimiter, metrics)");
  }
  MOR_CHECK(root["task"], file, ": missing key 'task' (the task name)");
  spec.name = scalar(root["task"], file, "task");
  const std::string w = file + ": " + spec.name + ": ";
  if (root["version"]) spec.version = scalar(root["version"], file, "version");
  const std::string type = root["output_type"] ? scalar(root["output_type"], file, "output_type") : "multiple_choice";
  if (type == "multiple_choice") {
    spec.output_type = OutputType::kMultipleChoice;
  } else if (type == "loglikelihood") {
    spec.output_type = OutputType::kLoglikelihood;
  } else {
    fail(at_line(file, root["output_type"]), ": output_type: '", type,
         "' is not supported (multiple_choice | loglikelihood)");
  }
  const YAML::Node dataset = root["dataset"];
  MOR_CHECK(dataset && dataset.IsMap(), file, ": ", spec.name, ": missing map 'dataset' (with 'files: {split: path}')");
  for (const auto& kv : dataset) {
    const std::string key = kv.first.Scalar();
    if (key == "source") {
      spec.dataset_source = scalar(kv.second, file, "dataset.source");
    } else if (key == "fields") {
      spec.dataset_fields = string_list(kv.second, file, "dataset.fields");
    } else if (key == "files") {
      MOR_CHECK(kv.second.IsMap(), at_line(file, kv.second), ": dataset.files: expected a map split -> path");
      for (const auto& f : kv.second) spec.files[f.first.Scalar()] = scalar(f.second, file, "dataset.files");
    } else {
      fail(at_line(file, kv.first), ": unknown key dataset.", key, " (known: source, fields, files)");
    }
  }
  MOR_CHECK(!spec.files.empty(), at_line(file, dataset), ": dataset.files: no split files listed");
  spec.training_split = optional_scalar(root["training_split"], file, "training_split");
  spec.validation_split = optional_scalar(root["validation_split"], file, "validation_split");
  spec.test_split = optional_scalar(root["test_split"], file, "test_split");
  spec.fewshot_split = optional_scalar(root["fewshot_split"], file, "fewshot_split");
  for (const auto& [key, split] : {std::pair{"training_split", spec.training_split},
                                   {"validation_split", spec.validation_split},
                                   {"test_split", spec.test_split},
                                   {"fewshot_split", spec.fewshot_split}}) {
    MOR_CHECK(!split || spec.files.count(*split), at_line(file, root[key]), ": ", key, ": split '", *split,
              "' has no entry in dataset.files");
  }
  MOR_CHECK(spec.test_split || spec.validation_split, file, ": ", spec.name,
            ": neither test_split nor validation_split is set (nothing to evaluate)");
  if (root["sampler"]) {
    spec.sampler = scalar(root["sampler"], file, "sampler");
    MOR_CHECK(spec.sampler == "default" || spec.sampler == "first_n", at_line(file, root["sampler"]),
              ": sampler: '", spec.sampler, "' is not supported (default | first_n)");
  }
  if (root["num_fewshot"]) {
    try {
      spec.num_fewshot = root["num_fewshot"].as<int64_t>();
    } catch (const YAML::Exception&) {
      fail(at_line(file, root["num_fewshot"]), ": num_fewshot: expected an integer");
    }
    MOR_CHECK(spec.num_fewshot >= 0, at_line(file, root["num_fewshot"]), ": num_fewshot: must be >= 0");
  }
  if (const YAML::Node macros = root["macros"]) {
    MOR_CHECK(macros.IsMap(), at_line(file, macros), ": macros: expected a map name -> template (argument x)");
    for (const auto& kv : macros) {
      const std::string name = kv.first.Scalar();
      spec.macros[name] = make_template(scalar(kv.second, file, "macros." + name), w + "macros." + name);
    }
  }
  if (const YAML::Node pd = root["process_docs"]) {
    MOR_CHECK(pd.IsSequence(), at_line(file, pd),
              ": process_docs: expected a list of one-key maps (- field: template), applied in order");
    for (const auto& item : pd) {
      MOR_CHECK(item.IsMap() && item.size() == 1, at_line(file, item),
                ": process_docs: each entry is one 'field: template' pair");
      for (const auto& kv : item) {
        const std::string field = kv.first.Scalar();
        spec.process_docs.emplace_back(
            field, Template::parse(scalar(kv.second, file, "process_docs." + field), w + "process_docs." + field));
      }
    }
  }
  if (root["description"]) {
    const std::string d = scalar(root["description"], file, "description");
    if (!d.empty()) spec.description = make_template(d, w + "description");
  }
  MOR_CHECK(root["doc_to_text"], file, ": ", spec.name, ": missing key 'doc_to_text'");
  MOR_CHECK(root["doc_to_target"], file, ": ", spec.name, ": missing key 'doc_to_target'");
  spec.doc_to_text = make_template(scalar(root["doc_to_text"], file, "doc_to_text"), w + "doc_to_text");
  spec.doc_to_target = make_template(scalar(root["doc_to_target"], file, "doc_to_target"), w + "doc_to_target");
  if (const YAML::Node c = root["doc_to_choice"]) {
    if (c.IsSequence()) {
      for (const auto& item : c) spec.choice_list.push_back(make_template(scalar(item, file, "doc_to_choice"), ""));
    } else {
      spec.doc_to_choice = make_template(scalar(c, file, "doc_to_choice"), w + "doc_to_choice");
    }
  }
  const bool has_choice = spec.doc_to_choice || !spec.choice_list.empty();
  MOR_CHECK(spec.output_type != OutputType::kMultipleChoice || has_choice, file, ": ", spec.name,
            ": multiple_choice needs doc_to_choice");
  if (root["target_delimiter"]) spec.target_delimiter = scalar(root["target_delimiter"], file, "target_delimiter");
  if (root["fewshot_delimiter"]) spec.fewshot_delimiter = scalar(root["fewshot_delimiter"], file, "fewshot_delimiter");
  spec.metrics = string_list(root["metrics"], file, "metrics");
  if (spec.metrics.empty()) {
    spec.metrics = spec.output_type == OutputType::kMultipleChoice ? std::vector<std::string>{"acc"}
                                                                   : std::vector<std::string>{"perplexity", "acc"};
  }
  for (const auto& m : spec.metrics) {
    MOR_CHECK(kMetrics.count(m), at_line(file, root["metrics"]), ": metrics: '", m,
              "' is not supported (acc, acc_norm, perplexity)");
    MOR_CHECK(m != "perplexity" || spec.output_type == OutputType::kLoglikelihood, at_line(file, root["metrics"]),
              ": metrics: perplexity needs output_type loglikelihood");
    MOR_CHECK(m != "acc_norm" || spec.output_type == OutputType::kMultipleChoice, at_line(file, root["metrics"]),
              ": metrics: acc_norm needs output_type multiple_choice");
  }
  return spec;
}

void parse_group_node(const YAML::Node& root, const std::string& file, std::map<std::string, TaskSpec>& tasks,
                      std::map<std::string, GroupSpec>& groups) {
  for (const auto& kv : root) {
    const std::string key = kv.first.Scalar();
    MOR_CHECK(kGroupKeys.count(key), at_line(file, kv.first), ": unknown group key '", key,
              "' (known: group, version, aggregate, metrics, members, task_template, template_var, subgroups)");
  }
  GroupSpec group;
  group.file = file;
  group.name = scalar(root["group"], file, "group");
  if (root["version"]) group.version = scalar(root["version"], file, "version");
  if (root["aggregate"]) {
    const std::string agg = scalar(root["aggregate"], file, "aggregate");
    MOR_CHECK(agg == "weight_by_size" || agg == "mean", at_line(file, root["aggregate"]), ": aggregate: '", agg,
              "' is not supported (weight_by_size | mean)");
    group.weight_by_size = agg == "weight_by_size";
  }
  group.metrics = string_list(root["metrics"], file, "metrics");
  if (group.metrics.empty()) group.metrics = {"acc"};
  group.members = string_list(root["members"], file, "members");

  if (const YAML::Node subgroups = root["subgroups"]) {
    // With a task_template, subgroup items are values of template_var, each stamping out a task;
    // without one, they name existing tasks or groups.
    const YAML::Node tmpl = root["task_template"];
    MOR_CHECK(!tmpl || tmpl.IsMap(), at_line(file, tmpl), ": task_template: expected a task map");
    const std::string var = root["template_var"] ? scalar(root["template_var"], file, "template_var") : "name";
    MOR_CHECK(subgroups.IsMap(), at_line(file, subgroups), ": subgroups: expected a map subgroup -> list of ", var);
    for (const auto& kv : subgroups) {
      GroupSpec sub;
      sub.file = file;
      sub.name = kv.first.Scalar();
      sub.version = group.version;
      sub.weight_by_size = group.weight_by_size;
      sub.metrics = group.metrics;
      for (const std::string& item : string_list(kv.second, file, "subgroups." + sub.name)) {
        if (!tmpl) {
          sub.members.push_back(item);
          continue;
        }
        Value vars = Value::object();
        vars[var] = item;
        const TaskSpec spec =
            parse_task_node(substitute(tmpl, vars, file + ": task_template (" + var + "=" + item + ")"), file);
        sub.members.push_back(spec.name);
        tasks.emplace(spec.name, spec);
      }
      group.members.push_back(sub.name);
      groups.emplace(sub.name, sub);
    }
  }
  MOR_CHECK(!group.members.empty(), file, ": group ", group.name, ": no members (members: or subgroups:)");
  groups.emplace(group.name, group);
}


}  // namespace

void parse_task_file(const std::string& path, std::map<std::string, TaskSpec>& tasks,
                     std::map<std::string, GroupSpec>& groups) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    fail(path, ": cannot read the task file");
  } catch (const YAML::Exception& e) {
    fail(path, ":", e.mark.line + 1, ": invalid YAML: ", e.msg);
  }
  MOR_CHECK(root.IsMap(), path, ": expected a task (task: NAME ...) or a group (group: NAME ...) map");
  if (root["group"]) {
    parse_group_node(root, path, tasks, groups);
  } else {
    TaskSpec spec = parse_task_node(root, path);
    tasks.emplace(spec.name, std::move(spec));
  }
}

TaskRegistry TaskRegistry::load(const std::vector<std::string>& dirs) {
  TaskRegistry reg;
  reg.dirs_ = dirs;
  for (const auto& dir : dirs) {
    if (!core::is_directory(dir)) continue;
    std::vector<std::string> files;
    for (const auto& name : core::list_directory(dir)) {
      if (core::ends_with(name, ".yaml") || core::ends_with(name, ".yml")) files.push_back(name);
    }
    std::sort(files.begin(), files.end());
    for (const auto& name : files) {
      const std::string path = dir + "/" + name;
      std::map<std::string, TaskSpec> tasks;
      std::map<std::string, GroupSpec> groups;
      parse_task_file(path, tasks, groups);
      for (auto& [n, t] : tasks) {
        if (!reg.groups_.count(n)) reg.tasks_.emplace(n, std::move(t));
      }
      for (auto& [n, g] : groups) {
        if (!reg.tasks_.count(n)) reg.groups_.emplace(n, std::move(g));
      }
    }
  }
  return reg;
}

std::vector<std::string> TaskRegistry::default_dirs() {
  std::vector<std::string> dirs;
  if (const char* env = std::getenv("MOR_TASK_PATH")) {
    std::stringstream ss(env);
    std::string item;
    while (std::getline(ss, item, ':')) {
      if (!item.empty()) dirs.push_back(item);
    }
  }
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n > 0) {
    std::string exe(buf, static_cast<size_t>(n));
    const std::string exe_dir = exe.substr(0, exe.rfind('/'));
    dirs.push_back(exe_dir + "/../configs/eval/tasks");
    dirs.push_back(exe_dir + "/../share/mor/eval/tasks");
  }
  dirs.push_back("configs/eval/tasks");
  return dirs;
}

bool TaskRegistry::has_task(const std::string& name) const { return tasks_.count(name) > 0; }
bool TaskRegistry::has_group(const std::string& name) const { return groups_.count(name) > 0; }

const TaskSpec& TaskRegistry::task(const std::string& name) const {
  const auto it = tasks_.find(name);
  MOR_CHECK(it != tasks_.end(), "unknown task '", name, "'");
  return it->second;
}

const GroupSpec& TaskRegistry::group(const std::string& name) const {
  const auto it = groups_.find(name);
  MOR_CHECK(it != groups_.end(), "unknown task group '", name, "'");
  return it->second;
}

std::vector<std::string> TaskRegistry::leaf_tasks(const std::string& name) const {
  if (has_task(name)) return {name};
  if (!has_group(name)) {
    std::string known;
    for (const auto& n : task_names()) {
      if (n.rfind("mmlu_", 0) != 0) known += (known.empty() ? "" : ", ") + n;
    }
    for (const auto& n : group_names()) known += ", " + n;
    std::string where;
    for (const auto& d : dirs_) where += (where.empty() ? "" : ", ") + d;
    fail("unknown task '", name, "' (known: ", known.empty() ? "none" : known, "; searched ", where,
         "; add a directory of task YAMLs with --include-path)");
  }
  std::vector<std::string> out;
  for (const auto& m : group(name).members) {
    MOR_CHECK(m != name, group(name).file, ": group ", name, " contains itself");
    for (auto& t : leaf_tasks(m)) {
      if (std::find(out.begin(), out.end(), t) == out.end()) out.push_back(std::move(t));
    }
  }
  return out;
}

std::vector<std::string> TaskRegistry::task_names() const {
  std::vector<std::string> out;
  for (const auto& [n, _] : tasks_) out.push_back(n);
  return out;
}

std::vector<std::string> TaskRegistry::group_names() const {
  std::vector<std::string> out;
  for (const auto& [n, _] : groups_) out.push_back(n);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Documents and requests

namespace {

std::string fields_hint(const TaskSpec& spec) {
  std::string out;
  for (const auto& f : spec.dataset_fields) out += (out.empty() ? "" : ", ") + f;
  return out;
}

// doc_to_text / doc_to_target as the harness resolves them: a field name gives the field, a
// template gives its text, and a text of decimal digits becomes an int when the task has choices.
Value resolve_text(const Template& t, const Value& doc, const Macros& macros, bool has_choices) {
  const std::string& src = t.source();
  if (doc.is_object() && doc.contains(src)) return doc.at(src);
  const std::string text = t.render(doc, macros);
  if (has_choices && py::isdigit(text)) {
    bool ascii = std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
    MOR_CHECK(ascii, t.where(), ": '", text, "' is a non-ASCII number, which Python's literal_eval rejects");
    return Value(std::stoll(text));
  }
  return Value(text);
}

std::vector<std::string> resolve_choices(const TaskSpec& spec, const Value& doc) {
  Value v;
  if (!spec.choice_list.empty()) {
    std::vector<std::string> out;
    for (const auto& c : spec.choice_list) out.push_back(c->source());
    return out;
  }
  const Template& t = *spec.doc_to_choice;
  if (doc.is_object() && doc.contains(t.source())) {
    v = doc.at(t.source());
  } else {
    v = t.evaluate(doc, spec.macros);
  }
  MOR_CHECK(v.is_array(), t.where(), ": doc_to_choice must give a list, got ", py_repr(v));
  std::vector<std::string> out;
  for (const auto& c : v) {
    MOR_CHECK(c.is_string(), t.where(), ": doc_to_choice must give a list of strings, got ", py_repr(v));
    out.push_back(c.get<std::string>());
  }
  return out;
}

// build_qa_turn for a few-shot example: q + (answer? tgt + answer + few : "").
void append_example(std::string& out, const TaskSpec& spec, const Value& doc, bool multiple_input) {
  const bool has_choices = spec.doc_to_choice || !spec.choice_list.empty();
  Value q = resolve_text(*spec.doc_to_text, doc, spec.macros, has_choices);
  std::vector<std::string> choices;
  if (has_choices) choices = resolve_choices(spec, doc);
  const Value a = resolve_text(*spec.doc_to_target, doc, spec.macros, has_choices);
  if (multiple_input) {
    MOR_CHECK(q.is_number_integer() && q.get<int64_t>() >= 0 && q.get<int64_t>() < static_cast<int64_t>(choices.size()),
              spec.doc_to_text->where(), ": multiple-input index ", py_repr(q), " is not a choice index");
    q = choices[static_cast<size_t>(q.get<int64_t>())];
    choices.clear();
  }
  MOR_CHECK(q.is_string(), spec.doc_to_text->where(), ": the few-shot text must be a string, got ", py_repr(q));
  out += q.get<std::string>();
  const bool has_answer = !a.is_null() && !(a.is_string() && a.get<std::string>().empty());
  if (!has_answer) return;
  out += spec.target_delimiter;
  std::string answer;
  if (!choices.empty() && a.is_number_integer()) {
    const int64_t i = a.get<int64_t>();
    MOR_CHECK(i >= 0 && i < static_cast<int64_t>(choices.size()), spec.doc_to_target->where(),
              ": few-shot target index ", i, " is out of range for ", choices.size(), " choices");
    answer = choices[static_cast<size_t>(i)];
  } else if (a.is_array() && !a.empty()) {
    answer = py_str(a[0]);
  } else {
    MOR_CHECK(a.is_string(), spec.doc_to_target->where(), ": the few-shot answer must be a string, got ", py_repr(a));
    answer = a.get<std::string>();
  }
  out += answer;
  out += spec.fewshot_delimiter;
}

}  // namespace

Task::Task(TaskSpec spec, const std::string& data_dir, int64_t num_fewshot)
    : spec_(std::move(spec)), data_dir_(data_dir) {
  eval_split_ = spec_.test_split ? *spec_.test_split : *spec_.validation_split;
  eval_docs_ = read_split(eval_split_);
  MOR_CHECK(!eval_docs_.empty(), spec_.name, ": ", data_dir, "/", spec_.files.at(eval_split_), " has no documents");
  const auto& fs = spec_.fewshot_split   ? spec_.fewshot_split
                   : spec_.training_split ? spec_.training_split
                   : spec_.validation_split ? spec_.validation_split
                                            : spec_.test_split;
  fewshot_split_ = *fs;
  fewshot_is_eval_ = spec_.fewshot_split == spec_.test_split;
  if (num_fewshot > 0) {
    fewshot_docs_ = fewshot_split_ == eval_split_ ? eval_docs_ : read_split(fewshot_split_);
    MOR_CHECK(!fewshot_docs_.empty(), spec_.name, ": the few-shot split '", fewshot_split_, "' has no documents");
  }
}

std::string Task::data_digest() const { return core::hex64(digest_); }

std::vector<Value> Task::read_split(const std::string& split) {
  const std::string& data_dir = data_dir_;
  const std::string path = data_dir + "/" + spec_.files.at(split);
  if (!core::file_exists(path)) {
    std::string msg = spec_.name + ": missing data file " + path + " (split '" + split + "'";
    if (!spec_.dataset_source.empty()) msg += " of " + spec_.dataset_source;
    msg += ", JSON Lines";
    if (!spec_.dataset_fields.empty()) msg += " with fields " + fields_hint(spec_);
    const std::string family = spec_.name.rfind("mmlu_", 0) == 0 ? "mmlu" : spec_.name;
    msg += "); convert a Hugging Face export or the original release with `python3 tools/convert_eval_data.py " +
           family + " INPUT... --out " + data_dir + "` (docs/eval-data.md), or point --data-dir at the data";
    fail(msg);
  }
  const std::string bytes = core::read_file(path);
  digest_ = core::fnv1a64(digest_, bytes);
  std::vector<Value> docs;
  size_t pos = 0;
  int64_t line_no = 0;
  while (pos < bytes.size()) {
    size_t end = bytes.find('\n', pos);
    if (end == std::string::npos) end = bytes.size();
    std::string_view line(bytes.data() + pos, end - pos);
    ++line_no;
    pos = end + 1;
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) line.remove_suffix(1);
    if (line.empty()) continue;
    Value doc;
    try {
      doc = Value::parse(line);
    } catch (const Value::exception& e) {
      fail(path, ":", line_no, ": invalid JSON: ", e.what());
    }
    MOR_CHECK(doc.is_object(), path, ":", line_no, ": expected one JSON object per line");
    for (const auto& f : spec_.dataset_fields) {
      MOR_CHECK(doc.contains(f), path, ":", line_no, ": missing field '", f, "' (", spec_.name, " expects ",
                fields_hint(spec_), ")");
    }
    docs.push_back(process(std::move(doc), path + ":" + std::to_string(line_no)));
  }
  return docs;
}

Value Task::process(Value doc, const std::string& where) const {
  for (const auto& [field, tmpl] : spec_.process_docs) {
    try {
      doc[field] = tmpl.evaluate(doc, spec_.macros);
    } catch (const Error& e) {
      fail(where, ": ", e.what());
    }
  }
  return doc;
}

std::vector<DocRequests> Task::build(int64_t num_fewshot, int64_t seed, int64_t limit) const {
  MOR_CHECK(num_fewshot >= 0, "num_fewshot must be >= 0, got ", num_fewshot);
  const bool has_choices = spec_.doc_to_choice || !spec_.choice_list.empty();
  MOR_CHECK(num_fewshot == 0 || !fewshot_docs_.empty(), spec_.name,
            ": few-shot documents were not loaded (Task constructed with num_fewshot 0)");
  const int64_t n_docs = limit > 0 ? std::min<int64_t>(limit, num_eval_docs()) : num_eval_docs();
  core::PyRandom rnd(seed);
  std::vector<DocRequests> out;
  out.reserve(static_cast<size_t>(n_docs));
  // Multiple input (WinoGrande): doc_to_text gives an int, decided on the first document as the
  // harness does.
  const bool multiple_input =
      has_choices && resolve_text(*spec_.doc_to_text, eval_docs_[0], spec_.macros, has_choices).is_number_integer();
  for (int64_t d = 0; d < n_docs; ++d) {
    const Value& doc = eval_docs_[static_cast<size_t>(d)];
    const std::string where = spec_.name + " document " + std::to_string(d);
    try {
      DocRequests dr;
      dr.doc_id = d;
      dr.doc = doc;
      std::string prefix = spec_.description ? spec_.description->render(doc, spec_.macros) : std::string();
      if (num_fewshot > 0) {
        const auto& pool = fewshot_docs_;
        const size_t n = static_cast<size_t>(num_fewshot);
        std::vector<const Value*> shots;
        if (spec_.sampler == "first_n") {
          for (const auto& x : pool) {
            if (shots.size() == n) break;
            if (fewshot_is_eval_ && x == doc) continue;
            shots.push_back(&x);
          }
          MOR_CHECK(shots.size() == n, spec_.name, ": ", num_fewshot, " shots requested but the few-shot split '",
                    fewshot_split_, "' has only ", shots.size(), " documents");
        } else {
          const size_t draw = fewshot_is_eval_ ? n + 1 : n;
          MOR_CHECK(draw <= pool.size(), spec_.name, ": ", num_fewshot, " shots", fewshot_is_eval_ ? " (+1 drawn)" : "",
                    " requested but the few-shot split '", fewshot_split_, "' has only ", pool.size(), " documents");
          for (size_t i : rnd.sample(pool.size(), draw)) {
            if (fewshot_is_eval_ && pool[i] == doc) continue;
            if (shots.size() < n) shots.push_back(&pool[i]);
          }
          if (shots.size() < n) {  // duplicates of the evaluated doc were drawn: resample without them
            std::vector<const Value*> rest;
            for (const auto& x : pool) {
              if (x != doc) rest.push_back(&x);
            }
            MOR_CHECK(n <= rest.size(), spec_.name, ": not enough few-shot documents besides document ", d);
            shots.clear();
            for (size_t i : rnd.sample(rest.size(), n)) shots.push_back(rest[i]);
          }
        }
        for (const Value* s : shots) append_example(prefix, spec_, *s, multiple_input);
      }
      const Value text = resolve_text(*spec_.doc_to_text, doc, spec_.macros, has_choices);
      const Value target = resolve_text(*spec_.doc_to_target, doc, spec_.macros, has_choices);
      if (spec_.output_type == OutputType::kLoglikelihood) {
        MOR_CHECK(text.is_string(), spec_.doc_to_text->where(), ": must give a string, got ", py_repr(text));
        MOR_CHECK(target.is_string(), spec_.doc_to_target->where(), ": must give a string, got ", py_repr(target));
        dr.target = target;
        dr.requests.push_back({prefix + text.get<std::string>(), target.get<std::string>()});
      } else {
        dr.choices = resolve_choices(spec_, doc);
        MOR_CHECK(!dr.choices.empty(), where, ": no choices");
        if (multiple_input) {
          MOR_CHECK(text.is_number_integer(), spec_.doc_to_text->where(),
                    ": must give the answer index (int) for every document, got ", py_repr(text));
          MOR_CHECK(target.is_string(), spec_.doc_to_target->where(), ": must give the shared continuation, got ",
                    py_repr(target));
          for (const auto& c : dr.choices) {
            dr.requests.push_back({prefix + c, spec_.target_delimiter + target.get<std::string>()});
          }
          const int64_t gold = text.get<int64_t>();
          dr.target = gold >= 0 && gold < static_cast<int64_t>(dr.choices.size()) ? gold : -100;
        } else {
          MOR_CHECK(text.is_string(), spec_.doc_to_text->where(), ": must give a string, got ", py_repr(text));
          const std::string context = prefix + text.get<std::string>();
          for (const auto& c : dr.choices) dr.requests.push_back({context, spec_.target_delimiter + c});
          int64_t gold = -100;
          if (target.is_number_integer()) {
            gold = target.get<int64_t>();
            if (gold < 0 || gold >= static_cast<int64_t>(dr.choices.size())) gold = -100;
          } else if (target.is_string()) {
            const auto it = std::find(dr.choices.begin(), dr.choices.end(), target.get<std::string>());
            if (it != dr.choices.end()) gold = it - dr.choices.begin();
          } else {
            fail(spec_.doc_to_target->where(), ": must give an index or a choice, got ", py_repr(target));
          }
          dr.target = gold;
        }
      }
      out.push_back(std::move(dr));
    } catch (const Error& e) {
      const std::string msg = e.what();
      if (msg.find(where) != std::string::npos) throw;
      fail(where, " (", data_dir_, "/", spec_.files.at(eval_split_), " line ", d + 1, "): ", msg);
    }
  }
  return out;
}

namespace {

// The texts _encode_pair encodes: the context with its trailing whitespace moved to the
// continuation, and context + continuation; an empty context encodes the continuation alone.
struct PairTexts {
  bool empty_context = false;
  std::string context, whole;
};

PairTexts pair_texts(const std::string& context, const std::string& continuation) {
  if (context.empty()) return {true, {}, continuation};
  std::string ctx = py::rstrip(context);
  std::string whole = ctx + context.substr(ctx.size()) + continuation;
  return {false, std::move(ctx), std::move(whole)};
}

std::pair<std::vector<int32_t>, std::vector<int32_t>> assemble_pair(const PairTexts& texts,
                                                                    std::vector<int32_t> ctx_enc,
                                                                    std::vector<int32_t> whole, int32_t prefix_token) {
  if (texts.empty_context) {
    // The harness's HF backend: the prefix token stands in for the context, unless the
    // continuation already starts with it (then that first token is the context).
    if (!whole.empty() && whole.front() == prefix_token) {
      return {std::vector<int32_t>(whole.begin(), whole.begin() + 1), std::vector<int32_t>(whole.begin() + 1, whole.end())};
    }
    return {{prefix_token}, std::move(whole)};
  }
  const size_t split = std::min(ctx_enc.size(), whole.size());
  std::vector<int32_t> cont_enc(whole.begin() + static_cast<std::ptrdiff_t>(split), whole.end());
  return {std::move(ctx_enc), std::move(cont_enc)};
}

}  // namespace

std::pair<std::vector<int32_t>, std::vector<int32_t>> encode_pair(const io::Tokenizer& tokenizer,
                                                                  const std::string& context,
                                                                  const std::string& continuation,
                                                                  int32_t prefix_token) {
  const PairTexts texts = pair_texts(context, continuation);
  return assemble_pair(texts, texts.empty_context ? std::vector<int32_t>{} : tokenizer.encode(texts.context),
                       tokenizer.encode(texts.whole), prefix_token);
}

std::vector<std::pair<std::vector<int32_t>, std::vector<int32_t>>> encode_pairs(
    const io::Tokenizer& tokenizer, const std::vector<const Request*>& requests, int32_t prefix_token, int threads) {
  std::vector<PairTexts> texts;
  std::vector<std::string> batch;  // per request: [context,] whole
  texts.reserve(requests.size());
  for (const Request* r : requests) {
    texts.push_back(pair_texts(r->context, r->continuation));
    if (!texts.back().empty_context) batch.push_back(texts.back().context);
    batch.push_back(texts.back().whole);
  }
  std::vector<std::vector<int32_t>> ids = tokenizer.encode_batch(batch, threads);
  std::vector<std::pair<std::vector<int32_t>, std::vector<int32_t>>> out;
  out.reserve(requests.size());
  size_t k = 0;
  for (const PairTexts& t : texts) {
    std::vector<int32_t> ctx = t.empty_context ? std::vector<int32_t>{} : std::move(ids[k++]);
    out.push_back(assemble_pair(t, std::move(ctx), std::move(ids[k++]), prefix_token));
  }
  return out;
}

}  // namespace mor::eval
