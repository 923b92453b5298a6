"""kerax.metrics' interface: Keras's shape rules for the accuracies, ``get`` resolution,
hyperparameter errors and immutability."""

import json
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from kerax import losses, metrics
from kerax.errors import ConfigError, ShapeError, UnknownNameError
from test_metrics import (  # shared data and references
    _close,
    _cube,
)


# -- Keras's shape rules for the accuracies --------------------------------------------


def test_accuracy_shape_rules():
    logits = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    labels = np.array([0, 1, 2, 3, 1, 2])
    sparse = metrics.SparseCategoricalAccuracy()
    assert float(sparse(labels, logits)) == float(sparse(labels[:, None], logits))
    assert float(sparse(labels.astype(np.float32), logits)) == float(sparse(labels, logits))
    onehot = np.eye(4)[labels]
    assert float(metrics.CategoricalAccuracy()(onehot, logits)) == float(sparse(labels, logits))
    b_true, b_pred = np.array([1, 0, 1, 1]), np.array([[0.9], [0.2], [0.4], [0.7]])
    binary = metrics.BinaryAccuracy()
    assert float(binary(b_true, b_pred)) == float(binary(b_true[:, None], b_pred)) == 0.75
    assert metrics.binary_accuracy(b_true, b_pred).shape == (4,)
    assert metrics.sparse_categorical_accuracy(labels[:, None], logits).shape == (6,)


def test_accuracy_shape_errors():
    logits = np.zeros((6, 4), np.float32)
    with pytest.raises(ShapeError, match=r"categorical_accuracy: expected y_true and y_pred "
                       r"of the same shape.*y_true.shape=\(6,\).*sparse_categorical_accuracy"):
        metrics.CategoricalAccuracy()(np.zeros(6), logits)
    with pytest.raises(ShapeError, match=r"sparse_categorical_accuracy: expected integer "
                       r"labels y_true of shape \(6,\).*received y_true.shape=\(6, 4\)"):
        metrics.SparseCategoricalAccuracy()(np.zeros((6, 4)), logits)
    with pytest.raises(ShapeError, match=r"mean_squared_error: expected y_true and y_pred of "
                       r"the same shape"):
        metrics.MeanSquaredError()(np.zeros((6, 3)), logits)
    with pytest.raises(ShapeError, match=r"Mean\('mean'\): expected sample_weight of shape "
                       r"\(6,\).*received sample_weight.shape=\(5,\)"):
        metrics.Mean()(np.zeros(6), sample_weight=np.ones(5))
    with pytest.raises(ShapeError, match=r"Precision\('precision'\): class_id=4 needs y_pred "
                       r"of shape \(batch, num_classes\) with num_classes > 4"):
        metrics.Precision(class_id=4)(np.zeros((6, 4)), logits)
    with pytest.raises(ShapeError, match=r"Precision\('precision'\): expected sample_weight"):
        metrics.Precision()(np.zeros((6, 4)), logits, sample_weight=np.ones(5))
    with pytest.raises(ShapeError, match=r"F1Score\('f1_score'\): expected y_true and y_pred of "
                       r"shape \(batch, num_classes\) = \(6, 3\).*y_pred.shape=\(6, 4\)"):
        metrics.F1Score(num_classes=3)(np.zeros((6, 4)), logits)


# -- get -------------------------------------------------------------------------------


class _NamedLoss:
    name = "categorical_crossentropy"


@pytest.mark.parametrize("loss, output_shape, expected", [
    ("sparse_categorical_crossentropy", None, metrics.SparseCategoricalAccuracy),
    ("categorical_crossentropy", (None, 1), metrics.CategoricalAccuracy),
    ("binary_crossentropy", (None, 10), metrics.BinaryAccuracy),
    ("SparseCategoricalCrossentropy", None, metrics.SparseCategoricalAccuracy),
    (losses.SparseCategoricalCrossentropy(from_logits=True), None,
     metrics.SparseCategoricalAccuracy),
    (losses.binary_crossentropy, None, metrics.BinaryAccuracy),
    (_NamedLoss(), None, metrics.CategoricalAccuracy),
    ("mse", (None, 1), metrics.BinaryAccuracy),
    ("mse", (None, 10), metrics.CategoricalAccuracy),
    (None, (32, 1), metrics.BinaryAccuracy),
    (None, (10,), metrics.CategoricalAccuracy),
])
@pytest.mark.parametrize("name", ["accuracy", "acc", "Accuracy"])
def test_get_accuracy_resolves_from_loss_then_output_shape(loss, output_shape, expected, name):
    metric = metrics.get(name, loss=loss, output_shape=output_shape)
    assert type(metric) is expected
    assert metric.name == name


def test_get_accuracy_needs_loss_or_output_shape():
    with pytest.raises(ConfigError, match=r"Cannot tell which accuracy 'accuracy' means from "
                       r"loss='mse'.*output_shape=.*'sparse_categorical_accuracy'"):
        metrics.get("accuracy", loss="mse")


def test_get_other_identifiers():
    assert metrics.get("mse") == metrics.MeanSquaredError(name="mse")
    assert type(metrics.get("mean_absolute_error")) is metrics.MeanAbsoluteError
    assert type(metrics.get("MAE")) is metrics.MeanAbsoluteError
    assert type(metrics.get("binary_accuracy")) is metrics.BinaryAccuracy
    assert type(metrics.get("sparse_categorical_accuracy")) is metrics.SparseCategoricalAccuracy
    assert metrics.get("top_k_categorical_accuracy").k == 5
    assert type(metrics.get("auc")) is metrics.AUC
    assert type(metrics.get("precision")) is metrics.Precision
    assert type(metrics.get("recall")) is metrics.Recall
    assert metrics.get("root_mean_squared_error").name == "root_mean_squared_error"
    assert metrics.get("RootMeanSquaredError").name == "RootMeanSquaredError"
    assert metrics.get("f1_score", output_shape=(None, 7)).num_classes == 7
    assert metrics.get(metrics.F1Score(), output_shape=(None, 3)).num_classes == 3
    m = metrics.AUC(curve="PR")
    assert metrics.get(m) is m
    assert metrics.get(metrics.Recall) == metrics.Recall()
    assert metrics.get({"class_name": "AUC", "config": {"num_thresholds": 20}}).num_thresholds == 20
    wrapped = metrics.get(_cube)
    assert isinstance(wrapped, metrics.MeanMetricWrapper) and wrapped.name == "_cube"
    mse_loss = metrics.get(losses.get("mse"))  # a kerax Loss: its per-example values
    _close(mse_loss([[1.0, 2.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]],
                    sample_weight=[1.0, 0.0]), 2.5)
    assert metrics.get(metrics.serialize(mse_loss)).name == "mean_squared_error"
    for name in ("mse", "auc", "f1_score", "accuracy", "acc", "sparse_top_k_categorical_accuracy"):
        assert name in metrics.names()
    assert "rmse" not in metrics.names()  # not a Keras alias


def test_get_errors():
    with pytest.raises(UnknownNameError, match=r"Unknown metric 'acuracy'\. Did you mean "
                       r"'accuracy'\? Valid metric names: .*binary_accuracy.*mse"):
        metrics.get("acuracy")
    with pytest.raises(UnknownNameError, match=r"Unknown metric 'rmse'"):
        metrics.get("rmse")
    with pytest.raises(UnknownNameError, match=r"Unknown metric 'Dense'.*Valid metric names: "
                       r"AUC, Accuracy"):
        metrics.get({"class_name": "Dense", "config": {}})
    with pytest.raises(ConfigError, match=r"Expected a metric config \{'class_name': str"):
        metrics.deserialize({"config": {}})
    with pytest.raises(ConfigError, match=r"Expected a metric: a name such as 'accuracy'.*42"):
        metrics.get(42)
    with pytest.raises(ConfigError, match=r"AUC.from_config: expected a dict with keys among "
                       r"\[.*'curve'.*\]; received \{'curves': 'PR'\}"):
        metrics.AUC.from_config({"curves": "PR"})
    with pytest.raises(ConfigError, match=r"MeanMetricWrapper\('_cube'\): cannot serialize "
                       r"fn=.*Write a kx.metrics.Metric subclass"):
        metrics.serialize(metrics.MeanMetricWrapper(_cube))
    with pytest.raises(UnknownNameError, match=r"Unknown metric function 'eval'"):
        metrics.MeanMetricWrapper.from_config({"fn": "eval"})
    with pytest.raises(ConfigError, match=r"serialize expected a kx.metrics.Metric"):
        metrics.serialize("mse")


def test_wrapper_of_kerax_function_round_trips():
    m = metrics.MeanMetricWrapper(metrics.sparse_categorical_accuracy, name="acc")
    assert m.get_config() == {"fn": "sparse_categorical_accuracy", "name": "acc"}
    assert metrics.get(metrics.serialize(m)) == m


# -- hyperparameter errors -------------------------------------------------------------


@pytest.mark.parametrize("make, match", [
    (lambda: metrics.TopKCategoricalAccuracy(k=0),
     r"TopKCategoricalAccuracy: expected k to be a positive integer; received k=0\."),
    (lambda: metrics.SparseTopKCategoricalAccuracy(k=1.5),
     r"SparseTopKCategoricalAccuracy: expected k to be a positive integer; received k=1.5"),
    (lambda: metrics.BinaryAccuracy(threshold=1.0),
     r"BinaryAccuracy: expected threshold in the interval \(0, 1\); received threshold=1.0"),
    (lambda: metrics.Precision(thresholds=[0.5, 1.5]),
     r"Precision: expected thresholds in \[0, 1\].*received thresholds=\[0.5, 1.5\]"),
    (lambda: metrics.Recall(thresholds=[]), r"Recall: expected thresholds in \[0, 1\]"),
    (lambda: metrics.Precision(class_id=-1),
     r"Precision: expected class_id to be an integer >= 0 or None; received class_id=-1"),
    (lambda: metrics.Recall(top_k=0), r"Recall: expected top_k to be an integer >= 1"),
    (lambda: metrics.AUC(num_thresholds=1),
     r"AUC: expected num_thresholds to be an integer > 1; received num_thresholds=1"),
    (lambda: metrics.AUC(curve="XYZ"),
     r"AUC: expected curve to be one of \['ROC', 'PR'\]; received curve='XYZ'"),
    (lambda: metrics.AUC(summation_method="trapezoid"),
     r"AUC: expected summation_method to be one of \['interpolation', 'minoring', "
     r"'majoring'\]; received summation_method='trapezoid'"),
    (lambda: metrics.AUC(thresholds=[2.0]), r"AUC: expected thresholds in \[0, 1\]"),
    (lambda: metrics.F1Score(average="mean"),
     r"F1Score: expected average to be one of None, 'micro', 'macro', 'weighted'; "
     r"received average='mean'"),
    (lambda: metrics.F1Score(threshold=0.0),
     r"F1Score: expected threshold to be None or a float with 0 < threshold <= 1"),
    (lambda: metrics.F1Score(num_classes=0),
     r"F1Score: expected num_classes to be an integer >= 1 or None; received num_classes=0"),
    (lambda: metrics.F1Score().init(),
     r"F1Score\('f1_score'\): num_classes is unknown.*F1Score\(num_classes=C\).*output_shape"),
    (lambda: metrics.Mean(name=""), r"Mean: expected name to be a non-empty string"),
    (lambda: metrics.MeanMetricWrapper(fn=3),
     r"MeanMetricWrapper: expected fn to be a callable \(y_true, y_pred\) -> values; "
     r"received fn=3"),
])
def test_bad_hyperparameters(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_metrics_are_immutable_hashable_values():
    m = metrics.Precision(thresholds=[0.3, 0.6])
    assert m.thresholds == (0.3, 0.6) and hash(m) == hash(metrics.Precision(thresholds=(0.3, 0.6)))
    with pytest.raises(AttributeError):
        m.name = "other"  # type: ignore[misc]
    assert metrics.AUC(curve="pr").curve == "PR"
