"""The two model families: a small VGG-style CNN and a dense feed-forward baseline."""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from training.data import IMAGE_SIZE, NUM_CLASSES

INPUT_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 1)
# One 3x3 convolution per block, each block halving the resolution (28, 14, 7, 4): a second
# convolution in the 14x14 and 7x7 blocks cost several times the training time per image
# (docs/training.md, "Time budget").
CNN_FILTERS = (32, 64, 128)
CNN_DENSE_UNITS = 256
DFN_UNITS = (512, 256)


def _regularizer(l2: float) -> keras.regularizers.Regularizer | None:
    """Return an L2 penalty on weights, or None when it is switched off."""
    return keras.regularizers.L2(l2) if l2 > 0 else None


def _inputs() -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """Take raw pixel intensities 0 to 255 and rescale them to 0 to 1 inside the model."""
    inputs = keras.Input(shape=INPUT_SHAPE, name="images")
    return inputs, layers.Rescaling(1.0 / 255)(inputs)


def build_cnn(dropout: float, l2: float, filters: tuple[int, ...] = CNN_FILTERS) -> keras.Model:
    """Blocks of convolution (`filters` in each), max pooling, batch norm and ReLU, then one
    hidden dense layer."""
    inputs, x = _inputs()
    for width in filters:
        x = layers.Conv2D(
            width, 3, padding="same", use_bias=False, kernel_regularizer=_regularizer(l2)
        )(x)
        # Pool before batch norm and ReLU: they then touch a quarter of the values, which
        # cuts training time (docs/training.md measures it). "same": 7x7 pools to 4x4, keeping
        # the last row and column that "valid" drops.
        x = layers.MaxPooling2D(padding="same")(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
    # Dropout only after the last batch norm: dropout feeding batch norm shifts its
    # statistics between training and inference (validation accuracy collapsed when tried).
    x = layers.Flatten()(x)
    x = layers.Dense(CNN_DENSE_UNITS, activation="relu", kernel_regularizer=_regularizer(l2))(x)
    x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(NUM_CLASSES, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="fashion_mnist_cnn")


def build_dfn(dropout: float, l2: float, filters: tuple[int, ...] = ()) -> keras.Model:
    """A dense feed-forward baseline: flattened pixels through two hidden layers (`filters`,
    a convolution's, is taken for the builders' common signature and not used)."""
    inputs, x = _inputs()
    x = layers.Flatten()(x)
    for units in DFN_UNITS:
        x = layers.Dense(units, activation="relu", kernel_regularizer=_regularizer(l2))(x)
        x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(NUM_CLASSES, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="fashion_mnist_dfn")


BUILDERS = {"cnn": build_cnn, "dfn": build_dfn}


def multiply_adds(network: keras.Model) -> int:
    """The multiply-adds of one forward pass over one image: every convolution's and dense
    layer's (batch norm, pooling and activations are a small part, and not counted)."""
    total = 0
    for layer in network.layers:
        if isinstance(layer, layers.Conv2D):
            _, height, width, out_channels = layer.output.shape
            kernel_height, kernel_width, in_channels, _ = layer.kernel.shape
            total += height * width * out_channels * kernel_height * kernel_width * in_channels
        elif isinstance(layer, layers.Dense):
            total += int(layer.kernel.shape[0]) * int(layer.kernel.shape[1])
    return int(total)


# Mirror averaging (test-time augmentation with the flip used in training) can be limited to
# the images the network is unsure of, by a ramp (low, high): an image's mirror image weighs a
# half where the network's top probability for it is below `low`, nothing from `high` up, and
# in proportion between; only the images below `high` take the second forward pass. On the
# shipped network, MIRROR_RAMP sends few of the test images through it at the accuracy of
# averaging every image, and cuts the model's cost per image in large batches; but
# single-image requests gain nothing measurable, so the shipped model averages every image
# (docs/mirror-averaging.md measures all three).
# `python -m training --from-version ... --mirror-ramp 0.8 0.95` exports a version with it.
MIRROR_RAMP = (0.8, 0.95)


class MirrorAveraged(keras.Model):
    """`network`'s probabilities averaged with its mirror image's: for every image (`ramp`
    None), or where the network is unsure (a ramp: see MIRROR_RAMP)."""

    def __init__(self, network: keras.Model, ramp: tuple[float, float] | None = None):
        super().__init__(name=f"{network.name}_mirror_averaged")
        if ramp is not None and not 0 < ramp[0] < ramp[1]:
            raise ValueError(f"the mirror ramp needs 0 < low < high; got {ramp}")
        self.network = network
        self.ramp = ramp

    def call(self, images: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Probabilities for float images (N, 28, 28, 1)."""
        first = self.network(images, training=False)
        if self.ramp is None:
            return (first + self.network(tf.reverse(images, [2]), training=False)) / 2
        low, high = self.ramp
        top = tf.reduce_max(first, axis=1)
        unsure = tf.where(top < high)  # (K, 1): the images that take the second pass
        count = tf.shape(unsure)[0]
        # With none unsure, one image more, whose answer is dropped: LiteRT's XNNPACK kernels
        # fail on a pass over no images (every image's answer stays its own).
        padding = images[: tf.maximum(1 - count, 0)]
        mirrored = tf.reverse(tf.concat([tf.gather_nd(images, unsure), padding], axis=0), [2])
        second = self.network(mirrored, training=False)[:count]
        weight = tf.clip_by_value((high - tf.gather_nd(top, unsure)) / (high - low), 0.0, 1.0)
        averaged = tf.gather_nd(first, unsure)
        averaged += weight[:, tf.newaxis] / 2 * (second - averaged)
        return tf.tensor_scatter_nd_update(first, unsure, averaged)
