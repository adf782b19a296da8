"""Training curves from log.csv."""

from __future__ import annotations

import pandas as pd
import pytest
from PIL import Image

from voxloc.errors import InputError
from voxloc.network.curves import plot_training, read_log
from voxloc.network.validation import LOG_COLUMNS


def _log(path, n=4):
    rows = [dict.fromkeys(LOG_COLUMNS, 1.0) | {"epoch": e + 1, "val_jaccard": 0.2 * e} for e in range(n)]
    pd.DataFrame(rows).to_csv(path, index=False)


def test_plot_training_writes_a_png(tmp_path):
    _log(tmp_path / "log.csv")
    plot_training(tmp_path / "log.csv", tmp_path / "training.png", title="model quick", tau=0.5)
    with Image.open(tmp_path / "training.png") as im:
        assert im.format == "PNG" and im.width > 3 * im.height / 1.2


def test_bad_logs_are_one_line_errors(tmp_path):
    (tmp_path / "empty.csv").write_text("epoch,train_loss,val_loss,val_jaccard\n")
    with pytest.raises(InputError, match=r"empty\.csv: not a voxloc training log: has no epoch"):
        read_log(tmp_path / "empty.csv")
    pd.DataFrame({"epoch": [1], "loss": [0.3]}).to_csv(tmp_path / "other.csv", index=False)
    with pytest.raises(InputError, match=r"other\.csv: .*lacks column\(s\) train_loss, val_loss"):
        plot_training(tmp_path / "other.csv", tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
