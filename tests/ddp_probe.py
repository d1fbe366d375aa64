"""train.py under torchrun, recording what each rank trains on and the weights it ends with.

Used by tests/test_train.py: `torchrun ... tests/ddp_probe.py OUT_DIR <train.py flags>` writes
OUT_DIR/rank<R>.json (the (epoch, index) pairs of the training samples this rank loaded) and
OUT_DIR/rank<R>.pt (its final model state dict).
"""
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import train  # noqa: E402
from utils.engine import loop as epoch_loop  # noqa: E402
from utils.data.dataloader import YoloDataset  # noqa: E402
from utils.engine.distributed import unwrap  # noqa: E402


def main() -> int:
    out, argv = Path(sys.argv[1]), sys.argv[2:]
    rank = int(os.environ.get("RANK", "0"))
    seen = []
    load = YoloDataset.__getitem__

    def recording_getitem(dataset, key):
        if dataset.train:
            index, epoch = (dataset.key(key) if isinstance(key, int) else key)[:2]
            seen.append((epoch, int(index)))
        return load(dataset, key)

    run = epoch_loop.EpochLoop.run

    def run_and_keep_weights(loop):
        run(loop)
        torch.save(unwrap(loop.state.model).state_dict(), out / f"rank{rank}.pt")

    YoloDataset.__getitem__ = recording_getitem
    epoch_loop.EpochLoop.run = run_and_keep_weights
    code = train.main(argv)
    (out / f"rank{rank}.json").write_text(json.dumps(seen))
    return code


if __name__ == "__main__":
    sys.exit(main())
