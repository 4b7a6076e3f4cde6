"""The hardware JPEG decoder measurement (``gpupipe.tools.hwdec``) without a GPU: the choice, the
table, the settings reaching DALI, and the CPU smoke run of the code path (figures meaningless)."""

from __future__ import annotations

import json

import pytest

from gpupipe.gpu.hwdec_bench import HwdecSetting, choose, settings_for
from gpupipe.tools.hwdec import format_table, main


def _row(res, setting, fps, cpu=1.0, ok=True):
    return {"resolution": res, "setting": setting.label, "hw_decoder_load": setting.load, "hints": setting.hints,
            "frames": 8, "fps": fps, "cpu_ms_per_frame": cpu, "all_encoded": ok}  # fmt: skip


def test_settings_measure_each_load_and_the_hints_where_the_hardware_decoder_works():
    assert [s.label for s in settings_for()] == ["load 0", "load 0.65", "load 1", "load 0.65 + hints", "load 1 + hints"]


def test_choose_the_setting_whose_worst_resolution_is_best():
    a, b, c = HwdecSetting(0.0), HwdecSetting(0.65), HwdecSetting(1.0)
    rows = [
        _row("4k", a, 300),
        _row("1080p", a, 1000),
        _row("4k", b, 500),
        _row("1080p", b, 700),
        _row("4k", c, 480),
        _row("1080p", c, 950),
    ]
    ch = choose(rows)  # c: 96 % of 4K's best, 95 % of 1080p's; b loses 30 % at 1080p; a 40 % at 4K
    assert ch["setting"] == "load 1" and ch["hw_decoder_load"] == 1.0 and ch["worst_share"] == pytest.approx(0.95)
    rows.append(_row("4k", HwdecSetting(1.0, True), 2000, ok=False))  # fast but wrong: not a candidate
    assert choose(rows)["setting"] == "load 1"
    tie = [_row("4k", a, 100, cpu=2.0), _row("4k", b, 100, cpu=1.0)]
    assert choose(tie)["setting"] == "load 0.65"  # same f/s: less CPU
    with pytest.raises(ValueError, match="no setting"):
        choose([_row("4k", a, 100, ok=False)])
    text = format_table(rows[:6], ch)
    assert "| 4k | load 0.65 | 8 | 500.0 | 1.00 | yes |" in text
    assert "chosen: load 1 (gpu_path.hw_decoder_load: 1)" in text and "default stays DALI's own" in text


def test_without_a_gpu_it_skips_or_runs_the_cpu_stand_ins(tmp_path, capsys, monkeypatch):
    pytest.importorskip("nvidia.dali")
    pytest.importorskip("nvidia.nvimgcodec")
    monkeypatch.setattr("gpupipe.gpu.gpu_available", lambda i=0: (False, "test: no device"))
    assert main([]) == 3 and "SKIP: hardware JPEG decoder settings: no GPU (test: no device)" in capsys.readouterr().out
    out = tmp_path / "hw.json"
    assert main(["--cpu-smoke", "--frames", "2", "--repeats", "1", "--out", str(out)]) == 0
    d = json.loads(out.read_text())
    assert not d["gpu"] and len(d["rows"]) == 2 * len(settings_for()) and all(r["all_encoded"] for r in d["rows"])
    assert d["choice"]["setting"] in {s.label for s in settings_for()}


def test_the_device_layer_passes_the_config_to_dalis_decoder():
    pytest.importorskip("nvidia.dali")
    pytest.importorskip("nvidia.nvimgcodec")
    from dataclasses import replace

    from gpupipe.config import Config, GpuPathConfig
    from gpupipe.gpu.device import DeviceLayer

    cfg = replace(Config(), gpu_path=GpuPathConfig(string_threads=2, hw_decoder_load=0.0, preallocate_width_hint=64))
    layer = DeviceLayer(cfg, device_id=None, dali_threads=1)
    assert layer.decoder.decoder_args == {"hw_decoder_load": 0.0, "preallocate_width_hint": 64}
    assert layer.strings.threads == 2
    layer.close()
