#!/usr/bin/env python3
"""Writes tests/fixtures/eval/text_golden.json: what CPython's str/re and Jinja2 produce for the
inputs below. tests/unit/eval_pystr_test.cpp and eval_template_test.cpp check mor::eval::py and
mor::eval::Template against every case.

Run with the project's CPython 3.11 (jinja2 installed there):
  /root/.local/share/mor/venv/bin/python tools/gen_pystr_golden.py

Jinja2 is configured as lm-evaluation-harness configures it (StrictUndefined, keep_trailing_newline,
a regex_replace filter that is re.sub). Extensions of the mor dialect that Jinja lacks are emulated
for the golden output only: the builtins len/int/str/float/list/min/max as globals, and macros as
Python functions (global and filter) rendering their body with x bound to the argument.
"""
import json
import os
import re
import sys

import jinja2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "eval", "text_golden.json")

UNICODE_SPACES = "\u00a0\u3000\u2028\u2029\x1c\x1d\x1e\x1f\x85\u2003\u200a\u202f\u205f\u1680\t\n\r\x0b\x0c"
TEXTS = [
    "",
    "hello",
    "  hello  world  ",
    "\u00a0\u3000 padded\u2028\x1c\x85",
    " \t\n",
    "a b  c   d",
    " leading",
    "trailing ",
    "  both  ",
    "Grüße aus Köln",
    "straße",
    "İstanbul",
    "ΟΔΟΣ ΟΔΟΣ.",
    "ΣΑΣ Σ ΑΣ'Σ",
    "ﬁne ﬂow ﬀ",
    "ǅemal ǈ ǋ",
    "ᲒᲔᲝᲠᲒᲘᲐ ႠႡႢ ⴀⴁ",
    "héllo wörld ÀÉÎÕÜ",
    "they're bill's friends from the UK",
    "hello 👋 world 🌍!",
    "日本語のテキスト",
    "ǰ ŉ ΐ ﬓ",
    "a\u0301b\u0308",
    "MiXeD cAsE 123 abc_DEF",
    "ᾈᾉ ᾳ ῼ",
    "x\u03a3\u0301 \u03a3\u0301",
]


def case_sweep():
    ranges = [(0, 0x590), (0x10A0, 0x1100), (0x1C80, 0x1CC0), (0x1E00, 0x2000), (0x2C00, 0x2D30),
              (0xA640, 0xA800), (0xAB70, 0xABC0), (0xFB00, 0xFB20), (0xFF20, 0xFF60), (0x10400, 0x10500),
              (0x1E900, 0x1E950)]
    return "".join(chr(c) for lo, hi in ranges for c in range(lo, hi) if chr(c).isprintable())


def pystr_cases():
    cases = []

    def add(op, *args, fn):
        try:
            cases.append({"op": op, "args": list(args), "result": fn(*args)})
        except Exception as e:  # noqa: BLE001
            cases.append({"op": op, "args": list(args), "error": str(e)})

    sweep = case_sweep()
    for s in TEXTS + [UNICODE_SPACES + "x" + UNICODE_SPACES, sweep]:
        add("len", s, fn=len)
        for op in ("strip", "lstrip", "rstrip", "lower", "upper", "capitalize", "title", "isdigit", "isalpha"):
            add(op, s, fn=getattr(str, op))
        add("split_whitespace", s, -1, fn=lambda s, m: s.split(None, m))
        add("split_whitespace", s, 1, fn=lambda s, m: s.split(None, m))
        add("split", s, " ", -1, fn=lambda s, sep, m: s.split(sep, m))
        add("repr", s, fn=repr)
        add("chars", s, fn=list)
    for s, chars in [("xxhixx", "x"), ("abcHIcba", "abc"), ("ééhié", "é"), ("  x  ", ""), ("👋hi👋", "👋"),
                     ("\u3000x\u3000", None)]:
        for op in ("strip", "lstrip", "rstrip"):
            add(op, s, chars, fn=lambda s, c, op=op: getattr(s, op)(c))
    for s, sep, m in [("a,b,,c,", ",", -1), ("a,b,c", ",", 1), ("a,b,c", ",", 0), ("a  b ", " ", -1),
                      ("  a b  ", " ", -1), ("a  b  c", "  ", -1), ("é—ü—ö", "—", -1), ("abc", "", -1),
                      ("", ",", -1), ("x", "x", -1), ("a b c d", " ", 2)]:
        add("split", s, sep, m, fn=lambda s, sep, m: s.split(sep, m))
    for s, m in [("  a  b  c  ", 0), ("  a  b  c  ", 1), ("  a  b  c  ", 2), ("a\u3000b\u00a0c", -1), ("", -1)]:
        add("split_whitespace", s, m, fn=lambda s, m: s.split(None, m))
    for s, old, new, n in [("aaaa", "a", "b", -1), ("aaaa", "a", "b", 2), ("aaaa", "aa", "x", -1),
                           ("abc", "", "-", -1), ("abc", "", "-", 2), ("héé", "é", "e", -1), ("", "", "x", -1),
                           ("x👋y👋", "👋", "!", 1), ("abc", "z", "y", -1), ("aaa", "a", "", 0)]:
        add("replace", s, old, new, n, fn=lambda s, o, r, n: s.replace(o, r, n))
    for s, sub in [("hello world", "o"), ("hello world", "world"), ("hello", "z"), ("héllo wörld", "wö"),
                   ("👋👋x", "x"), ("abc", ""), ("", ""), ("aaaa", "aa"), ("日本語", "語")]:
        add("find", s, sub, fn=str.find)
        add("index", s, sub, fn=str.index)
        add("count", s, sub, fn=str.count)
        add("startswith", s, sub, fn=str.startswith)
        add("endswith", s, sub, fn=str.endswith)
    for s in ["123", "²", "٣", "", "12a", "①", "１２", "৫", "3.5", " 1", "𝟗"]:
        add("isdigit", s, fn=str.isdigit)
        add("isalpha", s, fn=str.isalpha)
    for s in ["abc", "héllo 👋 wörld", "日本語", "", "a"]:
        for i in [0, 1, -1, -2, 4, 100, -100]:
            add("at", s, i, fn=lambda s, i: s[i])
        for a, b, c in [(None, None, 1), (1, None, 1), (None, -1, 1), (-3, None, 1), (-100, 100, 1), (2, 1, 1),
                        (None, None, -1), (None, None, 2), (5, 0, -2), (-1, -100, -1), (1, 100, 3),
                        (100, None, -1), (None, 1, -1), (0, 0, 1), (3, None, -2)]:
            add("slice", s, a, b, c, fn=lambda s, a, b, c: s[a:b:c])
    for p, r, s, n in [
        (r"\[.*?\]", "", "keep [drop] this [and\nthat] [x]y", 0),
        (r"\[.*?\]", "", "a [b\nc] d", 0),
        (r" \[title\]", ". ", "Sentence one [title] two [title]", 0),
        (r"\s+", " ", "a  b\t\n c\u3000d", 0),
        (r"\s+", "_", "a\x1c\x1fb\u180ec\x85d", 0),
        (r"[\s,]+", "|", "a, b,\x1dc", 0),
        (r"\S+", "<\\g<0>>", "ab\x1ecd\u180e", 0),
        (r"x*", "-", "abxd", 0),
        (r"(\w+) (\w+)", r"\2 \1", "hello world, héllo wörld", 0),
        (r"(?P<first>\w)(\w*)", r"\g<first>.\g<2>!", "ab cd", 0),
        (r"a", r"\n\t\\", "banana", 2),
        (r".", "*", "a\nb\rc", 0),
        (r"^\s*|\s*$", "", "  trim me  ", 0),
        (r"\d+", "#", "a1b22c٣٣", 0),
        (r"(a)|(b)", r"[\1\2]", "abc", 0),
        (r"é+", "e", "ééé café", 0),
        (r"\Z", "!", "end\n", 0),
        (r"$", "!", "end\n", 0),
        (r"(?i)HELLO", "bye", "Hello hello", 0),
        (r"\bcat\b", "dog", "cat concat cat.", 0),
        (r"\u00e9", "e", "café", 0),
        (r"\\n", "\n", r"line\nbreak", 0),
        (r"", "-", "abc", 0),
        (r"(", "", "abc", 0),
        (r"a", r"\3", "abc", 0),
        (r"a", r"\q", "abc", 0),
    ]:
        add("re_sub", p, r, s, n, fn=lambda p, r, s, n: re.sub(p, r, s, count=n))
    for s in ["it's", 'say "hi"', "both ' and \"", "tab\there\nnl\r", "\x00\x07\x1b\x7f", "é 日本 👋",
              "\u200b\u00a0\u2028\ufeff", "\U000e0001\ud7ff", "back\\slash", "\x85\x9f\xa0\xad"]:
        add("repr", s, fn=repr)
    for s in ["42", " -7 ", "+3", "1_000", "٣٤", "3.5", "", "abc", "1__0", "_1", "0x10", "007", "\u3000 12\u00a0",
              "99999999999999999999"]:
        add("to_int", s, fn=lambda s: _int64_or_none(s))
        add("to_float", s, fn=lambda s: _float_repr_or_none(s))
    for s in ["1.5", ".5", "5.", "1e3", "-1.5E-3", "inf", "-Infinity", "nan", "1e400", "1_0.5", "e5", "1e", "."]:
        add("to_float", s, fn=lambda s: _float_repr_or_none(s))
    for x in [0.1, 1 / 3, 1e16, 1e15, 123456789012345678.0, 1e-4, 1e-5, 5e-324, 1.7976931348623157e308, -0.0, 2.5,
              100.0, float("inf"), float("-inf"), 0.1 + 0.2, 1e22, 1.5e-7, -123.456, 2.0 ** 60]:
        add("float_repr", repr(x), fn=lambda r: repr(float(r)))
    add("isspace_cps", 0, 0x3100, fn=lambda lo, hi: [c for c in range(lo, hi) if chr(c).isspace()])
    return cases


def _int64_or_none(s):
    try:
        v = int(s)
    except ValueError:
        return None
    return v if -2**63 <= v < 2**63 else "beyond int64"


def _float_repr_or_none(s):
    try:
        return repr(float(s))
    except ValueError:
        return None


DOC = {
    "text": "The quick brown fox jumps over",
    "spaced": "  a  b c ",
    "emoji": "héllo 👋 wörld 🌍",
    "goal": "Boil water",
    "choices": {"text": ["red", "green", "blue", "yellow"], "label": ["A", "B", "C", "D"]},
    "answerKey": "C",
    "answerKeySpace": " B",
    "question": "  What color is the sky?\n",
    "options": ["Paris", "London", "Berlin", "Madrid"],
    "sol1": "it's",
    "sol2": 'say "hi"',
    "label": 2,
    "label_str": "2",
    "flag": True,
    "nothing": None,
    "ratio": 0.5,
    "big": 9007199254740993,
    "neg": -3,
    "items": ["a", "b", "c", "b"],
    "nums": [3, 1, 2],
    "d": {"a": 1, "b": [1, "x"], "c": {"deep": ["v0", "v1"]}},
    "rows": [{"name": "x", "v": 1}, {"name": "y", "v": 2}],
    "empty": "",
    "empty_list": [],
    "ctx_a": "A man is sitting on a roof.",
    "ctx_b": "he",
    "activity_label": "Roof shingle removal",
    "endings": ["is using wrap.", "is ripping off.", "is holding a rope.", "starts pulling."],
    "dirty": "The man [title] walks.  [header] Then he  leaves.",
    "sweep": case_sweep()[:400],
}

HARNESS = [
    "{{text.split(' ')[:-1]|join(' ')}}",
    "{{' '+text.split(' ')[-1]}}",
    "{{spaced.split(' ')[:-1]|join(' ')}}",
    "{{' '+spaced.split(' ')[-1]}}",
    "{{emoji.split(' ')[:-1]|join(' ')}}",
    "Question: {{goal}}\nAnswer:",
    "{{choices.label.index(answerKey)}}",
    "{{choices.label.index(answerKeySpace.lstrip())}}",
    "{{choices.text}}",
    "{{question.strip()}}\nA. {{options[0]}}\nB. {{options[1]}}\nC. {{options[2]}}\nD. {{options[3]}}\nAnswer:",
    "{{[sol1, sol2]}}",
    "{{label}}",
    "{{label_str}}",
    "{{activity_label}}: {{ctx_a}} {{ctx_b|capitalize}}",
    "{{dirty|regex_replace('\\\\[.*?\\\\]', '')|replace('  ', ' ')|trim}}",
    "{{ dirty | regex_replace(' \\\\[title\\\\]', '. ') }}",
    "{{endings|map('regex_replace', '\\\\.$', '!')|list}}",
]

GENERAL = [
    "{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % -3 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }} {{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }}",
    "{{ 10 - 2 - 3 }} {{ 2 ** 3 ** 2 }} {{ -2 ** 2 }} {{ -neg }} {{ +neg }} {{ neg|string }} {{ -neg|string }}",
    "{{ 0.1 + 0.2 }} {{ 1.0 }} {{ 1e16 }} {{ 1.5e-7 }} {{ 3 * 1.5 }} {{ 10 / 4 }} {{ 7.5 // 2 }} {{ -7.5 % 2 }}",
    "{{ 2 ** -1 }} {{ 4 / 2 }} {{ ratio * 2 }} {{ label + 1 }} {{ big + 1 }} {{ flag + 1 }} {{ 1_000 + 1 }}",
    "{{ 'ab' * 3 }} {{ 2 * 'x' }} {{ [1] * 2 }} {{ 'a' + 'b' }} {{ [1] + ['x'] }} {{ 'ab' * 0 }}",
    "{{ 1 < 2 }} {{ 'a' < 'b' }} {{ 1 == 1.0 }} {{ [1, 2] < [1, 3] }} {{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }}",
    "{{ 'é' > 'z' }} {{ flag == 1 }} {{ nothing == None }} {{ 'a' != 'a' }} {{ [1, [2]] == [1, [2]] }} {{ 2 >= 2.0 }}",
    "{{ 'a' in 'cat' }} {{ 2 in nums }} {{ 'a' in d }} {{ 'x' not in d }} {{ 'b' in items }} {{ not 'z' in items }}",
    "{{ 'yes' if label > 1 else 'no' }} {{ 'a' if empty else 'b' if nothing else 'c' }} {{ (1 if flag else 2) + 1 }}",
    "{{ 1 ~ 'a' ~ nothing ~ [1] ~ flag ~ ratio }}",
    "{{ flag and label }} {{ empty or 'fallback' }} {{ not flag }} {{ 0 or [] }} {{ nothing and 1 }} {{ 1 and 0 or 5 }}",
    "{{ items|join(', ') }} {{ nums|join }} {{ 'abc'|join('-') }} {{ d|join(',') }} {{ rows|join('|', attribute='name') }}",
    "{{ items|length }} {{ 'héllo'|count }} {{ d|length }} {{ empty_list|length }}",
    "{{ 'hELLO wORLD'|capitalize }} {{ \"they're bill's friends-from the(uk) [a]b<c>d {e}\"|title }} {{ 'ß'|upper }}",
    "{{ label|lower }} {{ 'İ'|lower }} {{ 'ΟΔΟΣ ΟΔΟΣ.'|lower }} {{ 'ﬁx'|capitalize }} {{ 'ǆ'|title }}",
    "{{ '  x \n'|trim }}|{{ 'xxhixx'|trim('x') }}|{{ '\u3000y\u00a0'|trim }}|",
    "{{ 'aaa'|replace('a', 'b') }} {{ 'aaa'|replace('a', 'b', 2) }} {{ label|replace('2', 'two') }}",
    "{{ '42'|int }} {{ '4.7'|int }} {{ 'abc'|int }} {{ 'abc'|int(7) }} {{ 3.9|int }} {{ ' 12 '|int }} {{ '1_000'|int }}",
    "{{ flag|int }} {{ nothing|int }} {{ -2.5|int }} {{ '٣'|int }} {{ items|int(-1) }}",
    "{{ '2.5'|float }} {{ 'x'|float }} {{ 3|float }} {{ 'x'|float(1.5) }} {{ ' 1e3 '|float }}",
    "{{ 5|string ~ 'x' }} {{ nums|string }} {{ nothing|string }}",
    "{{ items|first }} {{ items|last }} {{ 'abc'|first }} {{ 'abc'|last }} {{ d|first }}",
    "{{ missing|default('dflt') }} {{ empty|default('e', true) }} {{ empty|default('e') }}| {{ missing|d('no') }}",
    "{{ d.nokey|default('none') }} {{ d['nokey']|default(0) }} {{ items[10]|default('oob') }} {{ label|default(5) }}",
    "{{ 'ab'|list }} {{ d|list }} {{ nums|list }}",
    "{{ items|map('upper')|join(',') }} {{ rows|map(attribute='name')|join(',') }} {{ nums|map('string')|list }}",
    "a  {{- label -}}  b",
    "a\n  {{- label }}\n  {{ label -}}\n\n b",
    "x\u3000\u00a0{{- label -}}\u2028\u3000y",
    "{{-label}}{{-1}}{{+label}}",
    "{{ label }}\n",
    "ok {# a {{ comment }} #}!{# x #}",
    "a  {#- c -#}  b {#- d #} e",
    "{{ d.c.deep[1] }} {{ rows[1]['name'] }} {{ rows.0.name }} {{ d['b'][-1] }}",
    "{{ {'a': 1, 'b': [1, 'x'], 'c': {'n': None}} }} {{ d.get('a') }} {{ d.get('zz', 'none') }} {{ d.get('zz') }}",
    "{{ d.keys()|list }} {{ d.values()|list|length }} {{ d }}",
    "{{ spaced.split() }} {{ spaced.split(None, 1) }} {{ text.replace('o', '0', 1) }} {{ text.startswith('The') }}",
    "{{ text.find('z') }} {{ text.find('quick') }} {{ text.count('o') }} {{ ', '.join(items) }} {{ emoji[::-1] }}",
    "{{ emoji[1:-1] }} {{ emoji[-100:100] }} {{ items[::2] }} {{ items[-1] }} {{ text.upper().lower() }}",
    "{{ text.title() }} {{ '١٢'.isdigit() }} {{ '²'.isdigit() }} {{ ''.isdigit() }} {{ 'abc'.isalpha() }}",
    "{{ items.index('b') }} {{ items.count('b') }} {{ nums.index(1) }} {{ nums.index(2.0) }}",
    "{{ 'a\\tb' }} {{ \"it's\" }} {{ 'x' 'y' }} {{ '\\u00e9\\x41\\101' }} {{ '\\d\\[' }} {{ 'q\\'s' }}",
    "{{ ['a\\nb', \"it's\", 'x\"y', 'both\\'\"', '\\x07', 'é', '\\u200b', '\\\\'] }}",
    "{{ emoji[0] }}{{ emoji[-1] }}{{ emoji[6] }} {{ emoji|length }}",
    "{{ [1, 2.5, None, True, 'a', [], {}] }} {{ (1, 2)|list }} {{ [] }} {{ ratio }} {{ big }} {{ nothing }}",
    "{{ range(3)|list }} {{ range(1, 7, 2)|list }}",
    "{{ 'a' if empty }}|{{ 'a' if flag }}|{{ 'x' ~ ('a' if empty) }}",
    "{{ sweep|lower }}\n{{ sweep|upper }}\n{{ sweep.title() }}\n{{ sweep.capitalize() }}",
    "{{ len(items) }} {{ int('5') + 1 }} {{ str(label) ~ '!' }} {{ float('2') }} {{ list('ab') }} {{ min(nums) }} {{ max(items) }}",
    "{{ len(emoji) }} {{ max(3, 7, 5) }} {{ int(2.9) }} {{ str(nothing) }} {{ nums|map('int')|list }}",
    "{{ choices.text|map('fmt')|join('\n') }}\n{{ bullet(goal) }}",
]

ERRORS = [
    "{{ ctxx }}",
    "{{ items[10] }}",
    "{{ d.nokey }}",
    "{{ d['nokey'] }}",
    "{{ items.index('zz') }}",
    "{{ text.index('zz') }}",
    "{{ 1 + 'a' }}",
    "{{ 'a' + 1 }}",
    "{{ 1 // 0 }}",
    "{{ 'a' < 1 }}",
    "{{ ctxx.y.z }}",
    "{{ label.x }}",
    "{{ text.nomethod() }}",
    "{{ empty_list|first }}",
    "{{ -text }}",
    "{{ undefinedname|upper }}",
]

SYNTAX_ERRORS = [
    "{% if x %}y{% endif %}",
    "{{ x ",
    "{{ 'abc }}",
    "{{ x | }}",
    "{{ }}",
    "{{ x y }}",
    "{{ (1 }}",
    "{{ 1 + }}",
    "line one\nline two {{ x.. }}",
]

MACROS = {"fmt": "- {{x}}", "bullet": "* {{ x|upper }}"}


def make_env():
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)

    def regex_replace(string, pattern, repl, count=0):
        return re.sub(pattern, repl, string, count=count)

    env.filters["regex_replace"] = regex_replace
    env.globals.update(len=len, int=int, str=str, float=float, list=list, min=min, max=max)
    for name, body in MACROS.items():
        fn = (lambda body: lambda x: env.from_string(body).render(x=x))(body)
        env.globals[name] = fn
        env.filters[name] = fn
    return env


def template_cases():
    env = make_env()
    cases = []
    for src in HARNESS + GENERAL:
        cases.append({"template": src, "result": env.from_string(src).render(**DOC)})
    for src in ERRORS + SYNTAX_ERRORS:
        try:
            out = env.from_string(src).render(**DOC)
            raise SystemExit("expected an error from %r, got %r" % (src, out))
        except jinja2.TemplateSyntaxError as e:
            cases.append({"template": src, "error": "TemplateSyntaxError: %s" % e.message, "syntax": True})
        except Exception as e:  # noqa: BLE001
            cases.append({"template": src, "error": "%s: %s" % (type(e).__name__, e)})
    return cases


def main() -> int:
    data = {
        "generated_by": "tools/gen_pystr_golden.py",
        "python": sys.version.split()[0],
        "jinja2": jinja2.__version__,
        "pystr": pystr_cases(),
        "doc": DOC,
        "macros": MACROS,
        "templates": template_cases(),
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print("wrote %s: %d str cases, %d template cases" % (OUT, len(data["pystr"]), len(data["templates"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
