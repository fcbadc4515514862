"""ddpm_repro.allocator: freed blocks stay with the process, unless the user chose otherwise."""

import platform
import subprocess
import sys
import textwrap

import pytest

from ddpm_repro.allocator import _user_has_chosen

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

# Thirteen 8 MiB tensors live at once, then freed, round after round (a training step's
# activations): the kept blocks are reused, so after two rounds no page is faulted in again.
# (With glibc's defaults the count depends on the heap's layout; the whole-process gain is
# measured in benchmarks/README.md, not here.)
ROUNDS = textwrap.dedent(
    """
    import resource, torch
    from ddpm_repro.allocator import keep_freed_memory
    applied = keep_freed_memory()
    faults = []
    for _ in range(10):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        xs = [torch.ones(2 * 2**20) for _ in range(13)]
        del xs
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(applied, *faults)
    """
)


def test_freed_blocks_are_reused_without_faulting_their_pages_in_again():
    out = subprocess.run([sys.executable, "-c", ROUNDS], capture_output=True, text=True, check=True)
    applied, *faults = out.stdout.split()
    assert applied == str(GLIBC)  # applied exactly where glibc's mallopt exists
    if GLIBC:
        pages = 13 * 8 * 2**20 // 4096
        assert max(map(int, faults[2:])) < pages // 100, faults


@pytest.mark.parametrize(
    "environ,chosen",
    [
        ({}, False),
        ({"LD_PRELOAD": "/usr/lib/libfakeroot.so"}, False),
        ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"}, True),
        ({"MALLOC_ARENA_MAX": "2"}, True),
        ({"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"}, True),
    ],
)
def test_the_users_own_allocator_settings_win(environ, chosen):
    assert _user_has_chosen(environ) is chosen
