"""`toolssm reproduce`: the experiment registry, the two scales, and the command end to end (tiny)."""

import json

import pytest
import torch

from toolssm.cli import main
from toolssm.evaluate import evaluate
from toolssm.experiments import EXPERIMENTS, PAPER_GRID
from toolssm.models import ModelConfig, build_model, has_fixed_state, resolve
from toolssm.reproduce import CPU_EVAL_BATCH, plan
from toolssm.tasks import get_task

PAPER_ITEMS = ["fig2-addition", "table1-mult-x1", "table1-mult-x2", "table1-logic-graph", "table1-hanoi",
               "table2-hanoi-recursive", "fig6-baselines", "d6-mult-grid", "d7-addition-ablations", "d8-mixture",
               "fig1-codefix", "fig3-oolong", "d9-rmt", "theory"]  # fmt: skip


def test_every_item_of_the_paper_has_an_experiment():
    assert sorted(EXPERIMENTS) == sorted(PAPER_ITEMS)


@pytest.mark.parametrize("name", [n for n in PAPER_ITEMS if not EXPERIMENTS[n].requires])
def test_every_run_of_both_scales_is_a_valid_config(name, tmp_path):
    exp = EXPERIMENTS[name]
    for scale in ("cpu", "paper"):
        runs = plan(exp, scale)
        assert len({r.run_id for r in runs}) == len(runs)
        for r in runs[:: max(1, len(runs) // 25)]:
            r.train_config(tmp_path).validate()
            assert r.train["model"]["preset"] == scale
            for s in r.lengths:
                get_task(r.train["task"]).spec_size(s)


@pytest.mark.parametrize(
    "name, cpu, paper",
    [
        ("fig2-addition", 9, 9 * 48 * 2),  # 9 rows; the paper's grid is 6 lr x 4 batch x 2 wd, 2 seeds
        ("table1-hanoi", 10, 2 * 48 * (10 + 3 + 3 + 10 + 3)),  # 10 seeds for Mamba and Pythia, 3 for the others
        ("d6-mult-grid", 18, 18 * 5),  # steps x digits, no grid (lr 0.003), 5 runs each
    ],
)
def test_run_counts_follow_the_papers_protocol(name, cpu, paper):
    assert len(plan(EXPERIMENTS[name], "cpu")) == cpu
    runs = plan(EXPERIMENTS[name], "paper")
    assert len(runs) == paper
    if name != "d6-mult-grid":
        assert {r.train["lr"] for r in runs} == set(PAPER_GRID["lr"]) and {r.train["steps"] for r in runs} == {2000}


def test_d7_trains_each_ablation_with_its_measured_recipe_at_cpu_scale_only():
    cpu = {r.row: r for r in plan(EXPERIMENTS["d7-addition-ablations"], "cpu")}
    got = {row: (r.train.get("steps"), r.train.get("batch_size")) for row, r in cpu.items()}
    assert got == {"pointer tool": (None, None), "direct": (30000, 256), "reversed": (8000, 256),
                   "no tool": (2000, 64), "calculator": (3000, 256)}  # fmt: skip
    assert all(r.lengths[0] == "<=5" for r in cpu.values())  # the in-distribution column
    assert max(cpu.values(), key=lambda r: r.cost).row == "direct"  # the longest run starts first
    paper = plan(EXPERIMENTS["d7-addition-ablations"], "paper")
    assert {r.train["steps"] for r in paper} == {2000}
    assert {r.train["batch_size"] for r in paper} == set(PAPER_GRID["batch_size"])
    override = plan(EXPERIMENTS["d7-addition-ablations"], "cpu", rows=("direct",), overrides={"steps": 5})
    assert override[0].train["steps"] == 5  # --set still wins


@pytest.mark.parametrize("pinned, left", [({"lr": 1e-3}, 4 * 2), ({"lr": 1e-3, "batch_size": 128}, 2),
                                          ({"lr": 1e-3, "batch_size": 128, "weight_decay": 0.0}, 1)])
def test_setting_a_grid_axis_pins_it_instead_of_repeating_runs(pinned, left):
    runs = plan(EXPERIMENTS["table1-hanoi"], "paper", rows=("mamba",), seeds=(0,), overrides=pinned)
    assert len(runs) == 2 * left  # two panels (ours, the paper's scheme) x what is left of the grid
    assert len({r.run_id for r in runs}) == len(runs)
    assert all(r.train[k] == v for r in runs for k, v in pinned.items())


def test_rows_seeds_and_overrides_restrict_the_plan():
    runs = plan(EXPERIMENTS["d8-mixture"], "cpu", rows=("w=0.5",), seeds=(3, 4), overrides={"steps": 7})
    assert len(runs) == 3 * 2 and {r.seed for r in runs} == {3, 4}
    assert {r.train["steps"] for r in runs} == {7} and {tuple(r.train["mix"]) for r in runs} == {("addition:0.5",)}
    with pytest.raises(ValueError, match="no row 'nope'"):
        plan(EXPERIMENTS["fig2-addition"], "cpu", rows=("nope",))


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["reproduce", "fig9"], "unknown experiment 'fig9'"),
        (["reproduce", "fig2-addition", "--scale", "huge"], "--scale"),
        (["reproduce", "fig2-addition", "--set", "nope=1"], "bad setting 'nope'"),
        (["reproduce", "fig2-addition", "--lengths", "-4"], "bad size '-4'"),
    ],
)
def test_bad_input_gives_one_line(capsys, argv, needle):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err


@pytest.mark.parametrize("name, needle", [("fig1-codefix", "toolssm.tasks.codefix"), ("theory", "theory")])
def test_experiments_built_elsewhere_say_not_available_yet(capsys, monkeypatch, name, needle):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda m, *a: None if m == EXPERIMENTS[name].requires else real(m))
    assert main(["reproduce", name]) == 2
    err = capsys.readouterr().err
    assert "not available yet" in err and needle in err


def test_a_command_experiment_passes_out_and_its_dry_run_runs_nothing(capsys, monkeypatch, tmp_path):
    from toolssm import cli

    calls = []
    cls, _ = cli.COMMANDS["theory"]
    monkeypatch.setitem(cli.COMMANDS, "theory", (cls, lambda c: calls.append(c) or 0))
    assert main(["reproduce", "theory", "--out", str(tmp_path), "--dry-run"]) == 0
    assert calls == [] and f"would run: toolssm theory --out {tmp_path}" in capsys.readouterr().out
    assert main(["reproduce", "theory", "--out", str(tmp_path)]) == 0
    assert [c.out for c in calls] == [str(tmp_path)]


@pytest.mark.parametrize("flags", [["--rows", "x"], ["--seeds", "3"], ["--set", "steps=2"], ["--scale", "paper"]])
def test_a_command_experiment_refuses_sweep_flags_in_one_line(capsys, flags):
    assert main(["reproduce", "theory", *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no sweep" in err[0] and flags[0] in err[0], err


def test_reproduce_runs_the_sweep_and_writes_the_report(tmp_path, capsys):
    argv = ["reproduce", "d7-addition-ablations", "--rows", "direct", "reversed", "--out", str(tmp_path),
            "--lengths", "<=2", "2", "3", "--n-problems", "2", "--jobs", "1", "--set", "steps=2", "batch_size=2",
            "train_size=2", "model.d_model=8", "model.n_layers=1"]  # fmt: skip
    assert main(argv) == 0
    text = (tmp_path / "report.md").read_text()
    assert "| direct | 2→" in text and "| reversed | 2→" in text and "little or no length generalization" in text
    assert "| <=2 as trained | 2 | 3 |" in text
    assert (tmp_path / "d7-addition-ablations.png").is_file()
    recs = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert {r["task"] for r in recs} == {"addition-direct", "addition-reversed"}
    assert all(r["config"]["model"]["arch"] == "mamba" and r["config"]["steps"] == 2 for r in recs)
    capsys.readouterr()
    assert main([*argv, "--dry-run"]) == 0
    assert capsys.readouterr().out.count("  done  ") == 2


def test_evaluation_fanned_out_over_processes_equals_one_process():
    t = get_task("addition")
    vocab = t.vocab()
    model = build_model("lstm", len(vocab), resolve(ModelConfig(d_model=8, n_layers=1)))
    for p in model.parameters():  # a model that gets some right: bias the head toward the expert's tokens
        torch.nn.init.normal_(p, std=0.5)
    kw = {"n_problems": 5, "batch_size": 2, "progress": False}
    one = evaluate(model, t, vocab, ["2", "3"], **kw)
    two = evaluate(model, t, vocab, ["2", "3"], procs=2, **kw)
    strip = lambda rs: [{k: v for k, v in vars(r).items() if k != "seconds"} for r in rs]
    assert strip(one) == strip(two)
    assert any(r.token_acc for r in one)


@pytest.mark.parametrize("arch", ["lstm", "gru", "mamba", "mamba2", "gated_deltanet", "hybrid", "pythia", "mistral"])
def test_fixed_state_known_without_building_weights(arch):
    cfg = ModelConfig(arch=arch)
    built = build_model(arch, 8, resolve(cfg))
    assert has_fixed_state(cfg) == built.fixed_state


def test_cpu_scale_evaluates_fixed_state_models_in_large_batches():
    runs = {r.row: r for r in plan(EXPERIMENTS["fig2-addition"], "cpu")}
    assert runs["lstm"].eval_batch_size == runs["mamba2"].eval_batch_size == CPU_EVAL_BATCH["fixed"]
    assert runs["pythia"].eval_batch_size == runs["hybrid"].eval_batch_size == CPU_EVAL_BATCH["growing"]
    assert CPU_EVAL_BATCH["growing"] < CPU_EVAL_BATCH["fixed"]


def test_the_measured_time_is_quoted_only_for_the_whole_experiment(capsys):
    assert main(["reproduce", "d7-addition-ablations", "--dry-run"]) == 0
    whole = capsys.readouterr().out.splitlines()[1]
    assert whole.startswith("5 runs into") and "the whole experiment" in whole and "1.6 h" in whole
    assert main(["reproduce", "d7-addition-ablations", "--rows", "direct", "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == "1 run into runs/reproduce/d7-addition-ablations-cpu"


def test_the_camera_ready_oolong_and_rmt_rows_carry_their_models_and_the_papers_readings():
    from toolssm.paper_results import NOT_RUN, paper_value

    oolong = {r.row: r for r in plan(EXPERIMENTS["fig3-oolong"], "cpu")}
    assert sorted(oolong) == ["lstm", "mamba", "pythia"]
    assert all(r.train["task"] == "oolong" and r.train["train_size"] == 5 for r in oolong.values())
    assert {"5", "25", "1000"} <= set(oolong["mamba"].lengths)
    assert "0.65 at 25" in paper_value("fig3-oolong", "", "mamba") and "0.59" in paper_value("fig3-oolong", "", "pythia")
    assert paper_value("fig3-oolong", "", "lstm") == NOT_RUN
    rmt = {r.row: r.train["model"] for r in plan(EXPERIMENTS["d9-rmt"], "cpu")}
    assert rmt == {"rmt-s16": {"preset": "cpu", "arch": "rmt", "segment": 16},
                   "rmt-s64": {"preset": "cpu", "arch": "rmt", "segment": 64}}
    assert all("no meaningful length generalization" in paper_value("d9-rmt", "", row) for row in rmt)


def test_the_demo_compare_and_figure_2_train_the_same_addition_recipe(tmp_path):
    """The demo's run is the seed study's run for its seed (docs/design.md, "Seeds"): same training config, field
    for field, so the demo shows what `reproduce fig2-addition --seeds ...` measured; `compare` trains it too."""
    from dataclasses import asdict

    from toolssm.cli import CompareConfig, DemoConfig, compare_plan, demo_run
    from toolssm.sweep import Run

    def resolved(run: Run) -> dict:
        cfg = asdict(run.train_config(tmp_path))
        cfg["model"] = {"arch": cfg["model"]["arch"], **resolve(ModelConfig(**cfg["model"]))}
        return {k: v for k, v in cfg.items() if k not in ("device", "threads", "out")}

    demo = DemoConfig()
    (fig2,) = plan(EXPERIMENTS["fig2-addition"], "cpu", rows=("lstm",), seeds=(demo.seed,))
    (compare,) = compare_plan(CompareConfig(models=("lstm",), seed=demo.seed))
    assert resolved(demo_run(demo)) == resolved(fig2) == resolved(compare)
    assert resolved(fig2)["weight_decay"] == 0.01 and demo.seed == 0
