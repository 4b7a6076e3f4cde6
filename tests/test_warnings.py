"""Each event gpupipe reports without raising reaches a user once: one typed warning
(``gpupipe.errors``) and no log record beside it, so that an application that both shows
warnings and configures logging sees one line; routed through ``logging.captureWarnings`` it is
one log record. (The GPU's lost device, the fourth such event, is checked the same way in
``test_gpu_logic.py::test_sticky_error_switches_to_the_cpu_path_for_good``; the command line's
``warning:`` lines in ``test_cli.py::test_each_warning_is_one_line_from_the_entry_point``.)"""

from __future__ import annotations

import logging
import warnings

import pytest

from gpupipe import memory
from gpupipe.config import load_config
from gpupipe.errors import AllocatorTuningWarning, ConfigWarning, GpuFallbackWarning
from gpupipe.plan import OutputSpec, plan_job
from gpupipe.frames import read_frame


def _budget_below_the_floor(monkeypatch, png_bytes) -> None:
    monkeypatch.setenv("GPUPIPE_CACHE_BYTES_MB", "10")
    assert load_config().cache.max_bytes == 64 * 2**20


def _allocator_tuning_refused(monkeypatch, png_bytes) -> None:
    monkeypatch.setattr(memory, "_applied", None)
    monkeypatch.setattr(memory, "_warned", False)
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")  # the environment's threshold wins: tuning refused
    assert memory.release_large_allocations() is False


def _frame_sent_to_the_cpu_path(monkeypatch, png_bytes) -> None:
    from gpupipe.gpu.staging import cpu_fallback

    assert isinstance(cpu_fallback(plan_job(0, read_frame(png_bytes), OutputSpec("passthrough")), "a test"), str)


EVENTS = {
    "budget-clamped": (_budget_below_the_floor, ConfigWarning, "below the floor"),
    "allocator-tuning": (_allocator_tuning_refused, AllocatorTuningWarning, "not applied"),
    "gpu-fallback": (_frame_sent_to_the_cpu_path, GpuFallbackWarning, "encoded on the CPU path"),
}


@pytest.mark.parametrize("event", EVENTS)
def test_event_is_one_typed_warning_and_no_log_record(event, monkeypatch, caplog, png_bytes):
    trigger, category, words = EVENTS[event]
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        trigger(monkeypatch, png_bytes)
    assert [(w.category, words in str(w.message)) for w in got] == [(category, True)]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.parametrize("event", EVENTS)
def test_event_through_logging_capture_warnings_is_one_record(event, monkeypatch, caplog, png_bytes):
    trigger, category, words = EVENTS[event]
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        logging.captureWarnings(True)
        try:
            trigger(monkeypatch, png_bytes)
        finally:
            logging.captureWarnings(False)
    records = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(records) == 1 and records[0].name == "py.warnings", [r.getMessage() for r in records]
    assert category.__name__ in records[0].getMessage() and words in records[0].getMessage()
