"""dlrecipe.allocator: glibc's thresholds, so that a training step's large tensors stop page-faulting."""
import os
import platform
import subprocess
import sys

import pytest

from dlrecipe import allocator

# one fused CNN population step (4 members of recipes/mnist1d_cnn.toml's blocks, batch 100) in a fresh process:
# the minor page faults per step of 20 steady-state steps, with glibc's defaults or after allocator.configure()
STEPS = """
import resource, sys, torch, torch.nn.functional as F
from torch import nn
from dlrecipe import allocator
from dlrecipe.search.fused import FusedNet, FusedOptimizer
if sys.argv[1] == "on":
    assert allocator.configure()
torch.set_num_threads(1)
def member(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv1d(1, 32, 5, padding=2), nn.BatchNorm1d(32), nn.ReLU(), nn.MaxPool1d(2),
                         nn.Conv1d(32, 64, 5, padding=2), nn.BatchNorm1d(64), nn.ReLU(), nn.MaxPool1d(2),
                         nn.Flatten(), nn.Linear(64 * 10, 10))
net = FusedNet([member(k) for k in range(4)])
opt = FusedOptimizer(net, "adam", [dict(lr=1e-3, weight_decay=0.0, momentum=0.0, beta1=0.9, beta2=0.999,
                                        eps=1e-8, rho=0.99)] * 4)
x, y = torch.randn(100, 1, 40), torch.randint(0, 10, (400,))
def step():
    opt.zero_grad()
    F.cross_entropy(net(x).reshape(400, 10), y).backward()
    opt.step()
for _ in range(20):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
"""


def faults_per_step(mode: str) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "LD_PRELOAD", "DLRECIPE_MALLOC")
           and not k.startswith("MALLOC_")}  # glibc's own defaults, whatever the test run was given
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    out = subprocess.run([sys.executable, "-c", STEPS, mode], capture_output=True, text=True, check=True, env=env)
    return float(out.stdout.split()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_a_configured_step_reuses_its_memory_instead_of_page_faulting():
    default = faults_per_step("off")
    if default < 300:  # (e.g. transparent huge pages always on: fewer, larger faults) nothing here to fix
        pytest.skip(f"glibc's defaults fault {default:.0f} times a step here")
    configured = faults_per_step("on")
    assert configured <= 60, (default, configured)  # steady state: the heap holds a step's tensors (one late growth
    # at most); glibc's defaults: ~1,400-1,800 faults a step on the development machine


@pytest.mark.parametrize("env, choice", [({"DLRECIPE_MALLOC": "system"}, "DLRECIPE_MALLOC=system"),
                                         ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"}, "GLIBC_TUNABLES"),
                                         ({"MALLOC_TRIM_THRESHOLD_": "0"}, "MALLOC_TRIM_THRESHOLD_"),
                                         ({"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}, "LD_PRELOAD"),
                                         ({"LD_PRELOAD": "/opt/intel/libiomp5.so"}, None),
                                         ({"MALLOC_ARENA_MAX": "2", "MALLOC_PERTURB_": "7"}, None),
                                         ({"GLIBC_TUNABLES": "glibc.rtld.nns=2"}, None), ({}, None)])
def test_the_users_own_allocator_settings_are_left_alone(monkeypatch, env, choice):
    for k in [*os.environ]:
        if k in ("DLRECIPE_MALLOC", "GLIBC_TUNABLES", "LD_PRELOAD") or k.startswith("MALLOC_"):
            monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert allocator.user_choice() == choice
    monkeypatch.setattr(allocator, "_DONE", [])
    if choice is not None:
        assert allocator.configure() is False  # nothing set
