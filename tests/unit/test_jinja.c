/* test_jinja.c — the Jinja interpreter and the chat templates built on it.
 *
 *  - focused cases for each construct (expected text taken from jinja2 3.1
 *    with transformers' settings: trim_blocks, lstrip_blocks, loopcontrols);
 *  - errors: syntax errors with positions, unknown filters and tests, type
 *    errors, Undefined misuse, and the ceilings (steps, depth, output,
 *    memory) that keep hostile templates from hanging or crashing;
 *  - every case of tests/golden/chat_templates.json (real model templates
 *    rendered by jinja2, see tests/reference/chat_template_golden.py) must
 *    come out byte-identical, or fail with the same raise_exception message;
 *  - chat.c: loading templates from configs and folders, message checks.
 *
 * Run from the repository root (the golden file and the model folder are
 * found by relative path), under ASan/UBSan like every unit test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "chat.h"
#include "jinja.h"
#include "mapfile.h"

/* ---- helpers ---- */

static json_t *parse_json(const char *text) {
    json_error_t je;
    json_t *j = json_loads(text ? text : "{}", 0, &je);
    if (!j) fail_msg("bad test JSON '%s': %s", text, je.text);
    return j;
}

/* Renders src with the JSON context ctx (NULL: empty); NULL and err on failure. */
static char *render(const char *src, const char *ctx, lq_error *err) {
    lq_template *t = lq_template_compile(src, err);
    if (!t) return NULL;
    json_t *context = parse_json(ctx);
    char *out = lq_template_render(t, context, NULL, err);
    json_decref(context);
    lq_template_free(t);
    return out;
}

static void expect_at(const char *file, int line, const char *src, const char *ctx, const char *want) {
    lq_error err = {{0}};
    char *out = render(src, ctx, &err);
    if (!out) fail_msg("%s:%d: '%s' failed: %s", file, line, src, err.msg);
    if (strcmp(out, want) != 0) fail_msg("%s:%d: '%s'\n  got  '%s'\n  want '%s'", file, line, src, out, want);
    free(out);
}

static void expect_error_at(const char *file, int line, const char *src, const char *ctx, const char *want) {
    lq_error err = {{0}};
    char *out = render(src, ctx, &err);
    if (out) fail_msg("%s:%d: '%s' rendered '%s', expected an error containing '%s'", file, line, src, out, want);
    if (!strstr(err.msg, want)) fail_msg("%s:%d: '%s': error '%s' does not contain '%s'", file, line, src, err.msg, want);
}

#define EXPECT(src, ctx, want) expect_at(__FILE__, __LINE__, src, ctx, want)
#define EXPECT_ERROR(src, ctx, want) expect_error_at(__FILE__, __LINE__, src, ctx, want)

static const char MESSAGES[] = "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, "
                               "{\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": \"Hello\"}, "
                               "{\"role\": \"user\", \"content\": \"Bye\"}]}";

/* ---- literals and output ---- */

static void test_literals(void **state) {
    (void)state;
    EXPECT("plain text", NULL, "plain text");
    EXPECT("{{ 'a\\tb\\n' }}|{{ \"it's\" }}|{{ 'x' 'y' }}", NULL, "a\tb\n|it's|xy");
    EXPECT("{{ '\\x41\\u00e9\\U0001F600\\101\\\\\\q' }}", NULL, "A\xc3\xa9\xf0\x9f\x98\x80" "A\\\\q");
    EXPECT("{{ 42 }} {{ -7 }} {{ 1_000 }} {{ 0x1f }} {{ 0o17 }} {{ 0b101 }}", NULL, "42 -7 1000 31 15 5");
    EXPECT("{{ 1.0 }} {{ 2.5 }} {{ 1e3 }} {{ 1e16 }} {{ 1e-05 }} {{ 0.1 + 0.2 }} {{ 123456789012345678.0 }}", NULL,
           "1.0 2.5 1000.0 1e+16 1e-05 0.30000000000000004 1.2345678901234568e+17");
    EXPECT("{{ true }} {{ False }} {{ none }} {{ None }}", NULL, "True False None None");
    EXPECT("{{ [1, 'a', none, true, 1.5] }} {{ (1,) }} {{ () }} {{ {'k': \"it's\", 'q': 'a\"b'} }}", NULL,
           "[1, 'a', None, True, 1.5] (1,) () {'k': \"it's\", 'q': 'a\"b'}");
    EXPECT("{{ ['\\n', '\\x07', 'caf\xc3\xa9'] }}", NULL, "['\\n', '\\x07', 'caf\xc3\xa9']");
    EXPECT("{{ x }}|{{ y }}", "{\"x\": 1.0, \"y\": [1e100, -0.0]}", "1.0|[1e+100, -0.0]");
    EXPECT("{{ 'a', 1 }}", NULL, "('a', 1)");
}

static void test_whitespace_control(void **state) {
    (void)state;
    EXPECT("hello\n", NULL, "hello");                 /* one trailing newline is dropped */
    EXPECT("a\r\nb\rc\n\n", NULL, "a\nb\nc\n");       /* newlines normalized */
    EXPECT("  {% if true %}\n    x\n  {% endif %}\n  y\n", NULL, "    x\n  y"); /* lstrip_blocks + trim_blocks */
    EXPECT("a  {%- if true -%}  b  {%- endif -%}  c", NULL, "abc");
    EXPECT("{{- 'a' -}}   \n  {{- 'b' }}  {{ 'c' -}}  \n d", NULL, "ab  cd");
    EXPECT("  {{ 'v' }}\n  {% set x = 1 %}\n  {{ x }}", NULL, "  v\n  1"); /* no lstrip before {{ */
    EXPECT("{# comment #}\nline\n  {# c2 #}\nz", NULL, "line\nz");
    EXPECT("  {%+ if true %}x{% endif %}", NULL, "  x");
    EXPECT("{% if true +%}\nA{% endif %}", NULL, "\nA");
    EXPECT("{% raw %}{{ x }}{% endraw %}|{%- raw -%} {{ y }} {%- endraw %}", NULL, "{{ x }}|{{ y }}");
    EXPECT("{{ \"}}\" }}|{{ {'a': 1}}}", NULL, "}}|{'a': 1}");
    EXPECT("x\n\n{%- if 1 -%}\n\n  y  \n\n{%- endif -%}\n\nz", NULL, "xyz");
    EXPECT("\xc2\xa0\xe3\x80\x80{% if 1 %}x{% endif %}", NULL, "x"); /* Unicode spaces count as whitespace */
}

/* ---- statements ---- */

static void test_for_loops(void **state) {
    (void)state;
    EXPECT("{% for i in [1, 2, 3] %}{{ loop.index }}{{ loop.index0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}"
           "{{ loop.revindex }};{% endfor %}",
           NULL, "10TrueFalse33;21FalseFalse32;32FalseTrue31;");
    EXPECT("{% for i in [1,2,3,4] if i is even %}{{ loop.index }}/{{ loop.length }}:{{ i }} {% endfor %}", NULL,
           "1/2:2 2/2:4 ");
    EXPECT("{% for i in [] %}x{% else %}empty{% endfor %}{% for i in [1] %}{{ i }}{% else %}no{% endfor %}", NULL, "empty1");
    EXPECT("{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}{% if i == 5 %}{% break %}{% endif %}{{ i }}"
           "{% endfor %}",
           NULL, "0134");
    EXPECT("{% for a, b in [[1, 2], [3, 4]] %}{{ a }}{{ b }};{% endfor %}{% for k, v in {'x': 1}.items() %}{{ k }}={{ v }}"
           "{% endfor %}",
           NULL, "12;34;x=1");
    EXPECT("{% for i in [1, 2] %}{% for j in 'ab' %}{{ loop.index }}{{ j }}{% endfor %}{{ loop.index }};{% endfor %}", NULL,
           "1a2b1;1a2b2;");
    EXPECT("{% for i in [1, 2, 3] %}{{ loop.previtem }}>{{ i }}>{{ loop.nextitem }} {{ loop.cycle('o', 'e') }};{% endfor %}",
           NULL, ">1>2 o;1>2>3 e;2>3> o;");
    EXPECT("{% for x in 'h\xc3\xa9' %}{{ x }}.{% endfor %}{% for k in {'a': 1, 'b': 2} %}{{ k }}{% endfor %}", NULL,
           "h.\xc3\xa9.ab");
    EXPECT("{% for x in undefined_name %}a{% else %}b{% endfor %}", NULL, "b");
    EXPECT_ERROR("{% for x in none %}{% endfor %}", NULL, "'NoneType' object is not iterable");
    EXPECT_ERROR("{% for a, b in [[1, 2], [3]] %}{% endfor %}", NULL, "not enough values to unpack (expected 2, got 1)");
}

static void test_if_and_scopes(void **state) {
    (void)state;
    EXPECT("{% if 0 %}a{% elif '' %}b{% elif [1] %}c{% else %}d{% endif %}", NULL, "c");
    EXPECT("{% if x is defined %}yes{% else %}no{% endif %}", NULL, "no");
    /* a set inside a loop body lives for one iteration; if does not open a scope */
    EXPECT("{% set a = 5 %}{% for i in [1,2,3] %}{{ a }}{% set a = i * 10 %}{{ a }},{% endfor %}[{{ a }}]", NULL,
           "510,520,530,[5]");
    EXPECT("{% if true %}{% set b = 2 %}{% endif %}{{ b }}", NULL, "2");
    EXPECT("{% set ns = namespace(x=1, found=false) %}{% for i in range(4) %}{% set ns.x = ns.x + i %}"
           "{% if i == 2 %}{% set ns.found = true %}{% endif %}{% endfor %}{{ ns.x }} {{ ns.found }}",
           NULL, "7 True");
    EXPECT("{% set ns = namespace({'a': 1}, b=2) %}{{ ns.a }}{{ ns.b }}{{ ns['a'] }}", NULL, "121");
    EXPECT("{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set x %}inner {{ 1 + 1 }}{% endset %}[{{ x }}]", NULL, "12[inner 2]");
    EXPECT("{% with a = 1, b = 2 %}{{ a + b }}{% endwith %}[{{ a }}]", NULL, "3[]");
    EXPECT("{% macro f(a, b=2) %}[{{ a }}-{{ b }}]{% endmacro %}{{ f(1) }}{{ f(1, 3) }}{{ f(b=6, a=5) }}{{ f() }}", NULL,
           "[1-2][1-3][5-6][-2]");
    EXPECT("{% macro rec(n) %}{{ n }}{% if n > 0 %}{{ rec(n - 1) }}{% endif %}{% endmacro %}{{ rec(3) }}", NULL, "3210");
    EXPECT("{% generation %}kept{% endgeneration %}", NULL, "kept");
    EXPECT("{% set messages = messages[1:] %}{{ messages | length }}", MESSAGES, "3");
    EXPECT_ERROR("{% set d = {'a': 1} %}{% set d.a = 2 %}", NULL, "cannot assign attribute on non-namespace object");
    EXPECT_ERROR("{% macro m(a) %}{% endmacro %}{{ m(1, 2) }}", NULL, "takes not more than 1 argument");
    EXPECT_ERROR("{% macro m(a) %}{% endmacro %}{{ m(b=1) }}", NULL, "no keyword argument 'b'");
}

/* ---- expressions ---- */

static void test_access_and_slicing(void **state) {
    (void)state;
    EXPECT("{% for m in messages %}{{ m.role }}:{{ m['content'] }}|{% endfor %}", MESSAGES,
           "system:Be brief.|user:Hi|assistant:Hello|user:Bye|");
    EXPECT("{{ messages[0].role }} {{ messages[-1]['content'] }} {{ messages | last | attr('role') }}", MESSAGES,
           "system Bye user");
    EXPECT("{{ messages[1:] | map(attribute='role') | join(',') }} {{ (messages[::-1] | first).content }}", MESSAGES,
           "user,assistant,user Bye");
    EXPECT("{{ 'hello'[::-1] }} {{ 'hello'[1:3] }} {{ [1,2,3,4,5][-2:] }} {{ 'h\xc3\xa9llo'[1] }} {{ 'abcdef'[4:1:-1] }}",
           NULL, "olleh el [4, 5] \xc3\xa9 edc");
    EXPECT("{{ 'abc'[10] }}|{{ d.missing }}|{{ d.get('missing') }}|{{ (1, 2)[1] }}", "{\"d\": {}}", "||None|2");
    EXPECT("{{ d.items }}", "{\"d\": {\"items\": 5}}", "<function items>"); /* methods win for attributes */
    EXPECT("{{ d['items'] }}", "{\"d\": {\"items\": 5}}", "5");            /* keys win for items */
    EXPECT_ERROR("{{ 'x'[::0] }}", NULL, "slice step cannot be zero");
    EXPECT_ERROR("{{ n[1:] }}", "{\"n\": 5}", "'int' object is not subscriptable");
}

static void test_operators(void **state) {
    (void)state;
    EXPECT("{{ 10 / 4 }} {{ 10 // 4 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 2 ** 3 ** 2 }} {{ 7.5 // 2 }} {{ -7.5 % 2 }}",
           NULL, "2.5 2 -4 2 1024 64 3.0 0.5");
    EXPECT("{{ 1 + 2 * 3 - 4 / 2 }} {{ 2 * 3 ~ 4 }} {{ 'a' ~ 1 ~ none ~ true ~ nothing }} {{ 3 * 'ab' }} {{ [1] * 2 }}",
           NULL, "5.0 64 a1NoneTrue ababab [1, 1]");
    EXPECT("{{ [1, 2] + [3] }} {{ 'a' + 'b' }} {{ -x }} {{ +x }}", "{\"x\": 3}", "[1, 2, 3] ab -3 3");
    EXPECT("{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 1 == 1.0 }} {{ true == 1 }} {{ 'a' < 'b' }} {{ [1, 2] < [1, 3] }}", NULL,
           "True False True True True True");
    EXPECT("{{ 'a' in 'abc' }} {{ 1 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ 'z' not in 'abc' }} {{ 1 in nothing }}", NULL,
           "True True True True False");
    EXPECT("{{ not true }} {{ true and 'x' }} {{ false or 'y' }} {{ none or 0 }} {{ 0 and 1 or 4 }}", NULL,
           "False x y 0 4");
    EXPECT("{{ 1 if true else 2 }} {{ 1 if false else 2 }} [{{ 1 if false }}] {{ 'a' if 0 else 'b' if 0 else 'c' }}", NULL,
           "1 2 [] c");
    EXPECT("{{ messages[0]['content'] | trim + '!' }}", "{\"messages\": [{\"content\": \"  hi  \"}]}", "hi!");
    EXPECT_ERROR("{{ 1 + 'a' }}", NULL, "unsupported operand type(s) for +: 'int' and 'str'");
    EXPECT_ERROR("{{ 'a' + 1 }}", NULL, "can only concatenate str (not \"int\") to str");
    EXPECT_ERROR("{{ 1 / 0 }}", NULL, "division by zero");
    EXPECT_ERROR("{{ 5 // 0 }}", NULL, "integer division or modulo by zero");
    EXPECT_ERROR("{{ 'x' < 1 }}", NULL, "'<' not supported between instances of 'str' and 'int'");
    EXPECT_ERROR("{{ 9223372036854775807 + 1 }}", NULL, "integer overflow");
    EXPECT_ERROR("{{ 1 in 5 }}", NULL, "argument of type 'int' is not iterable");
    EXPECT_ERROR("{{ -'a' }}", NULL, "bad operand type for unary -: 'str'");
    EXPECT_ERROR("{{ {[1]: 2} }}", NULL, "unhashable type: 'list'");
    EXPECT_ERROR("{{ 'a' % 1 }}", NULL, "not supported");
}

static void test_undefined(void **state) {
    (void)state;
    EXPECT("[{{ x }}][{{ x | default('d') }}][{{ x is defined }}][{{ not x }}][{{ x | length }}][{{ x ~ 'a' }}]", NULL,
           "[][d][False][True][0][a]");
    EXPECT("{{ m.tool_calls is defined }} {{ m.content.content is defined }} {{ m.content is string }}",
           "{\"m\": {\"content\": \"text\"}}", "False False True");
    EXPECT("{{ none | default('d') }} {{ '' | default('d', true) }} {{ x == y }}", NULL, "None d True");
    EXPECT_ERROR("{{ x.y }}", NULL, "line 1: 'x' is undefined");
    EXPECT_ERROR("\n{{ d.a.b }}", "{\"d\": {}}", "line 2: 'dict object' has no attribute 'a'");
    EXPECT_ERROR("{{ x + 1 }}", NULL, "'x' is undefined");
    EXPECT_ERROR("{{ x() }}", NULL, "'x' is undefined");
    EXPECT_ERROR("{{ 'a'() }}", NULL, "'str' object is not callable");
    EXPECT("[{{ none.x }}]", NULL, "[]"); /* a missing attribute of a value is Undefined... */
    EXPECT_ERROR("{{ none.x.y }}", NULL, "'None' has no attribute 'x'"); /* ...and using it fails */
}

static void test_tests(void **state) {
    (void)state;
    EXPECT("{{ none is none }} {{ 1 is not none }} {{ 'a' is string }} {{ {} is mapping }} {{ [] is iterable }} "
           "{{ 'a' is iterable }} {{ 1 is iterable }} {{ 3 is odd }} {{ 4 is even }} {{ 9 is divisibleby 3 }}",
           NULL, "True True True True True True False True True True");
    EXPECT("{{ 1 is number }} {{ 1.0 is float }} {{ true is integer }} {{ 1 is integer }} {{ true is boolean }} "
           "{{ x is undefined }} {{ none is sameas none }} {{ 'a' is lower }} {{ 'A' is upper }} {{ [] is sequence }}",
           NULL, "True True False True True True True True True True");
    EXPECT("{{ 1 is eq 1 }} {{ 2 is gt 1 }} {{ 1 is in [1] }} {{ 1 is ne 1 }} {{ range is callable }} {{ true is true }} "
           "{{ 0 is false }}",
           NULL, "True True True False True True False");
    EXPECT("{{ 'tojson' is filter }} {{ 'nope' is filter }} {{ 'odd' is test }}", NULL, "True False True");
}

/* ---- filters and methods ---- */

static void test_filters(void **state) {
    (void)state;
    EXPECT("{{ '  hi  ' | trim }}|{{ 'xxhixx' | trim('x') }}|{{ 'Hello' | upper }}|{{ 'HeLLo' | lower }}|"
           "{{ 'hello world-foo (bar)' | title }}|{{ 'hELLO wORLD' | capitalize }}",
           NULL, "hi|hi|HELLO|hello|Hello World-Foo (Bar)|Hello world");
    EXPECT("{{ [1, 2, 3] | join(', ') }} {{ [1, 2, 3] | first }} {{ [1, 2, 3] | last }} {{ 'abc' | list }} {{ 42 | string }}",
           NULL, "1, 2, 3 1 3 ['a', 'b', 'c'] 42");
    EXPECT("{{ '42' | int + 1 }} {{ '3.5' | float }} {{ 'x' | int }} {{ 'x' | int(7) }} {{ 3.9 | int }} {{ 'ff' | int(base=16) }} "
           "{{ '1e3' | float }}",
           NULL, "43 3.5 0 7 3 255 1000.0");
    EXPECT("{{ 'aXbXc' | replace('X', '-') }} {{ 'aaa' | replace('a', 'b', 2) }} {{ {'a': 1, 'b': 2} | items | list }}",
           NULL, "a-b-c bba [('a', 1), ('b', 2)]");
    EXPECT("{{ 'abc' | length }} {{ [1, 2] | count }} {{ {'a': 1} | length }} {{ '<b>' | safe }} {{ '<a&\">' | e }}", NULL,
           "3 2 1 <b> &lt;a&amp;&#34;&gt;");
    EXPECT("{{ [3, 1, 2] | sort }} {{ ['b', 'A', 'a'] | sort }} {{ [3, 1, 2] | sort(reverse=true) }} "
           "{{ [{'n': 2}, {'n': 1}] | sort(attribute='n') | map(attribute='n') | list }}",
           NULL, "[1, 2, 3] ['A', 'a', 'b'] [3, 2, 1] [1, 2]");
    EXPECT("{{ [1, 2, 2, 'a', 'A'] | unique | list }} {{ [1, 2, 3] | sum }} {{ [1, 2, 3] | max }} {{ [1, 2, 3] | min }} "
           "{{ [1, 2] | reverse | list }} {{ 'abc' | reverse }} {{ -3 | abs }} {{ 2.567 | round(1) }} {{ 2.5 | round }}",
           NULL, "[1, 2, 'a'] 6 3 1 [2, 1] cba 3 2.6 2.0");
    EXPECT("{{ messages | selectattr('role', 'equalto', 'user') | list | length }} "
           "{{ messages | rejectattr('role', 'eq', 'user') | map(attribute='role') | join(',') }} "
           "{{ [1, 2, 3, 4] | select('odd') | list }} {{ [0, 1, '', 'a'] | reject | list }} "
           "{{ ['a', 'b'] | map('upper') | list }}",
           MESSAGES, "2 system,assistant [1, 3] [0, ''] ['A', 'B']");
    EXPECT("{{ 'a\\nb\\n\\nc' | indent(2) }}|{{ 'a\\nb' | indent(2, true) }}|{{ 'one two  three' | wordcount }}|"
           "{{ {'b': 1, 'a': 2} | dictsort }}",
           NULL, "a\n  b\n\n  c|  a\n  b|3|[('a', 2), ('b', 1)]");
    EXPECT("[{{ [] | first }}][{{ none | trim }}][{{ x | upper }}]", NULL, "[][None][]");
    EXPECT_ERROR("{{ [1, 'a'] | sort }}", NULL, "'<' not supported between instances of 'str' and 'int'");
    EXPECT_ERROR("{{ 5 | length }}", NULL, "object of type 'int' has no len()");
    EXPECT_ERROR("{{ [1] | items }}", NULL, "Can only get item pairs from a mapping");
    EXPECT_ERROR("{{ 'a' | replace('a') }}", NULL, "replace() takes at least 2 arguments");
    EXPECT_ERROR("{{ 'a' | trim(chars='x', bad=1) }}", NULL, "unexpected keyword argument 'bad'");
}

static void test_tojson(void **state) {
    (void)state;
    const char *ctx = "{\"x\": {\"a\": [1, 2.5, \"\xc3\xa9\\n\\\"\", null, true], \"b\": {}, \"c\": []}}";
    EXPECT("{{ x | tojson }}", ctx, "{\"a\": [1, 2.5, \"\xc3\xa9\\n\\\"\", null, true], \"b\": {}, \"c\": []}");
    EXPECT("{{ x | tojson(indent=2) }}", ctx,
           "{\n  \"a\": [\n    1,\n    2.5,\n    \"\xc3\xa9\\n\\\"\",\n    null,\n    true\n  ],\n  \"b\": {},\n  \"c\": []\n}");
    EXPECT("{{ x | tojson(ensure_ascii=true) }}", "{\"x\": \"\xc3\xa9\xf0\x9f\x98\x80\\u0001\"}",
           "\"\\u00e9\\ud83d\\ude00\\u0001\"");
    EXPECT("{{ x | tojson(separators=(',', ':'), sort_keys=true) }}", "{\"x\": {\"b\": 1, \"a\": [1, 2]}}",
           "{\"a\":[1,2],\"b\":1}");
    EXPECT("{{ {1: 'x', none: 2, 1.5: 3} | tojson }} {{ (1, 'a') | tojson(indent='\\t') }}", NULL,
           "{\"1\": \"x\", \"null\": 2, \"1.5\": 3} [\n\t1,\n\t\"a\"\n]");
    EXPECT_ERROR("{{ x | tojson }}", NULL, "'x' is undefined");
    EXPECT_ERROR("{{ namespace() | tojson }}", NULL, "Object of type Namespace is not JSON serializable");
}

static void test_methods(void **state) {
    (void)state;
    EXPECT("{{ ' a b '.strip() }}|{{ 'xxaxx'.lstrip('x') }}|{{ 'xxaxx'.rstrip('x') }}|{{ 'a,b,,c'.split(',') }}|"
           "{{ ' a  b '.split() }}|{{ 'a b c'.split(' ', 1) }}|{{ 'a,b,c'.rsplit(',', 1) }}",
           NULL, "a b|axx|xxa|['a', 'b', '', 'c']|['a', 'b']|['a', 'b c']|['a,b', 'c']");
    EXPECT("{{ 'abc'.startswith('ab') }} {{ 'abc'.endswith(('x', 'c')) }} {{ 'Hi There'.upper() }} {{ 'Hi'.lower() }} "
           "{{ \"they're bill's\".title() }} {{ 'aaa'.replace('a', 'b', 1) }} {{ 'abc'.replace('', '-') }}",
           NULL, "True True HI THERE hi They'Re Bill'S baa -a-b-c-");
    EXPECT("{{ 'abcabc'.find('c') }} {{ 'abcabc'.rfind('c') }} {{ 'abc'.find('z') }} {{ 'abcabc'.count('bc') }} "
           "{{ '-'.join(['a', 'b']) }} {{ 'a\\nb\\r\\nc'.splitlines() }} {{ '123'.isdigit() }} {{ 'ab'.isalpha() }}",
           NULL, "2 5 -1 2 a-b ['a', 'b', 'c'] True True");
    EXPECT("{{ d.items() | list }} {{ d.keys() | list }} {{ d.values() | list }} {{ d.get('a') }} {{ d.get('z', 5) }}",
           "{\"d\": {\"a\": 1, \"b\": 2}}", "[('a', 1), ('b', 2)] ['a', 'b'] [1, 2] 1 5");
    EXPECT("{{ 'stra\xc3\x9f\xc3\xa9'.upper() }} {{ '\xc3\x89" "COLE'.lower() }}", NULL, "STRASS\xc3\x89 \xc3\xa9" "cole");
    EXPECT("{{ s['strip']() }}", "{\"s\": \" x \"}", "x");
    EXPECT_ERROR("{{ 'a'.split('') }}", NULL, "empty separator");
    EXPECT_ERROR("{{ '-'.join([1]) }}", NULL, "sequence item 0: expected str instance, int found");
    EXPECT_ERROR("{{ [1].append(2) }}", NULL, "'list object' has no attribute 'append'");
}

static void test_globals(void **state) {
    (void)state;
    EXPECT("{{ range(5) | list }} {{ range(2, 8, 3) | list }} {{ range(5, 0, -2) | list }} {{ dict(a=1) }}", NULL,
           "[0, 1, 2, 3, 4] [2, 5] [5, 3, 1] {'a': 1}");
    EXPECT_ERROR("{{ raise_exception('Conversation roles must alternate') }}", NULL, "Conversation roles must alternate");
    lq_error err;
    char *out = render("{{ raise_exception('exact message') }}", NULL, &err);
    assert_null(out);
    assert_string_equal(err.msg, "exact message"); /* no position prefix: the template's own words */
    out = render("{{ strftime_now('%Y') }}", NULL, &err);
    assert_non_null(out);
    assert_int_equal(strlen(out), 4);
    free(out);
    EXPECT("{% set range = 'shadowed' %}{{ range }}", NULL, "shadowed");
    EXPECT_ERROR("{{ range(100001) | length }}", NULL, "Range too big");
}

/* ---- errors ---- */

static void expect_compile_error(const char *src, const char *want) {
    lq_error err;
    lq_template *t = lq_template_compile(src, &err);
    if (t) fail_msg("'%.200s' compiled, expected an error containing '%s'", src, want);
    if (!strstr(err.msg, want)) fail_msg("'%.200s': error '%s' does not contain '%s'", src, err.msg, want);
}

static void test_syntax_errors(void **state) {
    (void)state;
    expect_compile_error("{{ x", "line 1, column 1: '{{' is never closed");
    expect_compile_error("ab\n  {% if x", "line 2, column 3: '{%' is never closed");
    expect_compile_error("{% if x %}no end", "unexpected end of template, expected 'endif'");
    expect_compile_error("{% for x in y %}{% endif %}", "unexpected 'endif', expected 'endfor'");
    expect_compile_error("{% endfor %}", "unexpected 'endfor' with no block open");
    expect_compile_error("{# never closed", "missing end of comment tag");
    expect_compile_error("{% raw %}never closed", "missing end of raw directive");
    expect_compile_error("a\n{{ x | nosuchfilter }}", "line 2, column 8: no filter named 'nosuchfilter'");
    expect_compile_error("{{ x is nosuchtest }}", "no test named 'nosuchtest'");
    expect_compile_error("{% frobnicate %}", "unknown tag 'frobnicate'");
    expect_compile_error("{% include 'x' %}", "the 'include' tag is not supported");
    expect_compile_error("{{ 1 + }}", "expected an expression, got end of print statement");
    expect_compile_error("{{ (1 }}", "expected ')'");
    expect_compile_error("{{ [1, 2 }}", "unexpected '}', expected ']'");
    expect_compile_error("{{ 'abc }}", "unterminated string");
    expect_compile_error("{{ a b }}", "expected end of print statement, got 'b'");
    expect_compile_error("{{ $ }}", "unexpected character '$'");
    expect_compile_error("{% break %}", "'break' outside of a loop");
    expect_compile_error("{% for x in y recursive %}{% endfor %}", "recursive loops are not supported");
    expect_compile_error("{{ f(a=1, 2) }}", "positional argument after a keyword argument");
    expect_compile_error("{{ 'a' \"\\xZZ\" }}", "truncated \\x");
    expect_compile_error("\xff\xfe", "not valid UTF-8");
    expect_compile_error("{{ 99999999999999999999 }}", "integer literal too large");
    /* nesting deep enough to overflow a naive recursive parser is refused cleanly */
    enum { DEPTH = 100000 };
    char *deep = malloc(2 * DEPTH + 8);
    strcpy(deep, "{{ ");
    memset(deep + 3, '(', DEPTH);
    deep[3 + DEPTH] = '1';
    memset(deep + 4 + DEPTH, ')', DEPTH);
    strcpy(deep + 4 + 2 * DEPTH, " }}");
    expect_compile_error(deep, "nested more than");
    strcpy(deep, "{{ ");
    for (int i = 0; i < DEPTH / 4; i++) memcpy(deep + 3 + 4 * i, "not ", 4);
    strcpy(deep + 3 + DEPTH, "1 }}");
    expect_compile_error(deep, "nested more than");
    /* a long flat chain parses, and evaluating its deep tree fails cleanly */
    strcpy(deep, "{{ 1");
    for (int i = 0; i < DEPTH / 4; i++) memcpy(deep + 4 + 4 * i, " + 1", 4);
    strcpy(deep + 4 + DEPTH, " }}");
    lq_error err;
    char *out = render(deep, NULL, &err);
    assert_null(out);
    assert_non_null(strstr(err.msg, "expression nested more than"));
    free(deep);
    char *blocks = malloc(10 * 5000 + 1);
    for (int i = 0; i < 5000; i++) memcpy(blocks + 10 * i, "{% if 1 %}", 10);
    blocks[50000] = '\0';
    expect_compile_error(blocks, "nested more than");
    free(blocks);
}

static char *render_limited(const char *src, const lq_template_limits *limits, lq_error *err) {
    lq_template *t = lq_template_compile(src, err);
    assert_non_null(t);
    lq_template_set_limits(t, limits);
    char *out = lq_template_render(t, NULL, NULL, err);
    lq_template_free(t);
    return out;
}

static void test_limits(void **state) {
    (void)state;
    lq_error err;
    /* huge loops stop at the step ceiling */
    json_t *thousand = json_array();
    for (int i = 0; i < 1000; i++) json_array_append_new(thousand, json_integer(i));
    json_t *ctx = json_pack("{s:o}", "x", thousand);
    char *ctx_text = json_dumps(ctx, 0);
    EXPECT_ERROR("{% for i in range(100000) %}{% for j in x %}{% endfor %}{% endfor %}", ctx_text, "more than 20000000 steps");
    free(ctx_text);
    json_decref(ctx);
    /* runaway recursion stops at the depth ceiling */
    EXPECT_ERROR("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", NULL, "macro calls nested more than 200 deep");
    /* output and memory ceilings */
    lq_template_limits small = {.max_output = 1000, .max_memory = 1 << 20};
    assert_null(render_limited("{% for i in range(2000) %}x{% endfor %}", &small, &err));
    assert_non_null(strstr(err.msg, "rendered text exceeds 1000 bytes"));
    assert_null(render_limited("{{ 'x' * 100000000 }}", &small, &err));
    assert_non_null(strstr(err.msg, "memory limit"));
    assert_null(render_limited("{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}"
                               "{% endfor %}",
                               &small, &err));
    assert_non_null(strstr(err.msg, "bytes of memory"));
    /* values nested deeper than printing allows */
    assert_null(render_limited("{% set ns = namespace(x=[]) %}{% for i in range(2000) %}{% set ns.x = [ns.x] %}"
                               "{% endfor %}{{ ns.x }}",
                               NULL, &err));
    assert_non_null(strstr(err.msg, "nested more than"));
    /* a context that is not an object */
    lq_template *t = lq_template_compile("x", &err);
    json_t *arr = json_array();
    assert_null(lq_template_render(t, arr, NULL, &err));
    assert_non_null(strstr(err.msg, "must be a JSON object"));
    json_decref(arr);
    size_t len = 99;
    char *out = lq_template_render(t, NULL, &len, &err);
    assert_string_equal(out, "x");
    assert_int_equal(len, 1);
    free(out);
    lq_template_free(t);
}

/* ---- golden cases from jinja2 ---- */

static char *read_text(const char *path) {
    lq_error err;
    char *text = lq_read_file(path, NULL, &err);
    if (!text) fail_msg("%s", err.msg);
    return text;
}

static void test_golden(void **state) {
    (void)state;
    json_error_t je;
    json_t *golden = json_load_file("tests/golden/chat_templates.json", 0, &je);
    if (!golden) fail_msg("tests/golden/chat_templates.json: %s (run from the repository root)", je.text);
    json_t *cases = json_object_get(golden, "cases"), *convs = json_object_get(golden, "conversations"),
           *tokens = json_object_get(golden, "tokens");
    size_t i, checked = 0, failures = 0;
    json_t *c;
    json_array_foreach(cases, i, c) {
        const char *name = json_string_value(json_object_get(c, "template"));
        const char *conv_name = json_string_value(json_object_get(c, "conversation"));
        json_t *conv = json_object_get(convs, conv_name);
        char path[512];
        snprintf(path, sizeof path, "tests/data/chat_templates/%s.jinja", name);
        char *src = read_text(path);
        lq_error err;
        lq_template *t = lq_template_compile(src, &err);
        if (!t) fail_msg("%s: %s", path, err.msg);
        json_t *ctx = json_deep_copy(json_object_get(tokens, name));
        json_object_set(ctx, "messages", json_object_get(conv, "messages"));
        json_object_set(ctx, "tools", json_object_get(conv, "tools"));
        json_object_set_new(ctx, "documents", json_null());
        json_object_set(ctx, "add_generation_prompt", json_object_get(c, "add_generation_prompt"));
        size_t len;
        char *out = lq_template_render(t, ctx, &len, &err);
        const json_t *want = json_object_get(c, "output"), *raised = json_object_get(c, "raised");
        bool ok;
        if (want) ok = out && len == json_string_length(want) && memcmp(out, json_string_value(want), len) == 0;
        else if (raised) ok = !out && strcmp(err.msg, json_string_value(raised)) == 0;
        else ok = !out; /* jinja2 failed with a type error: so must we */
        if (!ok) {
            failures++;
            print_error("golden %s / %s (add_generation_prompt=%d):\n  want %s\n  got  %s\n", name, conv_name,
                        json_is_true(json_object_get(c, "add_generation_prompt")),
                        want ? json_string_value(want) : raised ? json_string_value(raised) : "(an error)",
                        out ? out : err.msg);
        }
        checked++;
        free(out);
        json_decref(ctx);
        lq_template_free(t);
        free(src);
    }
    json_decref(golden);
    if (checked < 100) fail_msg("only %zu golden cases", checked);
    if (failures) fail_msg("%zu of %zu golden cases differ from jinja2", failures, checked);
}

/* ---- chat templates ---- */

static lq_chat_template *chat_from(const char *config_json, lq_error *err) {
    json_t *config = parse_json(config_json);
    lq_chat_template *ct = lq_chat_from_config(config, NULL, "tokenizer_config.json", err);
    json_decref(config);
    return ct;
}

static char *chat_render(const lq_chat_template *ct, const char *messages, lq_error *err) {
    json_t *m = parse_json(messages);
    char *out = lq_chat_render(ct, m, NULL, true, NULL, err);
    json_decref(m);
    return out;
}

static const char CHATML[] = "{\"bos_token\": {\"__type\": \"AddedToken\", \"content\": \"<s>\"}, \"eos_token\": \"</s>\", "
                             "\"chat_template\": \"{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content }}"
                             "{{ eos_token }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}\"}";

static void test_chat_render(void **state) {
    (void)state;
    lq_error err;
    lq_chat_template *ct = chat_from(CHATML, &err);
    if (!ct) fail_msg("%s", err.msg);
    assert_true(lq_chat_available(ct));
    assert_string_equal(lq_chat_bos_token(ct), "<s>");
    assert_string_equal(lq_chat_eos_token(ct), "</s>");
    char *out = chat_render(ct, "[{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"Hello \"}, "
                                "{\"type\": \"text\", \"text\": \"world\"}]}]", &err);
    assert_non_null(out);
    assert_string_equal(out, "<s><user>Hello world</s><assistant>");
    free(out);
    out = chat_render(ct, "[{\"role\": \"assistant\", \"content\": null, \"tool_calls\": [{\"id\": \"1\"}]}]", &err);
    assert_string_equal(out, "<s><assistant>None</s><assistant>");
    free(out);
    static const struct { const char *messages, *want; } bad[] = {
        {"[]", "messages must be a non-empty array"},
        {"{}", "messages must be a non-empty array"},
        {"[1]", "messages[0] must be an object"},
        {"[{\"content\": \"x\"}]", "messages[0].role must be a string"},
        {"[{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"narrator\", \"content\": \"x\"}]",
         "messages[1].role 'narrator' is not one of system, user, assistant, tool"},
        {"[{\"role\": \"user\", \"content\": 5}]", "messages[0].content must be a string or a list of text parts"},
        {"[{\"role\": \"user\"}]", "messages[0].content is missing (only an assistant message with tool_calls may omit it)"},
        {"[{\"role\": \"user\", \"content\": [{\"type\": \"image_url\", \"image_url\": {}}]}]",
         "messages[0].content[0]: only text parts are supported (got type 'image_url')"},
        {"[{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": 1}]}]", "messages[0].content[0].text must be a string"},
        {"[{\"role\": \"assistant\", \"content\": \"x\", \"tool_calls\": {}}]", "messages[0].tool_calls must be an array"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        out = chat_render(ct, bad[i].messages, &err);
        if (out) fail_msg("%s rendered", bad[i].messages);
        if (strcmp(err.msg, bad[i].want) != 0) fail_msg("%s: got '%s', want '%s'", bad[i].messages, err.msg, bad[i].want);
    }
    json_t *m = parse_json("[{\"role\": \"user\", \"content\": \"x\"}]"), *tools = parse_json("{}");
    assert_null(lq_chat_render(ct, m, tools, true, NULL, &err));
    assert_string_equal(err.msg, "tools must be an array");
    json_decref(m);
    json_decref(tools);
    lq_chat_free(ct);
}

static void test_chat_load(void **state) {
    (void)state;
    lq_error err;
    /* a list of named templates: "default" is used */
    lq_chat_template *ct = chat_from("{\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"T\"}, "
                                     "{\"name\": \"default\", \"template\": \"D{{ messages | length }}\"}]}",
                                     &err);
    if (!ct) fail_msg("%s", err.msg);
    char *out = chat_render(ct, "[{\"role\": \"user\", \"content\": \"x\"}]", &err);
    assert_string_equal(out, "D1");
    free(out);
    lq_chat_free(ct);
    assert_null(chat_from("{\"chat_template\": [{\"name\": \"rag\", \"template\": \"x\"}]}", &err));
    assert_non_null(strstr(err.msg, "none is named \"default\""));
    assert_null(chat_from("{\"chat_template\": 5}", &err));
    assert_non_null(strstr(err.msg, "chat_template must be a string"));
    /* syntax errors and templates that cannot render are load errors */
    assert_null(chat_from("{\"chat_template\": \"{% for m in messages %}\"}", &err));
    assert_non_null(strstr(err.msg, "tokenizer_config.json: chat_template: line 1"));
    assert_null(chat_from("{\"chat_template\": \"{{ messages[0].content + 1 }}\"}", &err));
    assert_non_null(strstr(err.msg, "cannot render a sample conversation"));
    /* a template that refuses system messages still loads (Gemma) */
    char *gemma = read_text("tests/data/chat_templates/gemma-7b-it.jinja");
    json_t *config = json_pack("{s:s, s:s, s:s}", "chat_template", gemma, "bos_token", "<bos>", "eos_token", "<eos>");
    ct = lq_chat_from_config(config, NULL, "gemma", &err);
    if (!ct) fail_msg("%s", err.msg);
    out = chat_render(ct, "[{\"role\": \"system\", \"content\": \"x\"}, {\"role\": \"user\", \"content\": \"y\"}]", &err);
    assert_null(out);
    assert_string_equal(err.msg, "System role not supported");
    out = chat_render(ct, "[{\"role\": \"user\", \"content\": \" Hi \"}]", &err);
    assert_string_equal(out, "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n");
    free(out);
    lq_chat_free(ct);
    json_decref(config);
    free(gemma);
    /* no template: loads, and each render says why it cannot */
    ct = chat_from("{\"eos_token\": \"</s>\"}", &err);
    assert_non_null(ct);
    assert_false(lq_chat_available(ct));
    assert_null(chat_render(ct, "[{\"role\": \"user\", \"content\": \"x\"}]", &err));
    assert_non_null(strstr(err.msg, "this model has no chat template"));
    lq_chat_free(ct);
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_chat_folders(void **state) {
    (void)state;
    lq_error err;
    char dir[] = "/tmp/lorq-chat-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char config[128], jinja[128];
    snprintf(config, sizeof config, "%s/tokenizer_config.json", dir);
    snprintf(jinja, sizeof jinja, "%s/chat_template.jinja", dir);
    /* chat_template.jinja beside a config without chat_template */
    write_file(config, "{\"bos_token\": \"<s>\"}");
    write_file(jinja, "{{ bos_token }}{{ messages[0].content }}\n");
    lq_chat_template *ct = lq_chat_load(dir, &err);
    if (!ct) fail_msg("%s", err.msg);
    char *out = chat_render(ct, "[{\"role\": \"user\", \"content\": \"x\"}]", &err);
    assert_string_equal(out, "<s>x");
    free(out);
    lq_chat_free(ct);
    write_file(config, "{\"chat_template\": ");
    assert_null(lq_chat_load(dir, &err));
    assert_non_null(strstr(err.msg, "tokenizer_config.json: line"));
    remove(config);
    remove(jinja);
    ct = lq_chat_load(dir, &err); /* nothing at all: no template */
    assert_non_null(ct);
    assert_false(lq_chat_available(ct));
    lq_chat_free(ct);
    remove(dir);
    /* the bundled model, when set up */
    if (access("models/SmolLM2-135M-Instruct/tokenizer_config.json", R_OK) != 0) return;
    ct = lq_chat_load("models/SmolLM2-135M-Instruct", &err);
    if (!ct) fail_msg("%s", err.msg);
    out = chat_render(ct, "[{\"role\": \"user\", \"content\": \"Hello who are you?\"}]", &err);
    assert_string_equal(out, "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                             "<|im_end|>\n<|im_start|>user\nHello who are you?<|im_end|>\n<|im_start|>assistant\n");
    free(out);
    lq_chat_free(ct);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_literals),
        cmocka_unit_test(test_whitespace_control),
        cmocka_unit_test(test_for_loops),
        cmocka_unit_test(test_if_and_scopes),
        cmocka_unit_test(test_access_and_slicing),
        cmocka_unit_test(test_operators),
        cmocka_unit_test(test_undefined),
        cmocka_unit_test(test_tests),
        cmocka_unit_test(test_filters),
        cmocka_unit_test(test_tojson),
        cmocka_unit_test(test_methods),
        cmocka_unit_test(test_globals),
        cmocka_unit_test(test_syntax_errors),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_golden),
        cmocka_unit_test(test_chat_render),
        cmocka_unit_test(test_chat_load),
        cmocka_unit_test(test_chat_folders),
    };
    return cmocka_run_group_tests_name("jinja", tests, NULL, NULL);
}
