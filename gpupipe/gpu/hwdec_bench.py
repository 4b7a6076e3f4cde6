"""How DALI's hardware JPEG decoder settings change the GPU transcode (needs a device, except as a smoke test).

:func:`hw_decoder_benchmark` runs the same JPEG frames through :class:`~gpupipe.gpu.backend.GpuBackend`
once per setting of :class:`~gpupipe.config.GpuPathConfig` (``hw_decoder_load``, with and without
the preallocation hints at the frames' size) and reports frames/s and host CPU seconds per frame,
each the median of ``repeats`` timed runs after a warm-up (which builds the DALI pipelines).
:func:`choose` picks the setting that is best across resolutions. ``device_id=None`` runs the CPU
stand-ins (DALI's ``cpu`` backend ignores the settings): only a test of the code path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..config import Config, GpuPathConfig, StagingConfig
from ..frames import read_frame
from ..plan import OutputSpec, plan_job

__all__ = ["HwdecSetting", "choose", "hw_decoder_benchmark", "settings_for"]


@dataclass(frozen=True)
class HwdecSetting:
    """One setting measured: ``hw_decoder_load`` (``None``: DALI's default) and whether the
    preallocation hints are set to the frames' size."""

    load: float | None
    hints: bool = False

    @property
    def label(self) -> str:
        """E.g. ``load 0.65 + hints``."""
        return f"load {'default' if self.load is None else f'{self.load:g}'}{' + hints' if self.hints else ''}"


def settings_for(loads: tuple[float, ...] = (0.0, 0.65, 1.0)) -> list[HwdecSetting]:
    """Every load without hints, then every load but 0 with the hints (they only serve the hardware decoder)."""
    return [HwdecSetting(x) for x in loads] + [HwdecSetting(x, True) for x in loads if x > 0]


def hw_decoder_benchmark(
    frames: dict[str, list[bytes]],
    settings: list[HwdecSetting],
    *,
    size: tuple[int, int] | None = None,
    quality: int = 90,
    repeats: int = 3,
    device_id: int | None = 0,
) -> list[dict[str, Any]]:
    """One row per (resolution, setting): ``fps`` and ``cpu_ms_per_frame`` (process CPU, all
    threads) of a JPEG transcode (fitted to ``size`` when given) of ``frames[resolution]`` in one batch."""
    from .backend import GpuBackend
    from .device import DeviceLayer

    rows: list[dict[str, Any]] = []
    for res, datas in frames.items():
        parsed = [read_frame(d) for d in datas]
        jobs = [plan_job(i, f, OutputSpec("jpeg", size, quality)) for i, f in enumerate(parsed)]
        w, h = parsed[0].width, parsed[0].height
        staging = StagingConfig(max_bytes=4 * sum(DeviceLayer.transcode_cost(j) for j in jobs) + (64 << 20))
        for s in settings:
            gp = GpuPathConfig(
                hw_decoder_load=s.load, preallocate_width_hint=w if s.hints else 0, preallocate_height_hint=h if s.hints else 0
            )
            cfg = replace(Config(), batch_size=len(jobs), staging=staging, gpu=device_id, gpu_path=gp)
            backend = GpuBackend(cfg, ops=DeviceLayer(cfg, device_id=device_id))
            try:
                backend.run(jobs)  # warm-up: pipelines built with this setting
                walls, cpus = [], []
                for _ in range(max(1, repeats)):
                    t, c = time.perf_counter(), time.process_time()
                    out = backend.run(jobs)
                    walls.append(time.perf_counter() - t)
                    cpus.append(time.process_time() - c)
                ok = all(isinstance(u, str) for u in out)
            finally:
                backend.close()
            wall, cpu = float(np.median(walls)), float(np.median(cpus))
            rows.append(
                {
                    "resolution": res,
                    "setting": s.label,
                    "hw_decoder_load": s.load,
                    "hints": s.hints,
                    "frames": len(jobs),
                    "fps": len(jobs) / wall if wall > 0 else 0.0,
                    "cpu_ms_per_frame": cpu * 1e3 / len(jobs),
                    "all_encoded": ok,
                }
            )
    return rows


def choose(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The setting whose worst resolution comes closest to that resolution's best frames/s (ties: less CPU).

    Returns ``{"setting", "hw_decoder_load", "hints", "worst_share"}``; rows whose frames did not
    all encode are not candidates.
    """
    good = [r for r in rows if r["all_encoded"]]
    if not good:
        raise ValueError("no setting encoded every frame")
    best = {res: max(r["fps"] for r in good if r["resolution"] == res) for res in {r["resolution"] for r in good}}
    by_setting: dict[str, list[dict[str, Any]]] = {}
    for r in good:
        by_setting.setdefault(r["setting"], []).append(r)
    scored = []
    for label, rs in by_setting.items():
        if len(rs) != len(best):
            continue  # not measured at every resolution
        share = min(r["fps"] / best[r["resolution"]] if best[r["resolution"]] > 0 else 0.0 for r in rs)
        scored.append((share, -sum(r["cpu_ms_per_frame"] for r in rs), label, rs[0]))
    share, _, label, r = max(scored, key=lambda x: (x[0], x[1]))
    return {"setting": label, "hw_decoder_load": r["hw_decoder_load"], "hints": r["hints"], "worst_share": share}
