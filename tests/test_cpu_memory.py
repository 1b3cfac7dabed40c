"""A CPU run keeps the buffers it frees for reuse instead of faulting them in again every step, and
starts with what earlier runs in the process freed handed back (its peak memory is its own)."""
import platform
import resource

import pytest
import torch

from harness.core.measure import current_memory, settle_cpu_memory

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="glibc's allocator")
CPU = torch.device("cpu")


def _faults_allocating(megabytes: int, times: int) -> int:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(times):
        torch.ones(megabytes * 2**18).sum()  # float32: written once, read, freed
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def test_a_freed_buffer_is_reused_without_faulting_its_pages_in_again():
    pages = 48 * 2**20 // resource.getpagesize()
    assert settle_cpu_memory()
    _faults_allocating(48, 1)
    # glibc's default maps anything above 32 MB afresh: about `pages` faults on every allocation
    assert _faults_allocating(48, 10) < 2 * pages


def test_memory_freed_before_a_run_is_handed_back_when_it_starts():
    assert settle_cpu_memory()
    buffer = torch.ones(256 * 2**18)  # 256 MB, kept in the heap once freed
    held = current_memory(CPU)
    del buffer
    assert current_memory(CPU) > held - 64, "freed, but kept for reuse"
    settle_cpu_memory()
    assert current_memory(CPU) < held - 192
