"""Tests of the classifier's deterministic features: task type, language, code, tokens, complexity."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from routemesh.classifier.bench import run_benchmark
from routemesh.classifier.features import ROLES, TASK_TYPES, RequestFeatures, classify
from routemesh.classifier.language import detect_language
from routemesh.classifier.tokens import estimate_input_tokens, estimate_text_tokens


def _user(text: str) -> RequestFeatures:
    return classify([("user", text)])


TASK_PROMPTS: dict[str, list[str]] = {
    "code": [
        "Write a Python function that checks whether a string is a palindrome.",
        "How do I reverse a linked list in Java?",
        "Refactor this class so it no longer uses global state.",
        (
            "Why does this throw a NullPointerException?\n"
            "```java\nString s = null;\nSystem.out.println(s.length());\n```"
        ),
        "Fix the bug: my loop never ends.\n\nwhile (i < 10) {\n  console.log(i);\n}\n",
        "Write a SQL query that returns the ten customers with the highest total order value.",
        "Implement binary search in Rust and add unit tests.",
        "What does `yield from` do in Python generators?",
        (
            "Convert this JavaScript callback code to async/await:\n```js\nfs.readFile(p, (err, data) => {\n"
            "  if (err) throw err;\n  parse(data);\n});\n```"
        ),
        "Debug this traceback: KeyError: 'user_id' in handlers.py line 42",
        "def add(a, b):\n    return a - b\n\nThe test add(2, 2) == 4 fails, what is wrong?",
        "Write a bash script that deletes log files older than seven days.",
        "Explain the difference between a process and a thread, with a Go example using goroutines.",
        "Create a Dockerfile for a Flask app that listens on port 8000.",
    ],
    "math": [
        "Solve for x: 3x + 7 = 22",
        "What is the integral of x^2 * sin(x) dx?",
        "Prove that the square root of 2 is irrational.",
        "Calculate 17% of 2,350.",
        "Find the derivative of f(x) = ln(x) / x.",
        "If a fair die is rolled twice, what is the probability that the sum is 8?",
        "Compute the eigenvalues of the matrix [[2, 1], [1, 2]].",
        "Simplify the expression (x^2 - 9) / (x - 3).",
        "What is 144 / 12 + 7 * 3?",
        "Prove by induction that 1 + 2 + ... + n = n(n+1)/2.",
        "Evaluate $$\\int_0^1 x^3 \\, dx$$",
        "A train travels 300 km in 2.5 hours. Calculate its average speed in km/h.",
        "Is 221 a prime number? Show the arithmetic.",
    ],
    "summarization": [
        "Summarize this article in three sentences: The city council met on Tuesday to discuss the budget...",
        "TL;DR of the following thread please: Alice said the release is late because QA found bugs...",
        "Give me the key points of this meeting transcript: We agreed to move the launch to May...",
        "Can you summarise the plot of Hamlet in one paragraph?",
        "Write a short summary of the attached report for the executive team.",
        "Condense this email into two bullet points for my manager: Hi team, as discussed yesterday...",
        "What are the main points of this paper's abstract? We study the effect of sleep on memory...",
        "Please recap what happened in this chat log so I can catch up.",
        "Give me the gist of this text: Markets rallied on Friday after inflation data came in lower...",
        "Summarize:\n\n" + "The committee reviewed the proposal and raised concerns about cost. " * 40,
        "Resume este texto en dos frases: El ayuntamiento aprobó ayer el nuevo presupuesto municipal.",
        "Fasse bitte diesen Bericht zusammen, die Zusammenfassung soll kurz sein: Der Umsatz stieg um 5%.",
        "请总结这篇文章的主要内容：今天公司发布了新的产品。",
    ],
    "translation": [
        "Translate 'Where is the train station?' into German.",
        "How do you say 'thank you very much' in Japanese?",
        "Translate the following paragraph to Spanish: Our office will be closed on Monday.",
        "Please translate this email into French for our Paris team.",
        "Can you render this sentence in Italian: The meeting starts at nine.",
        "Translation needed: 'Bitte schließen Sie die Tür' from German to English.",
        "What is 'good night' in Korean?",
        "Translate into Portuguese: We are happy to welcome you.",
        "Traduce al inglés: El gato duerme en el sofá.",
        "Traduis en anglais : Je voudrais réserver une table pour deux.",
        "Übersetze ins Englische: Ich habe morgen keine Zeit.",
        "请把这句话翻译成英文：我今天很忙。",
        "Translate this menu from Dutch to English: soep van de dag, broodje kaas, koffie.",
    ],
    "extraction": [
        "Extract all email addresses from the text below and return them as a JSON array.",
        "List all the dates mentioned in this contract.",
        "From this invoice, extract the vendor name, total amount and due date as JSON.",
        "Parse this log line into fields: 2024-05-01 12:00:03 ERROR db timeout after 30s",
        "Pull out every person and organization named in this news article.",
        "Identify the named entities in: Tim Cook announced Apple's results in Cupertino.",
        "Return a CSV with the product names and prices found in this catalog text.",
        "Extract the phone numbers from this customer message: call me at 555-0134 or 555-0199.",
        "Give me the key-value pairs from this form: Name: Ana, Age: 31, City: Lisbon.",
        "Fill these fields from the resume below as structured JSON: name, email, years of experience.",
        "Extract the ingredients and quantities from this recipe as a table.",
        "Which columns does this CSV header have? Extract them: id,name,email,created_at",
    ],
    "creative_writing": [
        "Write a short story about a robot who learns to paint.",
        "Write a haiku about autumn rain.",
        "Compose a limerick about a cat who hates Mondays.",
        "Write a poem about the sea in the style of Emily Dickinson.",
        "Imagine a world where gravity reverses every night. Describe a morning there.",
        "Write the opening scene of a fantasy novel with a reluctant dragon.",
        "Give me song lyrics for a upbeat summer road-trip song.",
        "Write a bedtime story for a five year old about a brave little turtle.",
        "Write a sonnet about lost love.",
        "Create a villain's monologue for my fictional detective story.",
        "Come up with a catchy slogan for a bakery that only sells sourdough.",
        "Tell me a joke about programmers and coffee.",
        "Escribe un poema sobre la lluvia.",
    ],
    "question_answering": [
        "What is the capital of Australia?",
        "Who wrote One Hundred Years of Solitude?",
        "When did the Berlin Wall fall?",
        "Why is the sky blue?",
        "How does a refrigerator keep food cold?",
        "Where is the Great Barrier Reef?",
        "Which planet has the most moons?",
        "What does GDP stand for?",
        "Is a tomato a fruit or a vegetable?",
        "How many bones are in the adult human body?",
        "What's the difference between weather and climate?",
        "Define photosynthesis.",
        "¿Cuál es el río más largo del mundo?",
        "Quelle est la plus haute montagne d'Europe ?",
    ],
    "chat": [
        "Hi!",
        "Hello, how are you today?",
        "Thanks, that was really helpful.",
        "Good morning!",
        "lol that's funny",
        "I had a long day at work and just want to talk for a bit.",
        "Nice to meet you, I'm Sam.",
        "Hey there",
        "Bye, talk to you tomorrow.",
        "I'm feeling a bit bored tonight.",
        "Hola, ¿qué tal?",
        "ok",
    ],
}
TASK_CASES = [(task, prompt) for task, prompts in TASK_PROMPTS.items() for prompt in prompts]


@pytest.mark.parametrize(
    ("expected", "prompt"), TASK_CASES, ids=[f"{t}-{i}" for i, (t, _) in enumerate(TASK_CASES)]
)
def test_task_type_of_representative_prompts(expected: str, prompt: str) -> None:
    features = _user(prompt)
    assert features.task_type == expected, (features.task_type, features.signals)


def test_every_task_family_has_a_dozen_prompts() -> None:
    assert set(TASK_PROMPTS) == set(TASK_TYPES)
    assert all(len(prompts) >= 12 for prompts in TASK_PROMPTS.values())


def test_system_message_steers_an_ambiguous_user_message() -> None:
    system = "You are a translator. Translate everything the user writes into French."
    features = classify([("system", system), ("user", "The weather is lovely today.")])
    assert features.task_type == "translation"
    assert any(signal.startswith("system:") for signal in features.signals)


def test_user_request_outweighs_the_system_message() -> None:
    system = "You are a helpful assistant who writes poems and stories."
    features = classify([("system", system), ("user", "Write a Python function that parses ISO dates.")])
    assert features.task_type == "code"


def test_confidence_is_higher_for_an_explicit_request() -> None:
    explicit = _user("Translate this sentence into Spanish: I love reading books in the park.")
    vague = _user("I love reading books in the park.")
    assert explicit.task_confidence > vague.task_confidence
    assert 0.0 <= vague.task_confidence <= explicit.task_confidence <= 1.0


LANGUAGE_SAMPLES = [
    ("en", "I think we should leave early tomorrow because the roads will be busy in the afternoon."),
    ("en", "Can you tell me what time the museum opens on Sundays?"),
    ("es", "Creo que deberíamos salir temprano mañana porque las carreteras estarán llenas por la tarde."),
    ("es", "¿Me puedes decir a qué hora abre el museo los domingos?"),
    ("fr", "Je pense que nous devrions partir tôt demain parce que les routes seront chargées l'après-midi."),
    ("fr", "Pouvez-vous me dire à quelle heure le musée ouvre le dimanche ?"),
    ("de", "Ich glaube, wir sollten morgen früh losfahren, weil die Straßen am Nachmittag voll sein werden."),
    ("de", "Kannst du mir sagen, wann das Museum am Sonntag öffnet?"),
    ("it", "Penso che dovremmo partire presto domani perché le strade saranno trafficate nel pomeriggio."),
    ("it", "Mi sai dire a che ora apre il museo la domenica?"),
    ("pt", "Eu acho que devemos sair cedo amanhã porque as estradas vão estar cheias à tarde."),
    ("pt", "Você pode me dizer a que horas o museu abre aos domingos?"),
    ("nl", "Ik denk dat we morgen vroeg moeten vertrekken omdat de wegen 's middags druk zijn."),
    ("nl", "Kun je me vertellen hoe laat het museum op zondag opengaat?"),
    ("ru", "Я думаю, что нам стоит выехать завтра пораньше, потому что днём дороги будут загружены."),
    ("ru", "Скажите, пожалуйста, во сколько открывается музей по воскресеньям?"),
    ("zh", "我觉得我们明天应该早点出发，因为下午路上会很堵。"),
    ("zh", "你能告诉我博物馆星期天几点开门吗？"),
    ("ja", "午後は道が混むので、明日は早めに出発したほうがいいと思います。"),
    ("ja", "博物館は日曜日の何時に開きますか？"),
    ("ko", "오후에는 길이 막힐 테니 내일 일찍 출발하는 게 좋을 것 같아요."),
    ("ko", "박물관이 일요일에 몇 시에 문을 여는지 알려 주시겠어요?"),
    ("ar", "أعتقد أنه يجب علينا المغادرة مبكرا غدا لأن الطرق ستكون مزدحمة بعد الظهر."),
    ("ar", "هل يمكنك أن تخبرني متى يفتح المتحف يوم الأحد؟"),
    ("hi", "मुझे लगता है कि हमें कल जल्दी निकलना चाहिए क्योंकि दोपहर में सड़कें व्यस्त होंगी।"),
    ("hi", "क्या आप मुझे बता सकते हैं कि रविवार को संग्रहालय कितने बजे खुलता है?"),
]


@pytest.mark.parametrize(
    ("expected", "text"), LANGUAGE_SAMPLES, ids=[f"{c}-{i}" for i, (c, _) in enumerate(LANGUAGE_SAMPLES)]
)
def test_language_of_sample_sentences(expected: str, text: str) -> None:
    assert detect_language(text) == expected
    assert _user(text).language == expected


@pytest.mark.parametrize("text", ["", "ok", "?!", "12345 678", "hi", "x = 1", "😀😀"])
def test_language_is_undetermined_for_too_little_text(text: str) -> None:
    assert detect_language(text) == "und"


def test_language_comes_from_the_last_user_message() -> None:
    messages = [
        ("system", "You are a helpful assistant. Always answer in the language of the user."),
        ("user", "What is the weather like in Paris today?"),
        ("assistant", "It is sunny."),
        ("user", "Et demain, est-ce qu'il va pleuvoir dans la ville ?"),
    ]
    assert classify(messages).language == "fr"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Here is my code:\n```\nprint('hi')\n```", True),
        ("def f(x):\n    return x * 2\n\nprint(f(3))\n", True),
        ('#include <stdio.h>\nint main(void) {\n  printf("hi\\n");\n  return 0;\n}\n', True),
        ("SELECT name FROM users WHERE id = 1;\nUPDATE users SET name = 'a' WHERE id = 2;\n", True),
        ("Why does `len(self.items)` return 0 here?", True),
        ("const total = items.reduce((sum, x) => sum + x, 0);\nconsole.log(total);\n", True),
        ("The committee met on Tuesday. It approved the budget and adjourned at noon.", False),
        ("Solve 2x + 3 = 11 and explain each step.", False),
        ("Please write me a poem about functions of love; make it rhyme.", False),
        ("Dear team,\n\nThe release moved to Friday.\nPlease update your calendars.\n\nThanks,\nAna", False),
    ],
)
def test_has_code(text: str, expected: bool) -> None:
    assert _user(text).has_code is expected


def test_code_in_an_earlier_message_counts() -> None:
    messages = [("user", "```python\nx = 1\n```"), ("assistant", "Looks fine."), ("user", "And now?")]
    assert classify(messages).has_code is True


# Reference counts are cl100k_base (tiktoken) token counts of each exact string.
TOKEN_REFERENCES = [
    ("hello world", 2),
    ("The quick brown fox jumps over the lazy dog.", 10),
    (
        (
            "Our order service started timing out under load last week. Requests that used to finish in "
            "about forty milliseconds now take several seconds at the 99th percentile."
        ),
        31,
    ),
    (
        (
            "def fibonacci(n: int) -> int:\n    if n < 2:\n        return n\n"
            "    return fibonacci(n - 1) + fibonacci(n - 2)\n"
        ),
        35,
    ),
    ('{"id": 42, "name": "Ada Lovelace", "roles": ["admin", "editor"], "active": true}', 29),
    (
        (
            "GNU General Public License: you may convey verbatim copies of the Program's source code as "
            "you receive it, in any medium, provided that you conspicuously and appropriately publish on "
            "each copy an appropriate copyright notice."
        ),
        42,
    ),
]


@pytest.mark.parametrize(("text", "reference"), TOKEN_REFERENCES)
def test_token_estimate_is_within_20_percent_of_cl100k(text: str, reference: int) -> None:
    assert abs(estimate_text_tokens(text) - reference) <= 0.2 * reference + 1


def test_input_tokens_add_the_chat_framing() -> None:
    contents = ["You are terse.", "The quick brown fox jumps over the lazy dog."]
    expected = sum(estimate_text_tokens(c) for c in contents) + 3 * len(contents) + 3
    assert estimate_input_tokens(contents) == expected
    assert classify([("system", contents[0]), ("user", contents[1])]).input_tokens == expected
    assert estimate_text_tokens("") == 0


def test_tokens_count_all_of_a_long_prompt() -> None:
    paragraph = "The committee reviewed the proposal and raised concerns about the cost. "
    short, long = _user(paragraph * 10), _user(paragraph * 1000)
    assert 80 * short.input_tokens < long.input_tokens < 120 * short.input_tokens


def test_complexity_orders_a_greeting_below_a_multi_part_proof() -> None:
    greeting = _user("Hi there!")
    proof = _user(
        "Prove rigorously that there are infinitely many primes of the form 4k+3. Then:\n"
        "1. Explain step by step why the same argument fails for 4k+1.\n"
        "2. Compare it with Dirichlet's theorem and discuss the trade-offs of each approach.\n"
        "3. What is the smallest counterexample to a naive generalisation? Keep it under 500 words."
    )
    medium = _user("What is the capital of Australia?")
    assert greeting.complexity < medium.complexity < proof.complexity
    assert greeting.complexity < 0.1
    assert proof.complexity > 0.5
    assert "structure:multi-part" in proof.signals


def test_code_and_length_raise_complexity() -> None:
    question = "Why is this slow?"
    code = (
        "```python\n"
        + "for i in range(n):\n    for j in range(n):\n        total += a[i] * b[j]\n" * 20
        + "```"
    )
    assert _user(question + "\n" + code).complexity > _user(question).complexity


_PROBE = """
import json, sys
from routemesh.classifier.features import classify
print(json.dumps([repr(classify(messages)) for messages in json.load(sys.stdin)]))
"""


def test_classification_is_deterministic_across_calls_and_hash_seeds() -> None:
    conversations = [[("user", prompt)] for prompts in TASK_PROMPTS.values() for prompt in prompts[:3]]
    conversations += [[("user", text)] for _, text in LANGUAGE_SAMPLES]
    conversations.append([("system", "Be brief."), ("user", "```\nx = 1\n```"), ("user", "why?")])
    in_process = json.dumps([repr(classify(messages)) for messages in conversations])
    assert json.dumps([repr(classify(messages)) for messages in conversations]) == in_process
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        probe = subprocess.run(
            [sys.executable, "-c", _PROBE],
            input=json.dumps(conversations),
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        assert probe.stdout.strip() == in_process


def test_benchmark_runs_far_inside_its_budget() -> None:
    result = run_benchmark(iterations=100)
    assert result["input_tokens"] > 1500
    assert result["task_type"] == "code"
    # The target is p99 < 1 ms (see docs/classifier.md); 10x headroom keeps a busy CI machine green.
    assert result["p99_us"] < 10_000


def test_no_messages_gives_neutral_features() -> None:
    features = classify([])
    assert features.task_type == "chat"
    assert features.language == "und"
    assert features.input_tokens == 3


def test_lone_surrogates_are_tolerated() -> None:
    features = _user("\ud800 Translate this into French: bonjour \udfff")
    assert features.task_type == "translation"
    assert features.language == "en"


_TEXT = st.text(st.characters(codec="utf-8"), max_size=3000) | st.text(max_size=300)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(ROLES), _TEXT), max_size=5))
def test_arbitrary_text_never_raises_and_stays_in_range(messages: list[tuple[str, str]]) -> None:
    features = classify(messages)
    assert features.task_type in TASK_TYPES
    assert 0.0 <= features.task_confidence <= 1.0
    assert 0.0 <= features.complexity <= 1.0
    assert features.input_tokens >= 3 + 3 * len(messages)
    assert features.language == "und" or len(features.language) == 2
    assert isinstance(features.has_code, bool)
    assert all(isinstance(signal, str) and signal for signal in features.signals)
