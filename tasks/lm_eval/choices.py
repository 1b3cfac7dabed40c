"""The two choices of the suites' multiple-choice items, and their empty context, for the YAML
templates' ``!function``.

A Jinja template such as ``{{[sentence_good, sentence_bad]}}`` gives the same list, but lm-eval
compiles a template again at every call: for BLiMP's 16,000 items that took half the suite's time.
An empty ``doc_to_text: ""`` is such a template too.
"""


def no_context(doc):
    return ""


def sentences(doc):
    return [doc["sentence_good"], doc["sentence_bad"]]


def words(doc):
    return [doc["word_good"], doc["word_bad"]]


def endings(doc):
    return [doc["ending1"], doc["ending2"]]
