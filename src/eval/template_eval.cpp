// Evaluation of template expressions with Python value semantics: lookups (borrowing from the
// document), operators, comparisons and membership.
#include <cmath>
#include <limits>

#include "mor/eval/pystr.h"
#include "template_internal.h"

namespace mor::eval::detail {

const char* type_name(const Value& v) {
  switch (v.type()) {
    case Value::value_t::null: return "NoneType";
    case Value::value_t::boolean: return "bool";
    case Value::value_t::number_integer:
    case Value::value_t::number_unsigned: return "int";
    case Value::value_t::number_float: return "float";
    case Value::value_t::string: return "str";
    case Value::value_t::array: return "list";
    case Value::value_t::object: return "dict";
    default: return "object";
  }
}

bool is_int(const Value& v) { return v.is_number_integer() || v.is_boolean(); }
bool is_number(const Value& v) { return v.is_number() || v.is_boolean(); }

int64_t to_int64(const Value& v) {
  if (v.is_boolean()) return v.get<bool>() ? 1 : 0;
  if (v.is_number_unsigned()) {
    uint64_t u = v.get<uint64_t>();
    MOR_CHECK(u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()), "integer ", u,
              " is beyond int64");
    return static_cast<int64_t>(u);
  }
  return v.get<int64_t>();
}

double to_double(const Value& v) {
  if (v.is_number_float()) return v.get<double>();
  if (v.is_number_unsigned()) return static_cast<double>(v.get<uint64_t>());
  return static_cast<double>(to_int64(v));
}

namespace {

using i128 = __int128;

i128 wide_int(const Value& v) {
  if (v.is_number_unsigned()) return static_cast<i128>(v.get<uint64_t>());
  if (v.is_boolean()) return v.get<bool>() ? 1 : 0;
  return v.get<int64_t>();
}

// -1, 0, 1, or 2 when unordered (NaN).
int num_cmp(const Value& a, const Value& b) {
  if (!a.is_number_float() && !b.is_number_float()) {
    i128 x = wide_int(a), y = wide_int(b);
    return x < y ? -1 : x > y ? 1 : 0;
  }
  long double x = a.is_number_float() ? a.get<double>() : static_cast<long double>(wide_int(a));
  long double y = b.is_number_float() ? b.get<double>() : static_cast<long double>(wide_int(b));
  if (std::isnan(x) || std::isnan(y)) return 2;
  return x < y ? -1 : x > y ? 1 : 0;
}

[[noreturn]] void unorderable(const char* op, const Value& a, const Value& b) {
  fail("'", op, "' not supported between instances of '", type_name(a), "' and '", type_name(b), "'");
}

// a < b (or a <= b when or_equal) with Python's rules; TypeError for unorderable types.
bool ordered(const Value& a, const Value& b, bool or_equal, const char* op) {
  if (is_number(a) && is_number(b)) {
    int c = num_cmp(a, b);
    return c == -1 || (or_equal && c == 0);
  }
  if (a.is_string() && b.is_string()) {
    int c = a.get_ref<const std::string&>().compare(b.get_ref<const std::string&>());
    return c < 0 || (or_equal && c == 0);
  }
  if (a.is_array() && b.is_array()) {
    size_t n = std::min(a.size(), b.size());
    for (size_t i = 0; i < n; ++i)
      if (!py_eq(a[i], b[i])) return ordered(a[i], b[i], or_equal, op);
    return a.size() < b.size() || (or_equal && a.size() == b.size());
  }
  unorderable(op, a, b);
}

bool compare(CmpOp op, const Value& a, const Value& b) {
  switch (op) {
    case CmpOp::kEq: return py_eq(a, b);
    case CmpOp::kNe: return !py_eq(a, b);
    case CmpOp::kLt: return ordered(a, b, false, "<");
    case CmpOp::kLe: return ordered(a, b, true, "<=");
    case CmpOp::kGt: return ordered(b, a, false, ">");
    case CmpOp::kGe: return ordered(b, a, true, ">=");
    case CmpOp::kIn: return py_contains(b, a);
    case CmpOp::kNotIn: return !py_contains(b, a);
  }
  return false;
}

void check_overflow(bool overflow) {
  MOR_CHECK(!overflow, "integer overflow (results beyond int64 are not supported)");
}

Value int_op(BinOp op, int64_t a, int64_t b) {
  int64_t r = 0;
  switch (op) {
    case BinOp::kAdd: check_overflow(__builtin_add_overflow(a, b, &r)); return r;
    case BinOp::kSub: check_overflow(__builtin_sub_overflow(a, b, &r)); return r;
    case BinOp::kMul: check_overflow(__builtin_mul_overflow(a, b, &r)); return r;
    case BinOp::kFloorDiv: {
      MOR_CHECK(b != 0, "integer division or modulo by zero");
      check_overflow(a == std::numeric_limits<int64_t>::min() && b == -1);
      int64_t q = a / b;
      if (a % b != 0 && ((a < 0) != (b < 0))) --q;
      return q;
    }
    case BinOp::kMod: {
      MOR_CHECK(b != 0, "integer division or modulo by zero");
      if (b == -1) return int64_t{0};
      int64_t m = a % b;
      if (m != 0 && ((m < 0) != (b < 0))) m += b;
      return m;
    }
    case BinOp::kPow: {
      if (b < 0) {
        MOR_CHECK(a != 0, "0.0 cannot be raised to a negative power");
        return std::pow(static_cast<double>(a), static_cast<double>(b));
      }
      int64_t result = 1, base = a;
      bool overflow = false;
      for (int64_t e = b; e > 0; e >>= 1) {
        if (e & 1) overflow |= __builtin_mul_overflow(result, base, &result);
        if (e > 1) overflow |= __builtin_mul_overflow(base, base, &base);
      }
      check_overflow(overflow);
      return result;
    }
    case BinOp::kDiv: break;
  }
  return nullptr;
}

Value float_op(BinOp op, double a, double b) {
  switch (op) {
    case BinOp::kAdd: return a + b;
    case BinOp::kSub: return a - b;
    case BinOp::kMul: return a * b;
    case BinOp::kDiv:
      MOR_CHECK(b != 0, "division by zero");
      return a / b;
    case BinOp::kFloorDiv:
    case BinOp::kMod: {
      MOR_CHECK(b != 0, op == BinOp::kMod ? "float modulo" : "float floor division by zero");
      double mod = std::fmod(a, b);
      double div = (a - mod) / b;
      if (mod != 0) {
        if ((b < 0) != (mod < 0)) {
          mod += b;
          div -= 1.0;
        }
      } else {
        mod = std::copysign(0.0, b);
      }
      if (op == BinOp::kMod) return mod;
      double floordiv;
      if (div != 0) {
        floordiv = std::floor(div);
        if (div - floordiv > 0.5) floordiv += 1.0;
      } else {
        floordiv = std::copysign(0.0, a / b);
      }
      return floordiv;
    }
    case BinOp::kPow: {
      MOR_CHECK(!(a == 0 && b < 0), "0.0 cannot be raised to a negative power");
      MOR_CHECK(!(a < 0 && std::isfinite(a) && std::isfinite(b) && b != std::floor(b)),
                "a negative number to a fractional power has a complex result (not supported)");
      double r = std::pow(a, b);
      MOR_CHECK(!(std::isinf(r) && std::isfinite(a) && std::isfinite(b)), "(34, 'Numerical result out of range')");
      return r;
    }
  }
  return nullptr;
}

const char* op_symbol(BinOp op) {
  switch (op) {
    case BinOp::kAdd: return "+";
    case BinOp::kSub: return "-";
    case BinOp::kMul: return "*";
    case BinOp::kDiv: return "/";
    case BinOp::kFloorDiv: return "//";
    case BinOp::kMod: return "%";
    case BinOp::kPow: return "** or pow()";
  }
  return "?";
}

Value repeat(const Value& seq, int64_t n) {
  if (seq.is_string()) {
    std::string out;
    const std::string& s = seq.get_ref<const std::string&>();
    MOR_CHECK(n <= 0 || s.size() * static_cast<size_t>(n) < (size_t{1} << 32), "repeated string too large");
    for (int64_t i = 0; i < n; ++i) out += s;
    return out;
  }
  Value out = Value::array();
  MOR_CHECK(n <= 0 || seq.size() * static_cast<size_t>(n) < (size_t{1} << 28), "repeated list too large");
  for (int64_t i = 0; i < n; ++i)
    for (const Value& v : seq) out.push_back(v);
  return out;
}

std::string key_text(const Value& key) { return py_repr(key); }

// obj[key]; std::nullopt (with why) where Jinja gives an undefined value.
std::optional<Val> get_item(Val obj, const Value& key, std::string& why) {
  const Value& o = obj.get();
  if (o.is_object()) {
    if (key.is_string()) {
      auto it = o.find(key.get_ref<const std::string&>());
      if (it != o.end()) {
        if (obj.borrowed()) return Val(&*it);
        Value whole = std::move(obj).take();
        return Val(std::move(whole[key.get_ref<const std::string&>()]));
      }
    }
    why = "undefined key " + key_text(key) + " in dict";
    return std::nullopt;
  }
  if (o.is_array() || o.is_string()) {
    if (!is_int(key)) {
      why = std::string(type_name(o)) + " indices must be integers or slices, not " + type_name(key);
      return std::nullopt;
    }
    int64_t i = to_int64(key);
    if (o.is_string()) {
      const std::string& s = o.get_ref<const std::string&>();
      int64_t n = py::len(s);
      if (i < -n || i >= n) {
        why = "string index out of range (index " + std::to_string(i) + ", length " + std::to_string(n) + ")";
        return std::nullopt;
      }
      return Val(Value(py::at(s, i)));
    }
    int64_t n = static_cast<int64_t>(o.size());
    if (i < 0) i += n;
    if (i < 0 || i >= n) {
      why = "list index out of range (index " + std::to_string(to_int64(key)) + ", length " + std::to_string(n) + ")";
      return std::nullopt;
    }
    if (obj.borrowed()) return Val(&o[static_cast<size_t>(i)]);
    Value whole = std::move(obj).take();
    return Val(std::move(whole[static_cast<size_t>(i)]));
  }
  why = "'" + std::string(type_name(o)) + "' object is not subscriptable";
  return std::nullopt;
}

std::optional<Val> lookup(const Node& n, const Ctx& ctx, std::string& why) {
  switch (n.kind) {
    case NodeKind::kName: {
      if (ctx.vars.is_object()) {
        auto it = ctx.vars.find(n.name);
        if (it != ctx.vars.end()) return Val(&*it);
      }
      if (n.name == "doc") return Val(&ctx.vars);
      why = "undefined name '" + n.name + "'";
      if (is_builtin(n.name) || ctx.macros.count(n.name)) why += " (a function: call it as " + n.name + "(...))";
      return std::nullopt;
    }
    case NodeKind::kAttr: {
      Val obj = eval(*n.args[0], ctx);
      if (!obj->is_object()) {
        why = "'" + std::string(type_name(obj.get())) + "' object has no attribute '" + n.name + "'";
        return std::nullopt;
      }
      return get_item(std::move(obj), Value(n.name), why);
    }
    case NodeKind::kItem: {
      Val obj = eval(*n.args[0], ctx);
      Val key = eval(*n.args[1], ctx);
      return get_item(std::move(obj), key.get(), why);
    }
    case NodeKind::kFilter: {
      std::optional<Val> operand = lookup(*n.args[0], ctx, why);
      std::vector<Val> args;
      for (size_t i = 1; i < n.args.size(); ++i) args.push_back(eval(*n.args[i], ctx));
      Kwargs kwargs;
      for (const auto& [k, v] : n.kwargs) kwargs.emplace_back(k, eval(*v, ctx));
      return apply_filter(n.name, std::move(operand), why, args, kwargs, ctx);
    }
    default: return eval(n, ctx);
  }
}

std::optional<int64_t> slice_bound(const Node* n, const Ctx& ctx) {
  if (!n) return std::nullopt;
  Val v = eval(*n, ctx);
  if (v->is_null()) return std::nullopt;
  MOR_CHECK(is_int(v.get()), "slice indices must be integers or None, not ", type_name(v.get()));
  return to_int64(v.get());
}

}  // namespace

bool py_eq(const Value& a, const Value& b) {
  if (is_number(a) && is_number(b)) return num_cmp(a, b) == 0;
  if (a.type() != b.type()) return false;
  switch (a.type()) {
    case Value::value_t::null: return true;
    case Value::value_t::string: return a.get_ref<const std::string&>() == b.get_ref<const std::string&>();
    case Value::value_t::array:
      if (a.size() != b.size()) return false;
      for (size_t i = 0; i < a.size(); ++i)
        if (!py_eq(a[i], b[i])) return false;
      return true;
    case Value::value_t::object:
      if (a.size() != b.size()) return false;
      for (auto it = a.begin(); it != a.end(); ++it) {
        auto jt = b.find(it.key());
        if (jt == b.end() || !py_eq(it.value(), *jt)) return false;
      }
      return true;
    default: return a == b;
  }
}

bool py_lt(const Value& a, const Value& b) { return ordered(a, b, false, "<"); }

bool py_contains(const Value& container, const Value& item) {
  if (container.is_string()) {
    MOR_CHECK(item.is_string(), "'in <string>' requires string as left operand, not ", type_name(item));
    return container.get_ref<const std::string&>().find(item.get_ref<const std::string&>()) != std::string::npos;
  }
  if (container.is_array()) {
    for (const Value& v : container)
      if (py_eq(v, item)) return true;
    return false;
  }
  if (container.is_object()) return item.is_string() && container.contains(item.get_ref<const std::string&>());
  fail("argument of type '", type_name(container), "' is not iterable");
}

Value binary_op(BinOp op, const Value& a, const Value& b) {
  if (is_number(a) && is_number(b)) {
    if (is_int(a) && is_int(b) && op != BinOp::kDiv) return int_op(op, to_int64(a), to_int64(b));
    return float_op(op, to_double(a), to_double(b));
  }
  if (op == BinOp::kAdd) {
    if (a.is_string() && b.is_string()) return a.get_ref<const std::string&>() + b.get_ref<const std::string&>();
    if (a.is_array() && b.is_array()) {
      Value out = a;
      for (const Value& v : b) out.push_back(v);
      return out;
    }
    if (a.is_string() || a.is_array())
      fail("can only concatenate ", type_name(a), " (not \"", type_name(b), "\") to ", type_name(a));
  }
  if (op == BinOp::kMul) {
    if ((a.is_string() || a.is_array()) && is_int(b)) return repeat(a, to_int64(b));
    if (is_int(a) && (b.is_string() || b.is_array())) return repeat(b, to_int64(a));
    if (a.is_string() || a.is_array() || b.is_string() || b.is_array())
      fail("can't multiply sequence by non-int of type '", type_name(a.is_string() || a.is_array() ? b : a), "'");
  }
  if (op == BinOp::kMod && a.is_string()) fail("string formatting with % is not supported");
  fail("unsupported operand type(s) for ", op_symbol(op), ": '", type_name(a), "' and '", type_name(b), "'");
}

Val eval(const Node& n, const Ctx& ctx) {
  switch (n.kind) {
    case NodeKind::kConst: return Val(&n.value);
    case NodeKind::kName:
    case NodeKind::kAttr:
    case NodeKind::kItem:
    case NodeKind::kFilter: {
      std::string why;
      std::optional<Val> v = lookup(n, ctx, why);
      if (!v) fail(why);
      return std::move(*v);
    }
    case NodeKind::kSlice: {
      Val obj = eval(*n.args[0], ctx);
      std::optional<int64_t> start = slice_bound(n.args[1].get(), ctx);
      std::optional<int64_t> stop = slice_bound(n.args[2].get(), ctx);
      std::optional<int64_t> step = slice_bound(n.args[3].get(), ctx);
      MOR_CHECK(!step || *step != 0, "slice step cannot be zero");
      if (obj->is_string()) return Value(py::slice(obj->get_ref<const std::string&>(), start, stop, step.value_or(1)));
      MOR_CHECK(obj->is_array(), "'", type_name(obj.get()), "' object is not subscriptable");
      py::SliceRange r = py::adjust_slice(static_cast<int64_t>(obj->size()), start, stop, step.value_or(1));
      Value out = Value::array();
      for (int64_t k = 0, i = r.first; k < r.count; ++k, i += r.step) out.push_back(obj.get()[static_cast<size_t>(i)]);
      return out;
    }
    case NodeKind::kMethod: {
      Val self = eval(*n.args[0], ctx);
      std::vector<Val> args;
      for (size_t i = 1; i < n.args.size(); ++i) args.push_back(eval(*n.args[i], ctx));
      MOR_CHECK(n.kwargs.empty(), type_name(self.get()), ".", n.name, "() takes no keyword arguments");
      return call_method(n.name, self, args, ctx);
    }
    case NodeKind::kCall: {
      std::vector<Val> args;
      for (const NodePtr& a : n.args) args.push_back(eval(*a, ctx));
      Kwargs kwargs;
      for (const auto& [k, v] : n.kwargs) kwargs.emplace_back(k, eval(*v, ctx));
      return call_function(n.name, args, kwargs, ctx);
    }
    case NodeKind::kNeg:
    case NodeKind::kPos: {
      Val v = eval(*n.args[0], ctx);
      const char* sign = n.kind == NodeKind::kNeg ? "-" : "+";
      MOR_CHECK(is_number(v.get()), "bad operand type for unary ", sign, ": '", type_name(v.get()), "'");
      if (v->is_number_float()) return Value(n.kind == NodeKind::kNeg ? -v->get<double>() : v->get<double>());
      int64_t i = to_int64(v.get());
      if (n.kind == NodeKind::kPos) return Value(i);
      check_overflow(i == std::numeric_limits<int64_t>::min());
      return Value(-i);
    }
    case NodeKind::kNot: return Value(!py_truthy(eval(*n.args[0], ctx).get()));
    case NodeKind::kBinary: {
      Val a = eval(*n.args[0], ctx);
      Val b = eval(*n.args[1], ctx);
      return binary_op(n.bin, a.get(), b.get());
    }
    case NodeKind::kCompare: {
      Val left = eval(*n.args[0], ctx);
      for (size_t i = 0; i < n.cmps.size(); ++i) {
        Val right = eval(*n.args[i + 1], ctx);
        if (!compare(n.cmps[i], left.get(), right.get())) return Value(false);
        left = std::move(right);
      }
      return Value(true);
    }
    case NodeKind::kAnd:
    case NodeKind::kOr: {
      Val a = eval(*n.args[0], ctx);
      if (py_truthy(a.get()) == (n.kind == NodeKind::kOr)) return a;
      return eval(*n.args[1], ctx);
    }
    case NodeKind::kCond: {
      if (py_truthy(eval(*n.args[1], ctx).get())) return eval(*n.args[0], ctx);
      if (!n.args[2]) return Value("");
      return eval(*n.args[2], ctx);
    }
    case NodeKind::kConcat: {
      std::string out;
      for (const NodePtr& a : n.args) {
        Val v = eval(*a, ctx);
        out += v->is_string() ? v->get_ref<const std::string&>() : py_str(v.get());
      }
      return Value(std::move(out));
    }
    case NodeKind::kList: {
      Value out = Value::array();
      for (const NodePtr& a : n.args) out.push_back(eval(*a, ctx).take());
      return out;
    }
    case NodeKind::kDict: {
      Value out = Value::object();
      for (size_t i = 0; i + 1 < n.args.size(); i += 2) {
        Val key = eval(*n.args[i], ctx);
        MOR_CHECK(key->is_string(), "dict keys must be strings here, not ", type_name(key.get()));
        out[key->get<std::string>()] = eval(*n.args[i + 1], ctx).take();
      }
      return out;
    }
  }
  fail("unknown expression node");
}

}  // namespace mor::eval::detail
