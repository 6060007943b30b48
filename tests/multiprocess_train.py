"""One process of a multi-process ``jaxcnn train`` on the synthetic data of ``test_train.py``:
``python multiprocess_train.py [jaxcnn train flags]``, run by ``test_distributed.py`` once per
process. The flags go to ``jaxcnn.train.main`` as given; only the dataset is replaced."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from jaxcnn import train  # noqa: E402
from jaxcnn.train import loop  # noqa: E402
from test_train import DATA  # noqa: E402

if __name__ == "__main__":
    loop.load_dataset = lambda config: DATA   # what train.main's run loads
    sys.exit(train.main(sys.argv[1:]))
