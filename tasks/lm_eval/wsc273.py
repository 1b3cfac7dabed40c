"""WSC273 for lm-eval, from Ernest Davis's WSCollection.xml (its first 273 schemas).

Each candidate replaces the pronoun: a possessive pronoun ("his", "her", ...) becomes the
candidate plus "'s", and a candidate's leading article or pronoun is lower-cased unless it starts
the sentence (as lm-eval's own wsc273 does). Partial scoring (Trinh & Le 2018) compares the
log-probability of the words after the pronoun given each substituted prefix; full scoring
compares the two whole sentences.
"""
import re
import xml.etree.ElementTree as ET

POSSESSIVES = {"my", "his", "her", "our", "their", "its"}
LOWER = {"A", "An", "The", "She", "He", "It", "They", "My", "His", "Her", "Their"}


def _clean(text):
    return re.sub(r"\s+", " ", text or "").strip()


def load(path, **kwargs):
    import datasets

    docs = []
    for n, schema in enumerate(ET.parse(path).getroot().findall("schema")[:273]):
        before = _clean(schema.find("text/txt1").text)
        pronoun = _clean(schema.find("text/pron").text)
        after = _clean(schema.find("text/txt2").text)
        answers = [_clean(a.text) for a in schema.findall("answers/answer")]
        letter = _clean(schema.find("correctAnswer").text).rstrip(".").strip()
        if len(answers) != 2 or letter not in ("A", "B"):
            raise ValueError(f"{path}: schema {n + 1}: expected two answers and A or B, got {answers}, {letter!r}")
        options = [_option(a, pronoun, before) for a in answers]
        docs.append({"before": before, "pronoun": pronoun, "after": after, "options": options,
                     "label": "AB".index(letter)})
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(docs)})


def _option(answer, pronoun, before):
    if pronoun.lower() in POSSESSIVES:
        answer += "'s"
    first = answer.split()[0]
    starts_sentence = not before or before.endswith((".", "!", "?"))
    if first in LOWER and not starts_sentence:
        answer = first.lower() + answer[len(first):]
    return answer


def gold(doc):
    return doc["label"]


def partial_contexts(doc):
    return [f"{doc['before']} {option}".strip() for option in doc["options"]]


def partial_target(doc):
    return doc["after"]


def full_sentences(doc):
    return [f"{doc['before']} {option} {doc['after']}".strip() for option in doc["options"]]
