"""A stand-in for the real ffmpeg, for the front's pass-through tests: it records its argv and fails as ffmpeg 9 does.

Run as a script (``#!`` the test's Python). ``$FAKE_FFMPEG_RECORD`` gets one JSON line per run:
``{"argv": [...], "mark": $GPUPIPE_FFMPEG_FRONT_EXEC}``. Like ffmpeg: ``-version`` prints its
version line on stdout (exit 0); an unknown option is refused on stderr with exit 8 before
anything is opened; a missing input file is reported on stderr with exit 254; with
``-hide_banner`` absent and the log level at ``info`` a banner line goes to stderr first.
Anything else succeeds (exit 0) without writing a file.
"""

from __future__ import annotations

import json
import os
import sys

KNOWN = {
    "-y", "-n", "-i", "-ss", "-t", "-vf", "-q:v", "-compression_level", "-start_number", "-f", "-hide_banner",
    "-nostdin", "-nostats", "-loglevel", "-v", "-noaccurate_seek", "-frames:v", "-c:v", "-version", "-filters",
    "-encoders", "-threads", "-hwaccel", "-r", "-pix_fmt", "-framerate", "-s",
}
VALUED = {"-i", "-ss", "-t", "-vf", "-q:v", "-compression_level", "-start_number", "-f", "-loglevel", "-v", "-frames:v",
          "-c:v", "-threads", "-hwaccel", "-r", "-pix_fmt", "-framerate", "-s"}


def main(argv: list[str]) -> int:
    record = os.environ.get("FAKE_FFMPEG_RECORD")
    if record:
        with open(record, "a", encoding="utf-8") as f:
            f.write(json.dumps({"argv": argv, "mark": os.environ.get("GPUPIPE_FFMPEG_FRONT_EXEC")}) + "\n")
    if argv == ["-version"]:
        print("ffmpeg version fake-9.0 Copyright (c) 2000-2026 the FFmpeg developers")
        return 0
    i, inputs = 0, []
    while i < len(argv):
        tok = argv[i]
        if tok.startswith("-") and tok not in KNOWN:
            print(f"Unrecognized option '{tok[1:]}'.\nError splitting the argument list: Option not found", file=sys.stderr)
            return 8
        if tok == "-i":
            inputs.append(argv[i + 1])
        i += 2 if tok in VALUED else 1
    if "-hide_banner" not in argv:
        print("ffmpeg version fake-9.0 Copyright (c) 2000-2026 the FFmpeg developers", file=sys.stderr)
    for path in inputs:
        if not os.path.exists(path):
            print(
                "[in#0 @ 0x55cad6998d00] Error opening input: No such file or directory\n"
                f"Error opening input file {path}.\nError opening input files: No such file or directory",
                file=sys.stderr,
            )
            return 254
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
