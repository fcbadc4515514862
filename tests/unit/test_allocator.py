"""ddpm_repro.allocator: freed blocks stay with the process, unless the user chose otherwise."""

import platform
import subprocess
import sys
import textwrap

import pytest

from ddpm_repro.allocator import _user_has_chosen

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

# Thirteen 8 MiB tensors (a training step's activations) allocated, then freed, reading
# glibc's own accounting (mallinfo2; mallinfo before glibc 2.33): with the setting they come
# from the heap and stay there, free for the next step; with glibc's defaults they are mapped
# one by one and unmapped when freed, to be faulted in again. (The whole-process gain is
# measured in benchmarks/README.md, "The C allocator", not here.)
HEAP = textwrap.dedent(
    """
    import ctypes, sys, torch
    from ddpm_repro.allocator import keep_freed_memory
    applied = keep_freed_memory() if sys.argv[1] == "keep" else False
    libc = ctypes.CDLL("libc.so.6")
    field = ctypes.c_size_t if hasattr(libc, "mallinfo2") else ctypes.c_int
    class Info(ctypes.Structure):
        _fields_ = [(n, field) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                          "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
    info = getattr(libc, "mallinfo2", None) or libc.mallinfo
    info.restype = Info
    xs = [torch.ones(2 * 2**20) for _ in range(13)]
    mapped = info().hblkhd
    del xs
    print(applied, mapped >> 20, info().fordblks >> 20)
    """
)


def _heap(mode: str) -> tuple[str, int, int]:
    """(applied, MiB in mapped blocks while the tensors live, MiB free in the heap after), in a
    fresh interpreter with the setting ("keep") or without it."""
    out = subprocess.run([sys.executable, "-c", HEAP, mode], capture_output=True, text=True, check=True)
    applied, mapped, free = out.stdout.split()
    return applied, int(mapped), int(free)


def test_freed_activations_stay_in_the_heap_for_the_next_step():
    from ddpm_repro.allocator import keep_freed_memory

    if not GLIBC:  # no mallopt, no mallinfo: the setting does not apply, and says so
        assert keep_freed_memory() is False
        return
    applied, mapped, free = _heap("keep")
    assert applied == "True"
    assert mapped < 13 * 8 // 2  # the blocks came from the heap, not from their own mappings
    assert free >= 13 * 8  # and once freed they stay there, ready for reuse
    # (glibc's defaults, for contrast, read 108 MiB mapped and 0 free here on glibc 2.36)


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
