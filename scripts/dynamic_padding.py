"""The seed recipe with dynamic padding: each batch padded to its longest example.

The same script as scripts/seed_recipe.py (same model, data, Trainer), run with
``--padding dynamic``: the floor for ptexp's framework overhead in scripts/bench.py.
Any seed_recipe.py argument is accepted; a later ``--padding`` still wins.

    python scripts/dynamic_padding.py --max-train-samples 480 --epochs 2 --train-pooler
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from seed_recipe import main  # noqa: E402

if __name__ == "__main__":
    main(["--padding", "dynamic", *sys.argv[1:]])
