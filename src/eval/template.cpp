// Template (mor/eval/template.h): parse once, evaluate/render per document; Python str()/repr()
// and truthiness of JSON values.
#include "mor/eval/template.h"

#include <charconv>
#include <cmath>
#include <cstdlib>

#include "mor/eval/pystr.h"
#include "template_internal.h"

namespace mor::eval {

struct Template::Impl {
  std::string source;
  std::string where;
  std::shared_ptr<const detail::Program> program;
};

namespace {

thread_local int g_depth = 0;
constexpr int kMaxDepth = 64;

struct DepthGuard {
  DepthGuard() {
    MOR_CHECK(g_depth < kMaxDepth, "macro calls nested deeper than ", kMaxDepth, " (recursive macro?)");
    ++g_depth;
  }
  ~DepthGuard() { --g_depth; }
  DepthGuard(const DepthGuard&) = delete;
  DepthGuard& operator=(const DepthGuard&) = delete;
};

[[noreturn]] void rethrow_with_where(const mor::Error& e, const std::string& where) {
  std::string_view message = e.what();
  if (message.size() > where.size() && message.substr(0, where.size()) == where && message[where.size()] == ':')
    throw e;
  fail(where, ": ", message);
}

void render_parts(const detail::Program& program, const detail::Ctx& ctx, std::string& out) {
  for (const detail::Part& part : program.parts) {
    if (!part.expr) {
      out += part.text;
      continue;
    }
    detail::Val v = detail::eval(*part.expr, ctx);
    if (v->is_string())
      out += v->get_ref<const std::string&>();
    else
      out += py_str(v.get());
  }
}

void append_repr(std::string& out, const Value& v);

void append_str(std::string& out, const Value& v) {
  switch (v.type()) {
    case Value::value_t::null: out += "None"; break;
    case Value::value_t::boolean: out += v.get<bool>() ? "True" : "False"; break;
    case Value::value_t::number_integer: out += std::to_string(v.get<int64_t>()); break;
    case Value::value_t::number_unsigned: out += std::to_string(v.get<uint64_t>()); break;
    case Value::value_t::number_float: out += detail::float_repr(v.get<double>()); break;
    case Value::value_t::string: out += v.get_ref<const std::string&>(); break;
    default: append_repr(out, v);
  }
}

void append_repr(std::string& out, const Value& v) {
  if (v.is_string()) {
    out += py::repr(v.get_ref<const std::string&>());
  } else if (v.is_array()) {
    out += '[';
    bool first = true;
    for (const Value& item : v) {
      if (!first) out += ", ";
      first = false;
      append_repr(out, item);
    }
    out += ']';
  } else if (v.is_object()) {
    out += '{';
    bool first = true;
    for (auto it = v.begin(); it != v.end(); ++it) {
      if (!first) out += ", ";
      first = false;
      out += py::repr(it.key());
      out += ": ";
      append_repr(out, it.value());
    }
    out += '}';
  } else if (v.is_binary() || v.is_discarded()) {
    out += "None";
  } else {
    append_str(out, v);
  }
}

}  // namespace

namespace detail {

std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  if (d == 0) return std::signbit(d) ? "-0.0" : "0.0";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string sci(buf, res.ptr);
  std::string out;
  size_t i = 0;
  if (sci[0] == '-') {
    out += '-';
    i = 1;
  }
  size_t e = sci.find('e');
  std::string digits;
  for (size_t k = i; k < e; ++k)
    if (sci[k] != '.') digits += sci[k];
  int exp = std::atoi(sci.c_str() + e + 1);
  int decpt = exp + 1;
  int n = static_cast<int>(digits.size());
  if (decpt <= -4 || decpt > 16) {
    out += digits[0];
    if (n > 1) out.append(".").append(digits, 1);
    out += exp < 0 ? "e-" : "e+";
    int a = std::abs(exp);
    if (a < 10) out += '0';
    out += std::to_string(a);
  } else if (decpt <= 0) {
    out.append("0.").append(static_cast<size_t>(-decpt), '0').append(digits);
  } else if (decpt >= n) {
    out.append(digits).append(static_cast<size_t>(decpt - n), '0').append(".0");
  } else {
    out.append(digits, 0, static_cast<size_t>(decpt)).append(".").append(digits, static_cast<size_t>(decpt));
  }
  return out;
}

}  // namespace detail

std::string py_str(const Value& v) {
  std::string out;
  append_str(out, v);
  return out;
}

std::string py_repr(const Value& v) {
  std::string out;
  append_repr(out, v);
  return out;
}

bool py_truthy(const Value& v) {
  switch (v.type()) {
    case Value::value_t::boolean: return v.get<bool>();
    case Value::value_t::number_integer: return v.get<int64_t>() != 0;
    case Value::value_t::number_unsigned: return v.get<uint64_t>() != 0;
    case Value::value_t::number_float: return v.get<double>() != 0.0;
    case Value::value_t::string: return !v.get_ref<const std::string&>().empty();
    case Value::value_t::array:
    case Value::value_t::object: return !v.empty();
    default: return false;
  }
}

Template Template::parse(std::string_view source, std::string where, std::string_view open, std::string_view close) {
  auto impl = std::make_unique<Impl>();
  impl->source = std::string(source);
  impl->where = std::move(where);
  impl->program =
      std::make_shared<const detail::Program>(detail::parse_program(source, impl->where, open, close));
  return Template(std::move(impl));
}

Value Template::evaluate(const Value& vars, const Macros& macros) const {
  const detail::Program& program = *impl_->program;
  detail::Ctx ctx{vars, macros};
  try {
    DepthGuard guard;
    if (program.single) return detail::eval(*program.single, ctx).take();
    std::string out;
    render_parts(program, ctx, out);
    return out;
  } catch (const mor::Error& e) {
    rethrow_with_where(e, impl_->where);
  }
}

std::string Template::render(const Value& vars, const Macros& macros) const {
  const detail::Program& program = *impl_->program;
  detail::Ctx ctx{vars, macros};
  try {
    DepthGuard guard;
    std::string out;
    render_parts(program, ctx, out);
    return out;
  } catch (const mor::Error& e) {
    rethrow_with_where(e, impl_->where);
  }
}

bool Template::is_single_expression() const { return impl_->program->single != nullptr; }
const std::string& Template::source() const { return impl_->source; }
const std::string& Template::where() const { return impl_->where; }

Template::Template(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Template::Template(const Template& other) : impl_(std::make_unique<Impl>(*other.impl_)) {}
Template& Template::operator=(const Template& other) {
  if (this != &other) impl_ = std::make_unique<Impl>(*other.impl_);
  return *this;
}
Template::Template(Template&&) noexcept = default;
Template& Template::operator=(Template&&) noexcept = default;
Template::~Template() = default;

}  // namespace mor::eval
