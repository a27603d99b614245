"""Format constraints of instruction-following tasks: checking a reply against them (`check_constraints`)
and reading them from an instruction's own words (`constraints_from_text`). The `instruct` skill verifies
with them and the `instructions` domain states them; the list of checks is in kdagent/skills/instruct.py.
"""

import json
import re
from collections.abc import Callable

from kdagent.records import Task

CONSTRAINTS = (
    "max_words",
    "min_words",
    "bullets",
    "numbered",
    "paragraphs",
    "json",
    "json_keys",
    "starts_with",
    "ends_with",
    "include",
    "exclude",
    "lowercase",
)

_WORD = re.compile(r"[^\W_]+(?:['\u2019-][^\W_]+)*")
_BULLET = re.compile(r"^\s*[-*\u2022]\s+\S")
_NUMBERED = re.compile(r"^\s*\d{1,3}[.)]\s+\S")
_FENCE = re.compile(r"^```[\w-]*\s*\n?|\n?```\s*$")
_EDGE = " \t\n\"'`*_.!?,;:\u201c\u201d\u2018\u2019"


def count_words(text: str) -> int:
    return len(_WORD.findall(text))


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def _contains(text: str, phrase: str) -> bool:
    words, target = _words(text), _words(phrase)
    return bool(target) and any(words[i : i + len(target)] == target for i in range(len(words) - len(target) + 1))


def _parse_json(reply: str):
    try:
        return json.loads(_FENCE.sub("", reply.strip()).strip())
    except (ValueError, RecursionError):  # RecursionError: a reply nested too deeply to read
        return None


def check_constraints(reply: str, constraints: dict) -> list[str]:
    """Why `reply` breaks each constraint it breaks (empty: it meets them all). An unknown constraint is a
    ValueError: a check that cannot be made must never pass."""
    unknown = sorted(set(constraints) - set(CONSTRAINTS))
    if unknown:
        raise ValueError(f"unknown constraint {unknown[0]!r} (known: {', '.join(CONSTRAINTS)})")
    text = reply.strip()
    lines = text.splitlines()
    failed = []
    words = count_words(text)
    if "max_words" in constraints and words > constraints["max_words"]:
        failed.append(f"max_words: {words} words, at most {constraints['max_words']} allowed")
    if "min_words" in constraints and words < constraints["min_words"]:
        failed.append(f"min_words: {words} words, at least {constraints['min_words']} needed")
    for name, pattern, what in (("bullets", _BULLET, "bullet"), ("numbered", _NUMBERED, "numbered")):
        if name in constraints:
            found = sum(bool(pattern.match(line)) for line in lines)
            if found != constraints[name]:
                failed.append(f"{name}: {found} {what} lines, expected {constraints[name]}")
    if "paragraphs" in constraints:
        found = len([p for p in re.split(r"\n\s*\n", text) if p.strip()])
        if found != constraints["paragraphs"]:
            failed.append(f"paragraphs: {found} paragraphs, expected {constraints['paragraphs']}")
    if constraints.get("json") or constraints.get("json_keys"):
        value = _parse_json(text)
        if not isinstance(value, (dict, list)):
            failed.append("json: the reply is not one JSON object or array")
        elif constraints.get("json_keys"):
            missing = [k for k in constraints["json_keys"] if not (isinstance(value, dict) and k in value)]
            if missing:
                failed.append(f"json_keys: missing {', '.join(map(repr, missing))}")
    if "starts_with" in constraints and not text.lstrip(_EDGE).lower().startswith(
        constraints["starts_with"].strip(_EDGE).lower()
    ):
        failed.append(f"starts_with: does not start with {constraints['starts_with']!r}")
    if "ends_with" in constraints and not text.rstrip(_EDGE).lower().endswith(
        constraints["ends_with"].strip(_EDGE).lower()
    ):
        failed.append(f"ends_with: does not end with {constraints['ends_with']!r}")
    missing = [p for p in constraints.get("include", []) if not _contains(text, p)]
    if missing:
        failed.append(f"include: missing {', '.join(map(repr, missing))}")
    present = [p for p in constraints.get("exclude", []) if _contains(text, p)]
    if present:
        failed.append(f"exclude: uses {', '.join(map(repr, present))}")
    if constraints.get("lowercase") and any(c.isupper() for c in text):
        failed.append("lowercase: the reply has capital letters")
    return failed


# -- constraints stated in an instruction's own words ---------------------------------------------------
_NUMBERS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten".split())}
_N = r"(\d{1,4}|" + "|".join(_NUMBERS) + r")"
_QUOTED = re.compile(r"\"([^\"]+)\"|\u201c([^\u201d]+)\u201d")
_RULES: list[tuple[str, re.Pattern, Callable]] = [
    (
        "max_words",
        re.compile(rf"\b(?:at most|no more than|not more than|up to|a maximum of|maximum) {_N} words", re.I),
        lambda n: n,
    ),
    ("max_words", re.compile(rf"(?<!no )(?<!not )\b(?:fewer than|less than|under) {_N} words", re.I), lambda n: n - 1),
    (
        "min_words",
        re.compile(rf"\b(?:at least|no fewer than|no less than|a minimum of|minimum) {_N} words", re.I),
        lambda n: n,
    ),
    ("min_words", re.compile(rf"(?<!no )(?<!not )\bmore than {_N} words", re.I), lambda n: n + 1),
    ("bullets", re.compile(rf"\b(?:exactly )?{_N} bullet(?:ed)? points\b", re.I), lambda n: n),
    (
        "numbered",
        re.compile(rf"\b(?:exactly )?{_N} numbered (?:items|steps|points|lines|tips|ideas|reasons)\b", re.I),
        lambda n: n,
    ),
    ("paragraphs", re.compile(rf"\b(?:exactly )?{_N} paragraphs\b", re.I), lambda n: n),
]
_JSON = re.compile(r"\bjson\b", re.I)
_KEYS = re.compile(r"\bkeys?\b([^.]*)", re.I)
_STARTS = re.compile(
    r"\b(?:start|begin)\w* (?:your (?:reply|answer|response) )?with (?:the (?:word|phrase) )?(\"[^\"]+\"|\u201c[^\u201d]+\u201d)",
    re.I,
)
_ENDS = re.compile(
    r"\bend(?:s|ing)? (?:your (?:reply|answer|response) )?with (?:the (?:word|phrase) )?(\"[^\"]+\"|\u201c[^\u201d]+\u201d)",
    re.I,
)
_INCLUDE = re.compile(
    r"(?<!not )(?<!n't )(?<!never )\b(?:include|use|mention)s? the (?:words?|phrases?|terms?) ((?:\"[^\"]+\"(?:,? (?:and )?|, )?)+)",
    re.I,
)
_EXCLUDE = re.compile(
    r"\b(?:do not|don't|never|without) (?:use|using|mention|mentioning|say|saying) the (?:words?|phrases?|terms?) ((?:\"[^\"]+\"(?:,? (?:or |and )?|, )?)+)",
    re.I,
)
_LOWER = re.compile(r"\b(?:all in lowercase|only lowercase|all lowercase|entirely in lowercase|in lowercase)\b", re.I)


def _number(word: str) -> int:
    return int(word) if word.isdigit() else _NUMBERS[word.lower()]


def _quoted(text: str) -> list[str]:
    return [a or b for a, b in _QUOTED.findall(text)]


def constraints_from_text(instruction: str) -> dict:
    """The format constraints an instruction states in words (see the module docstring); {} for none."""
    out: dict = {}
    for name, pattern, value in _RULES:
        match = pattern.search(instruction)
        if match and name not in out:
            out[name] = value(_number(match.group(1)))
    if _JSON.search(instruction):
        out["json"] = True
        keys = _KEYS.search(instruction)
        if keys and _quoted(keys.group(1)):
            out["json_keys"] = _quoted(keys.group(1))
    for name, pattern in (("starts_with", _STARTS), ("ends_with", _ENDS)):
        match = pattern.search(instruction)
        if match:
            out[name] = _quoted(match.group(1))[0]
    for name, pattern in (("include", _INCLUDE), ("exclude", _EXCLUDE)):
        found = [q for match in pattern.finditer(instruction) for q in _quoted(match.group(1))]
        if found:
            out[name] = found
    if _LOWER.search(instruction):
        out["lowercase"] = True
    return out


def task_constraints(task: Task) -> dict:
    return dict(getattr(task, "constraints", None) or {})
