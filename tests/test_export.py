"""toolssm export --to hf: tiny checkpoints trained a few steps, exported, and opened with transformers' Auto classes.
The logits agree within 1e-5, the tokenizer encodes a rendered trajectory to the Vocab's ids, load_hf reads the folder
back bit for bit, and a greedy tool-in-the-loop rollout with the exported model (HFStepModel) reproduces ours."""

import json
import random

import pytest
import torch
from conftest import skip_if_transformers_binds_gpu_kernels

from toolssm.checkpoint import load_checkpoint
from toolssm.cli import main
from toolssm.export import EXPORTS, HFStepModel, export_hf, rendered
from toolssm.models import ModelConfig
from toolssm.models.hf import load_hf
from toolssm.rollout import rollout
from toolssm.tasks import get_task
from toolssm.train import TrainConfig, train

transformers = pytest.importorskip("transformers")

ATOL = 1e-5
#: tiny models; Mistral's window of 8 is shorter than the trajectories, so the sliding window is exercised
MODELS = {
    "mamba": ModelConfig(arch="mamba", d_model=32, n_layers=2),
    "mamba2": ModelConfig(arch="mamba2", d_model=32, n_layers=2, chunk=8),
    "pythia": ModelConfig(arch="pythia", d_model=32, n_layers=2, d_ff=64),
    "mistral": ModelConfig(arch="mistral", d_model=32, n_layers=2, d_ff=64, n_kv_heads=2, window=8),
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """arch -> a checkpoint trained 30 steps on addition: enough to issue tool commands in a greedy rollout."""
    root = tmp_path_factory.mktemp("ckpt")
    out = {}
    for arch, model in MODELS.items():
        cfg = TrainConfig(task="addition", model=model, steps=30, batch_size=4, warmup=1, out=str(root / arch),
                          progress=False, save_every=30, log_every=30)  # fmt: skip
        out[arch] = train(cfg)
    return out


def trajectory(seed=0, size=5):
    task = get_task("addition")
    return task, task.sample(random.Random(seed), size)


@pytest.mark.parametrize("arch", list(MODELS))
def test_export_round_trip(arch, trained, tmp_path):
    ckpt = trained[arch]
    out = export_hf(ckpt, tmp_path / "hf")
    ours = load_checkpoint(ckpt)
    hf = skip_if_transformers_binds_gpu_kernels(transformers.AutoModelForCausalLM.from_pretrained(out).eval())
    assert type(hf).__name__ == EXPORTS[arch][1]
    tok = transformers.AutoTokenizer.from_pretrained(out)
    task, problem = trajectory()
    traj = task.demonstrate(problem)
    ids = ours.vocab.ids(traj.tokens)
    assert len(ids) > 20  # longer than Mistral's window of 8
    # the tokenizer: a rendered trajectory encodes to the Vocab's ids, and decodes back
    assert tok(rendered(traj))["input_ids"] == ids
    assert tok.decode(ids) == rendered(traj)
    assert tok.pad_token_id == ours.vocab.id("[PAD]") and tok.eos_token_id == ours.vocab.id("[EOS]")
    # the logits, on the trajectory and on random ids
    x = torch.cat([torch.tensor([ids]), torch.randint(0, len(ours.vocab), (1, len(ids)))])
    with torch.no_grad():
        a, _ = ours.model(x)
        b = hf(input_ids=x, use_cache=False).logits
    assert a.abs().max() > 0.1
    print(f"\n{arch}: max |logit diff| {(a - b).abs().max().item():.2e}")
    torch.testing.assert_close(b, a, atol=ATOL, rtol=0)
    # load_hf reads the folder back bit for bit
    back, back_arch, _ = load_hf(out)
    assert back_arch == arch
    want = ours.model.state_dict()
    assert set(back.state_dict()) == set(want)
    assert all(torch.equal(v, want[k]) for k, v in back.state_dict().items())
    # a greedy rollout with the tool in the loop: the exported model decodes the same trajectory as ours
    eps = [task.episode(problem, record=True, max_tokens=60) for _ in range(2)]
    (mine,) = rollout(ours.model, ours.vocab, eps[:1])
    (theirs,) = rollout(HFStepModel(hf), ours.vocab, eps[1:])
    roles = {r.name for r in mine.trajectory.roles}
    print(f"{arch}: rollout of {mine.n_tokens} tokens, roles {sorted(roles)}")
    assert {"COMMAND", "OBSERVATION"} <= roles  # the tool was in the loop: it answered the model's commands
    assert mine.trajectory.tokens == theirs.trajectory.tokens and mine.trajectory.roles == theirs.trajectory.roles
    meta = json.loads((out / "toolssm.json").read_text())
    assert meta["task"] == "addition" and meta["vocab"] == ours.vocab.tokens


def test_export_cli_and_its_refusals(trained, tmp_path, capsys):
    assert main(["export", "--to", "hf", str(trained["mamba"]), str(tmp_path / "hf")]) == 0
    assert (tmp_path / "hf" / "model.safetensors").is_file() and (tmp_path / "hf" / "tokenizer.json").is_file()
    capsys.readouterr()
    # a folder with something in it is refused, and left as it was
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("keep")
    assert main(["export", str(trained["mamba"]), str(tmp_path / "full")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("toolssm: error:") and "not an empty folder" in err and err.count("\n") == 1
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["mine.txt"]
    assert main(["export", "--to", "onnx", str(trained["mamba"]), str(tmp_path / "x")]) == 2
    assert "unknown export format" in capsys.readouterr().err


def test_an_architecture_without_a_transformers_model_is_a_one_line_error(tmp_path, capsys):
    ckpt = train(TrainConfig(task="addition", model=ModelConfig(arch="lstm", d_model=16, n_layers=1), steps=1,
                             batch_size=2, warmup=1, out=str(tmp_path / "lstm"), progress=False))  # fmt: skip
    assert main(["export", "--to", "hf", str(ckpt), str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err
    assert err == "toolssm: error: cannot export lstm to Hugging Face: transformers has no lstm model " \
                  "(exportable: mamba, mamba2, pythia, mistral)\n"  # fmt: skip
    assert not (tmp_path / "hf").exists()


@pytest.mark.parametrize(
    "arch, kwargs, needle",
    [
        ("pythia", {"d_model": 32, "n_layers": 1, "n_heads": 4, "d_ff": 64, "pos": "nope"}, "pos='nope'"),
        ("mamba2", {"d_model": 32, "n_layers": 1, "d_ff": 64}, "d_ff=64"),
        ("mistral", {"d_model": 32, "n_layers": 1, "n_heads": 4, "d_ff": 64, "window": 8, "pos": "nope"}, "RoPE"),
    ],
)
def test_settings_transformers_cannot_express_are_refused(arch, kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        EXPORTS[arch][2](kwargs)


def test_init_from_takes_a_hub_id_from_the_offline_cache(trained, tmp_path, monkeypatch):
    """--init-from owner/name goes through huggingface_hub.snapshot_download, which, offline, serves a repository from
    its cache (laid out here as the Hub's cache is: tests stay offline); one not cached is a one-line error."""
    import shutil

    huggingface_hub = pytest.importorskip("huggingface_hub")
    constants = huggingface_hub.constants
    cache = tmp_path / "hub"
    repo = cache / "models--someone--tiny-pythia"
    snapshot = repo / "snapshots" / ("0" * 40)
    shutil.copytree(export_hf(trained["pythia"], tmp_path / "hf"), snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    cfg = TrainConfig(task="addition", init_from="someone/tiny-pythia", steps=1, batch_size=2, warmup=1,
                      out=str(tmp_path / "ft"), progress=False)  # fmt: skip
    assert cfg.pretrained_arch() == "pythia"
    with pytest.warns(UserWarning, match="0 of its"):  # every token keeps its row: the export's vocabulary is ours
        ckpt = train(cfg)
    loaded = load_checkpoint(ckpt)
    assert loaded.arch == "pythia" and loaded.config["train"]["init_from"] == "someone/tiny-pythia"
    with pytest.raises(ValueError, match=r"someone/missing: not a local path, and the Hub download failed"):
        TrainConfig(task="addition", init_from="someone/missing").validate()
