"""The command line sets OMP_WAIT_POLICY=PASSIVE before torch loads, unless the user chose a policy.

Both halves matter: ``import ppyoloe_sod`` must not import torch (else ``python -m ppyoloe_sod`` would load
libgomp before ``main`` runs and the setting would come too late), and ``main`` must leave a user's choice alone.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = ("import os, sys\n"
         "{before}\n"
         "from ppyoloe_sod.__main__ import set_openmp_defaults\n"
         "set_openmp_defaults()\n"
         "print(os.environ.get('OMP_WAIT_POLICY', 'unset'))\n")


def _run(code: str, policy: str | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy is not None:
        env["OMP_WAIT_POLICY"] = policy
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_importing_the_package_and_its_cli_does_not_load_torch():
    code = ("import sys, ppyoloe_sod, ppyoloe_sod.__main__\n"
            "print('torch' in sys.modules, callable(ppyoloe_sod.create_model), 'torch' in sys.modules)")
    assert _run(code) == "False True True"  # the public names still load (and bring torch) on first use


@pytest.mark.parametrize(("policy", "before", "expected"), [
    (None, "", "PASSIVE"),
    ("ACTIVE", "", "ACTIVE"),  # the user's choice stands
    (None, "import torch", "unset"),  # too late for libgomp: leave the environment alone
])
def test_cli_sets_the_passive_wait_policy_only_when_it_can_matter(policy, before, expected):
    assert _run(PROBE.format(before=before), policy) == expected
