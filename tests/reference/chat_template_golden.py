#!/usr/bin/env python3
"""Renders every chat template in tests/data/chat_templates/ over a set of
conversations with Python's jinja2, exactly the way transformers'
apply_chat_template does, and writes tests/golden/chat_templates.json.

tests/unit/test_jinja.c renders the same cases with lorq's interpreter and
requires byte-identical text, or, where jinja2 failed, a failure (with the same
message when the template called raise_exception).

The environment is transformers' (utils/chat_template_utils.py):
ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True) with the
loopcontrols extension, a raise_exception global that raises TemplateError,
and a tojson filter that is json.dumps(ensure_ascii=False, ...). The context
is what transformers passes: messages, tools (None when not given),
documents (None), add_generation_prompt and the special tokens.

Run from the repository root:  .venv/bin/python tests/reference/chat_template_golden.py
"""
import json
import pathlib
import sys

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = pathlib.Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "tests" / "data" / "chat_templates"
OUT = ROOT / "tests" / "golden" / "chat_templates.json"

# Special tokens as published in each model's tokenizer_config.json.
TOKENS = {
    "SmolLM2-135M-Instruct": ("<|im_start|>", "<|im_end|>"),
    "Mistral-7B-Instruct-v0.1": ("<s>", "</s>"),
    "Mistral-7B-Instruct-v0.3": ("<s>", "</s>"),
    "Meta-Llama-3-8B-Instruct": ("<|begin_of_text|>", "<|eot_id|>"),
    "Qwen2-7B-Instruct": (None, "<|im_end|>"),
    "zephyr-7b-beta": ("<s>", "</s>"),
    "gemma-7b-it": ("<bos>", "<eos>"),
}
DEFAULT_TOKENS = ("<s>", "</s>")

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. Zürich"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}

# name -> (messages, tools)
CONVERSATIONS = {
    "single": ([{"role": "user", "content": "Hello, who are you?"}], None),
    "system": ([SYSTEM, {"role": "user", "content": "What is 2+2?"}], None),
    "multi": (
        [
            {"role": "user", "content": "Hi there"},
            {"role": "assistant", "content": "Hello! How can I help you today?"},
            {"role": "user", "content": "Tell me a joke."},
        ],
        None,
    ),
    "multi_system": (
        [
            SYSTEM,
            {"role": "user", "content": "Hi there"},
            {"role": "assistant", "content": "  Hello!  \n"},
            {"role": "user", "content": "Tell me a joke."},
        ],
        None,
    ),
    "unicode": (
        [
            {"role": "user", "content": "Ça va? 日本語 😀 \"double\" 'single' back\\slash\nsecond line\ttab"},
            {"role": "assistant", "content": "  Très bien — merci!\n\n"},
            {"role": "user", "content": "{{ not a template }} {% raw %} <|im_end|> \u2028 end"},
        ],
        None,
    ),
    "not_alternating": (
        [{"role": "user", "content": "first"}, {"role": "user", "content": "second"}],
        None,
    ),
    "bad_role": (
        [{"role": "narrator", "content": "Once upon a time"}, {"role": "user", "content": "go on"}],
        None,
    ),
    "tools": ([{"role": "user", "content": "What's the weather in Paris?"}], [WEATHER_TOOL]),
    "tool_calls": (
        [
            {"role": "user", "content": "What's the weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call12345",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call12345", "content": "22°C, sunny"},
        ],
        [WEATHER_TOOL],
    ),
    "content_parts": (
        [
            {
                "role": "user",
                "content": [{"type": "text", "text": "Describe"}, {"type": "text", "text": "this."}],
            }
        ],
        None,
    ),
}

# Conversations rendered both with and without the generation prompt.
BOTH_PROMPTS = {"multi", "multi_system", "unicode"}


def make_env():
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env


def render(template, messages, tools, add_generation_prompt, bos, eos):
    try:
        text = template.render(
            messages=messages,
            tools=tools,
            documents=None,
            add_generation_prompt=add_generation_prompt,
            bos_token=bos,
            eos_token=eos,
        )
        return {"output": text}
    except jinja2.exceptions.TemplateError as e:
        # raise_exception raises TemplateError itself; jinja2's own errors are subclasses
        if type(e) is jinja2.exceptions.TemplateError:
            return {"raised": str(e)}
        return {"error": f"{type(e).__name__}: {e}"}
    except Exception as e:  # TypeError and friends from the template's expressions
        return {"error": f"{type(e).__name__}: {e}"}


def main():
    env = make_env()
    names = sorted(p.stem for p in TEMPLATES.glob("*.jinja"))
    cases = []
    for name in names:
        source = (TEMPLATES / f"{name}.jinja").read_text(encoding="utf-8")
        template = env.from_string(source)
        bos, eos = TOKENS.get(name, DEFAULT_TOKENS)
        for conv, (messages, tools) in CONVERSATIONS.items():
            for agp in ([True, False] if conv in BOTH_PROMPTS else [True]):
                case = {"template": name, "conversation": conv, "add_generation_prompt": agp}
                case.update(render(template, messages, tools, agp, bos, eos))
                cases.append(case)
    golden = {
        "generator": "tests/reference/chat_template_golden.py",
        "jinja2": jinja2.__version__,
        "tokens": {name: dict(zip(("bos_token", "eos_token"), TOKENS.get(name, DEFAULT_TOKENS))) for name in names},
        "conversations": {k: {"messages": m, "tools": t} for k, (m, t) in CONVERSATIONS.items()},
        "cases": cases,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(golden, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    counts = {k: sum(1 for c in cases if k in c) for k in ("output", "raised", "error")}
    print(f"{OUT.relative_to(ROOT)}: {len(cases)} cases over {len(names)} templates {counts}", file=sys.stderr)


if __name__ == "__main__":
    main()
