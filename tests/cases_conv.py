"""Battery cases for the convolution and pooling layers."""

from cases import Case
from kerax import layers

conv = pooling = layers

CASES = [
    # ConvND
    Case("conv1d", lambda: conv.Conv1D(4, 3), (2, 8, 3)),
    Case("conv1d_causal_dilated", lambda: conv.Conv1D(4, 3, padding="causal", dilation_rate=2), (2, 8, 3)),
    Case("conv1d_same_strided", lambda: conv.Conv1D(2, 4, strides=3, padding="same", activation="relu"), (2, 8, 3)),
    Case("conv2d", lambda: conv.Conv2D(4, 3), (2, 8, 8, 3)),
    Case("conv2d_same_strided", lambda: conv.Conv2D(4, (3, 2), strides=(2, 1), padding="same"), (2, 7, 8, 3)),
    Case("conv2d_dilated_nobias", lambda: conv.Conv2D(2, 3, dilation_rate=2, use_bias=False), (2, 8, 8, 3)),
    Case("conv2d_groups", lambda: conv.Conv2D(6, 3, padding="same", groups=2, activation="tanh"), (2, 6, 6, 4)),
    Case("conv3d", lambda: conv.Conv3D(2, 2, strides=2, padding="same"), (2, 5, 4, 4, 2)),
    # ConvNDTranspose
    Case("conv1d_transpose", lambda: conv.Conv1DTranspose(3, 3, strides=2), (2, 5, 2)),
    Case("conv2d_transpose_same", lambda: conv.Conv2DTranspose(4, 3, strides=2, padding="same"), (2, 4, 4, 3)),
    Case("conv2d_transpose_output_padding",
         lambda: conv.Conv2DTranspose(2, 3, strides=2, output_padding=1), (2, 4, 3, 3)),
    Case("conv2d_transpose_dilated", lambda: conv.Conv2DTranspose(2, 2, dilation_rate=2, padding="same"), (2, 4, 4, 3)),
    Case("conv3d_transpose", lambda: conv.Conv3DTranspose(2, 2, strides=2), (2, 2, 3, 2, 2)),
    # DepthwiseConvND
    Case("depthwise_conv1d", lambda: conv.DepthwiseConv1D(3, padding="causal", depth_multiplier=2), (2, 8, 3)),
    Case("depthwise_conv2d", lambda: conv.DepthwiseConv2D(3), (2, 8, 8, 3)),
    Case("depthwise_conv2d_strided_same",
         lambda: conv.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2), (2, 7, 7, 3)),
    # SeparableConvND
    Case("separable_conv1d", lambda: conv.SeparableConv1D(4, 3, padding="same", depth_multiplier=2), (2, 8, 3)),
    Case("separable_conv2d", lambda: conv.SeparableConv2D(4, 3), (2, 8, 8, 3)),
    Case("separable_conv2d_dilated",
         lambda: conv.SeparableConv2D(2, 2, dilation_rate=2, padding="same", use_bias=False), (2, 6, 6, 3)),
    # Pooling
    Case("max_pooling1d", lambda: pooling.MaxPooling1D(2), (2, 8, 3)),
    Case("max_pooling2d", lambda: pooling.MaxPooling2D(2), (2, 8, 8, 3)),
    Case("max_pooling2d_same", lambda: pooling.MaxPooling2D(3, strides=2, padding="same"), (2, 7, 8, 3)),
    Case("max_pooling3d", lambda: pooling.MaxPooling3D(2), (2, 4, 4, 4, 2)),
    Case("average_pooling1d_same", lambda: pooling.AveragePooling1D(3, strides=2, padding="same"), (2, 7, 3)),
    Case("average_pooling2d", lambda: pooling.AveragePooling2D((2, 3)), (2, 8, 8, 3)),
    Case("average_pooling2d_same", lambda: pooling.AveragePooling2D(3, strides=1, padding="same"), (2, 5, 5, 3)),
    Case("average_pooling3d", lambda: pooling.AveragePooling3D(2, padding="same"), (2, 3, 4, 4, 2)),
    Case("global_average_pooling1d", lambda: pooling.GlobalAveragePooling1D(), (2, 8, 3)),
    Case("global_average_pooling2d_keepdims", lambda: pooling.GlobalAveragePooling2D(keepdims=True), (2, 8, 8, 3)),
    Case("global_average_pooling3d", lambda: pooling.GlobalAveragePooling3D(), (2, 3, 4, 4, 2)),
    Case("global_max_pooling1d", lambda: pooling.GlobalMaxPooling1D(keepdims=True), (2, 8, 3)),
    Case("global_max_pooling2d", lambda: pooling.GlobalMaxPooling2D(), (2, 8, 8, 3)),
    Case("global_max_pooling3d", lambda: pooling.GlobalMaxPooling3D(), (2, 3, 4, 4, 2)),
]
