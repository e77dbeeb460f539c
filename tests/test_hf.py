"""Hugging Face checkpoints: tiny random Mamba, Mamba-2 and GPT-NeoX models built here with transformers and saved with
save_pretrained (no downloads) load with load_hf and give transformers' logits, in a parallel forward and token by
token (fp32, atol 1e-5)."""

import json

import pytest
import torch
from conftest import skip_if_transformers_binds_gpu_kernels

from toolssm.checkpoint import load_checkpoint, save_checkpoint
from toolssm.models.hf import load_hf
from toolssm.protocol import PAD, Vocab

transformers = pytest.importorskip("transformers")

ATOL = 1e-5  # fp32
V = 50


def hf_mamba(**kw):
    cfg = transformers.MambaConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2, state_size=8, **kw)
    return jitter(transformers.MambaForCausalLM(cfg))


def hf_mamba2(**kw):
    """hidden 32, expand 2: d_inner 64 = 4 heads of 16; chunk 8 so that the 19-token test runs 3 chunks, the last
    one short (transformers pads it, we do too)."""
    kw = {"expand": 2, "head_dim": 16, "n_groups": 1, "chunk_size": 8, "state_size": 8, "tie_word_embeddings": True,
          **kw}  # fmt: skip
    kw.setdefault("num_heads", kw["expand"] * 32 // kw["head_dim"])
    cfg = transformers.Mamba2Config(vocab_size=V, hidden_size=32, num_hidden_layers=2, **kw)
    return jitter(transformers.Mamba2ForCausalLM(cfg))


def hf_neox(**kw):
    cfg = transformers.GPTNeoXConfig(
        vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        attn_implementation="eager", **kw,
    )  # fmt: skip
    return jitter(transformers.GPTNeoXForCausalLM(cfg))


def jitter(model):
    """Move every weight off its initial value (norm weights off 1, biases off 0, ...), so that a weight loaded
    into the wrong place, or not at all, shows in the logits."""
    with torch.no_grad():
        for p in model.parameters():  # a tied matrix is one parameter: it stays tied
            p.add_(0.1 * torch.randn_like(p))
    return skip_if_transformers_binds_gpu_kernels(model.eval())


def compare(hf, folder):
    """Load folder with load_hf; its logits, parallel and token by token, against hf's full forward.
    -> what load_hf returned. Prints the max |logit diff| (pytest -s shows it)."""
    model, arch, kwargs = load_hf(folder)
    x = torch.randint(0, V, (2, 19))  # 19: more than one scan chunk, not a multiple of it
    with torch.no_grad():
        ref = hf(input_ids=x, use_cache=False).logits  # (B, T, V)
        ours, _ = model(x)
        state, steps = None, []
        for t in range(x.shape[1]):
            logits, state = model.step(x[:, t], state)
            steps.append(logits)
        stepped = torch.stack(steps, 1)  # (B, T, V)
    assert ref.abs().max() > 0.5  # the logits are not all near zero: the comparison means something
    d_par, d_step = (ours - ref).abs().max().item(), (stepped - ref).abs().max().item()
    print(f"\n{arch} {kwargs}: max |logit diff| forward {d_par:.2e}, step {d_step:.2e}")
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=0)
    torch.testing.assert_close(stepped, ref, atol=ATOL, rtol=0)
    return model, arch, kwargs


MAMBA_VARIANTS = {
    "tied": {},
    "untied": {"tie_word_embeddings": False},
    "bias-rank-eps": {
        "use_bias": True, "use_conv_bias": False, "time_step_rank": 5, "layer_norm_epsilon": 1e-3,
        "conv_kernel": 3, "expand": 3, "tie_word_embeddings": False,
    },  # fmt: skip
}

MAMBA2_VARIANTS = {
    "tied": {},
    "untied-2groups": {"tie_word_embeddings": False, "n_groups": 2},
    "4groups-headdim8-chunk256": {"n_groups": 4, "head_dim": 8, "chunk_size": 256},  # 8 heads, one chunk
    "bias-eps-kernel-expand": {
        "use_bias": True, "use_conv_bias": False, "layer_norm_epsilon": 1e-3, "conv_kernel": 3, "expand": 3,
        "n_groups": 3, "state_size": 4, "tie_word_embeddings": False,
    },  # fmt: skip  (d_inner 96: 6 heads of 16 in 3 groups)
    "time-step-limit": {"time_step_limit": (0.02, 0.06), "n_groups": 2},  # binds: dt ~ 0.001 ... 0.1 at init
}

NEOX_VARIANTS = {
    "parallel-pct0.25": {"use_parallel_residual": True, "rotary_pct": 0.25},
    "parallel-pct1.0": {"use_parallel_residual": True, "rotary_pct": 1.0},
    "sequential-pct0.25": {"use_parallel_residual": False, "rotary_pct": 0.25},
    "sequential-pct1.0": {"use_parallel_residual": False, "rotary_pct": 1.0},
    "tied-nobias-base-eps": {
        "tie_word_embeddings": True, "attention_bias": False, "rotary_emb_base": 500, "rotary_pct": 0.5,
        "layer_norm_eps": 1e-3,
    },  # fmt: skip
}


@pytest.mark.parametrize("variant", MAMBA_VARIANTS)
def test_mamba_matches_transformers(variant, tmp_path):
    hf = hf_mamba(**MAMBA_VARIANTS[variant])
    hf.save_pretrained(tmp_path)
    _, arch, kwargs = compare(hf, tmp_path)
    assert arch == "mamba" and kwargs["tie_embeddings"] == hf.config.tie_word_embeddings


@pytest.mark.parametrize("variant", MAMBA2_VARIANTS)
def test_mamba2_matches_transformers(variant, tmp_path):
    hf = hf_mamba2(**MAMBA2_VARIANTS[variant])
    assert not hf.training
    hf.save_pretrained(tmp_path)
    model, arch, kwargs = compare(hf, tmp_path)
    assert arch == "mamba2" and kwargs["tie_embeddings"] == hf.config.tie_word_embeddings
    assert kwargs["n_groups"] == hf.config.n_groups and kwargs["chunk"] == hf.config.chunk_size
    assert model.layers[0].mixer.n_heads == hf.config.num_heads
    if variant == "time-step-limit":  # the clamp is not vacuous: without it the logits differ
        assert kwargs["dt_limit"] == [0.02, 0.06]
        x = torch.randint(0, V, (2, 19))
        with torch.no_grad():
            clamped = model(x)[0]
            for layer in model.layers:
                layer.mixer.dt_limit = None
            assert (model(x)[0] - clamped).abs().max() > 1e-3


def test_mamba2_decode_matches_transformers_cache(tmp_path):
    """transformers' own decoding (a prefill, then one token at a time through its cache, as bench/models.py
    times it) against our step after our forward, from the same prefix; with B/C groups."""
    hf = hf_mamba2(n_groups=2)
    hf.save_pretrained(tmp_path)
    model, _, _ = load_hf(tmp_path)
    x = torch.randint(0, V, (2, 13))
    with torch.no_grad():
        out = hf(input_ids=x[:, :9], use_cache=True)
        cache, theirs = out.cache_params, [out.logits[:, -1]]
        logits, state = model(x[:, :9])
        ours = [logits[:, -1]]
        for t in range(9, 13):
            out = hf(input_ids=x[:, t : t + 1], cache_params=cache, use_cache=True)
            cache = out.cache_params
            theirs.append(out.logits[:, -1])
            logits, state = model.step(x[:, t], state)
            ours.append(logits)
    torch.testing.assert_close(torch.stack(ours, 1), torch.stack(theirs, 1), atol=ATOL, rtol=0)
    with torch.no_grad():  # and a parallel continuation from our state (a second prefill) against the full forward
        ref = hf(input_ids=x, use_cache=False).logits
        cont, _ = model(x[:, 9:], model(x[:, :9])[1])
    torch.testing.assert_close(cont, ref[:, 9:], atol=ATOL, rtol=0)


@pytest.mark.parametrize("variant", ["tied", "bias-eps-kernel-expand"])
def test_mamba2_gradients_match_transformers(variant, tmp_path):
    """Training parity: one loss, backward through both (transformers in train mode: its torch path), the same
    gradient for every weight."""
    hf = hf_mamba2(**MAMBA2_VARIANTS[variant])
    hf.save_pretrained(tmp_path)
    model, _, kwargs = load_hf(tmp_path)
    x = torch.randint(0, V, (2, 19))
    hf.train(), model.train()
    for out in (hf(input_ids=x, use_cache=False).logits, model(x)[0]):
        torch.nn.functional.cross_entropy(out[:, :-1].reshape(-1, V), x[:, 1:].reshape(-1)).backward()
    theirs = dict(hf.named_parameters(remove_duplicate=False))
    checked = 0
    for name, p in model.named_parameters():
        if name.endswith("conv1d.bias") and not hf.config.use_conv_bias:
            continue  # ours is a zero bias standing in for none
        hf_name = {"embed.weight": "backbone.embeddings.weight", "head.weight": "lm_head.weight"}.get(
            name, f"backbone.{name}"
        )
        assert p.grad.abs().max() > 0, name
        torch.testing.assert_close(p.grad, theirs[hf_name].grad, atol=1e-5, rtol=1e-4, msg=lambda m: f"{name}: {m}")
        checked += 1
    assert checked == len(list(model.parameters())) - (0 if hf.config.use_conv_bias else kwargs["n_layers"])


@pytest.mark.parametrize("variant", NEOX_VARIANTS)
def test_gpt_neox_matches_transformers(variant, tmp_path):
    hf = hf_neox(**NEOX_VARIANTS[variant])
    hf.save_pretrained(tmp_path)
    _, arch, kwargs = compare(hf, tmp_path)
    assert arch == "pythia" and kwargs["parallel_residual"] == hf.config.use_parallel_residual


@pytest.mark.parametrize("fmt", ["sharded", "bin"])
@pytest.mark.parametrize("make", [hf_mamba, hf_mamba2, hf_neox], ids=["mamba", "mamba2", "gpt_neox"])
def test_sharded_and_bin_checkpoints(make, fmt, tmp_path):
    hf = make()
    if fmt == "sharded":
        hf.save_pretrained(tmp_path, max_shard_size="20KB")
        assert (tmp_path / "model.safetensors.index.json").is_file()
    else:  # the in-memory names (transformers >= 5 calls GPT-NeoX's head lm_head), a tied copy included
        hf.config.save_pretrained(tmp_path)
        torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    compare(hf, tmp_path / "config.json")  # a file in the folder names the folder


def test_older_checkpoint_layouts(tmp_path):
    """What older transformers wrote (e.g. EleutherAI/pythia-*): rotary_pct / rotary_emb_base in the config, no
    rope_parameters; causal-mask and RoPE buffers among the weights. Older Mamba conversions: backbone.embedding."""
    from safetensors.torch import load_file, save_file

    neox = hf_neox(rotary_pct=0.5, rotary_emb_base=500)
    neox.save_pretrained(tmp_path / "neox")
    cfg = json.loads((tmp_path / "neox/config.json").read_text())
    del cfg["rope_parameters"]
    (tmp_path / "neox/config.json").write_text(json.dumps({**cfg, "rotary_pct": 0.5, "rotary_emb_base": 500}))
    w = load_file(tmp_path / "neox/model.safetensors")
    for i in range(2):
        w[f"gpt_neox.layers.{i}.attention.bias"] = torch.ones(1, 1, 16, 16, dtype=torch.bool).tril()
        w[f"gpt_neox.layers.{i}.attention.masked_bias"] = torch.tensor(-1e9)
        w[f"gpt_neox.layers.{i}.attention.rotary_emb.inv_freq"] = torch.ones(2)
    save_file(w, tmp_path / "neox/model.safetensors")
    compare(neox, tmp_path / "neox")

    mamba = hf_mamba()
    mamba.save_pretrained(tmp_path / "mamba")
    w = load_file(tmp_path / "mamba/model.safetensors")
    w["backbone.embedding.weight"] = w.pop("backbone.embeddings.weight")
    save_file(w, tmp_path / "mamba/model.safetensors")
    compare(mamba, tmp_path / "mamba")


@pytest.mark.parametrize(
    "make",
    [hf_mamba, hf_mamba2, lambda: hf_mamba2(n_groups=2, time_step_limit=(0.0, 0.05), use_bias=True), hf_neox],
    ids=["mamba", "mamba2", "mamba2-groups-limit-bias", "gpt_neox"],
)
def test_loaded_model_saves_as_our_checkpoint(make, tmp_path):
    """What a fine-tuning run from pretrained weights needs: arch and kwargs rebuild the model."""
    make().save_pretrained(tmp_path / "hf")
    model, arch, kwargs = load_hf(tmp_path / "hf")
    vocab = Vocab([PAD, *(f"t{i}" for i in range(V - 1))])
    save_checkpoint(tmp_path / "run", model, arch=arch, model_kwargs=kwargs, vocab=vocab, task="addition", step=0)
    again = load_checkpoint(tmp_path / "run").model
    x = torch.randint(0, V, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(again(x)[0], model(x)[0], atol=0, rtol=0)


def saved_config(make, tmp_path):
    make().save_pretrained(tmp_path)
    return json.loads((tmp_path / "config.json").read_text())


def one_line_error(tmp_path, cfg, match):
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=match) as e:
        load_hf(tmp_path)
    assert "\n" not in str(e.value)


def test_unknown_model_type_is_a_one_line_error(tmp_path):
    llama = {"model_type": "llama", "hidden_size": 32}
    one_line_error(tmp_path, llama, r"model_type 'llama'.*supported: gpt_neox, mamba, mamba2")
    one_line_error(tmp_path, {"hidden_size": 32}, "model_type None")


@pytest.mark.parametrize(
    "make, change, match",
    [
        (hf_mamba, {"hidden_act": "gelu"}, "hidden_act='gelu'"),
        (hf_mamba, {"expand": 1.5, "intermediate_size": 48}, "expand=1.5"),
        (hf_neox, {"hidden_act": "gelu_fast"}, "hidden_act='gelu_fast'"),
        (hf_neox, {"hidden_dropout": 0.1}, "hidden_dropout=0.1"),
        (hf_neox, {"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}}, "rope type 'linear'"),
        (hf_neox, {"rope_parameters": {"rope_theta": 1e4, "partial_rotary_factor": 0.375}}, "is odd"),
        (hf_neox, {"rope_parameters": None, "rotary_pct": 0.5, "partial_rotary_factor": 0.25}, "inconsistent"),
        (hf_mamba, {"num_hidden_layers": 3}, "missing: layers.2"),
        (hf_mamba2, {"hidden_act": "gelu"}, "hidden_act='gelu'"),
        (hf_mamba2, {"n_groups": 3}, "n_groups=3 does not divide num_heads=4"),
        (hf_mamba2, {"num_heads": 8}, r"num_heads \* head_dim = 8 \* 16 != expand \* hidden_size = 64"),
        (hf_mamba2, {"expand": 1.5}, "expand=1.5"),
        (hf_mamba2, {"norm_before_gate": True}, "norm_before_gate=True"),
        (hf_mamba2, {"rms_norm": False}, "rms_norm=False"),
        (hf_mamba2, {"time_step_limit": [0.1, 0.01]}, "time_step_limit"),
        (hf_mamba2, {"n_groups": 2}, "wrong shape"),
        (hf_mamba2, {"use_bias": True}, "missing: layers.0.mixer.in_proj.bias"),
        (hf_neox, {"intermediate_size": 48}, "wrong shape"),
    ],
)
def test_unsupported_or_mismatched_config_is_a_one_line_error(make, change, match, tmp_path):
    one_line_error(tmp_path, {**saved_config(make, tmp_path), **change}, match)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_hf(tmp_path / "nowhere")
    hf_mamba().save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no weights"):
        load_hf(tmp_path)
