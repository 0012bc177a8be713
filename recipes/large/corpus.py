"""Copy the Python files of the installed packages (site-packages, not the standard library) into one directory, in
sorted order, up to a size limit: the corpus of the large teacher (`ptp train --data DIR` splits it by file).

Usage: python recipes/large/corpus.py OUT_DIR [--max-mb 60]
"""

import argparse
import shutil
import site
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("out")
parser.add_argument("--max-mb", type=float, default=60.0)
args = parser.parse_args()
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
budget, total, count = int(args.max_mb * 1e6), 0, 0
for root in sorted(site.getsitepackages()):
    for path in sorted(Path(root).rglob("*.py")):
        size = path.stat().st_size
        if total + size > budget:
            break
        target = out / str(path.relative_to(root)).replace("/", "__")
        shutil.copyfile(path, target)
        total, count = total + size, count + 1
print(f"{count} files, {total / 1e6:.1f} MB from {site.getsitepackages()} into {out}")
