"""kx.callbacks.TensorBoard: the event files it writes, read back without TensorFlow."""

from __future__ import annotations

import ast
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

import kerax as kx
from kerax import errors, layers
from kerax.training.callbacks import tensorboard as tb_module

event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2")


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1  # Castagnoli, reflected
        table.append(c)
    return table


_TABLE = _crc32c_table()


def _masked_crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    c ^= 0xFFFFFFFF
    return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF  # TFRecord's mask


def read_events(folder: Path) -> list:
    """Every Event in ``folder``'s event files; checks the TFRecord framing and both CRCs."""
    events = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        raw, pos = path.read_bytes(), 0
        while pos < len(raw):
            header = raw[pos:pos + 8]
            (length,) = struct.unpack("<Q", header)
            (length_crc,) = struct.unpack("<I", raw[pos + 8:pos + 12])
            data = raw[pos + 12:pos + 12 + length]
            (data_crc,) = struct.unpack("<I", raw[pos + 12 + length:pos + 16 + length])
            assert length_crc == _masked_crc32c(header) and data_crc == _masked_crc32c(data)
            events.append(event_pb2.Event.FromString(data))
            pos += 16 + length
    return events


def scalars(events: list) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] in file order."""
    out: dict[str, list] = {}
    for e in events:
        for v in e.summary.value:
            if v.HasField("simple_value"):
                out.setdefault(v.tag, []).append((e.step, v.simple_value))
    return out


def texts(events: list) -> dict[str, list[str]]:
    return {v.tag: [s.decode() for s in v.tensor.string_val]
            for e in events for v in e.summary.value if v.tensor.string_val}


def _data(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    return x, (x[:, 0] + x[:, 1] > 0).astype(np.int32)


def _model(lr):
    model = kx.Sequential([layers.Dense(8, activation="relu", input_shape=(4,), name="hidden"),
                           layers.Dense(2, name="logits")])
    model.compile(optimizer=kx.optimizers.Adam(lr),
                  loss=kx.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


def test_epoch_scalars_learning_rate_and_summary_match_history(tmp_path):
    x, y = _data(48)
    model = _model(0.0123)
    cb = kx.callbacks.TensorBoard(tmp_path / "run")
    history = model.fit(x, y, batch_size=16, epochs=3, validation_data=_data(20, seed=1),
                        callbacks=[cb], verbose=0, seed=0)
    train_events, val_events = read_events(tmp_path / "run" / "train"), read_events(tmp_path / "run" / "validation")
    train, val = scalars(train_events), scalars(val_events)
    assert set(train) == {"epoch_loss", "epoch_accuracy", "epoch_learning_rate"}
    assert set(val) == {"epoch_loss", "epoch_accuracy"}
    for name in ("loss", "accuracy"):
        assert [s for s, _ in train[f"epoch_{name}"]] == [0, 1, 2]
        assert [s for s, _ in val[f"epoch_{name}"]] == [0, 1, 2]
        # simple_value is a float32
        np.testing.assert_array_equal([v for _, v in train[f"epoch_{name}"]], np.float32(history.history[name]))
        np.testing.assert_array_equal([v for _, v in val[f"epoch_{name}"]], np.float32(history.history[f"val_{name}"]))
    assert train["epoch_learning_rate"] == [(e, np.float32(0.0123)) for e in range(3)]
    assert float(model.optimizer.learning_rate) == pytest.approx(0.0123)
    (summary,) = texts(train_events)["graph/text_summary"]  # tensorboardX adds the suffix
    assert "hidden (Dense)" in summary and "logits (Dense)" in summary and "Total params: 58" in summary
    assert texts(val_events) == {}
    assert cb._writers == {}  # closed at the end of training


def test_batch_scalars_every_n_batches_and_a_scheduled_rate(tmp_path):
    x, y = _data(48)  # 3 batches of 16 per epoch
    model = _model(0.1)
    schedule = kx.callbacks.LearningRateScheduler(lambda epoch: 0.1 * 0.5 ** epoch)
    every = kx.callbacks.TensorBoard(tmp_path / "every", update_freq="batch", write_graph=False)
    second = kx.callbacks.TensorBoard(tmp_path / "second", update_freq=2, write_graph=False)
    history = model.fit(x, y, batch_size=16, epochs=3, callbacks=[schedule, every, second], verbose=0, seed=0)

    events = read_events(tmp_path / "every" / "train")
    got = scalars(events)
    assert texts(events) == {} and not (tmp_path / "every" / "validation").exists()
    assert [s for s, _ in got["batch_loss"]] == list(range(1, 10))
    assert [s for s, _ in got["batch_accuracy"]] == list(range(1, 10))
    # The batch logs average over the epoch so far: the last batch of an epoch is the epoch's value.
    np.testing.assert_array_equal([got["batch_loss"][i][1] for i in (2, 5, 8)], np.float32(history.history["loss"]))
    np.testing.assert_allclose([v for _, v in got["epoch_learning_rate"]], [0.1, 0.05, 0.025], rtol=1e-7)
    np.testing.assert_array_equal([v for _, v in got["epoch_learning_rate"]], np.float32(history.history["learning_rate"]))

    got2 = scalars(read_events(tmp_path / "second" / "train"))
    assert [s for s, _ in got2["batch_loss"]] == [2, 4, 6, 8]
    assert got2["batch_loss"] == [got["batch_loss"][s - 1] for s in (2, 4, 6, 8)]
    assert got2["epoch_loss"] == got["epoch_loss"]


def test_only_the_chief_writes_and_epoch_mode_skips_batch_hooks(tmp_path, monkeypatch):
    cb = kx.callbacks.TensorBoard(tmp_path / "run", update_freq=1)
    assert cb.wants("on_train_batch_end") and not kx.callbacks.TensorBoard(tmp_path).wants("on_train_batch_end")
    monkeypatch.setattr(tb_module, "_is_chief", lambda: False)
    assert not cb.wants("on_train_batch_end")
    cb.set_model(_model(0.01))
    cb.on_train_begin()
    cb.on_train_batch_end(0, {"loss": 1.0})
    cb.on_epoch_end(0, {"loss": 1.0, "val_loss": 2.0})
    cb.on_train_end()
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "sometimes"])
def test_update_freq_must_be_epoch_batch_or_a_positive_int(tmp_path, bad):
    with pytest.raises(errors.ConfigError, match=r"update_freq must be 'epoch', 'batch' or an int >= 1; received update_freq="):
        kx.callbacks.TensorBoard(tmp_path, update_freq=bad)


def test_missing_tensorboardx_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # makes the import fail
    with pytest.raises(ImportError, match=r'needs the tensorboardX package.*pip install "kerax\[tensorboard\]"'):
        kx.callbacks.TensorBoard(tmp_path)


def test_importing_the_module_does_not_import_tensorboardx():
    tree = ast.parse(Path(tb_module.__file__).read_text())
    top_level = {a.name for node in tree.body if isinstance(node, ast.Import) for a in node.names}
    top_level |= {node.module for node in tree.body if isinstance(node, ast.ImportFrom)}
    assert not any(name and name.startswith("tensorboardX") for name in top_level)
