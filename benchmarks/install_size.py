"""Disk size and package count of a fresh virtualenv with foundry installed.

    python benchmarks/install_size.py                 # the core install
    python benchmarks/install_size.py --extras all    # everything

Each run makes a new venv in a temporary folder, installs the CPU torch wheel first (the
Makefile's way: constraints/cpu.txt, /opt/wheels when it exists, else PyTorch's CPU
index), then `pip install -e .[EXTRAS]`, and prints what `du -sh` and `pip list` say.
The size counts the whole venv (pip, setuptools and the .pyc files pip compiles).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout


def measure(extras: str) -> dict[str, object]:
    wheels = Path("/opt/wheels")
    source = (
        ["--find-links", str(wheels)]
        if wheels.is_dir()
        else ["--extra-index-url", "https://download.pytorch.org/whl/cpu"]
    )
    with tempfile.TemporaryDirectory(prefix="foundry-size-") as tmp:
        venv = Path(tmp) / "venv"
        run(sys.executable, "-m", "venv", str(venv))
        pip = [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "-q",
            *source,
            "-c",
            "constraints/cpu.txt",
        ]
        started = time.perf_counter()
        run(*pip, "torch")
        run(*pip, "-e", f".[{extras}]" if extras else ".")
        seconds = time.perf_counter() - started
        size_kib = int(run("du", "-sk", str(venv)).split()[0])
        listed = run(str(venv / "bin" / "python"), "-m", "pip", "list", "--format=freeze")
        packages = [line.split("==")[0] for line in listed.splitlines() if line.strip()]
    return {
        "extras": extras or "(core)",
        "size_gib": round(size_kib / 2**20, 2),
        "size_mib": round(size_kib / 2**10),
        "packages": len(packages),
        "nvidia_packages": sum(p.lower().startswith("nvidia-") for p in packages),
        "install_s": round(seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--extras",
        action="append",
        default=None,
        help="extras to install (repeat for several runs; '' = core)",
    )
    args = parser.parse_args()
    for extras in args.extras or [""]:
        print(measure(extras), flush=True)


if __name__ == "__main__":
    main()
