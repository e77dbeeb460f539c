"""Fine-tuning Hugging Face checkpoints on codefix (``train --init-from``): tiny random GPT-NeoX and Mamba models
built with transformers and saved with save_pretrained, beside a GPT-NeoX-like byte-level BPE tokenizer.json (no
downloads). The vocabulary surgery keeps the pretrained function on the shared pieces (fp32, atol 1e-5); training
starts from the weights, saves an ordinary checkpoint with the checkpoint's tokenizer, evaluates and resumes."""

import json
import random
import shutil

import pytest
import torch
from conftest import skip_if_transformers_binds_gpu_kernels
from safetensors.torch import load_file
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from toolssm.checkpoint import load_checkpoint
from toolssm.cli import main as cli_main
from toolssm.models import ModelConfig, build_model, gradient_model_names, resolve
from toolssm.models.hf import load_hf, load_hf_remapped, remap_vocab, vocab_dims
from toolssm.protocol import PAD, SPECIALS, Role
from toolssm.tasks import get_task
from toolssm.tasks.codefix.codebase import generate
from toolssm.tasks.codefix.task import Codefix
from toolssm.tasks.codefix.trajectory import SYSTEM, TASK, assistant, texts, to_trajectory, write_jsonl
from toolssm.tokenizer import FILE, Bpe
from toolssm.tools import shell
from toolssm.tools.shell import ShellTool
from toolssm.train import TrainConfig, train

transformers = pytest.importorskip("transformers")

ATOL = 1e-5  # fp32
REASON = shell.sandbox_error()
RUN = "python3 main.py 2>&1 >/dev/null | tail -n 3"
#: GPT-NeoX's added tokens (Pythia, Mamba-*-hf): two specials first, runs of spaces last (and normalized)
NEOX_SPECIALS = ("<|endoftext|>", "<|padding|>")
NEOX_SPACES = ("    ", "  ")
PADDING_ROWS = 5  # Pythia's embedding has more rows (50304) than its tokenizer ids (50277)


# -- a checkpoint folder like a real one ------------------------------------------------------------------
def codefix_record(seed: int) -> dict:
    """A mini-SWE-agent record with codefix text (code listings, a traceback), written without the sandbox."""
    cb = generate(random.Random(seed), 5)
    listing = "".join(f"==> {name} <==\n{src}\n" for name, src in cb.files().items())
    messages = [
        {"role": "system", "content": SYSTEM}, {"role": "user", "content": TASK},
        assistant("tail -n +1 *.py", "THOUGHT: read  everything\t first, café\n\n"),
        {"role": "user", "content": f"<returncode>0</returncode>\n<stdout>\n{listing}</stdout>\n"},
        assistant(RUN),
        {"role": "user", "content": "<returncode>1</returncode>\n<stderr>\nNameError: name 'v10' is not defined\n</stderr>\n"},
        assistant("echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"),
    ]  # fmt: skip
    return {"info": {"exit_status": "Submitted"}, "messages": messages, "trajectory_format": "mini-swe-agent-1"}


def neox_like_tokenizer(corpus: list[str], vocab_size: int = 400) -> Tokenizer:
    """What EleutherAI/pythia-* and state-spaces/mamba-*-hf ship: NFC, byte-level BPE (pre-tokenizer, post-processor,
    decoder), <|endoftext|> and <|padding|> at ids 0 and 1, non-special added tokens for runs of spaces at the end."""
    tk = Tokenizer(models.BPE())
    tk.normalizer = normalizers.NFC()
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tk.post_processor = processors.ByteLevel(trim_offsets=True)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(NEOX_SPECIALS), show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )  # fmt: skip
    tk.train_from_iterator(corpus, trainer)
    tk.add_tokens([AddedToken(s, normalized=True) for s in NEOX_SPACES])
    return tk


@pytest.fixture(scope="module")
def tokenizer_json() -> str:
    corpus = [t for s in range(4) for t in texts([codefix_record(s)])]
    return neox_like_tokenizer(corpus).to_str()


def jitter(model):
    """Every weight off its initial value, so that a row in the wrong place shows in the logits."""
    with torch.no_grad():
        for p in model.parameters():  # a tied matrix is one parameter: it stays tied
            p.add_(0.1 * torch.randn_like(p))
    return skip_if_transformers_binds_gpu_kernels(model.eval())


def hf_model(kind: str, vocab_size: int, tied: bool):
    if kind == "gpt_neox":
        cfg = transformers.GPTNeoXConfig(
            vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            attn_implementation="eager", tie_word_embeddings=tied,
        )  # fmt: skip
        return jitter(transformers.GPTNeoXForCausalLM(cfg))
    cfg = transformers.MambaConfig(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, state_size=8, tie_word_embeddings=tied
    )
    return jitter(transformers.MambaForCausalLM(cfg))


KINDS = {"gpt_neox": False, "mamba": True}  # as Pythia (untied) and state-spaces/mamba-*-hf (tied) ship
VARIANTS = {"gpt_neox-untied": ("gpt_neox", False), "gpt_neox-tied": ("gpt_neox", True),
            "mamba-tied": ("mamba", True), "mamba-untied": ("mamba", False)}  # fmt: skip


def hf_folder(path, tokenizer_json, kind, tied):
    """A folder as save_pretrained writes it, plus tokenizer.json -> (the transformers model, the folder)."""
    bpe = Bpe(Tokenizer.from_str(tokenizer_json))
    hf = hf_model(kind, max(bpe.ids.values()) + 1 + PADDING_ROWS, tied)
    hf.save_pretrained(path)
    (path / FILE).write_text(tokenizer_json)
    return hf, path


# -- the tokenizer ------------------------------------------------------------------------------------------
def test_a_neox_tokenizer_json_loads_round_trips_and_is_disjoint_from_our_specials(tokenizer_json, tmp_path):
    (tmp_path / FILE).write_text(tokenizer_json)
    bpe = Bpe.load(tmp_path)
    ids = bpe.ids
    assert ids["<|endoftext|>"] == 0 and ids["<|padding|>"] == 1 and ids["  "] == max(ids.values())
    assert bpe.pieces == sorted(ids, key=ids.__getitem__) and len(bpe.pieces) == max(ids.values()) + 1
    bpe.check_disjoint([*SPECIALS, *ShellTool.tokens])
    task = Codefix()
    assert task.adopt_tokenizer(tmp_path)
    vocab = task.vocab()
    assert vocab.tokens == [*SPECIALS, *bpe.pieces, *ShellTool.tokens]
    # every message's text round-trips, and a trajectory's pieces decode back to its messages, role by role
    rec = codefix_record(7)  # a codebase the tokenizer was not trained on
    for text in texts([rec]):
        assert bpe.decode(bpe.encode(text)) == text
    assert "  " in bpe.encode(SYSTEM + "\n    x  = 1")  # the added space runs are used
    traj = to_trajectory(rec, bpe)
    assert all(t in vocab for t in traj.tokens)
    got = {r: bpe.decode([t for t, q in zip(traj.tokens, traj.roles) if q == r and t not in vocab.tokens[:4]])
           for r in Role}  # fmt: skip
    assert got[Role.INPUT] == f"{SYSTEM}\n{TASK}"
    assert got[Role.OBSERVATION] == "".join(m["content"] for m in rec["messages"][3:6:2])
    # and the check can fail: a tokenizer with a piece spelled like our specials is refused
    tk = Tokenizer.from_str(tokenizer_json)
    tk.add_tokens(["[bash]"])
    with pytest.raises(ValueError, match=r"collide with reserved tokens: \[bash\]"):
        Bpe(tk).check_disjoint([*SPECIALS, *ShellTool.tokens])


# -- the surgery ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS)
def test_the_surgery_keeps_the_pretrained_function_on_shared_pieces(variant, tokenizer_json, tmp_path):
    hf, folder = hf_folder(tmp_path, tokenizer_json, *VARIANTS[variant])
    task = Codefix()
    task.adopt_tokenizer(folder)
    bpe, vocab = task.bpe, task.vocab()
    model, arch, kwargs, new, has_tokenizer = load_hf_remapped(folder, vocab.tokens)
    assert has_tokenizer and new == [*SPECIALS, *ShellTool.tokens]
    assert kwargs["tie_embeddings"] == VARIANTS[variant][1]
    # the model is an ordinary one of our vocabulary: build_model rebuilds it
    assert {k: v.shape for k, v in model.state_dict().items()} == {
        k: v.shape for k, v in build_model(arch, len(vocab), kwargs).state_dict().items()
    }
    pieces = to_trajectory(codefix_record(9), bpe).tokens[1:60]  # input and thought pieces, no specials
    assert all(p in bpe.ids for p in pieces)
    shared = [t for t in vocab.tokens if t in bpe.ids]
    ours_cols, their_cols = vocab.ids(shared), [bpe.ids[t] for t in shared]
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor([[bpe.ids[p] for p in pieces]]), use_cache=False).logits  # (1, T, V_hf)
        ours = model(torch.tensor([vocab.ids(pieces)]))[0]  # (1, T, V_ours)
    assert ref.abs().max() > 0.5 and ours.shape[-1] == len(vocab) != ref.shape[-1]
    diff = (ours[..., ours_cols] - ref[..., their_cols]).abs().max().item()
    print(f"\n{variant}: max |logit diff| on the shared pieces {diff:.2e}")
    torch.testing.assert_close(ours[..., ours_cols], ref[..., their_cols], atol=ATOL, rtol=0)
    # new rows: the mean of the rows the tokenizer names, in every vocabulary tensor (the head too when untied)
    orig = load_hf(folder)[0].state_dict()
    named = sorted(bpe.ids.values())
    dims = vocab_dims(arch, kwargs)
    assert len(dims) == (1 if kwargs["tie_embeddings"] else 2)
    for name, dim in dims.items():
        mean = orig[name].movedim(dim, 0)[named].mean(0)
        for t in new:
            torch.testing.assert_close(model.state_dict()[name].movedim(dim, 0)[vocab.id(t)], mean, atol=0, rtol=0)
    # and the comparison can fail: two pieces' rows swapped show in the logits
    swapped = dict(bpe.ids)
    a, b = pieces[0], pieces[1]
    swapped[a], swapped[b] = swapped[b], swapped[a]
    wrong, _ = remap_vocab(load_hf(folder)[0], arch, kwargs, swapped, vocab.tokens)
    with torch.no_grad():
        bad = wrong(torch.tensor([vocab.ids(pieces)]))[0]
    assert (bad[..., ours_cols] - ref[..., their_cols]).abs().max() > 1e-3


@pytest.mark.parametrize("arch", gradient_model_names())
def test_the_surgery_works_for_every_architecture(arch):
    """Any SequenceModel, tied or untied, with or without a head bias: the vocabulary tensors are found by shape
    (vocab_dims), and re-indexed rows compute the same logits for the shared tokens."""
    kwargs = resolve(ModelConfig(arch=arch, d_model=16, n_layers=2))
    if "tie_embeddings" in kwargs:
        kwargs["tie_embeddings"] = False  # the harder case: a head to re-index too
    theirs = [PAD, *"abcdefgh", "<|endoftext|>"]
    model = build_model(arch, len(theirs) + 2, kwargs).eval()  # two padding rows
    ours = [PAD, "[BOS]", "h", "c", "a", "[bash]", "e", "<|endoftext|>"]
    remapped, new = remap_vocab(model, arch, kwargs, {t: i for i, t in enumerate(theirs)}, ours)
    assert new == ["[BOS]", "[bash]"] and not remapped.training
    x_ours = torch.tensor([[2, 4, 3, 6, 7, 2]])  # h a c e <|endoftext|> h
    x_theirs = torch.tensor([[theirs.index(ours[i]) for i in x_ours[0]]])
    with torch.no_grad():
        ref, got = model(x_theirs)[0], remapped(x_ours)[0]
    cols = [i for i, t in enumerate(ours) if t in theirs]
    torch.testing.assert_close(got[..., cols], ref[..., [theirs.index(ours[i]) for i in cols]], atol=ATOL, rtol=0)
    assert got.shape[-1] == len(ours) and ref.shape[-1] == len(theirs) + 2


def test_the_surgery_refuses_a_tokenizer_larger_than_the_embedding():
    kwargs = resolve(ModelConfig(arch="lstm", d_model=8, n_layers=1))
    model = build_model("lstm", 4, kwargs)
    with pytest.raises(ValueError, match=r"1 ids beyond the model's 4 vocabulary rows \(e.g. 'e': 4\)") as e:
        remap_vocab(model, "lstm", kwargs, {t: i for i, t in enumerate([PAD, "b", "c", "d", "e"])}, [PAD, "b"])
    assert "\n" not in str(e.value)


# -- training from a checkpoint folder ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def records():
    """Two interactive agent records from the real sandbox (the eval path needs it too)."""
    if REASON is not None:
        pytest.skip(f"no sandbox: {REASON}")
    from toolssm.tasks.codefix.trajectory import collect

    return collect("interactive", [4], 2, seed=11)


def data_folder(path, records):
    """The JSONL, with the task's *own* BPE beside it: --init-from must override it with the checkpoint's."""
    write_jsonl(path / "interactive.jsonl", records)
    Bpe.train(texts(records), 300).save(path)
    return path / "interactive.jsonl"


def finetune_cfg(tmp_path, folder, data, **kw):
    kw = {"steps": 2, "batch_size": 2, "warmup": 1, "max_len": 160, "lr": 1e-3, "progress": False,
          "out": str(tmp_path / "run"), **kw}  # fmt: skip
    return TrainConfig(task="codefix", data=str(data), init_from=str(folder), **kw)


@pytest.mark.parametrize("kind", KINDS)
def test_train_init_from_starts_from_the_weights_saves_the_tokenizer_and_evaluates(
    kind, records, tokenizer_json, tmp_path
):
    from toolssm.checkpoint import load_trained
    from toolssm.evaluate import evaluate

    _, folder = hf_folder(tmp_path / "hf", tokenizer_json, kind, KINDS[kind])
    data = data_folder(tmp_path / "data", records)
    # a learning rate too small to move a weight: the checkpoint holds the remapped pretrained weights
    ckpt = train(finetune_cfg(tmp_path, folder, data, lr=1e-12, min_lr=0.0))
    assert (ckpt / FILE).is_file() and Bpe.load(ckpt).ids == Bpe.load(folder).ids != Bpe.load(data.parent).ids
    loaded = load_checkpoint(ckpt)
    arch = "pythia" if kind == "gpt_neox" else "mamba"
    assert loaded.arch == arch and loaded.step == 2 and loaded.config["train"]["init_from"] == str(folder)
    task = load_trained(ckpt)[1]  # with the checkpoint's tokenizer
    assert task.vocab() == loaded.vocab and loaded.vocab.tokens[4:-3] == Bpe.load(folder).pieces
    start = load_hf_remapped(folder, loaded.vocab.tokens)[0].state_dict()
    trained = loaded.model.state_dict()
    assert set(trained) == set(start)
    for k in start:
        torch.testing.assert_close(trained[k], start[k], atol=1e-6, rtol=0, msg=lambda m, k=k: f"{k}: {m}")
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run/log.jsonl").open()]
    assert losses and all(0 < x < 20 for x in losses)
    # the codefix eval path: decode through the sandbox (a short budget: the model is random) and verify
    task.token_budget = lambda problem: 24
    [res] = evaluate(loaded.model, task, loaded.vocab, ["4"], n_problems=1, with_token_acc=False, progress=False)
    assert res.n == 1 and 0 <= res.answer_acc <= 1 and res.tokens_per_problem > 0


@pytest.mark.parametrize("kind", KINDS)
def test_train_init_from_resumes_without_the_pretrained_weights(kind, records, tokenizer_json, tmp_path, stop_training_at):
    _, folder = hf_folder(tmp_path / "hf", tokenizer_json, kind, KINDS[kind])
    data = data_folder(tmp_path / "data", records)
    train(finetune_cfg(tmp_path / "a", folder, data, steps=3))

    restore = stop_training_at(2)
    with pytest.raises(KeyboardInterrupt):
        train(finetune_cfg(tmp_path / "b", folder, data, steps=3, save_every=1))
    restore()
    assert json.loads((tmp_path / "b/run/checkpoint/config.json").read_text())["step"] == 2
    init = load_hf_remapped(folder, load_checkpoint(tmp_path / "b/run").vocab.tokens)[0].state_dict()
    (folder / "model.safetensors").unlink()  # a resume reads our checkpoint, not the pretrained weights
    train(finetune_cfg(tmp_path / "b", folder, data, steps=3, save_every=1, resume=True))
    wa = load_file(tmp_path / "a/run/checkpoint/model.safetensors")
    wb = load_file(tmp_path / "b/run/checkpoint/model.safetensors")
    assert set(wa) == set(wb) == set(init) and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert any((wa[k] - init[k]).abs().max() > 1e-4 for k in wa)  # and training moved the weights
    shutil.rmtree(tmp_path / "b/run")
    with pytest.raises(ValueError, match=f"no weights in {folder}"):  # a fresh start does need them
        train(finetune_cfg(tmp_path / "b", folder, data, steps=3))


# -- bad input and other tasks ------------------------------------------------------------------------------
def test_init_from_a_folder_without_config_json_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / FILE).write_text("{}")
    with pytest.raises(ValueError, match=f"no config.json in {tmp_path}") as e:
        TrainConfig(task="codefix", init_from=str(tmp_path)).validate()
    assert "\n" not in str(e.value)
    assert cli_main(["train", "--task", "codefix", "--init-from", str(tmp_path / "nowhere"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("toolssm: error: no Hugging Face checkpoint at") and err.count("\n") == 1


def test_model_flags_that_conflict_with_init_from_are_a_one_line_error(tokenizer_json, tmp_path):
    _, folder = hf_folder(tmp_path, tokenizer_json, "mamba", True)
    TrainConfig(task="codefix", init_from=str(folder)).validate()  # the default model: the checkpoint's
    TrainConfig(task="codefix", init_from=str(folder), model=ModelConfig(arch="mamba")).validate()  # agrees
    for model, flags in [(ModelConfig(arch="pythia"), "--model.arch"), (ModelConfig(d_model=64), "--model.d_model"),
                         (ModelConfig(arch="mamba", preset="paper", n_layers=3), "--model.preset, --model.n_layers")]:  # fmt: skip
        with pytest.raises(ValueError, match=f"sets the model \\(mamba, from its config.json\\): drop {flags}$") as e:
            TrainConfig(task="codefix", init_from=str(folder), model=model).validate()
        assert "\n" not in str(e.value)


def test_codefix_needs_the_checkpoint_tokenizer(tokenizer_json, tmp_path):
    _, folder = hf_folder(tmp_path / "hf", tokenizer_json, "gpt_neox", False)
    (folder / FILE).unlink()
    (tmp_path / "data").mkdir()
    write_jsonl(tmp_path / "data/x.jsonl", [codefix_record(0)])
    Bpe.train(texts([codefix_record(0)]), 300).save(tmp_path / "data")
    with pytest.raises(ValueError, match=f"no tokenizer.json in {folder}: task codefix must tokenize with the") as e:
        train(finetune_cfg(tmp_path, folder, tmp_path / "data/x.jsonl"))
    assert "\n" not in str(e.value)


def test_a_task_with_its_own_symbols_keeps_the_rows_it_spells_and_warns(tokenizer_json, tmp_path):
    """addition's digits and + = are pieces of a byte-level BPE: they keep their rows; [BOS], c0, [p1.left] ... do
    not, and the run says how many."""
    _, folder = hf_folder(tmp_path / "hf", tokenizer_json, "gpt_neox", False)
    vocab = get_task("addition").vocab()
    bpe = Bpe.load(folder)
    spelled = [t for t in vocab.tokens if t in bpe.ids]
    assert set("0123456789+=") <= set(spelled)
    cfg = TrainConfig(task="addition", init_from=str(folder), steps=1, batch_size=2, warmup=1, lr=1e-12, min_lr=0.0,
                      train_size=2, out=str(tmp_path / "run"), progress=False)  # fmt: skip
    n_new = len(vocab) - len(spelled)
    with pytest.warns(UserWarning, match=f"task addition has its own vocabulary.*: {n_new} of its {len(vocab)} tok"):
        ckpt = train(cfg)
    model = load_checkpoint(ckpt).model
    orig = load_hf(folder)[0].state_dict()["embed_in.weight"]
    got = model.state_dict()["embed_in.weight"]
    torch.testing.assert_close(got[vocab.ids(spelled)], orig[[bpe.ids[t] for t in spelled]], atol=1e-6, rtol=0)
