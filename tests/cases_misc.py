"""Battery cases for the spatial reshaping, preprocessing, activation and noise layers."""

from cases import Case
from kerax.layers.activation import ELU, LeakyReLU, PReLU, ReLU, Softmax
from kerax.layers.noise import (
    ActivityRegularization,
    AlphaDropout,
    GaussianDropout,
    GaussianNoise,
    SpatialDropout1D,
    SpatialDropout2D,
    SpatialDropout3D,
)
from kerax.layers.preprocessing import CenterCrop, Normalization, Rescaling, Resizing
from kerax.layers.spatial_reshaping import (
    Cropping1D,
    Cropping2D,
    Cropping3D,
    UpSampling1D,
    UpSampling2D,
    UpSampling3D,
    ZeroPadding1D,
    ZeroPadding2D,
    ZeroPadding3D,
)

CASES = [
    # spatial reshaping
    Case("up_sampling1d", lambda: UpSampling1D(3), (2, 4, 3)),
    Case("up_sampling2d", lambda: UpSampling2D((1, 2)), (2, 3, 4, 2)),
    Case("up_sampling2d_bilinear", lambda: UpSampling2D(2, interpolation="bilinear"), (2, 3, 4, 2)),
    Case("up_sampling3d", lambda: UpSampling3D((2, 1, 2)), (2, 2, 3, 2, 2)),
    Case("zero_padding1d", lambda: ZeroPadding1D((1, 2)), (2, 4, 3)),
    Case("zero_padding2d", lambda: ZeroPadding2D(((1, 0), (2, 1))), (2, 3, 4, 2)),
    Case("zero_padding3d", lambda: ZeroPadding3D(1), (2, 2, 3, 2, 2)),
    Case("cropping1d", lambda: Cropping1D((1, 2)), (2, 5, 3)),
    Case("cropping2d", lambda: Cropping2D(((1, 0), (1, 2))), (2, 4, 5, 2)),
    Case("cropping3d", lambda: Cropping3D(((1, 0), (0, 1), (1, 1))), (2, 3, 3, 4, 2)),
    # preprocessing
    Case("rescaling", lambda: Rescaling(1 / 255, offset=-0.5), (2, 3, 4)),
    Case("rescaling_per_channel", lambda: Rescaling([0.5, 2.0, 1.0]), (2, 4, 3)),
    Case("center_crop", lambda: CenterCrop(3, 2), (2, 5, 4, 3)),
    Case("center_crop_resizes", lambda: CenterCrop(6, 2), (2, 5, 4, 3)),
    Case("resizing", lambda: Resizing(4, 6), (2, 5, 3, 2)),
    Case("resizing_crop_nearest", lambda: Resizing(3, 3, interpolation="nearest", crop_to_aspect_ratio=True),
         (2, 5, 4, 2)),
    Case("normalization", lambda: Normalization(mean=[0.5, -1.0, 2.0], variance=[1.0, 4.0, 0.25]), (2, 4, 3)),
    Case("normalization_invert_axes", lambda: Normalization(axis=(1, 2), mean=[[1.0, 2.0]] * 3,
                                                             variance=[[2.0, 0.5]] * 3, invert=True), (2, 3, 2)),
    # activations
    Case("relu", lambda: ReLU(), (2, 5)),
    Case("relu_options", lambda: ReLU(max_value=1.5, negative_slope=0.1, threshold=0.2), (2, 5)),
    Case("leaky_relu", lambda: LeakyReLU(), (2, 5)),
    Case("prelu", lambda: PReLU(alpha_initializer="he_normal"), (2, 3, 4)),
    Case("prelu_shared_axes", lambda: PReLU(alpha_initializer="random_uniform", shared_axes=[1, 2]), (2, 3, 4, 2)),
    Case("elu", lambda: ELU(0.5), (2, 5)),
    Case("softmax", lambda: Softmax(), (2, 5)),
    Case("softmax_axes", lambda: Softmax(axis=(1, 2)), (2, 3, 4)),
    # noise and activity regularization
    Case("spatial_dropout1d", lambda: SpatialDropout1D(0.5), (2, 4, 3), training=True),
    Case("spatial_dropout2d", lambda: SpatialDropout2D(0.3), (2, 3, 4, 5), training=True),
    Case("spatial_dropout3d", lambda: SpatialDropout3D(0.3, seed=1), (2, 2, 3, 2, 4), training=True),
    Case("gaussian_noise", lambda: GaussianNoise(0.2), (2, 6), training=True),
    Case("gaussian_dropout", lambda: GaussianDropout(0.3), (2, 6), training=True),
    Case("alpha_dropout", lambda: AlphaDropout(0.2), (2, 6), training=True),
    Case("alpha_dropout_noise_shape", lambda: AlphaDropout(0.2, noise_shape=(None, 1, 3)), (2, 4, 3),
         training=True),
    Case("activity_regularization", lambda: ActivityRegularization(l1=0.01, l2=0.1), (3, 4)),
]
