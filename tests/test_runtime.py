"""`keep_freed_memory`: large activations freed every step are reused, not faulted in afresh each time.
`resolve_vector_math`: oneMKL's vector-math functions are called once on one thread before models run."""

import os
import subprocess
import sys

import pytest

import torch

from toolssm.runtime import VML_FUNCTIONS, keep_freed_memory, resolve_vector_math

PAGES = 5 * (64 << 20) // 4096  # five 64 MiB tensors, 4 KiB pages

SCRIPT = """
import resource, sys, torch
from toolssm.runtime import keep_freed_memory
tuned = keep_freed_memory()
for _ in range(12):  # as training's first steps do: the heap grows to its working size
    x = torch.ones(16 << 20); del x  # 64 MiB
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    x = torch.ones(16 << 20); del x  # as a training step does with its activations
print(tuned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
"""


def _faults(**env) -> tuple[str, int]:
    chosen = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "LD_PRELOAD", "TOOLSSM_MALLOC")
    clean = {k: v for k, v in os.environ.items() if k not in chosen}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env={**clean, **env}, capture_output=True, text=True,
                         check=True)  # fmt: skip
    tuned, faults = out.stdout.split()
    return tuned, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_tensors_are_reused_without_page_faults():
    tuned, faults = _faults()
    assert tuned == "True"
    assert faults < PAGES // 100, faults  # the same pages again: nearly no fault at all
    off, faults_off = _faults(TOOLSSM_MALLOC="system")
    assert off == "False"
    assert faults_off > faults  # glibc's own policy maps and faults them in afresh


@pytest.mark.parametrize(
    "env", [{"TOOLSSM_MALLOC": "system"}, {"MALLOC_MMAP_MAX_": "65536"}, {"LD_PRELOAD": "libjemalloc.so.2"}]
)
def test_an_allocator_chosen_in_the_environment_is_left_alone(monkeypatch, env):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert keep_freed_memory() is False


# torch's functions replaced by recorders before toolssm is imported: which were called, on what
RECORD = """
import threading, torch
calls = []
def recorder(name, real):
    def f(x, *a, **k):
        calls.append((name, str(x.dtype), x.numel(), threading.get_ident()))
        return real(x, *a, **k)
    return f
for name in {names!r}:
    setattr(torch, name, recorder(name, getattr(torch, name)))
import toolssm.models
print(repr((calls, threading.get_ident())))
"""


@pytest.mark.skipif(not torch.backends.mkl.is_available(), reason="torch built without MKL")
def test_importing_the_models_calls_each_vector_math_function_on_one_element_of_each_dtype():
    code = RECORD.format(names=VML_FUNCTIONS)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    calls, main = eval(out.stdout.strip().splitlines()[-1])
    seen = {(name, dtype) for name, dtype, numel, thread in calls if numel == 1 and thread == main}
    wanted = {(name, dtype) for name in VML_FUNCTIONS for dtype in ("torch.float32", "torch.float64")}
    assert wanted <= seen, sorted(wanted - seen)
    assert {"exp", "log", "sin", "cos", "tanh", "sqrt"} <= set(VML_FUNCTIONS)  # what the models compute with


def test_resolve_vector_math_leaves_threads_and_accuracy_alone():
    """It only calls the functions: it changes no thread setting and the values are torch's."""
    threads = torch.get_num_threads()
    ran = resolve_vector_math()
    assert ran == torch.backends.mkl.is_available()
    assert torch.get_num_threads() == threads
    x = torch.linspace(0.1, 0.9, 5000, dtype=torch.float64)
    x32 = x.float()  # compared with float64 on the same inputs: only the kernel's error, no input rounding
    torch.testing.assert_close(torch.exp(x32).double(), torch.exp(x32.double()), atol=0, rtol=1e-7)
