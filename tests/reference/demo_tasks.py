"""The three demo tasks of adapters/demo: data, prompts and exact judging.

Every example is generated from a fixed seed, so the train and held-out sets are
the same on every machine and Python version (only random.Random's random(),
randrange() and choice() are used). Held-out prompts never appear in the train
set.

  sentiment  the label of a short product review, the bare word `positive` or
             `negative` (the base model answers in a sentence instead)
  extract    name, age and city of a person in a sentence as compact JSON,
             keys in the order name, age, city, age a number:
             {"name":"Ana","age":31,"city":"Lisbon"}
  numwords   an integer 0..9999 written in English words: lowercase, single
             spaces, tens and ones joined by a hyphen, no "and", no commas,
             0 is "zero" (4213 -> four thousand two hundred thirteen,
             7051 -> seven thousand fifty-one); held-out numbers are 100..9999,
             the 100 numbers below 100 are train-only (too few to hold out)

An example is a dict: task, messages (the chat messages of the prompt: one user
message, the task prompt; the model's chat template adds its default system
message), answer (the expected assistant message).

What an end-to-end test uses: heldout_examples(task, n), is_correct(output,
answer), max_new_tokens(task), and to feed token ids to `lorq generate
--prompt-ids`, prompt_ids(messages, model_dir) (needs `tokenizers` and `jinja2`).
Only the standard library is needed for the data itself.
"""
import json
import os
import random

TASKS = ("sentiment", "extract", "numwords")

SEED = 20240909          # base seed; each task and split derives its own from it
HELDOUT_SIZE = 500       # the fixed held-out pool; heldout_examples(task, n) takes its first n
TRAIN_SIZE = 4000        # default train set size per task

_MAX_NEW = {"sentiment": 8, "extract": 48, "numwords": 32}


def max_new_tokens(task):
    """Generation budget for the task: several tokens more than its longest answer."""
    return _MAX_NEW[task]


# ---------------------------------------------------------------- sentiment

PRODUCTS = [
    "blender", "coffee maker", "phone case", "backpack", "desk lamp", "toaster", "water bottle",
    "laptop stand", "kettle", "vacuum cleaner", "keyboard", "mouse", "office chair", "yoga mat",
    "air fryer", "hair dryer", "tent", "rain jacket", "pair of running shoes", "pair of headphones",
    "smart watch", "bluetooth speaker", "frying pan", "knife set", "electric toothbrush", "monitor",
    "webcam", "router", "suitcase", "umbrella", "board game", "book light", "power bank",
    "pillow", "mattress topper", "garden hose", "drill", "bike helmet", "wall clock", "printer",
]

OPENERS = [
    "", "I bought this {p} last month.", "Got this {p} as a gift.", "I have been using this {p} for two weeks.",
    "Ordered this {p} for my sister.", "This {p} arrived on Tuesday.", "Picked up this {p} on sale.",
    "My old {p} broke, so I tried this one.", "Second {p} I have bought from this brand.",
    "Used the {p} every day since it came.",
]

POSITIVE = [
    "It works perfectly.", "Great quality for the price.", "Absolutely love it!", "Exceeded my expectations.",
    "Would definitely buy it again.", "Sturdy, well made and it looks great.", "Five stars.",
    "Best purchase I have made this year.", "Customer service was quick and helpful.",
    "It does exactly what it promises.", "Highly recommended.", "Setup took two minutes and it has been flawless.",
    "Not bad at all, actually really good.", "My whole family is happy with it.", "Worth every penny.",
    "It feels premium and works like a charm.", "Shipping was fast and everything was in perfect shape.",
    "Much better than the expensive one I had before.", "No complaints whatsoever.", "I am very pleased.",
    "It is quiet, fast and easy to clean.", "The battery lasts for days.", "Honestly a fantastic product.",
    "Comfortable and reliable.", "I use it all the time and it never lets me down.",
    "Five stars from me, no hesitation.", "A pleasure to use.", "It was a great gift idea.",
    "Everything about it is well thought out.", "Ten out of ten.",
]

NEGATIVE = [
    "It stopped working after three days.", "Cheap plastic that cracked immediately.", "Total waste of money.",
    "Would not recommend it.", "I returned it the next day.", "It arrived broken and support never answered.",
    "Much smaller than pictured and it feels flimsy.", "One star.", "The battery dies within an hour.",
    "Very disappointed.", "It is loud, slow and hard to clean.", "Not worth the money.",
    "The instructions were useless and a part was missing.", "Worst purchase I have made this year.",
    "It broke the first time I used it.", "Avoid this one.", "It smells of chemicals and the paint peels.",
    "Does not do what the description says.", "I regret buying it.", "Poorly made and overpriced.",
    "It overheats after a few minutes.", "Nothing but problems from day one.", "The seams came apart in a week.",
    "Customer service was rude and unhelpful.", "Not good at all.", "It never worked properly.",
    "Zero stars if I could.", "A complete letdown.", "Feels like a cheap knockoff.", "Save your money.",
]


def _sentiment(rng, heldout):
    label = "positive" if rng.random() < 0.5 else "negative"
    pool = POSITIVE if label == "positive" else NEGATIVE
    p = rng.choice(PRODUCTS)
    opener = rng.choice(OPENERS).format(p=p)
    first = rng.choice(pool)
    parts = [opener, first]
    if rng.random() < 0.6:
        second = rng.choice(pool)
        while second == first:
            second = rng.choice(pool)
        parts.append(second)
    review = " ".join(s for s in parts if s)
    prompt = "Classify the sentiment of this product review as positive or negative.\n\nReview: " + review
    return prompt, label


# ---------------------------------------------------------------- extract

NAMES = [
    "Ana", "Ben", "Carla", "David", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemal", "Lena",
    "Marco", "Nadia", "Oscar", "Priya", "Quentin", "Rosa", "Samuel", "Tara", "Umar", "Vera", "Wei", "Ximena",
    "Yusuf", "Zoe", "Alice", "Bruno", "Chloe", "Dmitri", "Emma", "Felix", "Greta", "Hassan", "Isabel", "Jack",
    "Kofi", "Laura", "Mateo", "Nina", "Olga", "Pablo", "Rania", "Sofia", "Tomas", "Uma", "Victor", "Wanda",
    "Yara", "Zain", "Amara", "Lucas", "Mei", "Noah", "Leila", "Ivan", "Sara", "Diego", "Hannah", "Omar",
]

CITIES = [
    "Lisbon", "Paris", "Berlin", "Madrid", "Rome", "Vienna", "Prague", "Warsaw", "Oslo", "Dublin", "Athens",
    "Cairo", "Nairobi", "Lagos", "Tokyo", "Osaka", "Seoul", "Beijing", "Mumbai", "Delhi", "Bangkok", "Hanoi",
    "Sydney", "Toronto", "Chicago", "Boston", "Denver", "Seattle", "Lima", "Bogota", "Santiago", "Havana",
    "New York", "Los Angeles", "San Francisco", "Mexico City", "Buenos Aires", "Rio de Janeiro", "Cape Town",
    "Hong Kong", "Kuala Lumpur", "Tel Aviv", "Porto", "Lyon", "Munich", "Milan", "Zurich", "Helsinki",
]

JOBS = ["nurse", "teacher", "baker", "engineer", "designer", "pilot", "lawyer", "chef", "painter", "student"]

SENTENCES = [
    "{name} is {age} years old and lives in {city}.",
    "{name}, {age}, lives in {city}.",
    "Meet {name}, a {age}-year-old from {city}.",
    "{name} lives in {city} and just turned {age}.",
    "At {age}, {name} moved to {city}.",
    "{name} ({age}) works as a {job} in {city}.",
    "Born and raised in {city}, {name} is now {age}.",
    "My friend {name} is {age} and lives in {city}.",
    "In {city}, {name} celebrated turning {age} last week.",
    "{name} from {city} is {age} years old.",
    "{age}-year-old {name} has lived in {city} for ten years.",
    "{name} is a {age}-year-old {job} based in {city}.",
    "Last year {name}, aged {age}, opened a bakery in {city}.",
    "{city} resident {name} is {age}.",
    "The {job} {name} is {age} and commutes to work in {city}.",
]


def _extract(rng, heldout):
    name, city = rng.choice(NAMES), rng.choice(CITIES)
    age = 18 + rng.randrange(73)  # 18..90
    sentence = rng.choice(SENTENCES).format(name=name, age=age, city=city, job=rng.choice(JOBS))
    prompt = ('Extract the name, age and city of the person in this sentence as compact JSON '
              'with the keys "name", "age" and "city".\n\nSentence: ' + sentence)
    answer = json.dumps({"name": name, "age": age, "city": city}, separators=(",", ":"), ensure_ascii=False)
    return prompt, answer


# ---------------------------------------------------------------- numwords

ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
        "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def number_words(n):
    """n (0..999999) in the numwords format: 4213 -> 'four thousand two hundred thirteen'."""
    if not 0 <= n <= 999999:
        raise ValueError("number out of range: %r" % n)
    if n == 0:
        return "zero"

    def below_1000(k):
        words = []
        if k >= 100:
            words += [ONES[k // 100], "hundred"]
        k %= 100
        if k >= 20:
            words.append(TENS[k // 10] + ("-" + ONES[k % 10] if k % 10 else ""))
        elif k:
            words.append(ONES[k])
        return words

    words = []
    if n >= 1000:
        words += below_1000(n // 1000) + ["thousand"]
    words += below_1000(n % 1000)
    return " ".join(words)


def _numwords(rng, heldout):
    """Held out: numbers 100..9999 (a quarter of three digits). Train: the same mix plus numbers 0..99."""
    u = rng.random()
    if not heldout and u < 0.12:
        n = rng.randrange(100)
    elif u < 0.35:
        n = 100 + rng.randrange(900)
    else:
        n = 1000 + rng.randrange(9000)
    return "Write the number %d in English words." % n, number_words(n)


def _repeatable(task, answer):
    """Train examples that may repeat: the numbers below 100, the words everything else is built from
    (there are only 100 of them, so they are never held out)."""
    return task == "numwords" and " " not in answer


# ---------------------------------------------------------------- sets

_MAKERS = {"sentiment": _sentiment, "extract": _extract, "numwords": _numwords}
_cache = {}


def _example(task, prompt, answer):
    return {"task": task, "messages": [{"role": "user", "content": prompt}], "answer": answer}


def _draw_unique(task, seed, n, exclude, heldout):
    rng = random.Random(seed)
    seen, out = set(exclude), []
    tries = 0
    while len(out) < n:
        prompt, answer = _MAKERS[task](rng, heldout)
        tries += 1
        if tries > 50 * n + 1000:
            raise RuntimeError("%s: cannot draw %d distinct prompts" % (task, n))
        if prompt in seen and (heldout or not _repeatable(task, answer)):
            continue
        seen.add(prompt)
        out.append(_example(task, prompt, answer))
    return out


def _seed(task, split):
    return SEED + 1000 * TASKS.index(task) + (0 if split == "heldout" else 1)


def heldout_examples(task, n=100):
    """The first n (at most HELDOUT_SIZE) held-out examples of task; always the same ones."""
    if task not in TASKS:
        raise ValueError("unknown task %r (tasks: %s)" % (task, ", ".join(TASKS)))
    if n > HELDOUT_SIZE:
        raise ValueError("at most %d held-out examples" % HELDOUT_SIZE)
    key = (task, "heldout")
    if key not in _cache:
        _cache[key] = _draw_unique(task, _seed(task, "heldout"), HELDOUT_SIZE, (), True)
    return [dict(e) for e in _cache[key][:n]]


def train_examples(task, n=TRAIN_SIZE):
    """n training examples of task, none of whose prompts is in the held-out pool; distinct, except
    numwords' numbers below 100, which are all train-only and may repeat."""
    held = {e["messages"][0]["content"] for e in heldout_examples(task, HELDOUT_SIZE)}
    return _draw_unique(task, _seed(task, "train"), n, held, False)


def is_correct(output, answer):
    """Exact match after stripping surrounding whitespace."""
    return output.strip() == answer.strip()


# ---------------------------------------------------------------- prompts as the model sees them

_templates = {}
_tokenizers = {}


def render_chat(messages, model_dir, add_generation_prompt=True):
    """The chat template of model_dir/tokenizer_config.json applied to messages (as transformers does)."""
    if model_dir not in _templates:
        import jinja2.sandbox
        with open(os.path.join(model_dir, "tokenizer_config.json")) as f:
            cfg = json.load(f)
        env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                           extensions=["jinja2.ext.loopcontrols"])
        _templates[model_dir] = (env.from_string(cfg["chat_template"]), cfg)
    template, cfg = _templates[model_dir]
    return template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                           bos_token=cfg.get("bos_token", ""), eos_token=cfg.get("eos_token", ""))


def tokenizer(model_dir):
    if model_dir not in _tokenizers:
        from tokenizers import Tokenizer
        _tokenizers[model_dir] = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    return _tokenizers[model_dir]


def prompt_ids(messages, model_dir):
    """Token ids of the chat-templated prompt, generation prompt included (no extra special tokens)."""
    return tokenizer(model_dir).encode(render_chat(messages, model_dir), add_special_tokens=False).ids


def answer_suffix(model_dir):
    """What follows the answer in a templated conversation: the end-of-turn token."""
    with open(os.path.join(model_dir, "tokenizer_config.json")) as f:
        return json.load(f)["eos_token"]


if __name__ == "__main__":  # print a few examples of each task
    import sys
    k = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    for t in TASKS:
        for e in heldout_examples(t, k):
            print("[%s] %r\n   -> %r" % (t, e["messages"][0]["content"], e["answer"]))
