"""Copy a finished run's report and plots from its workdir into experiments/train/results/.

Usage: python experiments/train/collect.py WORKDIR DEST [--all-maps]
Checkpoints and the per-step metrics stay in the workdir (runs/ is not versioned); the
training curves PNG carries them.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("workdir", type=Path)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--all-maps", action="store_true", help="every feature_maps_*.png, not just the first two")
    args = parser.parse_args()
    args.dest.mkdir(parents=True, exist_ok=True)
    names = ["report.json", "training_curves.png", "kernels.png"]
    maps = sorted(p.name for p in args.workdir.glob("feature_maps_*.png"))
    names += maps if args.all_maps else maps[:2]
    for name in names:
        if (args.workdir / name).exists():
            shutil.copy2(args.workdir / name, args.dest / name)
    print(f"copied {len(names)} files to {args.dest}")


if __name__ == "__main__":
    main()
