"""Diagnostic probes: the scikit-learn probe recovers a label the states hold linearly and nothing
from states independent of it; the control task depends on the word type alone, so a model whose
states only name the word has no selectivity; the online codelength of a learnable task beats
the uniform code; and ``probe_number`` runs end to end through the harness command, storing each
layer, the curve against distance and the control numbers it derives from."""
import numpy as np
import pytest

from harness.store import RunStore
from tasks.probe import log2_bucket, verb_number
from tasks.probing import ProbeSet, control_labels, fit_probe, online_codelength, probe
from tests.conftest import TINY_SETS, harness

N, D = 2000, 32


def items(features, labels, words, per_sentence=5):
    return ProbeSet(features, labels, np.arange(len(labels)) // per_sentence, tuple(words))


def halves(data: ProbeSet):
    rows = np.arange(len(data.labels))
    return data.take(rows[: len(rows) // 2]), data.take(rows[len(rows) // 2:])


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.mark.parametrize("family", ["logreg", "mlp"])
def test_a_label_the_states_hold_linearly_is_found(rng, family):
    labels = rng.integers(0, 3, N)
    directions = rng.normal(size=(3, D))
    features = directions[labels] + 0.3 * rng.normal(size=(N, D))
    words = [f"w{i}" for i in rng.integers(0, 200, N)]
    train, test = halves(items(features, labels, words))
    result = probe(family, train, test)
    assert result.accuracy > 0.97
    assert result.control_accuracy < 0.6, "random labels per word type cannot be read from these states"
    assert result.selectivity > 0.4


def test_states_independent_of_the_label_give_chance(rng):
    labels = rng.integers(0, 2, N)
    words = [f"w{i}" for i in rng.integers(0, 200, N)]
    train, test = halves(items(rng.normal(size=(N, D)), labels, words))
    result = probe("logreg", train, test)
    assert abs(result.accuracy - 0.5) < 0.05
    assert abs(result.accuracy - result.majority) < 0.06


def test_a_model_whose_states_only_name_the_word_has_no_selectivity(rng):
    """Hewitt & Liang's point: random word features make a part-of-speech-like label (a function
    of the word type) look decodable, and the control task just as decodable."""
    types = 60
    embedding = rng.normal(size=(types, D))  # an untrained model: one random vector per type
    tag_of_type = rng.integers(0, 4, types)
    word_ids = rng.integers(0, types, N)
    features = embedding[word_ids] + 0.05 * rng.normal(size=(N, D))
    train, test = halves(items(features, tag_of_type[word_ids], [f"w{i}" for i in word_ids]))
    result = probe("logreg", train, test)
    assert result.accuracy > 0.95 and result.control_accuracy > 0.95
    assert abs(result.selectivity) < 0.05


def test_the_control_task_is_a_function_of_the_word_type_only(rng):
    words = tuple(f"w{i}" for i in rng.integers(0, 300, N))
    labels = rng.integers(0, 3, N)
    control = control_labels(words, labels, seed=0)
    by_type = {}
    for w, c in zip(words, control):
        assert by_type.setdefault(w, c) == c, "one label per word type"
    assert control_labels(words, rng.permutation(labels), seed=0).tolist() == control.tolist(), \
        "the items' own labels play no part, only their distribution"
    assert set(control) <= set(labels)
    assert control_labels(words, labels, seed=1).tolist() != control.tolist(), "the seed draws anew"
    skewed = np.where(rng.random(N) < 0.9, 0, 1)  # the draw follows the labels' distribution
    share = np.mean([c == 0 for c in control_labels(tuple(f"t{i}" for i in range(N)), skewed)])
    assert 0.85 < share < 0.95


def test_mdl_of_a_learnable_task_is_below_the_uniform_code_and_of_noise_is_not(rng):
    labels = rng.integers(0, 2, N)
    words = [f"w{i}" for i in range(N)]
    learnable = items(np.where(labels[:, None] == 1, 1.0, -1.0) + rng.normal(size=(N, D)), labels, words)
    bits, uniform = online_codelength("logreg", learnable, 2)
    assert uniform == pytest.approx(N)  # N items, 1 bit each
    assert bits < 0.5 * uniform
    noise_bits, _ = online_codelength("logreg", items(rng.normal(size=(N, D)), labels, words), 2)
    assert noise_bits > 0.95 * uniform
    assert noise_bits > 2 * bits


def test_states_that_only_name_the_sentence_give_chance_on_held_out_sentences(rng):
    """Every item of a sentence has the sentence's label and nearly the same state: a probe that
    remembers sentences scores well only if fitting and scoring share sentences, and the online
    code gains only if a portion is coded by a probe that saw its sentence."""
    from tasks.probe import ProbeNumber, ProbingSet as Probing, Target

    sentences, per = 300, 8
    label_of = rng.integers(0, 2, sentences)
    vector_of = rng.normal(size=(sentences, D))
    target = Target("number", 2)
    states = []
    for s in range(sentences):
        states.append([vector_of[s] + 0.01 * rng.normal(size=(per, D)) for _ in range(2)])
        for t in range(per):
            target.add(s, t, int(label_of[s]), f"w{t}", t)
    probing = Probing([[0] * per] * sentences, [s % 2 == 1 for s in range(sentences)], [target])
    overall = {(m.name, m.length): m.value for m in ProbeNumber(ProbeNumber.Options(), None).score(
        "generated", target, states, probing)}
    assert abs(overall[("number_accuracy", None)] - 0.5) < 0.08
    assert overall[("number_compression", None)] < 1.02
    assert sorted(k for n, k in overall if n == "number_accuracy" and k is not None) == list(range(per))


def test_regularisation_is_chosen_on_the_training_items_by_sentence_folds(rng):
    """Many noisy dimensions and few sentences: cross-validation picks strong regularisation; clean
    low-dimensional states pick weak."""
    labels = rng.integers(0, 2, 300)
    noisy = np.c_[labels + rng.normal(size=300) * 2.0, rng.normal(size=(300, 200))]
    clean = np.c_[labels + rng.normal(size=300) * 0.05, rng.normal(size=(300, 2))]
    words = tuple("w" for _ in range(300))
    strong = fit_probe("logreg", ProbeSet(noisy, labels, np.arange(300) // 10, words))
    weak = fit_probe("logreg", ProbeSet(clean, labels, np.arange(300) // 10, words))
    assert strong.named_steps["clf"].C < weak.named_steps["clf"].C


def test_one_class_gets_a_constant_probe():
    data = ProbeSet(np.zeros((6, 2)), np.ones(6, dtype=int), np.arange(6), tuple("abcdef"))
    assert fit_probe("logreg", data).predict(np.zeros((2, 2))).tolist() == [1, 1]


def test_buckets_and_verb_numbers():
    assert [log2_bucket(n, 4) for n in (0, 1, 2, 3, 6, 7, 14, 15, 100)] == [0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert verb_number("is", "are") == 0 and verb_number("are", "is") == 1
    assert verb_number("runs", "run") == 0 and verb_number("watch", "watches") == 1
    assert verb_number("flies", "fly") == 0 and verb_number("lie", "lie") is None


@pytest.mark.data
def test_every_linzen_item_but_four_gets_a_verb_number(data_dir):
    from tasks.agreement_lm import load_linzen

    found = [verb_number(i.correct, i.wrong) for i in load_linzen(data_dir / "colorlessgreen")]
    assert len(found) == 7489 and sum(n is None for n in found) == 4
    assert sum(n == 1 for n in found) == 4755  # plural verbs, as counted by hand from the file


PROBE_SETS = ["--set=n_train=300", "--set=n_valid=40", "--set=n_test_per_cell=2", "--set=max_distance=6",
              "--set=sentences_per_cell=6", "--set=seq_len=6"]


@pytest.fixture(scope="module")
def probe_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe_number")
    rc = harness("run", "--arch", "lstm,transformer", "--tasks", "probe_number", "--results", root,
                 "--device", "cpu", "--no-progress", *TINY_SETS, *PROBE_SETS)
    assert rc == 0
    return RunStore(root)


def test_probe_number_runs_end_to_end(probe_store):
    runs = probe_store.runs()
    assert (runs.status == "finished").all()
    assert sorted(runs.task) == ["agreement", "agreement", "probe_number", "probe_number"]
    m = probe_store.metrics()
    for arch in ("lstm", "transformer"):
        mine = m[(m.task == "probe_number") & (m.arch == arch)]
        overall = mine[mine.length.isna()].set_index("metric").value
        for target in ("number", "position", "distance"):
            # layer 0 (the embeddings) and both backbone layers; the top layer is the headline
            assert {f"{target}_accuracy_layer{k}" for k in range(3)} <= set(overall.index)
            assert overall[f"{target}_accuracy"] == overall[f"{target}_accuracy_layer2"]
            assert overall[f"{target}_selectivity"] == pytest.approx(
                overall[f"{target}_accuracy"] - overall[f"{target}_control"])
            assert 0 < overall[f"{target}_compression"]
        curve = mine[(mine.metric == "number_accuracy") & mine.length.notna()]
        assert sorted(curve.length) == list(range(6)), "one point per distance from the subject, 0 … 5"
        assert 0 <= overall["model_accuracy"] <= 1  # the classifier's own verdict on the held-out sentences
        split_by_verdict = {n for n in overall.index if n.startswith("number_accuracy_model_")}
        assert split_by_verdict and split_by_verdict <= {"number_accuracy_model_right", "number_accuracy_model_wrong"}
        cells = {n for n in overall.index if n.startswith("number_accuracy_attractors_")}
        assert cells == {"number_accuracy_attractors_0", "number_accuracy_attractors_1"}  # 3k ≤ distance - 1


def test_probe_number_has_a_figure_and_a_table(probe_store, tmp_path):
    assert harness("plot", "probe", "--results", probe_store.root, "--output", tmp_path) == 0
    assert (tmp_path / "probe.png").stat().st_size > 10_000
    assert harness("table", "--results", probe_store.root, "--task", "probe_number") == 0
    from harness.tables import length_table

    by_distance = length_table(probe_store, "probe_number", fmt="csv")  # the probing set, not "test"
    assert sorted({int(row.split(",")[2]) for row in by_distance.splitlines()[1:]}) == list(range(6))


@pytest.fixture(scope="module")
def small_lm_upstream(data_dir):
    """A random LSTM language model over the words of the probing sets (no training: these tests
    check what is probed where, not what a trained model encodes)."""
    import torch

    from architectures.recurrent import LSTM
    from tasks.agreement import Grammar
    from tasks.agreement_lm import load_gulordava, load_linzen
    from tasks.base import Upstream
    from tasks.lm import EOS, UNK, LanguageModel, LMOptions

    folder = data_dir / "colorlessgreen"
    words = {w for i in load_gulordava(folder) + load_linzen(folder) for w in (*i.prefix, i.correct, i.wrong)}
    vocab = (EOS, UNK, *sorted(words | set(Grammar(32).vocab[1:])))
    torch.manual_seed(0)
    model = LanguageModel(LSTM(16, 2, LSTM.Options()), len(vocab), LMOptions(softmax="full")).eval()
    return Upstream(model=model, vocab=vocab)


@pytest.mark.data
def test_gulordava_is_probed_from_the_marked_subject_with_constructions_held_out_whole(small_lm_upstream, data_dir):
    from tasks.agreement_lm import load_gulordava
    from tasks.probe import ProbeNumberLM

    every = load_gulordava(data_dir / "colorlessgreen")
    assert every[0].prefix[every[0].subject] == "insight" and every[0].number == 0  # "An agreeable insight ..."
    assert sum(i.number == 1 for i in every) == 170 and len({i.construction for i in every}) == 41
    # the coordination patterns' controller is a verb ("Dignitaries condemn the act but visit"): not probed
    assert {i.construction.split("!")[1] for i in every if i.subject is None} == {"VERB_NOUN_CCONJ_VERB"}
    items = [i for i in every if i.subject is not None]
    assert len(items) == 250 and len({i.construction for i in items}) == 25
    task = ProbeNumberLM(ProbeNumberLM.Options(), data_dir)
    probing = task.probing_set(small_lm_upstream, "gulordava")
    assert len(probing.sequences) == len(items) and probing.coverage == 1.0
    (number,) = probing.targets
    vocab = small_lm_upstream.vocab
    held = {i.construction for i, h in zip(items, probing.held_out) if h}
    fitted = {i.construction for i, h in zip(items, probing.held_out) if not h}
    assert held and fitted and not held & fitted
    group_of = dict(zip((i.construction for i in items), probing.groups))
    assert len(set(probing.groups)) == 25 and probing.groups == [group_of[i.construction] for i in items], \
        "cross-validation keeps constructions whole: one group each"
    for s, t, distance, label in zip(number.sentence, number.position, number.length, number.label):
        item = items[s]
        assert vocab[probing.sequences[s][t]] == item.prefix[t - 1], "positions count the <eos> before the sentence"
        assert distance == t - 1 - item.subject >= 0 and label == item.number
    assert all(r is not None for r in probing.model_right)


@pytest.mark.data
def test_linzen_and_generated_probing_sets(small_lm_upstream, data_dir):
    from tasks.probe import ProbeNumberLM

    task = ProbeNumberLM(ProbeNumberLM.Options(max_distance=8, sentences_per_cell=4), data_dir)
    linzen = task.probing_set(small_lm_upstream, "linzen")
    (number,) = linzen.targets
    assert len(linzen.sequences) == 7485 and sum(number.label) == 4755
    assert all(t == len(linzen.sequences[s]) - 1 for s, t in zip(number.sentence, number.position)), \
        "read at the word before the verb"
    generated = task.probing_set(small_lm_upstream, "generated")
    number, position, distance = generated.targets
    assert sorted(set(number.length)) == list(range(8))
    assert len(position.label) == sum(len(s) - 1 for s in generated.sequences), "every word but the <eos>"
    assert sum(generated.held_out) * 2 == len(generated.sequences)
