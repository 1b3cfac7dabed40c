"""WSC273 partial scoring sends lm-eval exactly the requests lm-eval's own ``wsc273`` task sends.

lm-eval's ``wsc273`` reads Hugging Face's ``lighteval/winograd_wsc`` (not available offline). That
dataset's builder (``winograd_wsc.py``) reads the same ``WSCollection.xml``: per schema, every field
with its whitespace collapsed, ``text = " ".join([txt1, pron, txt2]).strip()``, ``pronoun_loc =
len(txt1) + 1`` (0 when txt1 is empty), ``options`` the two answers and ``label = int("B" in
correctAnswer)``. Those records are built here from the XML, and lm-eval's own task config (its
installed ``default.yaml``, with its ``utils.process_doc`` and templates) is run on them.
"""
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

from harness.core.registry import TASKS  # noqa: E402

#: the two schemas whose prefix ends with "!": lm-eval lower-cases their candidates
MINNOW, SHARK = 172, 173


def _collapse(text):
    return " ".join((text or "").split())


def hf_records(xml_path) -> list[dict]:
    """The first 273 records of Hugging Face's ``winograd_wsc/wsc273``, built from the XML."""
    records = []
    for schema in ET.parse(xml_path).getroot().findall("schema")[:273]:
        left, right = _collapse(schema.findtext("text/txt1", "")), _collapse(schema.findtext("text/txt2", ""))
        pronoun = _collapse(schema.findtext("text/pron"))
        quote_left = _collapse(schema.findtext("quote/quote1", ""))
        quote_right = _collapse(schema.findtext("quote/quote2", ""))
        loc = len(left) + 1 if left else 0
        records.append({
            "text": " ".join([left, pronoun, right]).strip(),
            "pronoun": pronoun,
            "pronoun_loc": loc,
            "quote": " ".join([quote_left, pronoun, quote_right]).strip(),
            "quote_loc": loc - (len(quote_left) + 1 if quote_left else 0),
            "options": [_collapse(a.text) for a in schema.findall("answers/answer")],
            "label": int("B" in _collapse(schema.findtext("correctAnswer"))),
            "source": _collapse(schema.findtext("source")),
        })
    return records


def requests(task) -> dict[tuple[int, int], tuple[str, str]]:
    """(document, choice) → (context, continuation) of every request ``task`` builds."""
    task.build_all_requests(limit=None, rank=0, world_size=1)
    built = {(i.doc_id, i.idx): tuple(i.arguments) for i in task.instances}
    assert len(built) == len(task.instances)
    return built


@pytest.fixture(scope="module")
def xml_path(data_dir) -> Path:
    return data_dir / "wsc" / "WSCollection.xml"


@pytest.fixture(scope="module")
def ours(data_dir, tmp_path_factory):
    """Our ``wsc273_partial`` task, loaded by lm-eval from the suite's rendered YAML."""
    cls = TASKS.get("wsc273")
    manager = cls(cls.Options(), data_dir).task_manager(str(tmp_path_factory.mktemp("wsc273")))
    if hasattr(manager, "load"):  # newer lm-eval, where load_task_or_group is deprecated
        (task,) = manager.load(["wsc273_partial"])["tasks"].values()
    else:
        (task,) = manager.load_task_or_group(["wsc273_partial"]).values()
    return task


@pytest.fixture(scope="module")
def lm_evals(xml_path):
    """lm-eval's own ``wsc273`` task, its dataset replaced by the records built from the XML."""
    import datasets
    import lm_eval
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks._yaml_loader import load_yaml

    config = load_yaml(Path(lm_eval.__file__).parent / "tasks" / "wsc273" / "default.yaml")
    assert config.pop("dataset_path") == "lighteval/winograd_wsc" and config.pop("dataset_name") == "wsc273"
    records = hf_records(xml_path)
    config["custom_dataset"] = lambda **kwargs: datasets.DatasetDict({"test": datasets.Dataset.from_list(records)})
    return ConfigurableTask(config=config)


def test_the_records_correspond_to_our_documents(ours, xml_path):
    """Both sides start from the same schemas: same pronoun, label and sentence, and lm-eval's
    pronoun position is where our prefix ends."""
    docs = list(ours.test_docs())
    records = hf_records(xml_path)
    assert len(docs) == len(records) == 273
    for n, (doc, record) in enumerate(zip(docs, records)):
        assert doc["pronoun"] == record["pronoun"] and doc["label"] == record["label"], n
        assert " ".join(p for p in (doc["before"], doc["pronoun"], doc["after"]) if p) == record["text"], n
        assert record["text"][:record["pronoun_loc"]] == (doc["before"] + " " if doc["before"] else ""), n
        assert [o.lower() for o in doc["options"]] == \
            [o.lower() + ("'s" if doc["pronoun"].lower() in ("my", "his", "her", "our", "their") else "")
             for o in record["options"]], n


def test_every_request_is_the_one_lm_eval_builds(ours, lm_evals):
    mine, theirs = requests(ours), requests(lm_evals)
    assert len(theirs) == 2 * 273
    assert mine.keys() == theirs.keys()
    differ = {key: (mine[key], theirs[key]) for key in theirs if mine[key] != theirs[key]}
    assert not differ, differ
    # and the same gold choice per document
    assert [ours.doc_to_text(d) for d in ours.test_docs()] == [lm_evals.doc_to_text(d) for d in lm_evals.test_docs()]


def test_candidates_after_an_exclamation_mark_are_lower_cased_as_lm_eval_does(ours, lm_evals):
    """lm-eval counts only "." as a sentence end: after "duck!" the candidate is "the minnow"."""
    mine, theirs = requests(ours), requests(lm_evals)
    for n, fish in ((MINNOW, "minnow"), (SHARK, "shark")):
        prefix = f"Look! There is a {fish} swimming right below that duck! "
        expected = [(prefix + f"the {fish}", "  had better get away to safety fast!"),
                    (prefix + "the duck", "  had better get away to safety fast!")]
        assert [mine[n, 0], mine[n, 1]] == expected
        assert [theirs[n, 0], theirs[n, 1]] == expected
    docs = list(ours.test_docs())
    assert [docs[MINNOW]["label"], docs[SHARK]["label"]] == [0, 1]
    # whereas after a full stop the candidate keeps its capital (schema 96: "The fish ate the worm. It ...")
    assert docs[96]["before"] == "The fish ate the worm."
    assert mine[96, 0][0] == theirs[96, 0][0] == "The fish ate the worm. The fish"
    assert mine[96, 1][0] == "The fish ate the worm. The worm"
