// mor::eval::Template against Jinja2 (the golden renders of tests/fixtures/eval/text_golden.json,
// written by tools/gen_pystr_golden.py), plus native values, delimiters, macros and error messages.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "error_testing.h"
#include "mor/eval/template.h"

using mor::eval::Macros;
using mor::eval::Template;
using mor::eval::Value;
using mor::testing::error_of;
using mor::testing::expect_error;
using mor::testing::kNoError;
using nlohmann::json;

namespace {

const json& golden() {
  static const json data = [] {
    std::ifstream in(std::string(MOR_SOURCE_DIR) + "/tests/fixtures/eval/text_golden.json");
    EXPECT_TRUE(in.good()) << "missing tests/fixtures/eval/text_golden.json";
    return json::parse(in);
  }();
  return data;
}

Macros golden_macros() {
  Macros macros;
  for (auto it = golden().at("macros").begin(); it != golden().at("macros").end(); ++it)
    macros[it.key()] = std::make_shared<const Template>(
        Template::parse(it.value().get<std::string>(), "golden.yaml: macros." + it.key()));
  return macros;
}

std::string render(std::string_view src, const Value& vars, const Macros& macros = {}) {
  return Template::parse(src, "test.yaml: doc_to_text").render(vars, macros);
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

const Value kDoc = json::parse(R"({
  "ctx": "A man is sitting on a roof.", "label": 2, "answerKey": "C", "goal": "Boil water",
  "choices": {"text": ["red", "green", "blue"], "label": ["A", "B", "C"]},
  "items": ["a", "b"], "text": "héllo wörld", "nested": {"list": [{"k": "v"}]}
})");

}  // namespace

TEST(TemplateGolden, RendersExactlyAsJinja2) {
  const json& g = golden();
  Macros macros = golden_macros();
  int checked = 0;
  for (size_t i = 0; i < g.at("templates").size(); ++i) {
    const json& c = g.at("templates")[i];
    if (!c.contains("result")) continue;
    std::string src = c.at("template").get<std::string>();
    SCOPED_TRACE(src);
    std::string got;
    std::string msg = error_of([&] { got = render(src, g.at("doc"), macros); });
    ASSERT_EQ(msg, kNoError);
    EXPECT_EQ(got, c.at("result").get<std::string>());
    ++checked;
  }
  EXPECT_GT(checked, 60);
}

TEST(TemplateGolden, FailsWhereJinja2Fails) {
  const json& g = golden();
  Macros macros = golden_macros();
  int checked = 0;
  for (size_t i = 0; i < g.at("templates").size(); ++i) {
    const json& c = g.at("templates")[i];
    if (!c.contains("error")) continue;
    std::string src = c.at("template").get<std::string>();
    SCOPED_TRACE(src + "  (Jinja2: " + c.at("error").get<std::string>() + ")");
    std::string where = "golden.yaml: case " + std::to_string(i);
    std::string msg = expect_error([&] { Template::parse(src, where).render(g.at("doc"), macros); });
    EXPECT_TRUE(contains(msg, where + ": ")) << msg;
    if (c.value("syntax", false)) {
      std::string parse_msg = error_of([&] { Template::parse(src, where); });
      EXPECT_TRUE(contains(parse_msg, "column ")) << parse_msg;
    }
    ++checked;
  }
  EXPECT_GT(checked, 20);
}

TEST(Template, EvaluateReturnsNativeValuesForOneHole) {
  Value list = Template::parse("{{choices.text}}", "t").evaluate(kDoc);
  ASSERT_TRUE(list.is_array());
  EXPECT_EQ(list, json({"red", "green", "blue"}));

  Value index = Template::parse("{{choices.label.index(answerKey)}}", "t").evaluate(kDoc);
  ASSERT_TRUE(index.is_number_integer());
  EXPECT_EQ(index.get<int64_t>(), 2);

  Value label = Template::parse(" {{ label }}\n", "t").evaluate(kDoc);
  ASSERT_TRUE(label.is_number_integer());
  EXPECT_EQ(label.get<int64_t>(), 2);
  EXPECT_EQ(Template::parse(" {{ label }}\n", "t").render(kDoc), " 2\n");

  Value text = Template::parse("Q: {{goal}}", "t").evaluate(kDoc);
  ASSERT_TRUE(text.is_string());
  EXPECT_EQ(text.get<std::string>(), "Q: Boil water");
  Value two = Template::parse("{{label}}{{label}}", "t").evaluate(kDoc);
  EXPECT_EQ(two, json("22"));

  EXPECT_TRUE(Template::parse("  {{x}} ", "t").is_single_expression());
  EXPECT_FALSE(Template::parse("a{{x}}", "t").is_single_expression());
  EXPECT_FALSE(Template::parse("{{x}}{{y}}", "t").is_single_expression());
  EXPECT_FALSE(Template::parse("plain", "t").is_single_expression());
  EXPECT_EQ(Template::parse("plain", "t").evaluate(kDoc), json("plain"));
  EXPECT_EQ(Template::parse("{{ nested.list[0] }}", "t").evaluate(kDoc), json({{"k", "v"}}));
  EXPECT_EQ(Template::parse("{{ [label, 'x', None] }}", "t").evaluate(kDoc), json::parse(R"([2, "x", null])"));
}

TEST(Template, DocNameIsTheWholeDocument) {
  EXPECT_EQ(render("{{ doc.goal }}|{{ doc['label'] + 1 }}|{{ 'ctx' in doc }}", kDoc), "Boil water|3|True");
  EXPECT_EQ(render("{{ doc.keys()|list|length }}", kDoc), std::to_string(kDoc.size()));
  Value with_doc_field = {{"doc", "field wins"}};
  EXPECT_EQ(render("{{ doc }}", with_doc_field), "field wins");
}

TEST(Template, OtherDelimiters) {
  Template t = Template::parse("${ goal }-${ items[0] }|${{'a': 1}['a']}|{{ goal }}", "group.yaml: x", "${", "}");
  EXPECT_EQ(t.render(kDoc), "Boil water-a|1|{{ goal }}");
  EXPECT_EQ(Template::parse("${choices.label}", "g", "${", "}").evaluate(kDoc), json({"A", "B", "C"}));
  EXPECT_EQ(Template::parse("a ${- label -} b {% x %}", "g", "${", "}").render(kDoc), "a2b {% x %}");
  EXPECT_TRUE(contains(expect_error([] { Template::parse("x ${ a", "group.yaml: y", "${", "}"); }),
                       "group.yaml: y: column 3: unterminated"));
}

TEST(Template, MacrosAndMap) {
  Macros macros;
  macros["fmt"] = std::make_shared<const Template>(Template::parse("({{ x }})", "task.yaml: macros.fmt"));
  macros["words"] = std::make_shared<const Template>(Template::parse("{{ x.split() }}", "task.yaml: macros.words"));
  macros["loop"] = std::make_shared<const Template>(Template::parse("{{ loop(x) }}", "task.yaml: macros.loop"));
  EXPECT_EQ(render("{{ fmt(goal) }} {{ choices.text|map(fmt)|join(' ') }}", kDoc, macros),
            "(Boil water) (red) (green) (blue)");
  EXPECT_EQ(render("{{ choices.text|map('fmt')|list }}", kDoc, macros), "['(red)', '(green)', '(blue)']");
  EXPECT_EQ(render("{{ words(goal)[1] }} {{ words(goal)|length }}", kDoc, macros), "water 2");
  EXPECT_EQ(render("{{ choices.text|map(len)|list }} {{ ['1', '2']|map('int')|list }}", kDoc), "[3, 5, 4] [1, 2]");
  EXPECT_EQ(render("{{ choices.text|map('replace', 'e', 'E')|join(',') }}", kDoc), "rEd,grEEn,bluE");
  EXPECT_TRUE(contains(expect_error([&] { render("{{ loop(1) }}", kDoc, macros); }), "nested deeper"));
  EXPECT_TRUE(contains(expect_error([&] { render("{{ fmt(1, 2) }}", kDoc, macros); }), "exactly one argument"));
  EXPECT_TRUE(contains(expect_error([&] { render("{{ items|map('nope')|list }}", kDoc, macros); }), "'nope'"));
  std::string inner = expect_error([&] { render("{{ fmt(undefined_thing.x) }}", kDoc, macros); });
  EXPECT_TRUE(contains(inner, "undefined name 'undefined_thing'")) << inner;
  std::string in_macro =
      expect_error([&] { render("{{ words(3) }}", kDoc, macros); });
  EXPECT_TRUE(contains(in_macro, "test.yaml: doc_to_text: task.yaml: macros.words: ")) << in_macro;
}

TEST(Template, RegexReplaceExtension) {
  Value doc = {{"t", "keep [drop] this [and\nthat] end."}};
  EXPECT_EQ(render(R"({{ t|regex_replace('\\[.*?\\]', '') }})", doc), "keep  this [and\nthat] end.");
  EXPECT_EQ(render(R"({{ t|regex_replace('\\[[^]]*\\]', '', 1) }})", doc), "keep  this [and\nthat] end.");
  EXPECT_EQ(render(R"({{ 'one two three four'|regex_replace('(\\w+) (\\w+)', '\\2 \\1', count=1) }})", doc),
            "two one three four");
  EXPECT_EQ(render(R"({{ t|regex_replace('(?s)\\[.*?\\]', '') }})", doc), "keep  this  end.");
  EXPECT_TRUE(contains(expect_error([&] { render("{{ t|regex_replace('(', '') }}", doc); }), "test.yaml"));
  EXPECT_TRUE(contains(expect_error([&] { render("{{ 3|regex_replace('a', '') }}", doc); }), "expected string"));
}

TEST(Template, BuiltinsBeyondJinja) {
  EXPECT_EQ(render("{{ len(text) }} {{ int(' 7 ') }} {{ float('1e3') }} {{ str(1.5) }} {{ list('ab') }}", kDoc),
            "11 7 1000.0 1.5 ['a', 'b']");
  EXPECT_EQ(render("{{ min([3, 1.5, 2]) }} {{ max('b', 'a') }} {{ range(2, -3, -2)|list }}", kDoc), "1.5 b [2, 0, -2]");
  EXPECT_TRUE(contains(expect_error([] { render("{{ int('x') }}", kDoc); }), "invalid literal for int()"));
  EXPECT_TRUE(contains(expect_error([] { render("{{ len(3) }}", kDoc); }), "has no len()"));
  EXPECT_TRUE(contains(expect_error([] { render("{{ min([]) }}", kDoc); }), "empty sequence"));
  EXPECT_TRUE(contains(expect_error([] { render("{{ nosuch(1) }}", kDoc); }), "nosuch"));
  EXPECT_TRUE(contains(expect_error([] { render("{{ len }}", kDoc); }), "undefined name 'len'"));
}

TEST(Template, ErrorMessagesNameTheTemplateAndTheReason) {
  auto eval_error = [](std::string_view src) {
    return expect_error([&] { Template::parse(src, "hellaswag.yaml: doc_to_text").render(kDoc); });
  };
  EXPECT_EQ(eval_error("{{ctxx}}"), "hellaswag.yaml: doc_to_text: undefined name 'ctxx'");
  EXPECT_TRUE(contains(eval_error("{{ items[5] }}"), "hellaswag.yaml: doc_to_text: list index out of range"));
  EXPECT_TRUE(contains(eval_error("{{ choices.label.index('x') }}"), "'x' is not in list"));
  EXPECT_TRUE(contains(eval_error("{{ text.index('x') }}"), "substring not found"));
  EXPECT_TRUE(contains(eval_error("{{ text[100] }}"), "string index out of range"));
  EXPECT_TRUE(contains(eval_error("{{ choices.nokey }}"), "'nokey'"));
  EXPECT_TRUE(contains(eval_error("{{ label.split() }}"), "'int' object has no attribute 'split'"));
  EXPECT_TRUE(contains(eval_error("{{ text.format(1) }}"), "not supported"));
  EXPECT_TRUE(contains(eval_error("{{ 1 + 'a' }}"), "unsupported operand type(s) for +: 'int' and 'str'"));
  EXPECT_TRUE(contains(eval_error("{{ 10 // 0 }}"), "division or modulo by zero"));
  EXPECT_TRUE(contains(eval_error("{{ 2 ** 64 }}"), "int64"));
  EXPECT_TRUE(contains(eval_error("{{ text.split('') }}"), "empty separator"));
  EXPECT_TRUE(contains(eval_error("{{ text.split(' ', 1, 2) }}"), "at most 2 arguments"));
}

TEST(Template, SyntaxErrorsNameTheColumn) {
  auto parse_error = [](std::string_view src) {
    return expect_error([&] { Template::parse(src, "task.yaml: doc_to_text"); });
  };
  EXPECT_EQ(parse_error("ab {% if x %}y{% endif %}"),
            "task.yaml: doc_to_text: column 4: '{%' statements are not supported (only {{ expression }} holes)");
  EXPECT_TRUE(contains(parse_error("{{ 'abc }}"), "task.yaml: doc_to_text: column 4: unterminated string literal"));
  EXPECT_TRUE(contains(parse_error("xy {{ a.b "), "column 4: unterminated '{{': missing '}}'"));
  EXPECT_TRUE(contains(parse_error("héllo {{ x is defined }}"), "column 12: tests ('is ...') are not supported"));
  EXPECT_TRUE(contains(parse_error("line one\nline {{ x.. }}"), "line 2, column 11: expected a name or a number"));
  EXPECT_TRUE(contains(parse_error("{{ x|nofilter }}"), "column 6: unknown filter 'nofilter'"));
  EXPECT_TRUE(contains(parse_error("{{ x y }}"), "column 6: unexpected 'y'"));
  EXPECT_TRUE(contains(parse_error("{{ }}"), "column 4: unexpected end of expression"));
  EXPECT_TRUE(contains(parse_error("{{ 'a'(1) }}"), "can be called"));
  EXPECT_TRUE(contains(parse_error("{{ 'a\\x4' }}"), "truncated \\x escape"));
  EXPECT_TRUE(contains(parse_error("{{ 99999999999999999999 }}"), "too large"));
}

TEST(Template, SourceNormalizationAndAccessors) {
  Template t = Template::parse("a\r\nb\r{{ 'x\r\ny' }}", "w");
  EXPECT_EQ(t.render(kDoc), "a\nb\nx\ny");
  EXPECT_EQ(t.source(), "a\r\nb\r{{ 'x\r\ny' }}");
  EXPECT_EQ(t.where(), "w");
  Template copy = t;
  Template moved = std::move(copy);
  Template assigned = Template::parse("z", "w2");
  assigned = moved;
  EXPECT_EQ(assigned.render(kDoc), "a\nb\nx\ny");
  EXPECT_EQ(assigned.where(), "w");
}

TEST(Template, ParseOnceRenderMany) {
  Template t = Template::parse("{{ choices.label[i] }}. {{ choices.text[i]|capitalize }}", "t");
  const std::vector<std::string> want = {"A. Red", "B. Green", "C. Blue"};
  Value doc = kDoc;
  for (int i = 0; i < 3; ++i) {
    doc["i"] = i;
    EXPECT_EQ(t.render(doc), want[static_cast<size_t>(i)]);
  }
}

TEST(PyValue, StrReprTruthy) {
  using mor::eval::py_repr;
  using mor::eval::py_str;
  using mor::eval::py_truthy;
  EXPECT_EQ(py_str(json::parse("18446744073709551615")), "18446744073709551615");
  EXPECT_EQ(py_str(json(-5)), "-5");
  EXPECT_EQ(py_str(json(1e100)), "1e+100");
  EXPECT_EQ(py_str(json(nullptr)), "None");
  EXPECT_EQ(py_str(json("it's")), "it's");
  EXPECT_EQ(py_repr(json("it's")), "\"it's\"");
  EXPECT_EQ(py_repr(json::parse(R"({"b": [true, 1.0], "a": "x"})")), "{'a': 'x', 'b': [True, 1.0]}");
  EXPECT_FALSE(py_truthy(json(0.0)));
  EXPECT_FALSE(py_truthy(json::array()));
  EXPECT_FALSE(py_truthy(json::object()));
  EXPECT_FALSE(py_truthy(json("")));
  EXPECT_FALSE(py_truthy(json(nullptr)));
  EXPECT_TRUE(py_truthy(json(" ")));
  EXPECT_TRUE(py_truthy(json::parse("[0]")));
  EXPECT_TRUE(py_truthy(json(-1)));
}
