"""Battery cases for the normalization layers (random initializers, so that different keys
give different parameters)."""

from cases import Case
from kerax.layers import normalization as norm

R = "random_uniform"

CASES = [
    Case("batch_normalization", lambda: norm.BatchNormalization(gamma_initializer=R), (4, 3)),
    Case("batch_normalization_conv_axis1",
         lambda: norm.BatchNormalization(axis=1, center=False, momentum=0.9, gamma_initializer=R), (2, 3, 4, 4)),
    Case("batch_normalization_synchronized",
         lambda: norm.BatchNormalization(synchronized=True, beta_initializer=R), (2, 4, 4, 3)),
    Case("layer_normalization", lambda: norm.LayerNormalization(beta_initializer=R), (2, 5, 4)),
    Case("layer_normalization_axes",
         lambda: norm.LayerNormalization(axis=[1, 3], scale=False, beta_initializer=R), (2, 3, 4, 5)),
    Case("layer_normalization_rms_scaling",
         lambda: norm.LayerNormalization(rms_scaling=True, gamma_initializer=R), (2, 6)),
    Case("group_normalization", lambda: norm.GroupNormalization(groups=2, gamma_initializer=R), (2, 4, 4, 6)),
    Case("group_normalization_instance",
         lambda: norm.GroupNormalization(groups=-1, axis=1, beta_initializer=R), (2, 3, 5)),
    Case("unit_normalization", lambda: norm.UnitNormalization(), (2, 5)),
    Case("unit_normalization_axes", lambda: norm.UnitNormalization(axis=[1, 2]), (2, 3, 4, 2)),
    Case("rms_normalization", lambda: norm.RMSNormalization(scale_initializer=R), (2, 5, 4)),
    Case("rms_normalization_axes",
         lambda: norm.RMSNormalization(axis=[1, 2], epsilon=1e-3, scale_initializer=R), (2, 3, 4)),
]
