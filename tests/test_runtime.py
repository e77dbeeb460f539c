"""`keep_freed_memory`: large activations freed every step are reused, not faulted in afresh each time."""

import os
import subprocess
import sys

import pytest

from toolssm.runtime import keep_freed_memory

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
