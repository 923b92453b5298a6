"""The user-facing data pipeline: ``kx.data.batches`` cuts arrays in ``fit``'s order,
``kx.data.from_iterable`` bridges other loaders into ``fit``, and the augmentations in
``kx.data.augment`` match NumPy references on the draws they expose."""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kerax as kx
import kerax.data  # noqa: F401  (kx.data)
from kerax import errors, layers
from kerax.data import augment

SCCE = kx.losses.SparseCategoricalCrossentropy(from_logits=True)


def _blobs(n=48, classes=3, features=4, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=3.0, size=(classes, features))
    y = rng.integers(0, classes, n)
    return (centers[y] + rng.normal(size=(n, features))).astype(np.float32), y.astype(np.int32)


def _model():
    model = kx.Sequential([layers.Dense(8, activation="relu", input_shape=(4,)), layers.Dense(3)])
    model.compile(optimizer=kx.optimizers.Adam(3e-2), loss=SCCE)
    return model


def _same_params(a, b):
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6), a, b)


# -- batches -----------------------------------------------------------------------------------


def test_batches_in_order_with_the_last_batch_partial_or_dropped():
    x, y = np.arange(30, dtype=np.float32).reshape(10, 3), np.arange(10, dtype=np.int32)
    out = list(kx.data.batches(x, y, batch_size=4))
    assert [len(b[0]) for b in out] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in out]), x)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in out]), y)
    dropped = list(kx.data.batches(x, y, batch_size=4, drop_remainder=True, epochs=2))
    assert [len(b[0]) for b in dropped] == [4, 4, 4, 4]
    np.testing.assert_array_equal(dropped[2][0], x[:4])


def test_batches_shuffle_is_a_seeded_permutation_per_epoch():
    x = np.arange(11, dtype=np.float32)
    out = list(kx.data.batches(x, x * 2, batch_size=3, shuffle=True, seed=5, epochs=3))
    assert len(out) == 3 * 4
    for e in range(3):
        rows = np.concatenate([b[0] for b in out[4 * e:4 * e + 4]])
        # the reference: NumPy's generator seeded with (seed, epoch), as fit shuffles
        np.testing.assert_array_equal(rows, np.random.default_rng([5, e]).permutation(11))
        np.testing.assert_array_equal(np.concatenate([b[1] for b in out[4 * e:4 * e + 4]]), rows * 2)
    again = list(kx.data.batches(x, None, batch_size=3, shuffle=True, seed=5, epochs=3))
    assert all(b[1] is None for b in again)
    np.testing.assert_array_equal(np.concatenate([b[0] for b in again]), np.concatenate([b[0] for b in out]))


def test_batches_keep_dict_and_list_structures():
    a, b = np.arange(12.0).reshape(6, 2), np.arange(6.0)
    (xb, yb), = list(kx.data.batches({"a": a, "b": b}, [a, b], batch_size=6))[:1]
    assert set(xb) == {"a", "b"} and isinstance(yb, list) and len(yb) == 2
    np.testing.assert_array_equal(xb["a"], a)
    np.testing.assert_array_equal(yb[1], b)


def test_fit_on_shuffled_batches_equals_fit_with_shuffle():
    x, y = _blobs(n=48)
    gen = kx.data.batches(x, y, batch_size=12, shuffle=True, seed=7, epochs=2)
    model = _model()
    model.fit(gen, epochs=2, steps_per_epoch=4, verbose=0, seed=7)
    reference = _model()
    reference.fit(x, y, batch_size=12, epochs=2, shuffle=True, verbose=0, seed=7)
    _same_params(model.params, reference.params)


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(y=np.zeros(9)), "x has 10 samples, y has 9"),
    (dict(batch_size=0), r"batches: batch_size must be a positive int; received batch_size=0"),
    (dict(batch_size=2.5), r"batch_size must be a positive int; received batch_size=2.5"),
    (dict(epochs=0), r"batches: epochs must be a positive int; received epochs=0"),
    (dict(batch_size=16, drop_remainder=True), r"leaves no batch of the 10 samples; expected at least 16"),
])
def test_batches_errors(kwargs, pattern):
    with pytest.raises(errors.DataError, match=pattern):
        kx.data.batches(np.zeros((10, 2)), **kwargs)  # raised at the call, not at next()


def test_batches_empty_data():
    with pytest.raises(errors.DataError, match="dataset is empty: x has 0 samples"):
        kx.data.batches(np.zeros((0, 3)), np.zeros(0))


# -- from_iterable -----------------------------------------------------------------------------


class FakeTensor:
    """Stands in for a torch tensor: .numpy() only after .detach() (and .cpu())."""

    def __init__(self, value, attached=True):
        self.value, self.attached = np.asarray(value), attached
        self.shape = self.value.shape

    def detach(self):
        return FakeTensor(self.value, attached=False)

    def cpu(self):
        return self

    def numpy(self):
        if self.attached:
            raise RuntimeError("Can't call numpy() on Tensor that requires grad")
        return self.value


class FakeLoader:
    """A DataLoader-like re-iterable: every iter() starts again, batches of FakeTensors."""

    def __init__(self, x, y, batch_size):
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self):
        return math.ceil(len(self.x) / self.batch_size)

    def __iter__(self):
        for i in range(0, len(self.x), self.batch_size):
            yield FakeTensor(self.x[i:i + self.batch_size]), FakeTensor(self.y[i:i + self.batch_size])


def test_from_iterable_converts_and_is_re_iterable():
    x, y = _blobs(n=10)
    data = kx.data.from_iterable(FakeLoader(x, y, 4))
    assert len(data) == 3 and iter(data) is not data
    for _ in range(2):  # restarts every time, like the loader
        out = list(data)
        assert all(isinstance(a, np.ndarray) for b in out for a in b)
        np.testing.assert_array_equal(np.concatenate([b[0] for b in out]), x)
        np.testing.assert_array_equal(np.concatenate([b[1] for b in out]), y)


@pytest.fixture(scope="module")
def trained_on_arrays():
    """The reference: fit on the arrays in order, batches of 12, two epochs."""
    x, y = _blobs(n=48)
    reference = _model()
    reference.fit(x, y, batch_size=12, epochs=2, shuffle=False, verbose=0, seed=3)
    return x, y, reference.params


def test_fit_on_a_loader_equals_fit_on_arrays_and_learns(trained_on_arrays):
    x, y, reference = trained_on_arrays
    model = _model()
    history = model.fit(kx.data.from_iterable(FakeLoader(x, y, 12)), epochs=2, verbose=0, seed=3)
    assert history.history["loss"][1] < history.history["loss"][0]
    _same_params(model.params, reference)


def test_generator_with_map_fn_is_one_shot_and_trains_like_arrays(trained_on_arrays):
    x, y, reference = trained_on_arrays

    def records():  # dict batches, as many loaders give, with jax arrays and plain lists
        while True:
            for i in range(0, 48, 12):
                yield {"image": jnp.asarray(x[i:i + 12]), "label": y[i:i + 12].tolist()}

    data = kx.data.from_iterable(records(), map_fn=lambda b: (b["image"], b["label"]))
    assert iter(data) is data
    model = _model()
    model.fit(data, epochs=2, steps_per_epoch=4, verbose=0, seed=3)
    _same_params(model.params, reference)


def test_from_iterable_keeps_several_inputs_and_reads_nested_lists_as_one_array():
    batch = ([FakeTensor(np.ones((2, 3))), FakeTensor(np.zeros((2, 1)))], [0, 1], (0.5, 1.0))
    (x, y, sw), = list(kx.data.from_iterable([batch]))
    assert isinstance(x, list) and [a.shape for a in x] == [(2, 3), (2, 1)]
    np.testing.assert_array_equal(y, [0, 1])
    np.testing.assert_array_equal(sw, [0.5, 1.0])
    (x, y), = list(kx.data.from_iterable([([[1, 2], [3, 4]], [np.float32(0), np.float32(1)])]))
    assert x.shape == (2, 2) and y.shape == (2,)
    (d,) = list(kx.data.from_iterable([{"x": FakeTensor([[1.0]]), "y": [1]}]))
    np.testing.assert_array_equal(d["x"], [[1.0]])


def test_from_iterable_errors():
    with pytest.raises(errors.DataError, match=r"batch 1 must be \(x, y\) or \(x, y, sample_weight\); "
                                               r"received a dict with keys \['image', 'label'\]\. Pass map_fn"):
        list(kx.data.from_iterable([(np.ones(2), np.ones(2)), {"image": np.ones(2), "label": np.ones(2)}]))
    with pytest.raises(errors.DataError, match=r"received a tuple of length 4"):
        list(kx.data.from_iterable([(np.ones(2), np.ones(2))], map_fn=lambda b: b + b))
    with pytest.raises(errors.DataError, match="from_iterable: map_fn must be callable; received int"):
        kx.data.from_iterable([], map_fn=3)
    with pytest.raises(errors.DataError, match="from_iterable: expected an iterable of batches; received int"):
        kx.data.from_iterable(5)


# -- augmentation ------------------------------------------------------------------------------

IMAGES = np.random.default_rng(0).normal(size=(16, 6, 7, 2)).astype(np.float32)
KEY = jax.random.key(42)
# One configuration of each, shared by the tests so that each compiles once.
FLIP = partial(kx.data.random_flip, horizontal=True, vertical=True)
CROP = partial(kx.data.random_crop, size=(6, 7), padding=2)
SHIFT = partial(kx.data.random_translate, max_dx=2, max_dy=1, fill=-9.0)


def _shift_np(image, dy, dx, fill):
    """The reference translation: out[y, x] = image[y - dy, x - dx], fill outside."""
    h, w = image.shape[:2]
    out = np.full_like(image, fill)
    ys, xs = slice(max(dy, 0), min(h + dy, h)), slice(max(dx, 0), min(w + dx, w))
    out[ys, xs] = image[max(-dy, 0):min(h - dy, h), max(-dx, 0):min(w - dx, w)]
    return out


def test_random_flip_matches_numpy_and_twice_is_identity():
    out = np.asarray(FLIP(KEY, IMAGES))
    flips = np.asarray(augment.sample_flips(KEY, 16, True, True))
    assert 0 < flips[:, 0].sum() < 16 and 0 < flips[:, 1].sum() < 16  # per example
    for img, o, (h, v) in zip(IMAGES, out, flips):
        ref = img[:, ::-1] if h else img
        np.testing.assert_array_equal(o, ref[::-1] if v else ref)
    twice = FLIP(KEY, FLIP(KEY, IMAGES))
    np.testing.assert_array_equal(twice, IMAGES)
    np.testing.assert_array_equal(kx.data.random_flip(KEY, IMAGES, horizontal=False), IMAGES)


def test_random_crop_matches_numpy_pad_and_slice():
    np.testing.assert_array_equal(kx.data.random_crop(KEY, IMAGES, (6, 7)), IMAGES)  # nothing to move
    out = np.asarray(CROP(KEY, IMAGES))
    corners = np.asarray(augment.sample_crop_offsets(KEY, 16, 4, 4))
    assert corners.min() >= 0 and corners.max() <= 4 and len({tuple(c) for c in corners}) > 1
    padded = np.pad(IMAGES, ((0, 0), (2, 2), (2, 2), (0, 0)))
    for p, o, (t, l) in zip(padded, out, corners):
        np.testing.assert_array_equal(o, p[t:t + 6, l:l + 7])
    small = np.asarray(kx.data.random_crop(KEY, IMAGES, 3))
    corners = np.asarray(augment.sample_crop_offsets(KEY, 16, 3, 4))
    for img, o, (t, l) in zip(IMAGES, small, corners):
        np.testing.assert_array_equal(o, img[t:t + 3, l:l + 3])


def test_random_translate_is_a_shift_with_fill_within_range():
    out = np.asarray(SHIFT(KEY, IMAGES))
    # Without the exposed draws: each example is the reference shift for some (dy, dx) in range.
    for img, o in zip(IMAGES, out):
        assert any(np.array_equal(o, _shift_np(img, dy, dx, -9.0))
                   for dy in range(-1, 2) for dx in range(-2, 3))
    shifts = np.asarray(augment.sample_shifts(KEY, 16, 2, 1))
    assert len({tuple(s) for s in shifts}) > 1
    for img, o, (dy, dx) in zip(IMAGES, out, shifts):
        np.testing.assert_array_equal(o, _shift_np(img, dy, dx, -9.0))
    ints = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4, 1)
    moved = kx.data.random_translate(KEY, ints, 1, 1, fill=255)
    assert moved.dtype == jnp.uint8
    for img, o, (dy, dx) in zip(ints, np.asarray(moved), np.asarray(augment.sample_shifts(KEY, 2, 1, 1))):
        np.testing.assert_array_equal(o, _shift_np(img, dy, dx, 255))


def test_augmentations_are_deterministic_per_key():
    for fn in (FLIP, CROP, SHIFT):
        np.testing.assert_array_equal(fn(KEY, IMAGES), fn(jax.random.key(42), IMAGES))
        assert not np.array_equal(fn(KEY, IMAGES), fn(jax.random.key(43), IMAGES))


def test_augmentations_under_jit_and_vmap():
    aug = kx.data.compose(FLIP, CROP, SHIFT)
    jitted = jax.jit(aug)(KEY, IMAGES)
    k1, k2, k3 = jax.random.split(KEY, 3)  # compose's rule: the i-th key for the i-th function
    np.testing.assert_array_equal(jitted, SHIFT(k3, CROP(k2, FLIP(k1, IMAGES))))
    keys = jax.random.split(KEY, 2)
    stacked = jax.vmap(SHIFT)(keys, np.stack([IMAGES, IMAGES[::-1]]))
    for i, images in enumerate((IMAGES, IMAGES[::-1])):
        np.testing.assert_array_equal(stacked[i], SHIFT(keys[i], images))
    np.testing.assert_array_equal(kx.data.compose()(KEY, IMAGES), IMAGES)


@pytest.mark.parametrize("call, pattern", [
    (lambda: kx.data.random_flip(KEY, IMAGES[0]),
     r"random_flip: expected images of rank 4 \(batch, height, width, channels\); received shape \(6, 7, 2\)"),
    (lambda: kx.data.random_crop(KEY, IMAGES[..., 0], (2, 2)),
     r"random_crop: expected images of rank 4 .*received shape \(16, 6, 7\)"),
    (lambda: kx.data.random_translate(KEY, IMAGES[None], 1, 1),
     r"random_translate: expected images of rank 4 .*received shape \(1, 16, 6, 7, 2\)"),
    (lambda: kx.data.random_crop(KEY, IMAGES, (9, 7), padding=1),
     r"random_crop: size \(9, 7\) is larger than the padded image \(8, 9\); expected size at most "
     r"\(height \+ 2\*padding, width \+ 2\*padding\) for images of shape \(16, 6, 7, 2\) with padding=1"),
])
def test_augmentation_shape_errors(call, pattern):
    with pytest.raises(errors.ShapeError, match=pattern):
        call()


@pytest.mark.parametrize("call, pattern", [
    (lambda: kx.data.random_crop(KEY, IMAGES, (0, 3)),
     r"random_crop: size must be two positive ints \(height, width\); received size=\(0, 3\)"),
    (lambda: kx.data.random_crop(KEY, IMAGES, (2, 2, 2)), r"received size=\(2, 2, 2\)"),
    (lambda: kx.data.random_crop(KEY, IMAGES, (2, 2), padding=-1),
     "random_crop: padding must be a non-negative int; received padding=-1"),
    (lambda: kx.data.random_translate(KEY, IMAGES, -1, 0),
     "random_translate: max_dx must be a non-negative int; received max_dx=-1"),
    (lambda: kx.data.random_translate(KEY, IMAGES, 0, 1.5),
     "random_translate: max_dy must be a non-negative int; received max_dy=1.5"),
    (lambda: kx.data.compose(kx.data.random_flip, "flip"),
     r"compose: argument 1 must be a function \(key, images\) -> images; received str"),
])
def test_augmentation_config_errors(call, pattern):
    with pytest.raises(errors.ConfigError, match=pattern):
        call()
