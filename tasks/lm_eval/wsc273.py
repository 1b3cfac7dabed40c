"""WSC273 for lm-eval, from Ernest Davis's WSCollection.xml (its first 273 schemas).

Each candidate replaces the pronoun exactly as lm-eval's own ``wsc273`` does (its
``utils.process_doc`` and YAML templates, on the records of Hugging Face's ``winograd_wsc``
builder, which reads this same XML): a possessive pronoun (my, his, her, our, their; not "its")
becomes the candidate plus "'s"; a candidate whose first word is a capitalised article or pronoun
has that word lower-cased (every occurrence of it in the candidate) unless the text before the
pronoun ends with a full stop; "!" and "?" do not count as a sentence end. Partial scoring
(Trinh & Le 2018) compares the log-probability of the words after the pronoun given each
substituted prefix, the continuation being the sentence after the pronoun with its leading
space, as lm-eval slices it; full scoring compares the two whole sentences.
tests/test_wsc273.py checks every request against lm-eval's own functions.
"""
import re
import xml.etree.ElementTree as ET

#: lm-eval's list: a candidate for "its" takes no "'s"
POSSESSIVES = {"my", "his", "her", "our", "their"}
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
        options = [_option(a, pronoun, before, after) for a in answers]
        docs.append({"before": before, "pronoun": pronoun, "after": after, "options": options,
                     "label": "AB".index(letter)})
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(docs)})


def _option(answer, pronoun, before, after):
    if pronoun.lower() in POSSESSIVES:
        answer += "'s"
    first = answer.split()[0]
    if first in LOWER and not _starts_sentence(before, pronoun, after):
        answer = answer.replace(first, first.lower())  # every occurrence, as lm-eval does
    return answer


def _starts_sentence(before, pronoun, after):
    """lm-eval's test: the character two before the pronoun in the whole sentence, the last one
    of ``before``, is a full stop. With nothing before the pronoun, lm-eval's index (-2) wraps
    round to the sentence's second-last character (no WSC273 schema has an empty prefix)."""
    if before:
        return before.endswith(".")
    return " ".join(part for part in (pronoun, after) if part)[-2:-1] == "."


def gold(doc):
    return doc["label"]


def partial_contexts(doc):
    return [f"{doc['before']} {option}".strip() for option in doc["options"]]


def partial_target(doc):
    """The sentence after the pronoun, with its leading space (lm-eval's ``text[pronoun_loc +
    len(pronoun):]``): after the YAML's target delimiter the continuation starts with two spaces,
    as lm-eval's does (the WikiText tokenizer ignores the extra one)."""
    return f" {doc['after']}" if doc["after"] else ""


def full_sentences(doc):
    return [f"{doc['before']} {option} {doc['after']}".strip() for option in doc["options"]]
