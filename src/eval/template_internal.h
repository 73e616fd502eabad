// Internals of the template dialect (mor/eval/template.h): the expression AST, the parser entry
// point, evaluation values that borrow from the document, and the Python value operations.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mor/core/error.h"
#include "mor/eval/template.h"

namespace mor::eval::detail {

enum class NodeKind {
  kConst,    // value
  kName,     // name
  kAttr,     // args[0].name
  kItem,     // args[0][args[1]]
  kSlice,    // args[0][args[1]:args[2]:args[3]] (null children are omitted bounds)
  kMethod,   // args[0].name(args[1..], kwargs)
  kCall,     // name(args, kwargs): a macro or a builtin
  kFilter,   // args[0] | name(args[1..], kwargs)
  kNeg,      // -args[0]
  kPos,      // +args[0]
  kNot,      // not args[0]
  kBinary,   // args[0] op args[1]
  kCompare,  // args[0] cmps[0] args[1] cmps[1] args[2] ...
  kAnd,      // args[0] and args[1]
  kOr,       // args[0] or args[1]
  kCond,     // args[0] if args[1] else args[2] (args[2] null: no else)
  kConcat,   // args[0] ~ args[1] ~ ...
  kList,     // [args...]
  kDict,     // {args[0]: args[1], args[2]: args[3], ...}
};

enum class BinOp { kAdd, kSub, kMul, kDiv, kFloorDiv, kMod, kPow };
enum class CmpOp { kEq, kNe, kLt, kLe, kGt, kGe, kIn, kNotIn };

struct Node;
using NodePtr = std::unique_ptr<Node>;

struct Node {
  NodeKind kind = NodeKind::kConst;
  Value value;
  std::string name;
  std::vector<NodePtr> args;
  std::vector<std::pair<std::string, NodePtr>> kwargs;
  BinOp bin = BinOp::kAdd;
  std::vector<CmpOp> cmps;
};

// Literal text, or an expression hole (expr non-null).
struct Part {
  std::string text;
  NodePtr expr;
};

struct Program {
  std::vector<Part> parts;
  const Node* single = nullptr;  // the expression when the template is one hole (whitespace aside)
};

// Parses a template; syntax errors are mor::Error "WHERE: [line L, ]column N: message".
Program parse_program(std::string_view source, const std::string& where, std::string_view open,
                      std::string_view close);

// A value during evaluation: borrowed from the document (no copy) or owned.
class Val {
 public:
  Val() = default;
  explicit Val(const Value* ref) : ref_(ref) {}
  Val(Value v) : own_(std::move(v)) {}  // NOLINT(google-explicit-constructor)
  const Value& get() const { return ref_ ? *ref_ : own_; }
  const Value* operator->() const { return &get(); }
  Value take() && { return ref_ ? *ref_ : std::move(own_); }
  bool borrowed() const { return ref_ != nullptr; }

 private:
  const Value* ref_ = nullptr;
  Value own_;
};

struct Ctx {
  const Value& vars;
  const Macros& macros;
};

Val eval(const Node& node, const Ctx& ctx);

// Functions, methods and filters; `args` already evaluated. Failures are mor::Error with the reason.
using Kwargs = std::vector<std::pair<std::string, Val>>;
Val call_function(const std::string& name, std::vector<Val>& args, Kwargs& kwargs, const Ctx& ctx);
Val call_method(const std::string& name, Val& self, std::vector<Val>& args, const Ctx& ctx);
// `operand` is std::nullopt for an undefined operand (only `default` accepts one); `why` says why.
// Returns std::nullopt for an undefined result (first/last of an empty sequence), with `why` set.
std::optional<Val> apply_filter(const std::string& name, std::optional<Val> operand, std::string& why,
                                std::vector<Val>& args, Kwargs& kwargs, const Ctx& ctx);
bool is_filter(const std::string& name);
bool is_builtin(const std::string& name);

// Python value semantics on JSON values (bool is an int, unsigned ints are ints).
const char* type_name(const Value& v);
bool is_int(const Value& v);  // int or bool
bool is_number(const Value& v);
int64_t to_int64(const Value& v);  // of an int/bool value
double to_double(const Value& v);  // of a number
bool py_eq(const Value& a, const Value& b);
bool py_lt(const Value& a, const Value& b);  // TypeError for unorderable types
bool py_contains(const Value& container, const Value& item);
Value binary_op(BinOp op, const Value& a, const Value& b);
std::string float_repr(double d);

}  // namespace mor::eval::detail
