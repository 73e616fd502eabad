// The template dialect of evaluation task files: a documented subset of Jinja2 expressions with
// Python value semantics, enough to write lm-evaluation-harness task YAMLs without Python code.
//
// A template is literal text with `{{ expression }}` holes (`{{-` / `-}}` trim the whitespace on
// that side, as in Jinja). Rendering substitutes Python's str() of each value (ints in decimal,
// floats as Python prints them, True/False/None, lists and dicts as Python's repr). A template
// that is exactly one hole (surrounding whitespace allowed) also evaluates to the native value:
// `{{choices.text}}` is a list, `{{label}}` keeps the field's type.
//
// Expressions (Jinja2's precedence, jinja2/parser.py: postfix > unary - + > filter `|` > ** >
// * / // % > ~ > + - > comparisons > not > and > or > inline if; so -x|f is f(-x), -2 ** 2 is 4 and
// 2 ** 3 ** 2 is 64, as Jinja renders them):
//   literals     'str' "str" (escapes \n \t \\ \' \" \uXXXX), 12, -3, 1.5, True False None,
//                [a, b], (a, b) tuples as lists, {'k': v}
//   names        a document field, a variable, or `doc` (the whole document)
//   postfix      x.field  x['field']  x[i]  x[a:b:c]  x.method(args)  macro(args)
//   operators    + - * / // % ** (int, str + str, list + list, str * int), == != < <= > >= (chained),
//                in, not in, and, or, not, `a if cond else b` (no else: ''), `~` (Jinja string
//                concatenation); ints are int64 (overflow is an error)
//   str methods  strip lstrip rstrip ([chars]), split([sep[, maxsplit]]), replace(old, new[, n]),
//                lower upper capitalize title, startswith endswith, find index count, join(list),
//                isdigit isalpha, format is NOT supported
//   list methods index(x), count(x)
//   dict methods get(k[, default]), keys() values() items()
//   builtins     len(x) int(x) str(x) float(x) list(x) range(a[, b]) min(list) max(list)
//   filters      join(sep=''), length/count, lower upper capitalize title trim, replace(old, new),
//                int, float, string, list, first, last, default(v), regex_replace(pattern, repl)
//                (Python re.sub semantics), map(name) (a builtin, a filter or a macro applied to
//                every element), select / reject are NOT supported. The title filter is Jinja's
//                (words split at whitespace and -([{<), not str.title(). map(), keys(), values(),
//                items() and range() give lists ([k, v] for items), not Python's views/generators.
// `{% ... %}` statements are not supported and are a parse error naming the column; `{# ... #}`
// comments are dropped as in Jinja (both only with the "{{" delimiters). Line endings \r\n and \r
// in the source read as \n (Jinja's newline normalization). Dicts iterate and print in key order
// (nlohmann::json), where Python keeps insertion order.
//
// Undefined names or keys, wrong types and Python exceptions (IndexError, ValueError from
// .index(), ...) are mor::Error naming the template's `where` (e.g. "hellaswag.yaml: doc_to_text")
// and what failed.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace mor::eval {

using Value = nlohmann::json;

class Template;

// Named one-argument functions defined by a task file (`macros:`): the body is a template whose
// variable `x` is the argument; callable as name(arg) in expressions and usable with map(name).
using Macros = std::map<std::string, std::shared_ptr<const Template>>;

class Template {
 public:
  // Parses `source`; syntax errors are mor::Error "WHERE: column N: message".
  // `open`/`close` are the hole delimiters ("{{" / "}}" for documents; task groups use "${" / "}").
  static Template parse(std::string_view source, std::string where, std::string_view open = "{{",
                        std::string_view close = "}}");

  // The value: the native value for a single-hole template, else the rendered string.
  // Names resolve in `vars` (an object: the document's fields, plus `doc` = vars itself).
  Value evaluate(const Value& vars, const Macros& macros = {}) const;
  // Python str() of evaluate(): the text of the template (as Jinja renders it: a single hole's
  // surrounding whitespace is kept here, while evaluate() drops it).
  std::string render(const Value& vars, const Macros& macros = {}) const;

  bool is_single_expression() const;
  const std::string& source() const;
  const std::string& where() const;

  Template(const Template&);
  Template& operator=(const Template&);
  Template(Template&&) noexcept;
  Template& operator=(Template&&) noexcept;
  ~Template();

  struct Impl;

 private:
  explicit Template(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Python str(v) / repr(v) of a value (nlohmann ints print as ints, floats as Python's repr:
// shortest round-trip, "1.0" for integral values, "inf"/"nan").
std::string py_str(const Value& v);
std::string py_repr(const Value& v);
// Python truthiness: empty string/list/dict, 0, 0.0, False and None are false.
bool py_truthy(const Value& v);

}  // namespace mor::eval
