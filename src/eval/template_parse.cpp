// Lexer and recursive-descent parser of the template dialect, following Jinja2's grammar and
// precedence (jinja2/parser.py): text and holes -> Program of literal parts and expression ASTs.
#include <algorithm>
#include <charconv>
#include <cstring>

#include "mor/eval/pystr.h"
#include "template_internal.h"

namespace mor::eval::detail {

namespace {

enum class Tok { kName, kInt, kFloat, kString, kOp, kEnd };

struct Token {
  Tok type = Tok::kEnd;
  std::string text;  // name, operator, or the decoded string literal
  Value value;       // numbers
  size_t pos = 0;    // byte offset in the source
};

bool is_name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool is_name_char(char c) { return is_name_start(c) || (c >= '0' && c <= '9'); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

class Parser {
 public:
  Parser(std::string_view src, const std::string& where, std::string_view open, std::string_view close)
      : src_(src), where_(where), open_(open), close_(close) {}

  Program run() {
    Program program;
    size_t pos = 0;
    bool trim_next = false;
    while (pos <= src_.size()) {
      bool comment = false;
      size_t hole = find_open(pos, comment);
      std::string text(src_.substr(pos, (hole == std::string_view::npos ? src_.size() : hole) - pos));
      if (trim_next) text = py::lstrip(text);
      if (hole == std::string_view::npos) {
        if (!text.empty()) program.parts.push_back({std::move(text), nullptr});
        break;
      }
      size_t p = hole + open_.size();
      if (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) {
        if (src_[p] == '-') text = py::rstrip(text);
        ++p;
      }
      if (!text.empty()) program.parts.push_back({std::move(text), nullptr});
      if (comment) {
        size_t end = src_.find("#}", p);
        if (end == std::string_view::npos) error(hole, "unterminated comment: missing '#}'");
        trim_next = end > p && src_[end - 1] == '-';
        pos = end + 2;
        continue;
      }
      hole_start_ = hole;
      lex_hole(p);
      NodePtr expr = parse_expression();
      if (peek().type != Tok::kEnd) error(peek().pos, "unexpected ", describe(peek()), ", expected '", close_, "'");
      program.parts.push_back({"", std::move(expr)});
      pos = end_pos_;
      trim_next = trim_after_;
    }
    const Node* single = nullptr;
    for (const Part& part : program.parts) {
      if (part.expr) {
        if (single) return program;
        single = part.expr.get();
      } else if (!py::strip(part.text).empty()) {
        return program;
      }
    }
    program.single = single;
    return program;
  }

 private:
  [[noreturn]] void error(size_t pos, auto&&... parts) {
    size_t line_start = src_.rfind('\n', pos == 0 ? 0 : pos - 1);
    line_start = (line_start == std::string_view::npos || pos == 0) ? 0 : line_start + 1;
    int64_t line = 1 + std::count(src_.begin(), src_.begin() + static_cast<std::ptrdiff_t>(line_start), '\n');
    int64_t column = 1;
    for (size_t i = line_start; i < pos && i < src_.size(); ++i)
      column += (static_cast<unsigned char>(src_[i]) & 0xC0) != 0x80;
    if (line > 1)
      fail(where_, ": line ", line, ", column ", column, ": ", parts...);
    else
      fail(where_, ": column ", column, ": ", parts...);
  }

  // The next hole (or, with "{{" delimiters, `{# comment #}`); `{% statements %}` are an error.
  size_t find_open(size_t pos, bool& comment) {
    size_t hole = src_.find(open_, pos);
    if (open_ != "{{") return hole;
    size_t c = src_.find("{#", pos);
    size_t st = src_.find("{%", pos);
    if (st != std::string_view::npos && st < hole && st < c)
      error(st, "'{%' statements are not supported (only {{ expression }} holes)");
    if (c != std::string_view::npos && c < hole) {
      comment = true;
      return c;
    }
    return hole;
  }

  // Tokens of one hole up to its closing delimiter (at bracket depth 0).
  void lex_hole(size_t p) {
    tokens_.clear();
    next_ = 0;
    int depth = 0;
    while (true) {
      p = skip_space(p);
      if (p >= src_.size()) error(hole_start_, "unterminated '", open_, "': missing '", close_, "'");
      if (depth == 0 && src_[p] == '-' && src_.substr(p + 1, close_.size()) == close_) {
        finish_hole(p, p + 1 + close_.size(), true);
        return;
      }
      if (depth == 0 && src_.substr(p, close_.size()) == close_) {
        finish_hole(p, p + close_.size(), false);
        return;
      }
      Token tok;
      tok.pos = p;
      char c = src_[p];
      if (is_name_start(c)) {
        size_t e = p;
        while (e < src_.size() && is_name_char(src_[e])) ++e;
        tok.type = Tok::kName;
        tok.text = std::string(src_.substr(p, e - p));
        p = e;
      } else if (is_digit(c)) {
        p = lex_number(p, tok);
      } else if (c == '\'' || c == '"') {
        p = lex_string(p, tok);
      } else {
        static const char* const kOps[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~",
                                           "<",  ">",  "(",  ")",  "[",  "]",  "{", "}", ",", ":", ".", "|", "="};
        const char* found = nullptr;
        for (const char* op : kOps)
          if (src_.substr(p, std::strlen(op)) == op) {
            found = op;
            break;
          }
        if (!found) error(p, "unexpected character '", std::string(src_.substr(p, utf8_length(c))), "'");
        tok.type = Tok::kOp;
        tok.text = found;
        p += tok.text.size();
        if (tok.text == "(" || tok.text == "[" || tok.text == "{") ++depth;
        if ((tok.text == ")" || tok.text == "]" || tok.text == "}") && depth > 0) --depth;
      }
      tokens_.push_back(std::move(tok));
    }
  }

  static size_t utf8_length(char lead) {
    auto b = static_cast<unsigned char>(lead);
    return b < 0xC0 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
  }

  // Skips whitespace (Python's str.isspace(), as Jinja's \s) between tokens.
  size_t skip_space(size_t p) const {
    while (p < src_.size()) {
      if (is_ws(src_[p])) {
        ++p;
        continue;
      }
      if (!(static_cast<unsigned char>(src_[p]) & 0x80)) break;
      size_t n = utf8_length(src_[p]);
      std::u32string cp;
      try {
        cp = py::decode_utf8(src_.substr(p, n));
      } catch (const mor::Error&) {
        break;
      }
      if (cp.size() != 1 || !py::isspace(cp[0])) break;
      p += n;
    }
    return p;
  }

  void finish_hole(size_t close_pos, size_t end, bool trim) {
    Token tok;
    tok.type = Tok::kEnd;
    tok.pos = close_pos;
    tokens_.push_back(tok);
    end_pos_ = end;
    trim_after_ = trim;
  }

  // Digits with single '_' between them.
  size_t digits(size_t p, std::string& out) {
    while (p < src_.size()) {
      if (is_digit(src_[p])) {
        out += src_[p++];
      } else if (src_[p] == '_' && p + 1 < src_.size() && is_digit(src_[p + 1]) && !out.empty()) {
        ++p;
      } else {
        break;
      }
    }
    return p;
  }

  size_t lex_number(size_t p, Token& tok) {
    std::string text;
    size_t start = p;
    p = digits(p, text);
    bool after_dot = !tokens_.empty() && tokens_.back().type == Tok::kOp && tokens_.back().text == ".";
    bool is_float = false;
    if (!after_dot && p + 1 < src_.size() && src_[p] == '.' && is_digit(src_[p + 1])) {
      text += '.';
      p = digits(p + 1, text);
      is_float = true;
    }
    if (!after_dot && p < src_.size() && (src_[p] == 'e' || src_[p] == 'E')) {
      size_t q = p + 1;
      std::string exp = "e";
      if (q < src_.size() && (src_[q] == '+' || src_[q] == '-')) exp += src_[q++];
      if (q < src_.size() && is_digit(src_[q])) {
        p = digits(q, exp);
        text += exp;
        is_float = true;
      }
    }
    if (is_float) {
      tok.type = Tok::kFloat;
      tok.value = *py::to_float(text);
    } else {
      int64_t v = 0;
      auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
      if (ec != std::errc() || ptr != text.data() + text.size()) error(start, "integer literal too large: ", text);
      tok.type = Tok::kInt;
      tok.value = v;
    }
    return p;
  }

  // A string literal, decoded like Python's unicode-escape codec (as Jinja does).
  size_t lex_string(size_t p, Token& tok) {
    char quote = src_[p];
    size_t start = p++;
    std::string out;
    while (true) {
      if (p >= src_.size()) error(start, "unterminated string literal");
      char c = src_[p];
      if (c == quote) break;
      if (c != '\\') {
        out += c;
        ++p;
        continue;
      }
      if (p + 1 >= src_.size()) error(start, "unterminated string literal");
      char e = src_[p + 1];
      p += 2;
      switch (e) {
        case '\n': break;
        case '\\': out += '\\'; break;
        case '\'': out += '\''; break;
        case '"': out += '"'; break;
        case 'a': out += '\a'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'v': out += '\v'; break;
        case 'x':
        case 'u':
        case 'U': {
          size_t n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          if (p + n > src_.size() || !std::all_of(src_.begin() + p, src_.begin() + p + n, is_hex))
            error(p - 2, "truncated \\", std::string(1, e), " escape in string literal");
          uint32_t cp = 0;
          std::from_chars(src_.data() + p, src_.data() + p + n, cp, 16);
          if (cp >= 0x110000 || (cp >= 0xD800 && cp <= 0xDFFF)) error(p - 2, "invalid code point in string literal");
          out += py::encode_utf8(std::u32string(1, static_cast<char32_t>(cp)));
          p += n;
          break;
        }
        default:
          if (e >= '0' && e <= '7') {
            uint32_t cp = static_cast<uint32_t>(e - '0');
            for (int k = 0; k < 2 && p < src_.size() && src_[p] >= '0' && src_[p] <= '7'; ++k)
              cp = cp * 8 + static_cast<uint32_t>(src_[p++] - '0');
            out += py::encode_utf8(std::u32string(1, static_cast<char32_t>(cp)));
          } else {
            out += '\\';
            out += e;
          }
      }
    }
    tok.type = Tok::kString;
    tok.text = std::move(out);
    return p + 1;
  }

  const Token& peek(size_t ahead = 0) const {
    return tokens_[std::min(next_ + ahead, tokens_.size() - 1)];
  }
  Token take() { return tokens_[std::min(next_++, tokens_.size() - 1)]; }
  bool is_op(const char* op, size_t ahead = 0) const {
    const Token& t = peek(ahead);
    return t.type == Tok::kOp && t.text == op;
  }
  bool is_kw(const char* kw, size_t ahead = 0) const {
    const Token& t = peek(ahead);
    return t.type == Tok::kName && t.text == kw;
  }
  bool skip_op(const char* op) {
    if (!is_op(op)) return false;
    ++next_;
    return true;
  }
  bool skip_kw(const char* kw) {
    if (!is_kw(kw)) return false;
    ++next_;
    return true;
  }
  void expect_op(const char* op) {
    if (!skip_op(op)) error(peek().pos, "expected '", op, "', got ", describe(peek()));
  }
  std::string describe(const Token& t) const {
    switch (t.type) {
      case Tok::kEnd: return "end of expression";
      case Tok::kString: return "string literal";
      case Tok::kInt:
      case Tok::kFloat: return "number " + t.value.dump();
      default: return "'" + t.text + "'";
    }
  }

  static NodePtr make(NodeKind kind) {
    auto n = std::make_unique<Node>();
    n->kind = kind;
    return n;
  }
  static NodePtr make(NodeKind kind, NodePtr a, NodePtr b = nullptr) {
    NodePtr n = make(kind);
    n->args.push_back(std::move(a));
    if (b) n->args.push_back(std::move(b));
    return n;
  }

  NodePtr parse_expression() {
    NodePtr expr = parse_or();
    while (skip_kw("if")) {
      NodePtr cond = parse_or();
      NodePtr other = skip_kw("else") ? parse_expression() : nullptr;
      NodePtr n = make(NodeKind::kCond, std::move(expr), std::move(cond));
      n->args.push_back(std::move(other));
      expr = std::move(n);
    }
    return expr;
  }

  NodePtr parse_or() {
    NodePtr left = parse_and();
    while (skip_kw("or")) left = make(NodeKind::kOr, std::move(left), parse_and());
    return left;
  }

  NodePtr parse_and() {
    NodePtr left = parse_not();
    while (skip_kw("and")) left = make(NodeKind::kAnd, std::move(left), parse_not());
    return left;
  }

  NodePtr parse_not() {
    if (skip_kw("not")) return make(NodeKind::kNot, parse_not());
    return parse_compare();
  }

  NodePtr parse_compare() {
    NodePtr first = parse_math1();
    NodePtr cmp;
    while (true) {
      CmpOp op;
      static const std::pair<const char*, CmpOp> kCmp[] = {{"==", CmpOp::kEq}, {"!=", CmpOp::kNe},
                                                           {"<", CmpOp::kLt},  {"<=", CmpOp::kLe},
                                                           {">", CmpOp::kGt},  {">=", CmpOp::kGe}};
      auto it = std::find_if(std::begin(kCmp), std::end(kCmp), [&](const auto& c) { return is_op(c.first); });
      if (it != std::end(kCmp)) {
        op = it->second;
        ++next_;
      } else if (skip_kw("in")) {
        op = CmpOp::kIn;
      } else if (is_kw("not") && is_kw("in", 1)) {
        next_ += 2;
        op = CmpOp::kNotIn;
      } else {
        break;
      }
      if (!cmp) cmp = make(NodeKind::kCompare, std::move(first));
      cmp->cmps.push_back(op);
      cmp->args.push_back(parse_math1());
    }
    return cmp ? std::move(cmp) : std::move(first);
  }

  NodePtr binary(BinOp op, NodePtr a, NodePtr b) {
    NodePtr n = make(NodeKind::kBinary, std::move(a), std::move(b));
    n->bin = op;
    return n;
  }

  NodePtr parse_math1() {
    NodePtr left = parse_concat();
    while (is_op("+") || is_op("-")) {
      BinOp op = take().text == "+" ? BinOp::kAdd : BinOp::kSub;
      left = binary(op, std::move(left), parse_concat());
    }
    return left;
  }

  NodePtr parse_concat() {
    NodePtr first = parse_math2();
    if (!is_op("~")) return first;
    NodePtr n = make(NodeKind::kConcat, std::move(first));
    while (skip_op("~")) n->args.push_back(parse_math2());
    return n;
  }

  NodePtr parse_math2() {
    NodePtr left = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      std::string t = take().text;
      BinOp op = t == "*" ? BinOp::kMul : t == "/" ? BinOp::kDiv : t == "//" ? BinOp::kFloorDiv : BinOp::kMod;
      left = binary(op, std::move(left), parse_pow());
    }
    return left;
  }

  NodePtr parse_pow() {
    NodePtr left = parse_unary(true);
    while (skip_op("**")) left = binary(BinOp::kPow, std::move(left), parse_unary(true));
    return left;
  }

  NodePtr parse_unary(bool with_filter) {
    NodePtr node;
    if (skip_op("-")) {
      node = make(NodeKind::kNeg, parse_unary(false));
    } else if (skip_op("+")) {
      node = make(NodeKind::kPos, parse_unary(false));
    } else {
      node = parse_postfix(parse_primary());
    }
    return with_filter ? parse_filters(std::move(node)) : std::move(node);
  }

  NodePtr parse_primary() {
    const Token& t = peek();
    switch (t.type) {
      case Tok::kName: {
        std::string name = take().text;
        NodePtr n = make(NodeKind::kConst);
        if (name == "True" || name == "true") {
          n->value = true;
        } else if (name == "False" || name == "false") {
          n->value = false;
        } else if (name == "None" || name == "none") {
          n->value = nullptr;
        } else {
          static const char* const kReserved[] = {"and", "or", "not", "in", "is", "if", "else"};
          for (const char* kw : kReserved)
            if (name == kw) error(t.pos, "unexpected '", name, "'");
          n->kind = NodeKind::kName;
          n->name = std::move(name);
        }
        return n;
      }
      case Tok::kString: {
        std::string s = take().text;
        while (peek().type == Tok::kString) s += take().text;
        NodePtr n = make(NodeKind::kConst);
        n->value = std::move(s);
        return n;
      }
      case Tok::kInt:
      case Tok::kFloat: {
        NodePtr n = make(NodeKind::kConst);
        n->value = take().value;
        return n;
      }
      case Tok::kOp:
        if (skip_op("(")) {
          if (skip_op(")")) return make(NodeKind::kList);
          NodePtr first = parse_expression();
          if (skip_op(")")) return first;
          NodePtr list = make(NodeKind::kList, std::move(first));
          while (skip_op(",")) {
            if (is_op(")")) break;
            list->args.push_back(parse_expression());
          }
          expect_op(")");
          return list;
        }
        if (skip_op("[")) {
          NodePtr list = make(NodeKind::kList);
          while (!is_op("]")) {
            if (!list->args.empty()) expect_op(",");
            if (is_op("]")) break;
            list->args.push_back(parse_expression());
          }
          expect_op("]");
          return list;
        }
        if (skip_op("{")) {
          NodePtr dict = make(NodeKind::kDict);
          while (!is_op("}")) {
            if (!dict->args.empty()) expect_op(",");
            if (is_op("}")) break;
            dict->args.push_back(parse_expression());
            expect_op(":");
            dict->args.push_back(parse_expression());
          }
          expect_op("}");
          return dict;
        }
        break;
      case Tok::kEnd: break;
    }
    error(t.pos, "unexpected ", describe(t), ", expected an expression");
  }

  NodePtr parse_postfix(NodePtr node) {
    while (true) {
      if (is_op(".")) {
        ++next_;
        const Token& t = peek();
        if (t.type == Tok::kName) {
          std::string name = take().text;
          if (is_op("(")) {
            NodePtr m = make(NodeKind::kMethod, std::move(node));
            m->name = std::move(name);
            parse_call_args(*m);
            node = std::move(m);
          } else {
            NodePtr a = make(NodeKind::kAttr, std::move(node));
            a->name = std::move(name);
            node = std::move(a);
          }
        } else if (t.type == Tok::kInt) {
          NodePtr key = make(NodeKind::kConst);
          key->value = take().value;
          node = make(NodeKind::kItem, std::move(node), std::move(key));
        } else {
          error(t.pos, "expected a name or a number after '.', got ", describe(t));
        }
      } else if (is_op("[")) {
        size_t pos = take().pos;
        node = parse_subscript(std::move(node), pos);
      } else if (is_op("(")) {
        if (node->kind != NodeKind::kName)
          error(peek().pos, "only methods (x.name(...)), macros and builtins can be called");
        NodePtr call = make(NodeKind::kCall);
        call->name = node->name;
        parse_call_args(*call);
        node = std::move(call);
      } else {
        return node;
      }
    }
  }

  NodePtr parse_subscript(NodePtr obj, size_t pos) {
    NodePtr parts[3];
    int part = 0;
    bool is_slice = false;
    while (!is_op("]")) {
      if (skip_op(":")) {
        if (++part > 2) error(pos, "too many ':' in slice");
        is_slice = true;
        continue;
      }
      if (is_op(",")) error(peek().pos, "tuple subscripts are not supported");
      if (parts[part]) error(peek().pos, "expected ']' or ':', got ", describe(peek()));
      parts[part] = parse_expression();
    }
    expect_op("]");
    if (!is_slice) {
      if (!parts[0]) error(pos, "empty subscript []");
      return make(NodeKind::kItem, std::move(obj), std::move(parts[0]));
    }
    NodePtr n = make(NodeKind::kSlice, std::move(obj));
    for (NodePtr& p : parts) n->args.push_back(std::move(p));
    return n;
  }

  void parse_call_args(Node& call) {
    expect_op("(");
    for (bool first = true; !is_op(")"); first = false) {
      if (!first) {
        expect_op(",");
        if (is_op(")")) break;
      }
      if (peek().type == Tok::kName && is_op("=", 1)) {
        std::string key = take().text;
        ++next_;
        call.kwargs.emplace_back(std::move(key), parse_expression());
      } else {
        if (!call.kwargs.empty()) error(peek().pos, "positional argument after keyword argument");
        call.args.push_back(parse_expression());
      }
    }
    expect_op(")");
  }

  NodePtr parse_filters(NodePtr node) {
    while (true) {
      if (skip_op("|")) {
        const Token& t = peek();
        if (t.type != Tok::kName) error(t.pos, "expected a filter name after '|', got ", describe(t));
        NodePtr f = make(NodeKind::kFilter, std::move(node));
        f->name = take().text;
        if (!is_filter(f->name)) error(t.pos, "unknown filter '", f->name, "'");
        if (is_op("(")) parse_call_args(*f);
        if (f->name == "map" && f->args.size() > 1 && f->args[1]->kind == NodeKind::kName) {
          f->args[1]->kind = NodeKind::kConst;
          f->args[1]->value = f->args[1]->name;
        }
        node = std::move(f);
      } else if (is_kw("is")) {
        error(peek().pos, "tests ('is ...') are not supported");
      } else if (is_op("(")) {
        error(peek().pos, "only methods (x.name(...)), macros and builtins can be called");
      } else {
        return node;
      }
    }
  }

  std::string_view src_;
  const std::string& where_;
  std::string_view open_, close_;
  std::vector<Token> tokens_;
  size_t next_ = 0;
  size_t hole_start_ = 0;
  size_t end_pos_ = 0;
  bool trim_after_ = false;
};

}  // namespace

Program parse_program(std::string_view source, const std::string& where, std::string_view open,
                      std::string_view close) {
  MOR_CHECK(!open.empty() && !close.empty(), where, ": empty template delimiters");
  std::string normalized;
  if (source.find('\r') != std::string_view::npos) {
    normalized.reserve(source.size());
    for (size_t i = 0; i < source.size(); ++i) {
      if (source[i] == '\r') {
        normalized += '\n';
        if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
      } else {
        normalized += source[i];
      }
    }
    source = normalized;
  }
  return Parser(source, where, open, close).run();
}

}  // namespace mor::eval::detail
