"""kerax.losses: the shape and label errors of RELIABILITY A6-A9, the name table, config
round trips and hyperparameter errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from kerax import losses
from kerax.errors import ConfigError, LabelError, ShapeError, UnknownNameError
from test_losses import (  # shared data and references
    CLASS_OF,
    _data,
)


# ---- Shape errors (RELIABILITY A6) ----------------------------------------------------------

def test_a6_mse_refuses_silent_broadcasting():
    y, out = np.zeros((10, 1), np.float32), np.zeros((10, 3), np.float32)
    msg = r"'mean_squared_error'.*y_true.shape=\(10, 1\).*y_pred.shape=\(10, 3\)"
    with pytest.raises(ShapeError, match=msg):
        losses.MeanSquaredError()(y, out)
    with pytest.raises(ShapeError, match=msg):
        losses.MeanSquaredError().check_shapes((10, 1), (10, 3))
    with pytest.raises(ShapeError, match=msg + ".*sparse_categorical_crossentropy"):
        losses.mse(y, out)
    with pytest.raises(ShapeError, match="'my_loss'"):
        jax.jit(losses.MeanSquaredError(name="my_loss"))(y, out)
    with pytest.raises(ShapeError, match=r"'mean_squared_error'.*\(10, 1\).*\(None, 3\)"):
        losses.MeanSquaredError().validate_targets(y, (None, 3))
    losses.MeanSquaredError().check_shapes((10,), (None, 1))  # fine: rank adjustment


@pytest.mark.parametrize("cls", [c for c in CLASS_OF.values()
                                 if c is not losses.SparseCategoricalCrossentropy])
def test_every_elementwise_loss_refuses_mismatched_shapes(cls):
    with pytest.raises(ShapeError, match=r"y_true.shape=\(4, 2\) and y_pred.shape=\(4, 3\)"):
        cls()(np.zeros((4, 2), np.float32), np.ones((4, 3), np.float32))


def test_sparse_shape_errors():
    loss = losses.SparseCategoricalCrossentropy()
    loss.check_shapes((8,), (8, 3))
    loss.check_shapes((8, 1), (None, 3))
    with pytest.raises(ShapeError, match=r"labels y_true of shape \(8,\).*y_true.shape=\(8, 3\)"
                                         r".*categorical_crossentropy"):
        loss.check_shapes((8, 3), (8, 3))
    with pytest.raises(ShapeError, match=r"y_true.shape=\(7,\)"):
        loss(np.zeros(7, int), np.ones((8, 3), np.float32))
    with pytest.raises(ShapeError, match=r"axis=2 is out of range"):
        losses.sparse_categorical_crossentropy(np.zeros(8, int), np.ones((8, 3)), axis=2)


def test_other_shape_errors():
    with pytest.raises(ShapeError, match=r"rank >= 1.*y_pred.shape=\(\)"):
        losses.mse(1.0, 2.0)
    with pytest.raises(ShapeError, match=r"sample_weight.shape=\(3,\).*\(4,\)"):
        losses.MeanSquaredError()(*_data("real"), sample_weight=np.ones(3))


# ---- Label errors (RELIABILITY A7-A9) --------------------------------------------------------

def test_a7_label_out_of_range():
    with pytest.raises(LabelError, match=r"label 5 out of range \[0, 3\)"):
        losses.SparseCategoricalCrossentropy().validate_targets(np.array([0, 1, 5]), (None, 3))


def test_a8_negative_label_does_not_wrap():
    loss = losses.SparseCategoricalCrossentropy(from_logits=True)
    with pytest.raises(LabelError, match=r"label -1 out of range \[0, 3\).*ignore_class=-1"):
        loss.validate_targets(np.array([0, -1, 2]), (3, 3))
    losses.SparseCategoricalCrossentropy(ignore_class=-1).validate_targets([0, -1, 2], (3, 3))


def test_a9_non_integer_labels():
    with pytest.raises(LabelError, match="non-integer labels such as 2.7"):
        losses.SparseCategoricalCrossentropy().validate_targets(np.array([0.0, 2.7]), (2, 3))
    with pytest.raises(LabelError, match="non-integer labels"):
        losses.SparseCategoricalCrossentropy().validate_targets(np.array([0.0, np.nan]), (2, 3))
    with pytest.raises(LabelError, match="expected integer class labels.*dtype <U1"):
        losses.SparseCategoricalCrossentropy().validate_targets(np.array(["a", "b"]), (2, 3))
    losses.SparseCategoricalCrossentropy().validate_targets(np.array([0.0, 2.0]), (2, 3))


def test_traced_bad_labels_give_nan_not_wraparound():
    logits = np.zeros((5, 3), np.float32)
    per = losses.sparse_categorical_crossentropy(
        np.array([0.0, 1.0, 5.0, -1.0, 2.7], np.float32), logits, from_logits=True)
    assert np.all(np.isfinite(per[:2])) and np.all(np.isnan(per[2:]))
    assert np.isnan(jax.jit(losses.SparseCategoricalCrossentropy())(np.array([0, 3]), logits[:2]))
    ignored = losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=-1)
    np.testing.assert_allclose(ignored(np.array([0, -1]), logits[:2]), np.log(3.0), rtol=1e-6)


def test_binary_labels_checked():
    for loss in (losses.BinaryCrossentropy(), losses.BinaryCrossentropy(from_logits=True),
                 losses.BinaryFocalCrossentropy()):
        with pytest.raises(LabelError, match=r"label 2 out of range \[0, 1\]"):
            loss.validate_targets(np.array([[0.0], [2.0]]), (None, 1))
        loss.validate_targets(np.array([0.0, 0.3, 1.0]), (None, 1))
    with pytest.raises(LabelError, match=r"label -0.5 out of range"):
        losses.BinaryCrossentropy().validate_targets(np.array([-0.5]), (1,))
    with pytest.raises(LabelError, match=r"expected numeric labels"):
        losses.BinaryCrossentropy().validate_targets(np.array(["x"]), (1,))
    losses.MeanSquaredError().validate_targets(np.array([[7.0]]), (None, 1))  # no label rule


# ---- Configuration, names and serialization ---------------------------------------------------

NON_DEFAULT = {
    losses.BinaryCrossentropy: {"from_logits": True, "label_smoothing": 0.1},
    losses.BinaryFocalCrossentropy: {"apply_class_balancing": True, "alpha": 0.3, "gamma": 1.0},
    losses.CategoricalCrossentropy: {"from_logits": True, "axis": 1},
    losses.SparseCategoricalCrossentropy: {"from_logits": True, "ignore_class": 0},
    losses.CategoricalFocalCrossentropy: {"gamma": 3.0, "label_smoothing": 0.2},
    losses.Huber: {"delta": 2.5},
    losses.CosineSimilarity: {"axis": 0},
}


@pytest.mark.parametrize("name,cls", sorted(CLASS_OF.items()))
def test_names_config_round_trip(name, cls):
    assert cls().name == name
    assert losses.get(name) == cls() and losses.get(cls.__name__) == cls()
    assert losses.get(getattr(losses, name)) == cls() and losses.get(cls) == cls()
    loss = cls(**NON_DEFAULT.get(cls, {}), name="custom", reduction="sum")
    config = loss.get_config()
    assert config["name"] == "custom" and config["reduction"] == "sum"
    assert cls.from_config(config) == loss
    assert losses.get(losses.serialize(loss)) == loss
    assert losses.serialize(name) == {"class_name": cls.__name__, "config": cls().get_config()}
    hash(loss)


def test_get_aliases_and_instances():
    for alias, cls in [("mse", losses.MeanSquaredError), ("MAE", losses.MeanAbsoluteError),
                       ("mape", losses.MeanAbsolutePercentageError),
                       ("msle", losses.MeanSquaredLogarithmicError), ("kld", losses.KLDivergence),
                       ("kullback_leibler_divergence", losses.KLDivergence),
                       ("logcosh", losses.LogCosh), ("bce", losses.BinaryCrossentropy)]:
        assert type(losses.get(alias)) is cls and alias in losses.names()
    loss = losses.Huber(delta=3.0)
    assert losses.get(loss) is loss
    assert losses.get({"class_name": "Huber", "config": {"delta": 3.0, "dtype": "float32"}}) \
        == losses.Huber(delta=3.0)
    assert losses.BinaryCrossentropy(True).from_logits  # Keras's positional order
    assert losses.Loss().name == "loss" and losses.Huber(name=None).name == "huber"


def test_custom_function_is_wrapped():
    def my_loss(y_true, y_pred):
        return jnp.sum(jnp.abs(y_true - y_pred), axis=-1)

    loss = losses.get(my_loss)
    assert isinstance(loss, losses.LossFunctionWrapper) and loss.name == "my_loss"
    np.testing.assert_allclose(loss(np.ones(4), np.zeros((4, 1)), sample_weight=np.arange(4.0)),
                               6 / 4)
    with pytest.raises(ConfigError, match="Cannot serialize loss 'my_loss'"):
        losses.serialize(my_loss)
    with pytest.raises(ConfigError, match="expected fn to be a callable"):
        losses.LossFunctionWrapper(3)


def test_custom_subclass():
    class Twice(losses.Loss):
        def call(self, y_true, y_pred):
            return 2 * losses.mae(y_true, y_pred)

    assert Twice().name == "twice"
    np.testing.assert_allclose(Twice()(np.ones((2, 2)), np.zeros((2, 2))), 2.0)
    with pytest.raises(NotImplementedError, match="Loss must override call"):
        losses.Loss()(np.ones((2, 2)), np.ones((2, 2)))


def test_get_errors():
    with pytest.raises(UnknownNameError, match=r"Unknown loss 'msee'.*Did you mean 'mse'"):
        losses.get("msee")
    with pytest.raises(UnknownNameError, match=r"Unknown loss class 'os.system'"):
        losses.get({"class_name": "os.system", "config": {}})
    with pytest.raises(ConfigError, match=r"invalid config.*bogus"):
        losses.get({"class_name": "MeanSquaredError", "config": {"bogus": 1}})
    with pytest.raises(ConfigError, match=r"expected dtype None or 'float32'.*float16"):
        losses.MeanSquaredError.from_config({"dtype": "float16"})
    with pytest.raises(ConfigError, match=r"Expected a loss.*received loss=42 of type int"):
        losses.get(42)
    with pytest.raises(ConfigError, match=r"Expected a loss"):
        losses.get({"config": {}})
    with pytest.raises(ConfigError, match=r"expected config to be a dict; received config=5"):
        losses.get({"class_name": "Huber", "config": 5})
    with pytest.raises(ConfigError, match=r"expected name to be a str; received name=3"):
        losses.Huber(name=3)


@pytest.mark.parametrize("cls,kw,match", [
    (losses.MeanSquaredError, {"reduction": "auto"}, r"reduction to be one of.*'auto'"),
    (losses.BinaryCrossentropy, {"from_logits": "yes"}, r"from_logits to be a bool"),
    (losses.BinaryFocalCrossentropy, {"apply_class_balancing": 1}, r"apply_class_balancing"),
    (losses.CategoricalCrossentropy, {"label_smoothing": 1.5}, r"label_smoothing to be a float"),
    (losses.CategoricalCrossentropy, {"axis": True}, r"axis to be an int"),
    (losses.SparseCategoricalCrossentropy, {"ignore_class": 1.5}, r"ignore_class to be an int"),
    (losses.CategoricalFocalCrossentropy, {"gamma": -1.0}, r"gamma to be a float >= 0"),
    (losses.CategoricalFocalCrossentropy, {"alpha": "x"}, r"alpha to be a float"),
    (losses.BinaryCrossentropy, {"label_smoothing": "0.1"}, r"label_smoothing to be a float"),
    (losses.Huber, {"delta": 0.0}, r"Huber: expected delta to be a float > 0; received delta=0"),
])
def test_invalid_hyperparameters(cls, kw, match):
    with pytest.raises(ConfigError, match=match):
        cls(**kw)
    assert cls(reduction=None).reduction == "none"
