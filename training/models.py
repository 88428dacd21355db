"""The two model families: a small VGG-style CNN and a dense feed-forward baseline."""

from __future__ import annotations

import keras
from keras import layers

from training.data import IMAGE_SIZE, NUM_CLASSES

INPUT_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 1)
# One 3x3 convolution per block, each block halving the resolution (28, 14, 7, 4). Measured
# on 2 cores: a second convolution in the 14x14 and 7x7 blocks cost 2.8 times the training
# time per image (docs/training.md).
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


def build_cnn(dropout: float, l2: float) -> keras.Model:
    """Blocks of convolution, max pooling, batch norm and ReLU, then one hidden dense layer."""
    inputs, x = _inputs()
    for filters in CNN_FILTERS:
        x = layers.Conv2D(
            filters, 3, padding="same", use_bias=False, kernel_regularizer=_regularizer(l2)
        )(x)
        # Pool before batch norm and ReLU: they then touch a quarter of the values, which
        # cut training time by a quarter on 2 cores. "same": 7x7 pools to 4x4, keeping the
        # last row and column that "valid" drops.
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


def build_dfn(dropout: float, l2: float) -> keras.Model:
    """A dense feed-forward baseline: flattened pixels through two hidden layers."""
    inputs, x = _inputs()
    x = layers.Flatten()(x)
    for units in DFN_UNITS:
        x = layers.Dense(units, activation="relu", kernel_regularizer=_regularizer(l2))(x)
        x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(NUM_CLASSES, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="fashion_mnist_dfn")


BUILDERS = {"cnn": build_cnn, "dfn": build_dfn}


def with_mirror_averaging(model: keras.Model) -> keras.Model:
    """Wrap `model` to average its probabilities for each image and its mirror image."""
    # Test-time augmentation with the flip used in training: the same weights see both views.
    inputs = keras.Input(shape=INPUT_SHAPE, name="images")
    mirrored = keras.ops.flip(inputs, axis=2)
    outputs = layers.Average(name="probabilities")([model(inputs), model(mirrored)])
    return keras.Model(inputs, outputs, name=f"{model.name}_mirror_averaged")
