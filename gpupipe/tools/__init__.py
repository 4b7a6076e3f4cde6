"""Benchmark and measurement tooling: the benchmark matrix (``gpupipe bench``), the memory soak,
cache traces against Belady's optimum, reports and charts, ffmpeg-made frames, and the GPU goal
checks. The library never imports this package; it needs the ``bench`` extra (matplotlib,
imageio-ffmpeg) for charts and ffmpeg frames.
"""
