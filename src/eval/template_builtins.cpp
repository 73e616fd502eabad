// The callables of the template dialect: str/list/dict methods, builtins (len, int, ...), macros
// and Jinja filters, each with Python's (or Jinja's) semantics and error messages.
#include <algorithm>
#include <cmath>
#include <limits>

#include "mor/eval/pystr.h"
#include "template_internal.h"

namespace mor::eval::detail {

namespace {

const std::string& str_of(const Val& v, const std::string& what) {
  MOR_CHECK(v->is_string(), what, " must be str, not ", type_name(v.get()));
  return v->get_ref<const std::string&>();
}

void expect_args(const std::vector<Val>& args, size_t lo, size_t hi, const std::string& fn) {
  if (args.size() >= lo && args.size() <= hi) return;
  if (lo == hi)
    fail(fn, "() takes exactly ", lo, " argument", lo == 1 ? "" : "s", " (", args.size(), " given)");
  if (args.size() < lo) fail(fn, "() takes at least ", lo, " argument", lo == 1 ? "" : "s", " (", args.size(), " given)");
  fail(fn, "() takes at most ", hi, " argument", hi == 1 ? "" : "s", " (", args.size(), " given)");
}

int64_t int_of(const Val& v, const std::string& what) {
  MOR_CHECK(is_int(v.get()), what, " must be an int, not ", type_name(v.get()));
  return to_int64(v.get());
}

// The elements of iter(v): list items, str code points, dict keys.
std::vector<Value> items_of(const Value& v) {
  std::vector<Value> out;
  if (v.is_array()) {
    out.assign(v.begin(), v.end());
  } else if (v.is_string()) {
    for (std::string& c : py::chars(v.get_ref<const std::string&>())) out.emplace_back(std::move(c));
  } else if (v.is_object()) {
    for (auto it = v.begin(); it != v.end(); ++it) out.emplace_back(it.key());
  } else {
    fail("'", type_name(v), "' object is not iterable");
  }
  return out;
}

Value list_of(std::vector<Value> items) {
  Value out = Value::array();
  for (Value& v : items) out.push_back(std::move(v));
  return out;
}

Value str_method(const std::string& name, const std::string& s, std::vector<Val>& args) {
  const std::string fn = "str." + name;
  auto opt_str = [&](size_t i) -> std::optional<std::string> {
    if (i >= args.size() || args[i]->is_null()) return std::nullopt;
    return str_of(args[i], fn + "() argument " + std::to_string(i + 1));
  };
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    expect_args(args, 0, 1, fn);
    std::optional<std::string> chars = opt_str(0);
    if (name == "strip") return chars ? py::strip(s, *chars) : py::strip(s);
    if (name == "lstrip") return chars ? py::lstrip(s, *chars) : py::lstrip(s);
    return chars ? py::rstrip(s, *chars) : py::rstrip(s);
  }
  if (name == "split") {
    expect_args(args, 0, 2, fn);
    int64_t maxsplit = args.size() > 1 ? int_of(args[1], fn + "() maxsplit") : -1;
    std::optional<std::string> sep = opt_str(0);
    std::vector<std::string> parts = sep ? py::split(s, *sep, maxsplit) : py::split_whitespace(s, maxsplit);
    Value out = Value::array();
    for (std::string& p : parts) out.push_back(std::move(p));
    return out;
  }
  if (name == "replace") {
    expect_args(args, 2, 3, fn);
    int64_t count = args.size() > 2 ? int_of(args[2], fn + "() count") : -1;
    return py::replace(s, str_of(args[0], fn + "() argument 1"), str_of(args[1], fn + "() argument 2"), count);
  }
  if (name == "lower" || name == "upper" || name == "capitalize" || name == "title" || name == "isdigit" ||
      name == "isalpha") {
    expect_args(args, 0, 0, fn);
    if (name == "lower") return py::lower(s);
    if (name == "upper") return py::upper(s);
    if (name == "capitalize") return py::capitalize(s);
    if (name == "title") return py::title(s);
    if (name == "isdigit") return py::isdigit(s);
    return py::isalpha(s);
  }
  if (name == "startswith" || name == "endswith") {
    expect_args(args, 1, 1, fn);
    std::vector<std::string> affixes;
    if (args[0]->is_array()) {
      for (const Value& v : args[0].get()) {
        MOR_CHECK(v.is_string(), fn, "() tuple items must be str, not ", type_name(v));
        affixes.push_back(v.get<std::string>());
      }
    } else {
      MOR_CHECK(args[0]->is_string(), fn, "() first arg must be str or a tuple of str, not ", type_name(args[0].get()));
      affixes.push_back(args[0]->get<std::string>());
    }
    for (const std::string& a : affixes)
      if (name == "startswith" ? py::startswith(s, a) : py::endswith(s, a)) return true;
    return false;
  }
  if (name == "find" || name == "index" || name == "count") {
    expect_args(args, 1, 1, fn);
    const std::string& sub = str_of(args[0], fn + "() argument");
    if (name == "find") return py::find(s, sub);
    if (name == "count") return py::count(s, sub);
    int64_t i = py::find(s, sub);
    MOR_CHECK(i >= 0, fn, "(", py::repr(sub), "): substring not found");
    return i;
  }
  if (name == "join") {
    expect_args(args, 1, 1, fn);
    std::vector<Value> items = items_of(args[0].get());
    std::vector<std::string> parts;
    for (size_t i = 0; i < items.size(); ++i) {
      MOR_CHECK(items[i].is_string(), fn, "(): sequence item ", i, ": expected str instance, ", type_name(items[i]),
                " found");
      parts.push_back(items[i].get<std::string>());
    }
    return py::join(s, parts);
  }
  fail("'str' object has no attribute '", name, "'", name == "format" ? " (str.format is not supported)" : "");
}

Value list_method(const std::string& name, const Value& list, std::vector<Val>& args) {
  const std::string fn = "list." + name;
  if (name == "index") {
    expect_args(args, 1, 1, fn);
    for (size_t i = 0; i < list.size(); ++i)
      if (py_eq(list[i], args[0].get())) return static_cast<int64_t>(i);
    fail(fn, "(): ", py_repr(args[0].get()), " is not in list");
  }
  if (name == "count") {
    expect_args(args, 1, 1, fn);
    return static_cast<int64_t>(
        std::count_if(list.begin(), list.end(), [&](const Value& v) { return py_eq(v, args[0].get()); }));
  }
  fail("'list' object has no attribute '", name, "'");
}

Val dict_method(const std::string& name, Val& self, std::vector<Val>& args) {
  const std::string fn = "dict." + name;
  const Value& d = self.get();
  if (name == "get") {
    expect_args(args, 1, 2, fn);
    if (args[0]->is_string()) {
      auto it = d.find(args[0]->get_ref<const std::string&>());
      if (it != d.end()) return self.borrowed() ? Val(&*it) : Val(Value(*it));
    }
    return args.size() > 1 ? std::move(args[1]) : Val(Value(nullptr));
  }
  if (name == "keys" || name == "values" || name == "items") {
    expect_args(args, 0, 0, fn);
    Value out = Value::array();
    for (auto it = d.begin(); it != d.end(); ++it) {
      if (name == "keys")
        out.push_back(it.key());
      else if (name == "values")
        out.push_back(it.value());
      else
        out.push_back(Value::array({it.key(), it.value()}));
    }
    return out;
  }
  fail("'dict' object has no attribute '", name, "'");
}

Value builtin_int(const Value& v) {
  if (v.is_string()) {
    std::optional<int64_t> i = py::to_int(v.get_ref<const std::string&>());
    MOR_CHECK(i, "invalid literal for int() with base 10: ", py::repr(v.get_ref<const std::string&>()));
    return *i;
  }
  if (v.is_number_float()) {
    double d = v.get<double>();
    MOR_CHECK(!std::isnan(d), "cannot convert float NaN to integer");
    MOR_CHECK(!std::isinf(d), "cannot convert float infinity to integer");
    double t = std::trunc(d);
    MOR_CHECK(t >= -9223372036854775808.0 && t < 9223372036854775808.0, "integer beyond int64: ", float_repr(d));
    return static_cast<int64_t>(t);
  }
  if (is_int(v)) return to_int64(v);
  fail("int() argument must be a string, a bytes-like object or a real number, not '", type_name(v), "'");
}

Value builtin_float(const Value& v) {
  if (v.is_string()) {
    std::optional<double> d = py::to_float(v.get_ref<const std::string&>());
    MOR_CHECK(d, "could not convert string to float: ", py::repr(v.get_ref<const std::string&>()));
    return *d;
  }
  if (is_number(v)) return to_double(v);
  fail("float() argument must be a string or a real number, not '", type_name(v), "'");
}

int64_t py_len(const Value& v) {
  if (v.is_string()) return py::len(v.get_ref<const std::string&>());
  if (v.is_array() || v.is_object()) return static_cast<int64_t>(v.size());
  fail("object of type '", type_name(v), "' has no len()");
}

const char* const kBuiltins[] = {"len", "int", "str", "float", "list", "range", "min", "max"};
const char* const kFilters[] = {"join",  "length", "count", "lower",  "upper", "capitalize", "title",
                                "trim",  "replace", "int",  "float",  "string", "list",      "first",
                                "last",  "default", "d",    "regex_replace", "map"};

// Binds positional and keyword arguments to parameter names (Python call rules).
std::vector<std::optional<Val>> bind(const std::string& fn, std::vector<Val>& args, Kwargs& kwargs,
                                     std::initializer_list<const char*> params) {
  std::vector<std::optional<Val>> out(params.size());
  MOR_CHECK(args.size() <= params.size(), fn, "() takes at most ", params.size(), " argument",
            params.size() == 1 ? "" : "s", " (", args.size(), " given)");
  for (size_t i = 0; i < args.size(); ++i) out[i] = std::move(args[i]);
  for (auto& [key, value] : kwargs) {
    auto it = std::find_if(params.begin(), params.end(), [&](const char* p) { return key == p; });
    MOR_CHECK(it != params.end(), fn, "() got an unexpected keyword argument '", key, "'");
    size_t i = static_cast<size_t>(it - params.begin());
    MOR_CHECK(!out[i], fn, "() got multiple values for argument '", key, "'");
    out[i] = std::move(value);
  }
  return out;
}

std::string jinja_title(const std::string& s) {
  std::string out;
  std::u32string cps = py::decode_utf8(s);
  auto is_sep = [](char32_t c) { return py::isspace(c) || c == '-' || c == '(' || c == '{' || c == '[' || c == '<'; };
  size_t i = 0;
  while (i < cps.size()) {
    size_t j = i + 1;
    while (j < cps.size() && is_sep(cps[j]) == is_sep(cps[i])) ++j;
    std::string item = py::encode_utf8(std::u32string_view(cps).substr(i, j - i));
    out += py::upper(py::at(item, 0)) + py::lower(py::slice(item, 1, std::nullopt));
    i = j;
  }
  return out;
}

// Value of item.attribute for map(attribute=...): dotted paths, integer parts index lists.
std::optional<Value> attribute_of(const Value& item, const std::string& path) {
  const Value* cur = &item;
  for (const std::string& part : py::split(path, ".")) {
    if (cur->is_object() && cur->contains(part)) {
      cur = &(*cur)[part];
    } else if (cur->is_array() && py::to_int(part)) {
      int64_t i = *py::to_int(part);
      if (i < 0 || i >= static_cast<int64_t>(cur->size())) return std::nullopt;
      cur = &(*cur)[static_cast<size_t>(i)];
    } else {
      return std::nullopt;
    }
  }
  return *cur;
}

}  // namespace

bool is_builtin(const std::string& name) {
  return std::any_of(std::begin(kBuiltins), std::end(kBuiltins), [&](const char* b) { return name == b; });
}

bool is_filter(const std::string& name) {
  return std::any_of(std::begin(kFilters), std::end(kFilters), [&](const char* f) { return name == f; });
}

Val call_method(const std::string& name, Val& self, std::vector<Val>& args, const Ctx&) {
  const Value& v = self.get();
  if (v.is_string()) return str_method(name, v.get_ref<const std::string&>(), args);
  if (v.is_array()) return list_method(name, v, args);
  if (v.is_object()) return dict_method(name, self, args);
  fail("'", type_name(v), "' object has no attribute '", name, "'");
}

Val call_function(const std::string& name, std::vector<Val>& args, Kwargs& kwargs, const Ctx& ctx) {
  auto macro = ctx.macros.find(name);
  if (macro != ctx.macros.end()) {
    MOR_CHECK(args.size() == 1 && kwargs.empty(), "macro ", name, "() takes exactly one argument (x)");
    Value vars = Value::object();
    vars["x"] = std::move(args[0]).take();
    return macro->second->evaluate(vars, ctx.macros);
  }
  MOR_CHECK(is_builtin(name), "undefined name '", name, "' (not a macro or a supported builtin)");
  MOR_CHECK(kwargs.empty(), name, "() takes no keyword arguments");
  if (name == "len") {
    expect_args(args, 1, 1, name);
    return Value(py_len(args[0].get()));
  }
  if (name == "int") {
    expect_args(args, 1, 1, name);
    return Val(builtin_int(args[0].get()));
  }
  if (name == "float") {
    expect_args(args, 0, 1, name);
    return args.empty() ? Value(0.0) : builtin_float(args[0].get());
  }
  if (name == "str") {
    expect_args(args, 0, 1, name);
    return args.empty() ? Value("") : Value(py_str(args[0].get()));
  }
  if (name == "list") {
    expect_args(args, 0, 1, name);
    return args.empty() ? Value::array() : list_of(items_of(args[0].get()));
  }
  if (name == "range") {
    expect_args(args, 1, 3, name);
    int64_t start = 0, stop = 0, step = 1;
    if (args.size() == 1) {
      stop = int_of(args[0], "range() argument");
    } else {
      start = int_of(args[0], "range() argument");
      stop = int_of(args[1], "range() argument");
      if (args.size() == 3) step = int_of(args[2], "range() argument");
    }
    MOR_CHECK(step != 0, "range() arg 3 must not be zero");
    Value out = Value::array();
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
      MOR_CHECK(out.size() < 10000000, "range() too long");
      out.push_back(i);
    }
    return out;
  }
  MOR_CHECK(!args.empty(), name, "() expected at least 1 argument, got 0");
  std::vector<Value> items = args.size() == 1 ? items_of(args[0].get()) : std::vector<Value>{};
  if (args.size() > 1)
    for (Val& a : args) items.push_back(std::move(a).take());
  MOR_CHECK(!items.empty(), name, "() arg is an empty sequence");
  size_t best = 0;
  for (size_t i = 1; i < items.size(); ++i)
    if (name == "min" ? py_lt(items[i], items[best]) : py_lt(items[best], items[i])) best = i;
  return std::move(items[best]);
}

std::optional<Val> apply_filter(const std::string& name, std::optional<Val> operand, std::string& why,
                                std::vector<Val>& args, Kwargs& kwargs, const Ctx& ctx) {
  const std::string fn = "filter '" + name + "'";
  if (name == "default" || name == "d") {
    auto p = bind(fn, args, kwargs, {"default_value", "boolean"});
    bool boolean = p[1] && py_truthy(p[1]->get());
    if (!operand || (boolean && !py_truthy((*operand).get()))) return p[0] ? std::move(*p[0]) : Val(Value(""));
    return operand;
  }
  if (!operand) fail(why);
  Val v = std::move(*operand);
  auto text = [&]() { return v->is_string() ? v->get<std::string>() : py_str(v.get()); };
  if (name == "join") {
    auto p = bind(fn, args, kwargs, {"d", "attribute"});
    std::string sep = p[0] ? py_str(p[0]->get()) : "";
    std::vector<std::string> parts;
    const Value* seq = &v.get();
    Value converted;
    if (!seq->is_array()) {
      converted = list_of(items_of(*seq));
      seq = &converted;
    }
    for (const Value& item : *seq) {
      if (p[1]) {
        std::optional<Value> a = attribute_of(item, py_str(p[1]->get()));
        MOR_CHECK(a, fn, ": an item has no attribute '", py_str(p[1]->get()), "'");
        parts.push_back(py_str(*a));
      } else {
        parts.push_back(py_str(item));
      }
    }
    return Val(Value(py::join(sep, parts)));
  }
  if (name == "map") {
    Value out = Value::array();
    std::vector<Value> items = items_of(v.get());
    auto attr = std::find_if(kwargs.begin(), kwargs.end(), [](const auto& kv) { return kv.first == "attribute"; });
    if (attr != kwargs.end()) {
      auto p = bind(fn, args, kwargs, {"attribute", "default"});
      for (const Value& item : items) {
        std::optional<Value> a = attribute_of(item, py_str(p[0]->get()));
        if (!a && p[1]) a = p[1]->get();
        MOR_CHECK(a, fn, ": an item has no attribute '", py_str(p[0]->get()), "'");
        out.push_back(std::move(*a));
      }
      return Val(std::move(out));
    }
    MOR_CHECK(!args.empty() && args[0]->is_string(), fn, " needs the name of a macro, filter or builtin");
    std::string target = args[0]->get<std::string>();
    bool macro = ctx.macros.count(target) > 0;
    MOR_CHECK(macro || is_filter(target) || is_builtin(target), fn, ": no macro, filter or builtin named '", target,
              "'");
    for (Value& item : items) {
      std::vector<Val> sub_args;
      Kwargs sub_kwargs;
      if (macro || !is_filter(target)) {
        MOR_CHECK(args.size() == 1 && kwargs.empty(), fn, ": ", target, " takes no extra arguments here");
        sub_args.emplace_back(std::move(item));
        out.push_back(call_function(target, sub_args, sub_kwargs, ctx).take());
        continue;
      }
      for (size_t i = 1; i < args.size(); ++i) sub_args.emplace_back(Value(args[i].get()));
      for (const auto& [k, kv] : kwargs) sub_kwargs.emplace_back(k, Val(Value(kv.get())));
      std::string sub_why;
      std::optional<Val> r = apply_filter(target, Val(std::move(item)), sub_why, sub_args, sub_kwargs, ctx);
      if (!r) fail(sub_why);
      out.push_back(std::move(*r).take());
    }
    return Val(std::move(out));
  }
  if (name == "int") {
    auto p = bind(fn, args, kwargs, {"default", "base"});
    MOR_CHECK(!p[1] || (is_int(p[1]->get()) && to_int64(p[1]->get()) == 10), fn, ": only base 10 is supported");
    Val fallback = p[0] ? std::move(*p[0]) : Val(Value(0));
    const Value& x = v.get();
    if (x.is_string()) {
      if (std::optional<int64_t> i = py::to_int(x.get_ref<const std::string&>())) return Val(Value(*i));
      std::optional<double> d = py::to_float(x.get_ref<const std::string&>());
      if (!d || std::isnan(*d)) return fallback;
      return Val(builtin_int(Value(*d)));
    }
    if (is_int(x)) return Val(Value(to_int64(x)));
    if (x.is_number_float() && !std::isnan(x.get<double>())) return Val(builtin_int(x));
    return fallback;
  }
  if (name == "float") {
    auto p = bind(fn, args, kwargs, {"default"});
    const Value& x = v.get();
    if (x.is_string()) {
      if (std::optional<double> d = py::to_float(x.get_ref<const std::string&>())) return Val(Value(*d));
    } else if (is_number(x)) {
      return Val(Value(to_double(x)));
    }
    return p[0] ? std::move(*p[0]) : Val(Value(0.0));
  }
  if (name == "replace") {
    auto p = bind(fn, args, kwargs, {"old", "new", "count"});
    MOR_CHECK(p[0] && p[1], fn, " needs old and new");
    int64_t count = p[2] && !(*p[2])->is_null() ? int_of(*p[2], fn + " count") : -1;
    return Val(Value(py::replace(text(), py_str(p[0]->get()), py_str(p[1]->get()), count)));
  }
  if (name == "trim") {
    auto p = bind(fn, args, kwargs, {"chars"});
    if (p[0] && !(*p[0])->is_null()) return Val(Value(py::strip(text(), str_of(*p[0], fn + " chars"))));
    return Val(Value(py::strip(text())));
  }
  if (name == "regex_replace") {
    auto p = bind(fn, args, kwargs, {"pattern", "repl", "count"});
    MOR_CHECK(p[0] && p[1], fn, " needs pattern and repl");
    MOR_CHECK(v->is_string(), fn, ": expected string, got ", type_name(v.get()));
    int64_t count = p[2] ? int_of(*p[2], fn + " count") : 0;
    return Val(Value(py::re_sub(str_of(*p[0], fn + " pattern"), str_of(*p[1], fn + " repl"),
                                v->get_ref<const std::string&>(), count)));
  }
  bind(fn, args, kwargs, {});
  if (name == "length" || name == "count") return Val(Value(py_len(v.get())));
  if (name == "lower") return Val(Value(py::lower(text())));
  if (name == "upper") return Val(Value(py::upper(text())));
  if (name == "capitalize") return Val(Value(py::capitalize(text())));
  if (name == "title") return Val(Value(jinja_title(text())));
  if (name == "string") return v->is_string() ? std::move(v) : Val(Value(py_str(v.get())));
  if (name == "list") return Val(list_of(items_of(v.get())));
  if (name == "first" || name == "last") {
    if (v->is_array() && !v->empty()) {
      const Value& item = name == "first" ? v->front() : v->back();
      return v.borrowed() ? Val(&item) : Val(Value(item));
    }
    std::vector<Value> items = items_of(v.get());
    if (items.empty()) {
      why = std::string("No ") + (name == "first" ? "first" : "last") + " item, sequence was empty.";
      return std::nullopt;
    }
    return Val(std::move(name == "first" ? items.front() : items.back()));
  }
  fail("unknown filter '", name, "'");
}

}  // namespace mor::eval::detail
