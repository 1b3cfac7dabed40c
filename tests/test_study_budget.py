"""The study budget: the lm task and the tasks that score its models run at it; a task without
it says which budgets it has."""
import pytest

from harness.sweep import expand
from tests.conftest import harness


def test_lm_and_the_tasks_that_score_it_share_the_study_budget():
    configs = {cfg.task: cfg for cfg in expand(["lstm"], ["lm", "agreement_lm", "figqa", "figqa_ft"],
                                               size="small", budget="study")}
    lm = configs["lm"].train
    assert (lm.steps, lm.batch_size, lm.seq_len, lm.final_eval_tokens) == (3500, 32, 128, None)
    assert configs["agreement_lm"].train == lm and configs["figqa"].train == lm, "zero-shot runs read the lm's"
    assert configs["figqa_ft"].train.steps == 1000 and configs["figqa_ft"].upstream == configs["lm"].run_id
    smoke = expand(["lstm"], ["lm"], size="small")[0]
    assert smoke.run_id != configs["lm"].run_id and smoke.train.steps == 400


def test_a_task_without_the_budget_names_those_it_has(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"task 'ner' has no 'study' budget \(it has: smoke, full\)"):
        expand(["lstm"], ["ner"], budget="study")
    assert harness("run", "--arch", "lstm", "--tasks", "ner", "--budget", "study", "--results", tmp_path) == 2
    assert "has no 'study' budget" in capsys.readouterr().err
    assert harness("run", "--arch", "lstm", "--tasks", "lm", "--budget", "studdy", "--results", tmp_path) == 2
    assert "study" in capsys.readouterr().err
